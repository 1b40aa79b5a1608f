"""Limb-parallel CKKS evaluation (strategy `limb`, the prior multi-GPU design).

Every rank holds every ciphertext, but only some of its RNS limbs. Limbs are
dealt cyclically: rank r of P holds the primes q_i with i = r mod P. Why not
contiguous blocks: a rescale drops the top prime group, and contiguous blocks
of ceil(L/P) would move their boundaries at every level (a re-shard) and put
the dropped group on one rank; dealt cyclically, ownership never changes as
levels drop and every prime group is spread over the ranks, so each exchange
is an all-gather of at most ceil(limbs/P) limbs per rank -- the volumes
planner.py predicts for `limb` (ModUp: c1 over Q_l; rescale: both
polynomials over the dropped group).

Key switching is Cinnamon's "input broadcast" (Jayashankar et al., ASPLOS
2025): one collective per key switch. The all-gather of c1 gives every rank
the whole input, so each computes ModUp to its own Q limbs and to all the
special primes P, the key inner product on those rows, and ModDown of its own
Q limbs from its own copy of the P part -- no second exchange. The P rows are
computed on every rank (|P| of the |Q_l| + |P| rows: 6 of 62 at n16) and the
keys' P rows are held by every rank. Of Cinnamon's two one-collective
algorithms this is the one for a single key switch of an input every rank
already needs (hoisted rotations share its gather); output aggregation pays
off when many key switches sum into one output before it is exchanged, which
the encoder's rotation trees do not do, and it sends Q_l + P limbs where
input broadcast sends Q_l. Rescale all-gathers the dropped prime group
(every rank needs [c]_q_top for its own limbs: the algebra gives no local
rescale); a product's relinearise-and-rescale (one ModDown by P q_T) gathers
the same rows of its sum before the division instead, the same volume at the
same site. Additions, plaintext and constant products and the tensor of a
ciphertext product are limb-local. The ModUp, ModDown and rescale arithmetic
is the single-rank KeySwitcher / Evaluator code run on the gathered limbs
(this rank's rows are kept), so the result is bit-identical to one rank's.
"""

from __future__ import annotations

import math

from ..ckks.ciphertext import Ciphertext, Plaintext
from ..ckks.evaluator import EvaluationError, Evaluator
from ..ckks.keyswitch import add_polys, add_scaled_polys
from ..nn.ops import CipherOps

SITE = "limb"
# Gathers that exist only because this process plays the key holder and
# writes whole-ciphertext files: in a deployment each rank would send its own
# limbs to the key holder or the file, so they are not the design's
# inter-GPU traffic (infer reports them apart; the planner does not model them).
OFF_DESIGN_SITES = (f"{SITE}/refresh", f"{SITE}/output")


class LimbEvaluator(Evaluator):
    """Evaluator over limb-sharded ciphertexts (`data` holds this rank's limbs
    i = rank, rank + P, ... of the level's Q_l). The arithmetic is Evaluator's,
    run on this rank's rows through its hooks; only rescale and the key-switch
    steps exchange limbs."""

    graphs_capturable = False   # its exchanges go through the host (MPI) between launches

    def __init__(self, ctx, keys, comm, site: str = SITE):
        super().__init__(ctx, keys)
        # single-rank rescale / ModUp / ModDown on gathered limbs; one KeySwitcher (its tables are cached)
        self.base = ctx.evaluator(keys)
        self.ks = self.base.ks
        self.comm, self.site = comm, site
        self.r, self.P = comm.rank, comm.size
        self.n_p = len(self.params.p)

    # ---- ownership --------------------------------------------------------
    def own(self, limbs: int) -> range:
        return range(self.r, limbs, self.P)

    _rows = own

    def _limbs(self, ct):
        return self.params.limbs_at(ct.level)

    def _qc(self, limbs):
        return self.ring.q_col(list(self.own(limbs)))

    def _pt_rows(self, pt: Plaintext, limbs: int):
        return pt.data[: limbs][self.r::self.P]

    def scatter(self, ct: Ciphertext) -> Ciphertext:
        """This rank's limbs of a whole ciphertext (local, no traffic)."""
        return ct.with_data(self.xp.ascontiguousarray(ct.data[..., self.r::self.P, :]))

    def _gather_rows(self, x, lo: int, hi: int, site: str):
        """x: (..., k, N), this rank's rows of the global rows lo..hi-1 (those
        = rank mod P). Returns (..., hi - lo, N), every row. All-gather of
        blocks padded to ceil((hi - lo) / P) rows."""
        xp, P = self.xp, self.P
        c = math.ceil((hi - lo) / P)
        pad = xp.zeros(x.shape[:-2] + (c, x.shape[-1]), dtype=x.dtype)
        pad[..., : x.shape[-2], :] = x
        parts = self.comm.iallgather(pad, f"{self.site}/{site}").wait()
        out = xp.empty(x.shape[:-2] + (hi - lo, x.shape[-1]), dtype=x.dtype)
        for q in range(P):
            rows = list(range(lo, hi))[(q - lo) % P::P]   # global rows owned by rank q
            out[..., [i - lo for i in rows], :] = parts[q][..., : len(rows), :]
        return out

    def gather(self, ct: Ciphertext, site: str = "gather") -> Ciphertext:
        """The whole ciphertext on every rank."""
        return ct.with_data(self._gather_rows(ct.data, 0, self.params.limbs_at(ct.level), site))

    # ---- exchanges --------------------------------------------------------------
    def rescale(self, ct):
        """Gather the dropped prime group, then the single-rank rescale on it
        and this rank's kept limbs."""
        self._check(ct)
        if ct.level == 0:
            raise EvaluationError("cannot rescale a level-0 ciphertext")
        limbs = self.params.limbs_at(ct.level)
        keep = limbs - self.params.primes_per_level
        mine = list(self.own(limbs))
        n_keep = len(self.own(keep))
        top = self._gather_rows(ct.data[:, n_keep:], keep, limbs, "rescale")
        full = self.xp.zeros((2, limbs, ct.data.shape[-1]), dtype=ct.data.dtype)
        full[:, mine[:n_keep]] = ct.data[:, :n_keep]
        full[:, keep:] = top
        out = self.base.rescale(ct.with_data(full))
        return out.with_data(self.xp.ascontiguousarray(out.data[:, self.r::self.P]))

    def _ext_rows(self, level):
        """This rank's rows of the extended basis [P, Q_l] (KeySwitcher order): every
        special prime (ModDown then needs no exchange) and its own Q_l limbs."""
        return list(range(self.n_p)) + [self.n_p + i for i in self.own(self.params.limbs_at(level))]

    def _modup(self, d, level):
        """ModUp gather of c1 over Q_l; this rank's extended rows of every digit."""
        full = self._gather_rows(d, 0, self.params.limbs_at(level), "modup")
        return self.ks.modup(full, level)[:, self._ext_rows(level)]

    def _inner(self, ext, key, level, perm=None):
        return self.ks.inner(ext, key, level, perm, rows=self._ext_rows(level))

    def _modup_inner(self, d, key, level, perm=None):
        """KeySwitcher.modup_inner on this rank's rows: the map on its own limbs of c1 first."""
        return self._inner(self._modup(d if perm is None else d[..., perm], level), key, level)

    def _key_switch(self, d, key, level, addend=None, perm=None, rescale=False):
        """The steps below, each on this rank's rows (the base evaluator's whole-switch
        sequence assumes every row on one device)."""
        acc = self._modup_inner(d, key, level, perm)
        return self._moddown_rescale(acc, level, addend) if rescale else self._moddown(acc, level, addend, perm)

    def _inner_many(self, ext, keys, level, perms):
        return (self._inner(ext, key, level, perm) for key, perm in zip(keys, perms))

    def _whole_ext(self, acc, limbs):
        """This rank's inner-product rows (every P row, its own Q_l rows) placed in a whole
        (2, |P| + limbs, N) extended array, zeros elsewhere, for the single-rank ModDown: the
        rows of other ranks only reach output rows this rank drops. In acc's word (the device
        inner product's 32-bit ones: half the bytes ModDown reads)."""
        full = self.xp.zeros((2, self.n_p + limbs, acc.shape[-1]), dtype=acc.dtype)
        full[:, : self.n_p] = acc[:, : self.n_p]
        full[:, [self.n_p + i for i in self.own(limbs)]] = acc[:, self.n_p:]
        return full

    def _moddown(self, acc, level, addend=None, perm=None):
        """The single-rank ModDown on this rank's P rows (all of them) and Q_l
        limbs; this rank's Q_l limbs of the result (+ addend, this rank's limbs). No exchange."""
        limbs = self.params.limbs_at(level)
        u = self.ks.moddown(self._whole_ext(acc, limbs), level)[:, self.r::self.P]
        return add_polys(self.ring, u, addend, perm, self._qc(limbs))

    def _moddown_rescale(self, acc, level, addend):
        """The single-rank ModDown by P q_T on this rank's P rows and Q_l limbs and the top
        group's rows of the sum, acc_T + P d_T, gathered from their owners (site rescale,
        the rows a rescale gathers); this rank's limbs of Q_{l-1} of the result."""
        limbs = self.params.limbs_at(level)
        keep = limbs - self.params.primes_per_level
        mine = list(self.own(limbs))
        n_keep = len(self.own(keep))
        own_top = self.ks.plus_p_multiple(acc[:, self.n_p + n_keep:], [x[n_keep:] for x in addend], mine[n_keep:])
        top = self._gather_rows(own_top, keep, limbs, "rescale")
        u = self.ks.moddown_rescale(self._whole_ext(acc, limbs), level, top=top)[:, self.r::self.P]
        return add_scaled_polys(self.ring, u, addend, self.ks.top_inverse(level)[self.r:keep:self.P],
                                self._qc(keep))

    def bootstrap(self, ct):
        raise NotImplementedError("bootstrapping is not limb-parallel yet (use --refresh client)")


class LimbCipherOps(CipherOps):
    """CipherOps over a LimbEvaluator. The key holder decrypts whole
    ciphertexts: a refresh gathers the limbs first (site limb/refresh) and
    keeps this rank's limbs of the answer."""

    def __init__(self, limb_ev: LimbEvaluator, ctx, refresh="client", key_holder=None, *a, **kw):
        super().__init__(ctx, limb_ev, refresh, _LimbKeyHolder(limb_ev, key_holder) if key_holder else None,
                         *a, **kw)


class _LimbKeyHolder:
    def __init__(self, limb_ev, holder):
        self.ev, self.holder = limb_ev, holder

    def refresh(self, ct, tag, bound=None):
        return self.ev.scatter(self.holder.refresh(self.ev.gather(ct, "refresh"), tag, bound))
