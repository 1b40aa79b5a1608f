"""Homomorphic operations on ciphertexts.

Scale rule: every operation that will be followed by a rescale encodes its
plaintext or constant at the scale that makes the rescaled result land
exactly on the parameter set's scale table (Delta_{l-1}); see params.py.
Ciphertexts of different levels are brought together by `adjust`, which
lowers the higher one with the exact target scale (one constant multiply and
rescale), the way OpenFHE's FLEXIBLEAUTO mode does.
"""

from __future__ import annotations

import math

import numpy as np

from .ciphertext import Ciphertext, Plaintext
from .keys import EvaluationKeys, galois_element_conjugate, galois_element_for_rotation
from .rns import crt_centered_small

SCALE_RTOL = 1e-9  # scales this close are one scale (float rounding of the table)
CONST_COLS_KEPT = 4096  # cached constant columns per evaluator (see _const_col)


class EvaluationError(ValueError):
    pass


class MissingKeyError(EvaluationError, KeyError):
    def __str__(self):  # KeyError would quote the message
        return self.args[0]


class LevelMatch:
    """`match` over any evaluator with `adjust` (the real ones and the planner's counter)."""

    def match(self, a, b):
        """Bring two ciphertexts to the lower of their levels (exact table scale)."""
        if a.level > b.level:
            return self.adjust(a, b.level), b
        if b.level > a.level:
            return a, self.adjust(b, a.level)
        return a, b


class Evaluator(LevelMatch):
    """Single-rank evaluator. The row hooks (`_rows`, `_limbs`, `_qc`, `_const_col`,
    `_pt_rows`) and the key-switch steps (`_modup`, `_inner`, `_modup_inner`, `_inner_many`,
    `_moddown`, `_moddown_rescale`, and `_key_switch`, their composition for one input) are
    what parallel.limb.LimbEvaluator overrides to run the same code on its share of the limbs."""

    # a bootstrap on this evaluator may be replayed as a CUDA graph (backend/graphs.py): it
    # launches device work only, with no exchange between ranks
    graphs_capturable = True

    def __init__(self, ctx, keys: EvaluationKeys | None):
        self.ctx = ctx
        self.params = ctx.params
        self.ring = ctx.ring
        self.xp = ctx.xp
        if keys is not None and keys.fingerprint != self.params.fingerprint:
            raise EvaluationError(
                f"evaluation keys are for parameters {keys.fingerprint[:16]}…, "
                f"this context is {self.params.fingerprint[:16]}…")
        self.keys = keys
        self.ks = ctx.key_switcher()
        self._const_cols = {}   # (value, limbs) -> column (_const_col)
        # work done, for benchmarks: key switches (relinearisations and rotations) and bootstraps
        self.counts = {"keyswitch": 0, "bootstrap": 0}

    # ---- checks -------------------------------------------------------
    def _check(self, *items):
        for it in items:
            if isinstance(it, (Ciphertext, Plaintext)) and it.fingerprint != self.params.fingerprint:
                raise EvaluationError(
                    f"{type(it).__name__} belongs to another parameter set "
                    f"({it.fingerprint[:16]}… vs {self.params.fingerprint[:16]}…)")

    # ---- rows held (all of them here) ----------------------------------
    def _rows(self, limbs):
        """Global limb indices, of the first `limbs`, that ct.data holds."""
        return range(limbs)

    def _limbs(self, ct):
        """Limb count of ct's level (ct.data may hold only some of them)."""
        return ct.limbs

    def _qc(self, limbs):
        return self.ring.q_col(range(limbs))

    def _const_col(self, value, limbs):
        """An integer reduced modulo each held prime, as a column. Cached: a circuit
        (a bootstrap, a layer) meets the same constants again, and each costs a
        host-to-device copy and a Python loop over the limbs."""
        cache = self._const_cols
        key = (value, limbs)
        col = cache.get(key)
        if col is None:
            if len(cache) >= CONST_COLS_KEPT:
                cache.clear()
            col = cache[key] = self.xp.asarray(np.array([value % self.params.q[i] for i in self._rows(limbs)],
                                                        dtype=np.uint64))[:, None]
        return col

    def _pt_rows(self, pt, limbs):
        return pt.data[:limbs]

    # ---- key-switch steps ---------------------------------------------
    def _modup(self, d, level):
        return self.ks.modup(d, level)

    def _inner(self, ext, key, level, perm=None):
        return self.ks.inner(ext, key, level, perm=perm)

    def _modup_inner(self, d, key, level, perm=None):
        return self.ks.modup_inner(d, key, level, perm)

    def _inner_many(self, ext, keys, level, perms):
        return self.ks.inner_many(ext, keys, level, perms)

    def _moddown(self, acc, level, addend=None, perm=None):
        return self.ks.moddown(acc, level, addend, perm)

    def _moddown_rescale(self, acc, level, addend):
        return self.ks.moddown_rescale(acc, level, addend)

    def _key_switch(self, d, key, level, addend=None, perm=None, rescale=False):
        """A whole key switch of one input (KeySwitcher.switch: on the device ModUp's inner
        product hands ModDown its P rows already past ModDown's first INTT pass); a
        limb-parallel evaluator composes its own steps instead."""
        return self.ks.switch(d, key, level, addend, perm, rescale)

    def _same_scale(self, a, b, what):
        if abs(a.scale / b.scale - 1.0) > SCALE_RTOL:
            raise EvaluationError(
                f"{what}: scales differ (2^{math.log2(a.scale):.4f} vs 2^{math.log2(b.scale):.4f}); "
                "rescale or adjust first")

    def _slots_match(self, a, b, what):
        if a.slots != b.slots:
            raise EvaluationError(f"{what}: slot counts differ ({a.slots} vs {b.slots})")

    def _plain_fits(self, ct, pt, what):
        """A plaintext of s slots is its s-vector tiled over N/2: it fits any
        ciphertext whose slot count s divides (a block-periodic mask or diagonal)."""
        if ct.slots % pt.slots:
            raise EvaluationError(f"{what}: a {pt.slots}-slot plaintext does not tile {ct.slots} slots")

    def _level_product(self, level):
        p = self.params
        top = p.limbs_at(level)
        return math.prod(p.q[top - p.primes_per_level:top])

    def rescale_target_scale(self, ct_scale, level):
        """Scale to encode an operand at so that (ct*operand) rescales onto the table."""
        if level == 0:
            raise EvaluationError("no level left to rescale into (level 0)")
        return self._level_product(level) * self.params.scale_at(level - 1) / ct_scale

    # ---- levels -------------------------------------------------------
    def drop_level(self, ct, levels: int = 1):
        """Discard the top `levels` prime groups; value and scale unchanged."""
        self._check(ct)
        new = ct.level - levels
        if new < 0:
            raise EvaluationError(f"cannot drop {levels} levels from level {ct.level}")
        return ct.with_data(ct.data[:, : len(self._rows(self.params.limbs_at(new)))].copy(), level=new)

    def adjust(self, ct, level: int):
        """Same value at `level` with exactly the table scale Delta_level."""
        self._check(ct)
        target = self.params.scale_at(level)
        if ct.level == level:
            self._same_scale(ct, Plaintext(None, level, target, ct.slots, ""), "adjust")
            return ct
        if ct.level < level:
            raise EvaluationError(f"cannot raise level {ct.level} to {level} (bootstrapping needed)")
        c = self._level_product(ct.level) * target / ct.scale
        out = self.rescale(self._mul_integer_scaled(ct, 1.0, c))
        out.scale = target
        return self.drop_level(out, out.level - level) if out.level > level else out

    # ---- additive -----------------------------------------------------
    def add(self, a, b):
        return self._addsub(a, b, subtract=False)

    def sub(self, a, b):
        return self._addsub(a, b, subtract=True)

    def _addsub(self, a, b, subtract):
        self._check(a, b)
        if isinstance(b, (int, float, complex, np.number)):
            return self.add_const(a, -b if subtract else b)
        if isinstance(b, Plaintext):
            if b.level < a.level:
                a = self.drop_level(a, a.level - b.level)
            self._same_scale(a, b, "add plaintext")
            self._plain_fits(a, b, "add plaintext")
            limbs = self._limbs(a)
            qc, pb = self._qc(limbs), self._pt_rows(b.expanded(self.xp), limbs)
            return a.with_data(self.ring.add_first(a.data, pb, qc, subtract), is_complex=a.is_complex or b.is_complex)
        a, b = self.match(a, b)
        self._same_scale(a, b, "add")
        self._slots_match(a, b, "add")
        qc = self._qc(self._limbs(a))
        data = (self.ring.sub_mod if subtract else self.ring.add_mod)(a.data, b.data, qc)
        return a.with_data(data, is_complex=a.is_complex or b.is_complex)

    def neg(self, ct):
        self._check(ct)
        qc = self._qc(self._limbs(ct))
        return ct.with_data(((qc - ct.data) % qc).astype(ct.data.dtype, copy=False))

    def add_const(self, ct, c):
        """Add a scalar to every slot (no level used)."""
        self._check(ct)
        if complex(c).imag != 0:
            pt = self.ctx.encode(np.full(ct.slots, c), level=ct.level, scale=ct.scale, slots=ct.slots)
            return self.add(ct, pt)
        limbs = self._limbs(ct)
        col = self._const_col(int(round(float(np.real(c)) * ct.scale)), limbs)
        return ct.with_data(self.ring.add_first(ct.data, col, self._qc(limbs)))

    # ---- multiplicative by plaintext/constant -------------------------
    def _mul_integer_scaled(self, ct, c, scale):
        """ct * round(c*scale) (an integer), result scale ct.scale*scale; no rescale."""
        limbs = self._limbs(ct)
        data = self.ring.mul_mod(ct.data, self._const_col(int(round(float(c) * scale)), limbs), self._qc(limbs))
        return ct.with_data(data, scale=ct.scale * scale)

    def mul_int(self, ct, k: int):
        """Multiply by an integer: exact, no level or scale change."""
        return self._mul_integer_scaled(ct, int(k), 1.0)

    def mul_const(self, ct, c, rescale: bool = False):
        """Multiply every slot by a real scalar; rescaling lands on the table scale."""
        self._check(ct)
        if complex(c).imag != 0:
            return self.mul_plain(ct, np.full(ct.slots, c), rescale=rescale)
        out = self._mul_integer_scaled(ct, float(np.real(c)), self.rescale_target_scale(ct.scale, ct.level))
        return self.rescale(out) if rescale else out

    def mul_plain(self, ct, pt, rescale: bool = False):
        """Slot-wise product with a Plaintext or a vector (encoded for an exact rescale)."""
        self._check(ct, pt)
        if not isinstance(pt, Plaintext):
            values = np.asarray(pt)
            if values.size != ct.slots:
                raise EvaluationError(f"mul_plain: {values.size} values for a ciphertext of {ct.slots} slots")
            pt = self.ctx.encode(values, level=ct.level, slots=ct.slots,
                                 scale=self.rescale_target_scale(ct.scale, ct.level))
        if pt.level < ct.level:
            ct = self.drop_level(ct, ct.level - pt.level)
        self._plain_fits(ct, pt, "mul_plain")
        limbs = self._limbs(ct)
        rows = self._pt_rows(pt, limbs)
        qc = self._qc(limbs)
        if pt.run > 1:   # each value stands for a run: broadcast it, no expanded copy
            runs = ct.data.reshape(*ct.data.shape[:-1], -1, pt.run)
            data = self.ring.mul_mod(runs, rows[..., None], qc[..., None]).reshape(ct.data.shape)
        else:
            data = self.ring.mul_mod(ct.data, rows, qc)
        out = ct.with_data(data, scale=ct.scale * pt.scale, is_complex=ct.is_complex or pt.is_complex)
        return self.rescale(out) if rescale else out

    def mul_plain_sum(self, cts, pts):
        """sum_i cts[i] * pts[i], no rescale: the inner sums of linear transforms. The
        terms share a level and a scale product; on the device one pass over them."""
        if len(cts) != len(pts) or not cts:
            raise EvaluationError(f"mul_plain_sum: {len(cts)} ciphertexts and {len(pts)} plaintexts")
        self._check(*cts, *pts)
        first = cts[0]
        if self.ring._gpu and all(c.level == first.level and c.slots == first.slots for c in cts) and all(
                p.level >= first.level and abs(c.scale * p.scale / (first.scale * pts[0].scale) - 1.0) <= SCALE_RTOL
                for c, p in zip(cts, pts)):
            from ..backend import kernels

            for c, p in zip(cts, pts):
                self._plain_fits(c, p, "mul_plain_sum")
            limbs = self._limbs(first)
            data = kernels.mul_plain_sum([c.data for c in cts], [self._pt_rows(p, limbs) for p in pts],
                                         [p.run for p in pts], self._qc(limbs))
            if data is not None:
                return first.with_data(data, scale=first.scale * pts[0].scale,
                                       is_complex=any(c.is_complex for c in cts) or any(p.is_complex for p in pts))
        total = None
        for c, p in zip(cts, pts):
            term = self.mul_plain(c, p)
            total = term if total is None else self.add(total, term)
        return total

    def mul_by_i(self, ct, negate: bool = False):
        """Every slot times i (or -i): the monomial X^(N/2), exact, no level."""
        self._check(ct)
        mono = self.__dict__.get("_i_monomial")
        if mono is None:
            p, n = self.params, self.params.n
            coeff = np.zeros((len(p.q), n), dtype=np.uint64)
            coeff[:, n // 2] = 1
            pos = self.ring.ntt(self.xp.asarray(coeff), list(range(len(p.q))))
            qc = self.ring.q_col(range(len(p.q)))
            mono = self.__dict__["_i_monomial"] = (pos, (qc - pos) % qc)
        rows = self._rows(self._limbs(ct))
        m = mono[1 if negate else 0]
        # a slice where the rows are a prefix: indexing by a list uploads it every call
        m = m[: len(rows)] if rows == range(len(rows)) else m[list(rows)]
        return ct.with_data(self.ring.mul_mod(ct.data, m, self._qc(self._limbs(ct))), is_complex=True)

    # ---- ciphertext products -----------------------------------------
    def _relin_key(self):
        if self.keys is None or self.keys.relin is None:
            raise MissingKeyError("no relinearisation key: generate keys with ctx.keygen()")
        return self.keys.relin

    def mul(self, a, b, rescale: bool = False):
        """Ciphertext product, relinearised. With rescale, the relinearisation's ModDown and
        the rescale are one division by P q_T (KeySwitcher.moddown_rescale)."""
        if not isinstance(b, Ciphertext):
            return self.mul_plain(a, b, rescale) if not np.isscalar(b) else self.mul_const(a, b, rescale)
        self._check(a, b)
        a, b = self.match(a, b)
        self._slots_match(a, b, "mul")
        if rescale and a.level == 0:
            raise EvaluationError("cannot rescale a level-0 ciphertext")
        qc = self._qc(self._limbs(a))
        if self.ring._gpu:
            from ..backend import kernels

            d0, d1, d2 = kernels.tensor(a.data, b.data, qc)
        else:
            # 64-bit words for the products (a device ciphertext's 32-bit words would wrap)
            a0, a1 = a.data.astype(np.uint64, copy=False)
            b0, b1 = b.data.astype(np.uint64, copy=False)
            d0 = a0 * b0 % qc
            d1 = (a0 * b1 % qc + a1 * b0 % qc) % qc
            d2 = a1 * b1 % qc
        data = self._switch(d2, self._relin_key(), a.level, addend=(d0, d1), rescale=rescale)
        scale = a.scale * b.scale
        changes = {"level": a.level - 1, "scale": scale / self._level_product(a.level)} if rescale else {"scale": scale}
        return a.with_data(data, is_complex=a.is_complex or b.is_complex, **changes)

    def _switch(self, d, key, level, addend=None, rescale=False):
        """(u0, u1) + addend with u0 + u1*s ~= d * s_from (_key_switch); with rescale, its
        ModDown also divides by the top prime group (moddown_rescale)."""
        self.counts["keyswitch"] += 1
        return self._key_switch(d, key, level, addend, rescale=rescale)

    def square(self, a, rescale: bool = False):
        return self.mul(a, a, rescale)

    def rescale(self, ct):
        """Divide by the top prime group (rounded) and drop it: level - 1."""
        self._check(ct)
        p = self.params
        if ct.level == 0:
            raise EvaluationError("cannot rescale a level-0 ciphertext")
        k = p.primes_per_level
        limbs = ct.limbs
        keep = limbs - k
        top_idx = list(range(keep, limbs))
        top_q = [p.q[i] for i in top_idx]
        if self.ring._gpu:
            from ..backend import kernels

            data = kernels.rescale(self.ring, ct.data, keep, top_idx, top_q, self._qc(keep))
            return ct.with_data(data, level=ct.level - 1, scale=ct.scale / math.prod(top_q))
        top = self.ring.intt(ct.data[:, keep:], top_idx)
        lifted = self.xp.stack([crt_centered_small(top[c], top_q) for c in range(2)])  # int64 (2, N)
        q_keep = np.array(p.q[:keep], dtype=np.int64)
        res = (lifted[:, None, :] % self.xp.asarray(q_keep)[:, None]).astype(np.uint64)
        res = self.ring.ntt(res, list(range(keep)))
        qc = self._qc(keep)
        inv = self.xp.asarray(np.array([pow(math.prod(top_q) % q, -1, q) for q in p.q[:keep]],
                                       dtype=np.uint64))[:, None]
        data = ct.data[:, :keep] + qc - res
        data *= inv
        data %= qc
        return ct.with_data(data, level=ct.level - 1, scale=ct.scale / math.prod(top_q))

    # ---- rotations ----------------------------------------------------
    def _galois_key(self, element, what):
        if self.keys is None or element not in self.keys.galois:
            raise MissingKeyError(f"no Galois key for {what}; list it in keygen(rotations=[...]) "
                                  "(or conjugate=True)")
        return self.keys.galois[element]

    def _galois_one(self, ct, element, what):
        """One Galois map of ct: nothing to share, so one whole key switch of the mapped c1
        (ModUp's last pass rides in the inner product), c0 mapped as its addend. Its own path:
        a lone rotation's wall time includes the host's time to its first launch."""
        self._check(ct)
        key = self._galois_key(element, what)
        self.counts["keyswitch"] += 1
        data = ct.data
        return ct.with_data(self._key_switch(data[1], key, ct.level, (data[0], None),
                                             self.ring.automorphism_permutation(element)))

    def _galois_hoisted(self, ct, elements_and_names):
        if len(elements_and_names) == 1:
            return [self._galois_one(ct, *elements_and_names[0])]
        self._check(ct)
        keys = [self._galois_key(g, name) for g, name in elements_and_names]
        self.counts["keyswitch"] += len(keys)
        perms = [self.ring.automorphism_permutation(g) for g, _ in elements_and_names]
        addend = (ct.data[0], None)
        accs = self._inner_many(self._modup(ct.data[1], ct.level), keys, ct.level, perms)
        return [ct.with_data(self._moddown(acc, ct.level, addend, perm))
                for acc, perm in zip(accs, perms)]

    def rotate_hoisted(self, ct, steps):
        """Rotations of one ciphertext sharing one ModUp; returns {step: ciphertext}."""
        n = self.params.n
        steps = list(steps)
        todo = [s for s in steps if s % ct.slots != 0]
        # steps that are multiples of the slot count are the identity: no ModUp for them alone
        rotated = self._galois_hoisted(
            ct, [(galois_element_for_rotation(s, n), f"rotation {s}") for s in todo]) if todo else []
        result = dict(zip(todo, rotated))
        for s in steps:
            if s % ct.slots == 0:
                result[s] = ct
        return result

    def rotate(self, ct, steps: int):
        """Cyclic left rotation of the slots by `steps`."""
        if steps % ct.slots == 0:
            return ct
        return self._galois_one(ct, galois_element_for_rotation(steps, self.params.n), f"rotation {steps}")

    def conjugate(self, ct):
        return self._galois_one(ct, galois_element_conjugate(self.params.n), "conjugation")

    # ---- circuits -----------------------------------------------------
    def linear_transform(self, ct, transform, rescale: bool = True):
        return transform.evaluate(self, ct, rescale=rescale)

    def evaluate_chebyshev(self, ct, series, **kw):
        from .polynomial import evaluate_chebyshev

        return evaluate_chebyshev(self, ct, series, **kw)

    def bootstrap(self, ct):
        """Refresh a ciphertext to more levels (needs keygen(bootstrap=True) keys)."""
        from .bootstrap import bootstrap

        self.counts["bootstrap"] += 1
        return bootstrap(self, ct)
