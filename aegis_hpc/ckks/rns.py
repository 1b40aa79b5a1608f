"""RNS basis conversion (fast base extension) and exact small CRT.

Fast basis conversion A -> B computes sum_i [x_i * (A/a_i)^-1]_{a_i} * (A/a_i)
mod b_j, which equals x + u*A for a small u < |A| (HPS / BEHZ "approximate"
conversion; hybrid key switching tolerates the u*A term by design).
The inner sum runs as a float64 matrix product on 16-bit halves of the
operands: each product is below 2^47 and a sum of at most 64 of them stays
below 2^53, so BLAS (or cuBLAS) computes it exactly, and the whole
conversion is two GEMMs instead of |A|*|B| elementwise passes. The
reductions after the GEMMs also stay in float64 (floor division by b_j is
exact below 2^52), because uint64 `%` is not vectorised on x86 and
dominated the conversion.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import get_xp

MAX_SOURCE_LIMBS = 32  # keeps every float64 intermediate below 2^52 (exact)


class BasisConverter:
    def __init__(self, src_primes, dst_primes):
        src = [int(x) for x in src_primes]
        dst = [int(x) for x in dst_primes]
        if len(src) > MAX_SOURCE_LIMBS:
            raise ValueError(f"basis conversion from {len(src)} limbs exceeds {MAX_SOURCE_LIMBS}")
        xp = get_xp()
        big_a = math.prod(src)
        hats = [big_a // a for a in src]
        self.src_q = xp.asarray(np.array(src, dtype=np.uint64))[:, None]
        self.dst_q = xp.asarray(np.array(dst, dtype=np.uint64))[:, None]
        self.hat_inv = xp.asarray(np.array([pow(h % a, -1, a) for h, a in zip(hats, src)],
                                           dtype=np.uint64))[:, None]
        # (|B|, |A|) matrix of (A/a_i) mod b_j, as float64 for the exact GEMM
        self.hat_mod = xp.asarray(np.array([[h % b for h in hats] for b in dst], dtype=np.float64))
        self.dst_f = np.array(dst, dtype=np.float64)[:, None]

    def convert(self, x):
        """x: (..., |A|, N) coefficient-form residues -> (..., |B|, N)."""
        xp = get_xp()
        if getattr(xp, "__name__", "") == "cupy":
            from ..backend import kernels

            return kernels.basis_convert(self, x)
        t = x * self.hat_inv
        t %= self.src_q
        lo = (t & np.uint64(0xFFFF)).astype(np.float64)
        hi = (t >> np.uint64(16)).astype(np.float64)
        y_hi = self._float_mod(self._gemm(hi))   # < 2^31
        y_hi *= 65536.0                          # < 2^47
        y_hi += self._gemm(lo)                   # < 2^47 + 2^52
        return self._float_mod(y_hi).astype(np.uint64)

    def _gemm(self, t):
        # einsum, not matmul: these GEMMs have an inner dimension of a few limbs, where
        # a threaded BLAS spends 40x longer synchronising than computing (measured with
        # two MPI ranks on two cores), and einsum runs the same exact sums single-threaded.
        return np.einsum("ba,...an->...bn", self.hat_mod, t, optimize=False)

    def _float_mod(self, y):
        """y mod b_j for integer-valued float64 0 <= y < 2^52, exact, in place.

        The division is correctly rounded and y/b_j is at least 1/y away from
        the next integer above it, which is more than the rounding step below
        2^52, so floor(y / b_j) is the true quotient and no correction is needed.
        """
        quot = y / self.dst_f
        np.floor(quot, out=quot)
        quot *= self.dst_f
        y -= quot
        return y


def crt_centered_small(residues, primes):
    """Exact centred lift of 1 or 2 residue rows to int64 (the decryption base).

    residues: (k, N) uint64 with k = len(primes) in {1, 2}; returns int64 (N,)
    in (-Q/2, Q/2]. Two primes below 2^31 keep Q below 2^62, so Garner's
    mixed-radix form is exact in 64-bit integers.
    """
    xp = get_xp()
    if len(primes) == 1:
        q0 = int(primes[0])
        v = residues[0].astype(np.int64)
        return xp.where(v > q0 // 2, v - q0, v)
    q0, q1 = (int(x) for x in primes)
    x0, x1 = residues[0], residues[1]
    inv = np.uint64(pow(q0, -1, q1))
    t = (x1 + np.uint64(q1) - x0 % np.uint64(q1)) % np.uint64(q1)
    t = t * inv % np.uint64(q1)
    v = (x0 + t * np.uint64(q0)).astype(np.int64)
    big_q = q0 * q1
    return xp.where(v > big_q // 2, v - np.int64(big_q), v)
