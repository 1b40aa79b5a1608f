"""Hybrid key switching: ModUp per digit, inner product with the key, ModDown.

ModUp works on the NTT form of the input and returns every digit extended to
Q_l * P, still in NTT form; because the Galois maps are permutations in that
form, many rotations of one ciphertext can share one ModUp (hoisting) and
apply the permutation to the extended digits afterwards.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from ..backend import get_xp
from .rns import BasisConverter


class KeySwitcher:
    def __init__(self, params, ring, special: int | None = None):
        """special: key switch over the first `special` special primes only, for a key made
        on them (the bootstrapping encapsulation key; default all of P)."""
        self.params = params
        self.ring = ring
        self.xp = get_xp()
        self.n_p = special or len(params.p)
        if not 1 <= self.n_p <= len(params.p):
            raise ValueError(f"special={special}: the chain has {len(params.p)} special primes")
        self.p_idx = list(params.p_indices())[: self.n_p]
        self.p = params.p[: self.n_p]
        big_p = math.prod(self.p)
        self._cols = {}
        self._neg_p_multiples = {}
        self._conv = {}
        self._big_p = big_p

    def rows(self, level):
        """Prime indices (into params.qp) of the extended basis at `level`: P then Q_l."""
        return self.p_idx + list(range(self.params.limbs_at(level)))

    def _converter(self, key, src, dst):
        c = self._conv.get(key)
        if c is None:
            qp = self.params.qp
            c = BasisConverter([qp[i] for i in src], [qp[i] for i in dst])
            self._conv[key] = c
        return c

    def modup(self, d, level):
        """d: (limbs, N) NTT over Q_l -> (digits, |P|+limbs, N) NTT over P, Q_l."""
        xp, ring = self.xp, self.ring
        if ring._gpu:
            from ..backend import kernels

            return kernels.modup(self, d, level)
        limbs = self.params.limbs_at(level)
        q_idx = list(range(limbs))
        coeff = ring.intt(d, q_idx)
        digits = self.params.digits_at(level)
        out = xp.empty((len(digits), self.n_p + limbs, d.shape[-1]), dtype=np.uint64)
        for j, digit in enumerate(digits):
            src = list(digit)
            dst = self.p_idx + [i for i in q_idx if i not in digit]
            conv = self._converter(("up", level, j), src, dst).convert(coeff[digit.start:digit.stop])
            ext = ring.ntt(conv, dst)
            dst_rows = list(range(self.n_p)) + [self.n_p + i for i in q_idx if i not in digit]
            out[j, dst_rows] = ext
            out[j, self.n_p + digit.start:self.n_p + digit.stop] = d[digit.start:digit.stop]
        return out

    def inner_many(self, ext, keys, level, perms):
        """inner(ext, key, level, perm) for each (key, perm) of a hoisted group, yielded in
        order; on the device one pass over ext per kernels.KS_MANY rotations (a lone rotation
        takes ks_inner, which is faster for one). Lazy, so a caller that consumes each result
        holds one launch's accumulators at a time."""
        from ..backend import kernels

        if not self.ring._gpu or len(keys) == 1:
            for key, perm in zip(keys, perms):
                yield self.inner(ext, key, level, perm)
            return
        rows = self.n_p + self.params.limbs_at(level)
        qc = self.ring.q_col(self.rows(level))
        for s in range(0, len(keys), kernels.KS_MANY):
            yield from kernels.ks_inner_many(ext, keys[s:s + kernels.KS_MANY], qc, rows,
                                             perms[s:s + kernels.KS_MANY])

    def inner(self, ext, key, level, perm=None, rows=None):
        """Sum over digits of ext_j[..., perm] * (b_j, a_j) -> (2, R, N): over all |P|+limbs
        rows of P, Q_l, or over `rows` (indices into them, which ext holds alone: a limb
        rank's share)."""
        ring_rows = self.rows(level)
        if rows is None:
            count, qc = self.n_p + self.params.limbs_at(level), self.ring.q_col(ring_rows)
        else:
            count, qc = len(rows), self.ring.q_col([ring_rows[i] for i in rows])
        # the device kernel reads the whole key's first `count` rows in place
        if rows is not None or not self.ring._gpu:
            sel = slice(0, count) if rows is None else list(rows)      # a slice: views of P, then Q_l
            key = SimpleNamespace(b=key.b[:, sel], a=key.a[:, sel])
        if self.ring._gpu:
            from ..backend import kernels

            return kernels.ks_inner(ext, key, qc, count, perm)
        kb, ka = key.b, key.a
        if perm is not None:
            ext = ext[..., perm]
        xp = self.xp
        acc = xp.empty((2,) + ext.shape[1:], dtype=np.uint64)
        prod = xp.empty(ext.shape[1:], dtype=np.uint64)
        # products are < 2^62, so four of them (or a reduced value and three) sum below 2^64:
        # reduce once per four digits instead of once per digit
        pending = 0
        for j in range(ext.shape[0]):
            e = ext[j]
            for c, k in ((0, kb), (1, ka)):
                if j == 0:
                    xp.multiply(e, k[j], out=acc[c])
                else:
                    xp.multiply(e, k[j], out=prod)
                    acc[c] += prod
            pending += 1
            if pending == 4:
                acc %= qc
                pending = 1
        acc %= qc
        return acc

    def modup_inner(self, d, key, level, perm=None):
        """inner(modup(d[..., perm]), key, level): one key switch's first two steps, of d
        under the Galois map perm (NTT-form positions) where given. A lone rotation switches
        the rotated c1 (one gather of |Q_l| rows, done by the device INTT's first reads); a
        hoisted group shares one modup of c1 and permutes the extended digits instead
        (inner(..., perm)). Both are key switches of sigma(c1): they differ only in the fast
        conversion's multiple of the digit modulus, not in the decryption. On the device ModUp's
        last NTT pass runs inside the inner product, one pass less over the extended digits,
        the largest array of a key switch (kernels.modup_inner)."""
        if self.ring._gpu:
            from ..backend import kernels

            return kernels.modup_inner(self, d, key, level, perm)
        return self.inner(self.modup(d if perm is None else d[..., perm], level), key, level)

    def moddown(self, acc, level, addend=None, perm=None):
        """(…, |P|+limbs, N) over P, Q_l -> (…, limbs, N) over Q_l: divide by P, rounded.

        addend: the rest of a ciphertext result, added to polynomial c where addend[c] is
        not None (gathered by perm when given): a rotation's permuted c0, a product's d0
        and d1. On the device it rides in ModDown's last kernel, which saves the separate
        gather, sum and stack per key switch."""
        ring = self.ring
        if ring._gpu:
            from ..backend import kernels

            return kernels.moddown(self, acc, level, addend, perm)
        return add_polys(ring, self._divide(acc, level, 0), addend, perm, ring.q_col(range(self.params.limbs_at(level))))

    def moddown_rescale(self, acc, level, addend=None, top=None):
        """ModDown and the rescale after it as one division, by P q_T (T: Q_l's top prime
        group, the primes a rescale drops): (…, |P|+limbs, N) over P, Q_l -> (…, limbs - k, N)
        over Q_{l-1}, the rounded (acc + P addend) / (P q_T). One centred conversion from the
        primes of P and T replaces ModDown's and then the rescale's, each rounded: one launch
        sequence less and a smaller rounding error (the result differs from moddown-then-
        rescale by at most one unit of the rounding per coefficient). A product's relinearise
        and rescale (Evaluator.mul(rescale=True)) is this.

        addend: a product's (d0, d1) over Q_l, as moddown takes them (no permutation). top:
        the sum's T rows (…, k, N), acc_T + P addend_T; made from acc and addend when None
        (the limb strategy gathers them from their owners instead)."""
        ring = self.ring
        if ring._gpu:
            from ..backend import kernels

            return kernels.moddown_rescale(self, acc, level, addend, top)
        if top is None:
            top = self.top_sum(acc, addend, level)
        keep = self.params.limbs_at(level) - self.params.primes_per_level
        out = self._divide(acc, level, self.params.primes_per_level, top)
        return add_scaled_polys(ring, out, addend, self.top_inverse(level), ring.q_col(range(keep)))

    def _divide(self, acc, level, drop, top=None):
        """round((x - [x]_D) / D) of the sum x whose rows acc (P, Q_l) and top (the T rows) hold,
        for D = P (drop = 0) or P q_T (the top `drop` primes of Q_l): the centred remainder's
        fast conversion from D's primes, subtracted in NTT form; over the first limbs - drop
        rows of Q_l. Without the addend: its P multiple is not in acc's Q rows."""
        ring, xp = self.ring, self.xp
        keep = self.params.limbs_at(level) - drop
        q_idx = list(range(keep))
        src = self.divisor_primes(level, drop)
        coeff = ring.intt(acc[..., : self.n_p, :], self.p_idx)
        if drop:
            coeff = xp.concatenate([coeff, ring.intt(top, src[self.n_p:])], axis=-2)
        converter = self.down_converter(level, drop)
        conv = self._centre(converter, coeff, converter.convert(coeff), level, drop)
        conv = ring.ntt(conv, q_idx)
        qc = ring.q_col(q_idx)
        out = acc[..., self.n_p:self.n_p + keep, :] + qc - conv
        out *= self.p_inverse(level, drop)
        out %= qc
        return out

    def divisor_primes(self, level, drop=0):
        """Prime indices (into params.qp) of ModDown's divisor: P's, then Q_l's top `drop`."""
        limbs = self.params.limbs_at(level)
        return self.p_idx + list(range(limbs - drop, limbs))

    def down_converter(self, level, drop=0):
        """The conversion from the divisor's primes (P, and the top `drop` limbs of Q_l) to the
        kept limbs of Q_l: ModDown's (drop 0) and moddown_rescale's."""
        return self._converter(("down", level) if not drop else ("down", level, drop),
                               self.divisor_primes(level, drop),
                               list(range(self.params.limbs_at(level) - drop)))

    def _divisor(self, level, drop):
        qp = self.params.qp
        return math.prod(qp[i] for i in self.divisor_primes(level, drop))

    def top_sum(self, acc, addend, level):
        """(…, k, N): acc's rows of Q_l's top group plus P times the addend's: the part of
        moddown_rescale's sum on the primes it divides by besides P."""
        limbs = self.params.limbs_at(level)
        keep = limbs - self.params.primes_per_level
        return self.plus_p_multiple(acc[..., self.n_p + keep:self.n_p + limbs, :],
                                    [None if x is None else x[keep:limbs] for x in addend or ()],
                                    list(range(keep, limbs)))

    def plus_p_multiple(self, rows, addend_rows, idx):
        """rows + P * addend_rows[c] mod q_i on polynomial c (prime indices idx): a new
        uint64 array (empty for no rows: a limb rank may own none of the top group)."""
        if not len(idx):
            return self.xp.zeros(rows.shape, dtype=np.uint64)
        qc = self.ring.q_col(idx)
        p_mod = self.p_mod(idx)
        out = self.xp.array(rows, dtype=np.uint64)
        for c, x in enumerate(addend_rows):
            if x is not None:
                out[c] = (out[c] + x * p_mod % qc) % qc
        return out

    def _column(self, key, values):
        """A cached (rows, 1) device column of per-prime constants, values() made once."""
        col = self._cols.get(key)
        if col is None:
            col = self._cols[key] = self.xp.asarray(np.array(values(), dtype=np.uint64))[:, None]
        return col

    def p_mod(self, idx):
        """(len(idx), 1) column of P mod q_i (prime indices idx)."""
        return self._column(("P mod", tuple(idx)), lambda: [self._big_p % self.params.qp[i] for i in idx])

    def p_inverse(self, level, drop=0):
        """(limbs - drop, 1) column of D^-1 mod q_j, D = P (times the top `drop` primes)."""
        q = self.params.q[: self.params.limbs_at(level) - drop]
        return self._column(("D^-1", level, drop),
                            lambda: [pow(self._divisor(level, drop) % qj, -1, qj) for qj in q])

    def top_inverse(self, level):
        """(limbs - k, 1) column of q_T^-1 mod q_j: moddown_rescale's factor on the addend."""
        limbs = self.params.limbs_at(level)
        keep = limbs - self.params.primes_per_level
        big = math.prod(self.params.q[keep:limbs])
        return self._column(("q_T^-1", level), lambda: [pow(big % qj, -1, qj) for qj in self.params.q[:keep]])

    def neg_p_multiples(self, level, drop=0):
        """(limbs - drop, |D|+1) table of -v*D mod q_j for v = 0..|D|, D = P (times the top
        `drop` primes): the centring's correction."""
        table = self._neg_p_multiples.get((level, drop))
        if table is None:
            big = self._divisor(level, drop)
            q = self.params.q[: self.params.limbs_at(level) - drop]
            table = self.xp.asarray(np.array([[(-k * big) % qj for k in range(self.n_p + drop + 1)]
                                              for qj in q], dtype=np.uint64))
            self._neg_p_multiples[(level, drop)] = table
        return table

    def _centre(self, converter, p_coeff, conv, level, drop=0):
        """Fast conversion of x mod P gives x + v*P (0 <= v <= |P|); make it the centred x.

        Without this ModDown computes a floor (a - x - v*P)/P, off by up to |P|+1
        on both output polynomials: with the dense secret a rotation came out
        ~2^4.7 noisier than a rescale (n16-boot's chain at N=2^12), now the same.
        sum_i t_i/p_i with t_i = x_i (P/p_i)^-1 mod p_i is (x + v*P)/P for the
        smallest x >= 0, so rounding it gives the v of the centred x; summed in a
        fixed order so numpy and the device (kernels.moddown) agree bit for bit.
        The same with P q_T in place of P when drop > 0 (moddown_rescale).
        """
        xp = self.xp
        t = p_coeff * converter.hat_inv
        t %= converter.src_q
        frac = None
        for i, p in enumerate(self.params.qp[j] for j in self.divisor_primes(level, drop)):
            term = t[..., i, :].astype(np.float64) / float(p)
            frac = term if frac is None else frac + term
        v = xp.floor(frac + 0.5).astype(np.int64)  # in 0..|P|: x/P in [0, |P|) rounded
        fix = xp.moveaxis(self.neg_p_multiples(level, drop)[:, v], 0, -2)   # (..., limbs, N): -v*P mod q_j
        qc = self.ring.q_col(range(self.params.limbs_at(level) - drop))
        out = conv + fix                          # < 2q
        return xp.minimum(out, out - qc)          # unsigned wrap: out mod q

    def switch(self, d, key, level, addend=None, perm=None, rescale=False):
        """(u0, u1) with u0 + u1*s ~= d[..., perm] * s_from (mod Q_l), plus addend (gathered
        by perm, see moddown); with rescale, ModDown and the rescale as one division
        (moddown_rescale, which takes no perm). The device runs it as one sequence whose
        inner product hands ModDown its P rows in the form ModDown's next kernel reads
        (kernels.switch)."""
        if rescale and perm is not None:
            raise ValueError("switch: a rescaled key switch takes no Galois map")
        if self.ring._gpu:
            from ..backend import kernels

            return kernels.switch(self, d, key, level, addend, perm, rescale)
        acc = self.modup_inner(d, key, level, perm)
        return self.moddown_rescale(acc, level, addend) if rescale else self.moddown(acc, level, addend, perm)


def add_scaled_polys(ring, u, addend, w, qc):
    """u[c] + addend[c] * w mod q for each c where addend[c] is not None (in place); addend
    rows past u's are ignored, w is a (rows, 1) column."""
    for c, x in enumerate(addend or ()):
        if x is not None:
            u[c] = ring.add_mod(u[c], ring.mul_mod(x[: u.shape[-2]], w, qc), qc)
    return u


def add_polys(ring, u, addend, perm, qc):
    """u[c] + addend[c][..., perm] mod q for each c where addend[c] is not None (in place),
    by the ring's own modular sum (one fused kernel on the device)."""
    for c, x in enumerate(addend or ()):
        if x is not None:
            x = x[: u.shape[-2]]
            u[c] = ring.add_mod(u[c], x if perm is None else x[:, perm], qc)
    return u
