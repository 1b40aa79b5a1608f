"""Hybrid key switching: ModUp per digit, inner product with the key, ModDown.

ModUp works on the NTT form of the input and returns every digit extended to
Q_l * P, still in NTT form; because the Galois maps are permutations in that
form, many rotations of one ciphertext can share one ModUp (hoisting) and
apply the permutation to the extended digits afterwards.
"""

from __future__ import annotations

import math

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
        self._p_inv = {}
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

    def inner(self, ext, key, level, perm=None):
        """Sum over digits of ext_j[..., perm] * (b_j, a_j) -> (2, |P|+limbs, N) over P, Q_l."""
        rows = self.n_p + self.params.limbs_at(level)
        qc = self.ring.q_col(self.rows(level))
        if self.ring._gpu:
            from ..backend import kernels

            return kernels.ks_inner(ext, key, qc, rows, perm)
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
            for c, k in ((0, key.b), (1, key.a)):
                if j == 0:
                    xp.multiply(e, k[j, :rows], out=acc[c])
                else:
                    xp.multiply(e, k[j, :rows], out=prod)
                    acc[c] += prod
            pending += 1
            if pending == 4:
                acc %= qc
                pending = 1
        acc %= qc
        return acc

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
        limbs = self.params.limbs_at(level)
        q_idx = list(range(limbs))
        p_coeff = ring.intt(acc[..., : self.n_p, :], self.p_idx)
        converter = self._converter(("down", level), self.p_idx, q_idx)
        conv = self._centre(converter, p_coeff, converter.convert(p_coeff), level)
        conv = ring.ntt(conv, q_idx)
        qc = ring.q_col(q_idx)
        out = acc[..., self.n_p:, :] + qc - conv
        out *= self.p_inverse(level)
        out %= qc
        return add_polys(ring, out, addend, perm, qc)

    def p_inverse(self, level):
        """(limbs, 1) column of P^-1 mod q_j."""
        p_inv = self._p_inv.get(level)
        if p_inv is None:
            q = self.params.q[: self.params.limbs_at(level)]
            p_inv = self.xp.asarray(np.array([pow(self._big_p % qj, -1, qj) for qj in q],
                                             dtype=np.uint64))[:, None]
            self._p_inv[level] = p_inv
        return p_inv

    def neg_p_multiples(self, level):
        """(limbs, |P|+1) table of -v*P mod q_j for v = 0..|P|: the centring's correction."""
        table = self._neg_p_multiples.get(level)
        if table is None:
            q = self.params.q[: self.params.limbs_at(level)]
            table = self.xp.asarray(np.array([[(-k * self._big_p) % qj for k in range(self.n_p + 1)]
                                              for qj in q], dtype=np.uint64))
            self._neg_p_multiples[level] = table
        return table

    def _centre(self, converter, p_coeff, conv, level):
        """Fast conversion of x mod P gives x + v*P (0 <= v <= |P|); make it the centred x.

        Without this ModDown computes a floor (a - x - v*P)/P, off by up to |P|+1
        on both output polynomials: with the dense secret a rotation came out
        ~2^4.7 noisier than a rescale (n16-boot's chain at N=2^12), now the same.
        sum_i t_i/p_i with t_i = x_i (P/p_i)^-1 mod p_i is (x + v*P)/P for the
        smallest x >= 0, so rounding it gives the v of the centred x; summed in a
        fixed order so numpy and the device (kernels.moddown) agree bit for bit.
        """
        xp = self.xp
        t = p_coeff * converter.hat_inv
        t %= converter.src_q
        frac = None
        for i, p in enumerate(self.p):
            term = t[..., i, :].astype(np.float64) / float(p)
            frac = term if frac is None else frac + term
        v = xp.floor(frac + 0.5).astype(np.int64)  # in 0..|P|: x/P in [0, |P|) rounded
        fix = xp.moveaxis(self.neg_p_multiples(level)[:, v], 0, -2)   # (..., limbs, N): -v*P mod q_j
        qc = self.ring.q_col(range(self.params.limbs_at(level)))
        out = conv + fix                          # < 2q
        return xp.minimum(out, out - qc)          # unsigned wrap: out mod q

    def switch(self, d, key, level, addend=None):
        """(u0, u1) with u0 + u1*s ~= d * s_from (mod Q_l), plus addend (see moddown)."""
        return self.moddown(self.inner(self.modup(d, level), key, level), level, addend)


def add_polys(ring, u, addend, perm, qc):
    """u[c] + addend[c][..., perm] mod q for each c where addend[c] is not None (in place),
    by the ring's own modular sum (one fused kernel on the device)."""
    for c, x in enumerate(addend or ()):
        if x is not None:
            x = x[: u.shape[-2]]
            u[c] = ring.add_mod(u[c], x if perm is None else x[:, perm], qc)
    return u
