"""Homomorphic DFTs of bootstrapping: CoeffToSlot and SlotToCoeff.

Decoding is z = U w with U[j, k] = zeta_j^k, zeta_j = exp(i*pi*5^j/N) and
w = m[:n] + i*m[n:2n] (for n = N/2 slots; zeta_j^n = i folds the top half of
the coefficients into the imaginary part). U factors as B_L ... B_1 P with P
the bit-reversal permutation and each B_s a radix-2 butterfly, which in the
diagonal form y = sum_k d_k * rot(x, k) has only the diagonals 0 and +-2^(s-1).
Because EvalMod works slot by slot, CoeffToSlot may leave the coefficients in
bit-reversed order and SlotToCoeff consume them in that order, so P is never
evaluated. Consecutive butterflies are multiplied together in the clear so
that each level of the circuit carries a few stages ("level collapsing"):
more stages per level means fewer levels but more diagonals (2^(k+1)-1 for k
merged stages), hence more rotations.

Sparse packing (n < N/2 slots, the vector replicated N/(2n) times) uses the
same factorisation over n points: the replicas all see the same matrix.
"""

from __future__ import annotations

import math

import numpy as np


def _omega(n_ring: int, length: int, j: np.ndarray) -> np.ndarray:
    """Twiddle of butterfly `length`, position j: zeta^(5^j mod 4*length) at order 4*length."""
    two_n = 2 * n_ring
    rot = np.array([pow(5, int(x), two_n) for x in j], dtype=np.int64)
    lenq = 4 * length
    return np.exp(2j * np.pi * (rot % lenq) / lenq)


def butterfly(n_ring: int, slots: int, stage: int, inverse: bool = False) -> dict:
    """Diagonals {k: vector} of butterfly B_stage (stage 1..log2 slots), or of its inverse."""
    length = 1 << stage
    half = length // 2
    pos = np.arange(slots)
    j = pos % length
    low = j < half
    w = _omega(n_ring, length, np.where(low, j, j - half))
    d0 = np.zeros(slots, complex)
    dp = np.zeros(slots, complex)
    dm = np.zeros(slots, complex)
    if not inverse:
        # y_lo = x_lo + w x_hi ; y_hi = x_lo - w x_hi
        d0[low], dp[low] = 1.0, w[low]
        dm[~low], d0[~low] = 1.0, -w[~low]
    else:
        # x_lo = (y_lo + y_hi)/2 ; x_hi = (y_lo - y_hi)/(2w)
        d0[low], dp[low] = 0.5, 0.5
        dm[~low], d0[~low] = 0.5 / w[~low], -0.5 / w[~low]
    out: dict = {}
    for k, d in ((0, d0), (half % slots, dp), ((-half) % slots, dm)):
        out[k] = out.get(k, 0) + d
    return out


def compose(a: dict, b: dict, slots: int) -> dict:
    """Diagonals of the product A @ B (apply B first)."""
    out: dict = {}
    for ka, da in a.items():
        for kb, db in b.items():
            k = (ka + kb) % slots
            out[k] = out.get(k, 0) + da * np.roll(db, -ka)
    return {k: v for k, v in out.items() if np.max(np.abs(v)) > 1e-300}


def split_stages(count: int, levels: int) -> list[int]:
    """Stage counts per level, the larger groups first."""
    levels = max(1, min(levels, count))
    base, extra = divmod(count, levels)
    return [base + (1 if i < extra else 0) for i in range(levels)]


def coeff_to_slot_matrices(n_ring: int, slots: int, levels: int, factor: complex = 1.0) -> list[dict]:
    """Matrices (in order of application) of factor * P U^-1 over `levels` levels."""
    log_s = int(math.log2(slots))
    stages = list(range(log_s, 0, -1))  # B_L^-1 is applied first
    mats, at = [], 0
    for cnt in split_stages(log_s, levels):
        m = None
        for s in stages[at:at + cnt]:
            b = butterfly(n_ring, slots, s, inverse=True)
            m = b if m is None else compose(b, m, slots)
        at += cnt
        mats.append(m)
    mats[-1] = {k: v * factor for k, v in mats[-1].items()}
    return mats


def slot_to_coeff_matrices(n_ring: int, slots: int, levels: int, factor: complex = 1.0) -> list[dict]:
    """Matrices (in order of application) of factor * U P^-1 over `levels` levels."""
    log_s = int(math.log2(slots))
    stages = list(range(1, log_s + 1))
    mats, at = [], 0
    for cnt in split_stages(log_s, levels)[::-1]:
        m = None
        for s in stages[at:at + cnt]:
            b = butterfly(n_ring, slots, s)
            m = b if m is None else compose(b, m, slots)
        at += cnt
        mats.append(m)
    mats[0] = {k: v * factor for k, v in mats[0].items()}
    return mats


def apply_plain(mat: dict, x: np.ndarray) -> np.ndarray:
    """Reference evaluation of y = sum_k d_k * rot(x, k) on a clear vector."""
    y = np.zeros(x.shape, complex)
    for k, d in mat.items():
        y += d * np.roll(x, -k)
    return y


# ---- baby-step giant-step plan -------------------------------------------------------
class BsgsPlan:
    """How one sparse-diagonal matrix is evaluated: k = giant + baby, babies hoisted.

    Diagonal indices are taken in the signed range (-n/2, n/2] and divided by
    their common stride (the later butterflies only touch multiples of 2^s),
    then the baby-step size is chosen to minimise the number of rotations.
    """

    def __init__(self, mat: dict, slots: int):
        self.slots = slots
        signed = {self._signed(k): v for k, v in mat.items()}
        nz = [abs(k) for k in signed if k]
        stride = math.gcd(*nz) if nz else 1
        best = None
        for lg in range(0, int(math.log2(slots)) + 1):
            n1 = 1 << lg
            babies = {(k // stride) % n1 * stride for k in signed}
            giants = {k - (k // stride) % n1 * stride for k in signed}
            cost = len(babies - {0}) + len(giants - {0})
            if best is None or cost < best[0]:
                best = (cost, n1)
        n1 = best[1]
        self.groups: dict[int, list[tuple[int, np.ndarray]]] = {}
        for k, v in sorted(signed.items()):
            b = (k // stride) % n1 * stride
            g = k - b
            # the giant rotation comes after the sum, so the diagonal is pre-rotated by -g
            self.groups.setdefault(g, []).append((b, np.roll(v, g)))
        self.babies = sorted({b for items in self.groups.values() for b, _ in items})

    def _signed(self, k):
        k %= self.slots
        return k - self.slots if k > self.slots // 2 else k

    def rotations(self) -> set[int]:
        return ({b for b in self.babies if b} | {g for g in self.groups if g})


def rotations_needed(mats, slots) -> set[int]:
    out: set[int] = set()
    for m in mats:
        out |= BsgsPlan(m, slots).rotations()
    return out


# ---- sparse packing: n complex coefficients <-> 2n real slots -------------------------
def _accumulate(out: dict, idx: np.ndarray, rows: np.ndarray, vals: np.ndarray, size: int):
    for k in np.unique(idx):
        sel = idx == k
        d = out.setdefault(int(k), np.zeros(size, complex))
        d[rows[sel]] += vals[sel]


def lift_split(mat: dict, slots: int) -> dict:
    """n-slot matrix M -> 2n-slot matrix giving [M x, -i M x] on an n-periodic input.

    After it, ct + conj(ct) holds 2*Re(Mx) in slots [0, n) and 2*Im(Mx) in
    [n, 2n): both halves of the coefficients in one real ciphertext, so
    sparse bootstrapping runs EvalMod once, not twice.
    """
    two = 2 * slots
    c = np.concatenate([np.ones(slots), np.full(slots, -1j)])
    # an n-periodic input makes rot_2n(x, k) = rot_n(x, k), so the diagonals just tile
    return {k % two: c * np.tile(d, 2) for k, d in ((dft_signed(k, slots), d) for k, d in mat.items())}


def lift_merge(mat: dict, slots: int) -> dict:
    """n-slot matrix M -> 2n-slot matrix giving M(a + i b), n-periodic, from u = [a, b]."""
    two = 2 * slots
    j = np.arange(two)
    s = j % slots
    out: dict = {}
    for k, d in mat.items():
        t = (s + k) % slots
        _accumulate(out, (t - j) % two, j, d[s], two)            # a_t = u_t
        _accumulate(out, (t + slots - j) % two, j, 1j * d[s], two)  # i*b_t = i*u_(t+n)
    return out


def dft_signed(k: int, slots: int) -> int:
    k %= slots
    return k - slots if k > slots // 2 else k
