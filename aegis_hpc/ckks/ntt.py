"""Negacyclic NTT over Z_q[X]/(X^N+1), vectorised over every limb at once.

Forward: Cooley-Tukey with merged psi twiddles (bit-reversed output);
inverse: Gentleman-Sande. Output index i holds the evaluation at
psi^(2*brv(i)+1); `automorphism_permutation` relies on that order, so the
Galois maps X -> X^g are plain gathers in the evaluation domain.
Arrays are uint64 holding values < q < 2^31, so a*b < 2^62 never wraps.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..backend import is_gpu as _is_gpu
from .primes import primitive_root_2n


def bit_reverse(n_bits: int) -> np.ndarray:
    idx = np.arange(1 << n_bits, dtype=np.int64)
    rev = np.zeros_like(idx)
    for b in range(n_bits):
        rev |= ((idx >> b) & 1) << (n_bits - 1 - b)
    return rev


class RingTables:
    """Per-prime NTT tables for a modulus list (the whole QP chain of a parameter set)."""

    def __init__(self, primes, log_n: int):
        self.xp = get_xp()
        self.log_n = log_n
        self.n = 1 << log_n
        self.primes = tuple(int(q) for q in primes)
        n, two_n = self.n, 2 * self.n
        rev = bit_reverse(log_n)
        psi_rev = np.empty((len(self.primes), n), dtype=np.uint64)
        ipsi_rev = np.empty_like(psi_rev)
        for i, q in enumerate(self.primes):
            psi = primitive_root_2n(q, two_n)
            powers = _powers(psi, n, q)
            ipowers = _powers(pow(psi, -1, q), n, q)
            psi_rev[i] = powers[rev]
            ipsi_rev[i] = ipowers[rev]
        xp = self.xp
        q_col = np.array(self.primes, dtype=np.uint64)[:, None]
        ninv = np.array([pow(n, -1, q) for q in self.primes], dtype=np.uint64)
        self._psi = xp.asarray(psi_rev)
        self._ipsi = xp.asarray(ipsi_rev)
        # Shoup quotients floor(w * 2^32 / q): a*w mod q without a division
        self._psi_sh = xp.asarray((psi_rev << np.uint64(32)) // q_col)
        self._ipsi_sh = xp.asarray((ipsi_rev << np.uint64(32)) // q_col)
        self._q = xp.asarray(q_col[:, 0])
        self._ninv = xp.asarray(ninv)
        self._ninv_sh = xp.asarray((ninv << np.uint64(32)) // q_col[:, 0])
        self._sub: dict = {}
        self._scratch: dict = {}
        self._gpu = _is_gpu()
        self._perm: dict = {}
        self.eval_exponents = (2 * rev + 1).astype(np.int64)

    def _tables(self, idx):
        key = tuple(idx)
        t = self._sub.get(key)
        if t is None:
            sel = self.xp.asarray(np.array(key, dtype=np.int64))
            t = (self._q[sel][:, None], self._psi[sel], self._ipsi[sel], self._ninv[sel][:, None],
                 self._psi_sh[sel], self._ipsi_sh[sel], self._ninv_sh[sel][:, None])
            self._sub[key] = t
        return t

    def _bufs(self, shape):
        # three half-size scratch arrays per shape, reused across calls (page faults of
        # fresh temporaries cost as much as the arithmetic at N = 2^15)
        b = self._scratch.get(shape)
        if b is None:
            if len(self._scratch) > 8:
                self._scratch.clear()
            b = tuple(self.xp.empty(shape, dtype=np.uint64) for _ in range(3))
            self._scratch[shape] = b
        return b

    def q_col(self, idx):
        """Moduli of `idx` as an (L, 1) uint64 column for broadcasting against (..., L, N)."""
        return self._tables(idx)[0]

    def mul_mod(self, a, b, qc):
        """a * b mod q for residues below q < 2^31 (one fused kernel on the GPU)."""
        if self._gpu:
            from ..backend import kernels

            return kernels.mul_mod(a, b, qc)
        return a * b % qc

    def add_mod(self, a, b, qc):
        if self._gpu:
            from ..backend import kernels

            return kernels.add_mod(a, b, qc)
        return (a + b) % qc

    def sub_mod(self, a, b, qc):
        if self._gpu:
            from ..backend import kernels

            return kernels.sub_mod(a, b, qc)
        return (a + qc - b) % qc

    def mul_add(self, a, b, c, qc, out=None):
        """a * b + c mod q (into `out` if given): one fused kernel on the GPU."""
        if self._gpu:
            from ..backend import kernels

            return kernels.mul_add(a, b, c, qc, out)
        r = (a.astype(np.uint64) * b % qc + c) % qc
        if out is None:
            return r
        out[...] = r
        return out

    def add_first(self, data, b, qc, negate=False):
        """Ciphertext data (2, L, N) with b added to (subtracted from) polynomial 0 only."""
        if self._gpu:
            from ..backend import kernels

            return kernels.add_first(data, b, qc, negate)
        out = data.copy()
        out[0] = (out[0] + (qc - b if negate else b)) % qc
        return out

    def ntt(self, a, idx):
        """Forward NTT of a (..., L, N) array whose limbs are the primes `idx`; returns a new array."""
        if self._gpu:
            from ..backend import kernels

            return kernels.ntt(self, a, idx)
        return self._ntt_ref(a, idx)

    def intt(self, a, idx):
        if self._gpu:
            from ..backend import kernels

            return kernels.intt(self, a, idx)
        return self._intt_ref(a, idx)

    def _ntt_ref(self, a, idx):
        """Reference NTT (numpy or any xp): Cooley-Tukey, Shoup products, values kept in [0, q)."""
        xp = self.xp
        q, psi, _, _, psi_sh, _, _ = self._tables(idx)
        n = self.n
        a = xp.array(a, dtype=np.uint64, copy=True)
        lead = a.shape[:-2]
        limbs = a.shape[-2]
        s1, s2, s3 = self._bufs(lead + (limbs, n // 2))
        m, t = 1, n
        q3 = q[:, :, None]
        while m < n:
            t //= 2
            v = a.reshape(*lead, limbs, m, 2, t)
            lo, hi = v[..., 0, :], v[..., 1, :]
            shp = lead + (limbs, m, t)
            b1, b2, b3 = s1.reshape(shp), s2.reshape(shp), s3.reshape(shp)
            w, ws = psi[:, m:2 * m, None], psi_sh[:, m:2 * m, None]
            _shoup_mul(xp, hi, w, ws, q3, out=b2, tmp=b1)
            xp.subtract(lo, b2, out=b3)
            xp.add(b3, q3, out=b3)
            xp.add(lo, b2, out=lo)
            _reduce_once(xp, lo, q3, out=lo, tmp=b1)
            _reduce_once(xp, b3, q3, out=hi, tmp=b1)
            m *= 2
        return a

    def _intt_ref(self, a, idx):
        xp = self.xp
        q, _, ipsi, ninv, _, ipsi_sh, ninv_sh = self._tables(idx)
        n = self.n
        a = xp.array(a, dtype=np.uint64, copy=True)
        lead = a.shape[:-2]
        limbs = a.shape[-2]
        s1, s2, s3 = self._bufs(lead + (limbs, n // 2))
        q3 = q[:, :, None]
        t, h = 1, n // 2
        while h >= 1:
            v = a.reshape(*lead, limbs, h, 2, t)
            lo, hi = v[..., 0, :], v[..., 1, :]
            shp = lead + (limbs, h, t)
            b1, b2, b3 = s1.reshape(shp), s2.reshape(shp), s3.reshape(shp)
            w, ws = ipsi[:, h:2 * h, None], ipsi_sh[:, h:2 * h, None]
            xp.subtract(lo, hi, out=b3)
            xp.add(b3, q3, out=b3)               # lo - hi + q in [1, 2q): < 2^32, fine for Shoup
            xp.add(lo, hi, out=lo)
            _reduce_once(xp, lo, q3, out=lo, tmp=b1)
            _shoup_mul(xp, b3, w, ws, q3, out=hi, tmp=b1)
            t *= 2
            h //= 2
        flat = a.reshape(*lead, limbs, n)
        b1 = s1.reshape(lead + (limbs, n // 2))
        for half in (flat[..., : n // 2], flat[..., n // 2:]):
            _shoup_mul(xp, half, ninv, ninv_sh, q, out=half, tmp=b1)  # elementwise: aliasing is safe
        return a

    def automorphism_permutation(self, galois_element: int):
        """Index map p with NTT(sigma_g(a))[i] = NTT(a)[p[i]] for sigma_g: X -> X^g, as int32:
        the GPU kernels' index type (half the bytes of int64 they would read per gather)."""
        perm = self._perm.get(galois_element)
        if perm is None:
            two_n = 2 * self.n
            e = self.eval_exponents
            pos = np.empty(two_n, dtype=np.int64)
            pos[e] = np.arange(self.n)
            perm = self.xp.asarray(pos[(e * galois_element) % two_n].astype(np.int32))
            self._perm[galois_element] = perm
        return perm


_SHIFT32 = np.uint64(32)


def _shoup_mul(xp, x, w, w_shoup, q, out, tmp):
    """out = x*w mod q for x < 2^32, with w_shoup = floor(w * 2^32 / q) precomputed.

    r = x*w - floor(x*w_shoup / 2^32)*q lies in [0, 2q), so one conditional
    subtraction finishes the reduction.
    """
    xp.multiply(x, w_shoup, out=tmp)
    xp.right_shift(tmp, _SHIFT32, out=tmp)
    xp.multiply(tmp, q, out=tmp)
    xp.multiply(x, w, out=out)
    xp.subtract(out, tmp, out=out)
    _reduce_once(xp, out, q, out=out, tmp=tmp)


def _reduce_once(xp, x, q, out, tmp):
    """out = x mod q for x < 2q: the unsigned minimum of x and x - q (which wraps when x < q)."""
    xp.subtract(x, q, out=tmp)
    xp.minimum(x, tmp, out=out)


def _powers(x: int, n: int, q: int) -> np.ndarray:
    out = np.ones(n, dtype=np.uint64)
    k = 1
    while k < n:  # doubling: out[k:2k] = out[:k] * x^k
        out[k:2 * k] = out[:k] * np.uint64(pow(x, k, q)) % np.uint64(q)
        k *= 2
    return out
