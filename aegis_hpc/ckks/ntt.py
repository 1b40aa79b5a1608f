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
        self._psi = xp.asarray(psi_rev)
        self._ipsi = xp.asarray(ipsi_rev)
        self._q = xp.asarray(np.array(self.primes, dtype=np.uint64))
        self._ninv = xp.asarray(np.array([pow(n, -1, q) for q in self.primes], dtype=np.uint64))
        self._sub: dict = {}
        self._perm: dict = {}
        self.eval_exponents = (2 * rev + 1).astype(np.int64)

    def _tables(self, idx):
        key = tuple(idx)
        t = self._sub.get(key)
        if t is None:
            sel = self.xp.asarray(np.array(key, dtype=np.int64))
            t = (self._q[sel][:, None], self._psi[sel], self._ipsi[sel], self._ninv[sel][:, None])
            self._sub[key] = t
        return t

    def q_col(self, idx):
        """Moduli of `idx` as an (L, 1) uint64 column for broadcasting against (..., L, N)."""
        return self._tables(idx)[0]

    def ntt(self, a, idx):
        """Forward NTT of a (..., L, N) array whose limbs are the primes `idx`; returns a new array."""
        xp = self.xp
        q, psi, _, _ = self._tables(idx)
        n = self.n
        a = a.copy()
        lead = a.shape[:-2]
        limbs = a.shape[-2]
        m, t = 1, n
        q3 = q[:, :, None]
        while m < n:
            t //= 2
            v = a.reshape(*lead, limbs, m, 2, t)
            w = psi[:, m:2 * m, None]
            hi = v[..., 1, :] * w
            hi %= q3
            lo = v[..., 0, :]
            diff = lo + q3 - hi
            lo += hi
            v[..., 0, :] = xp.where(lo >= q3, lo - q3, lo)
            v[..., 1, :] = xp.where(diff >= q3, diff - q3, diff)
            m *= 2
        return a

    def intt(self, a, idx):
        xp = self.xp
        q, _, ipsi, ninv = self._tables(idx)
        n = self.n
        a = a.copy()
        lead = a.shape[:-2]
        limbs = a.shape[-2]
        q3 = q[:, :, None]
        t, h = 1, n // 2
        while h >= 1:
            v = a.reshape(*lead, limbs, h, 2, t)
            w = ipsi[:, h:2 * h, None]
            lo = v[..., 0, :]
            hi = v[..., 1, :]
            diff = lo + q3 - hi
            s = lo + hi
            v[..., 0, :] = xp.where(s >= q3, s - q3, s)
            diff *= w
            diff %= q3
            v[..., 1, :] = diff
            t *= 2
            h //= 2
        a *= ninv
        a %= q
        return a

    def automorphism_permutation(self, galois_element: int):
        """Index map p with NTT(sigma_g(a))[i] = NTT(a)[p[i]] for sigma_g: X -> X^g."""
        perm = self._perm.get(galois_element)
        if perm is None:
            two_n = 2 * self.n
            e = self.eval_exponents
            pos = np.empty(two_n, dtype=np.int64)
            pos[e] = np.arange(self.n)
            perm = self.xp.asarray(pos[(e * galois_element) % two_n])
            self._perm[galois_element] = perm
        return perm


def _powers(x: int, n: int, q: int) -> np.ndarray:
    out = np.ones(n, dtype=np.uint64)
    k = 1
    while k < n:  # doubling: out[k:2k] = out[:k] * x^k
        out[k:2 * k] = out[:k] * np.uint64(pow(x, k, q)) % np.uint64(q)
        k *= 2
    return out
