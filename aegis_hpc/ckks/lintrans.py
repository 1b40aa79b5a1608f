"""Plaintext-matrix x encrypted-vector products by the baby-step giant-step diagonal method.

y = sum_k diag_k * rot(x, k) with diag_k[i] = M[i, (i+k) mod n]. Writing
k = g*n1 + b, y = sum_g rot( sum_b rot(diag_k, -g*n1) * rot(x, b), g*n1 ):
the n1 baby rotations of x share one ModUp (hoisting), and only about
n/n1 giant rotations remain, so ~2*sqrt(n) key switches instead of n.
"""

from __future__ import annotations

import math

import numpy as np


class LinearTransform:
    def __init__(self, matrix=None, diagonals: dict | None = None, slots: int | None = None,
                 baby_steps: int | None = None):
        if (matrix is None) == (diagonals is None):
            raise ValueError("give exactly one of matrix or diagonals")
        if matrix is not None:
            m = np.asarray(matrix)
            if m.ndim != 2:
                raise ValueError("matrix must be 2-D")
            n = slots or 1 << max(0, int(max(m.shape) - 1).bit_length())
            if max(m.shape) > n:
                raise ValueError(f"{m.shape} matrix does not fit {n} slots")
            full = np.zeros((n, n), dtype=m.dtype)
            full[: m.shape[0], : m.shape[1]] = m
            rows = np.arange(n)
            diagonals = {}
            for k in range(n):
                d = full[rows, (rows + k) % n]
                if np.any(d != 0):
                    diagonals[k] = d
        else:
            n = slots
            if n is None:
                raise ValueError("slots is required with diagonals")
            diagonals = {int(k) % n: np.asarray(v) for k, v in diagonals.items()}
        self.slots = n
        self.diagonals = diagonals
        count = max(1, len(diagonals))
        self.n1 = baby_steps or 1 << max(0, math.ceil(math.log2(math.sqrt(count))))
        self._plaintexts = {}

    def _split(self):
        groups: dict[int, list[int]] = {}
        for k in sorted(self.diagonals):
            groups.setdefault(k - k % self.n1, []).append(k)
        return groups

    def rotations(self) -> list[int]:
        """Rotation steps whose Galois keys this transform needs."""
        groups = self._split()
        baby = {k % self.n1 for ks in groups.values() for k in ks}
        return sorted((baby | set(groups)) - {0})

    def _encoded(self, ev, level, scale):
        key = (level, scale)
        pts = self._plaintexts.get(key)
        if pts is None:
            # pre-rotate by -giant so the giant rotation can come after the sum
            order = [(k, giant) for giant, ks in self._split().items() for k in ks]
            rows = np.stack([np.roll(self.diagonals[k], giant) for k, giant in order])
            pts = dict(zip((k for k, _ in order), ev.ctx.encode_many(rows, level=level, scale=scale,
                                                                     slots=self.slots)))
            self._plaintexts = {key: pts}  # keep one level's encoding: weights are large
        return pts

    def evaluate(self, ev, ct, rescale: bool = True, share: tuple | None = None):
        """share=(i, n): only giant groups i, i+n, ... and no rescale -- the
        partial sum of tensor parallelism. Partials of i = 0..n-1 add up (mod
        each prime) to exactly the unrescaled full result, because every
        group's rotation is computed whole on one rank."""
        if ct.slots != self.slots:
            raise ValueError(f"transform for {self.slots} slots applied to a {ct.slots}-slot ciphertext")
        groups = self._split()
        scale = ev.rescale_target_scale(ct.scale, ct.level)
        if share is not None:
            groups = {g: ks for j, (g, ks) in enumerate(groups.items()) if j % share[1] == share[0]}
            if not groups:
                return ct.with_data(ev.xp.zeros_like(ct.data), scale=ct.scale * scale)
            rescale = False
        pts = self._encoded(ev, ct.level, scale)
        babies = ev.rotate_hoisted(ct, sorted({k % self.n1 for ks in groups.values() for k in ks}))
        total = None
        for giant, ks in groups.items():
            inner = None
            for k in ks:
                term = ev.mul_plain(babies[k % self.n1], pts[k])
                inner = term if inner is None else ev.add(inner, term)
            if giant:
                inner = ev.rotate(inner, giant)
            total = inner if total is None else ev.add(total, inner)
        if total is None:
            raise ValueError("empty linear transform")
        return ev.rescale(total) if rescale else total
