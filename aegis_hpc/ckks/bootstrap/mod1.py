"""EvalMod: the homomorphic reduction of v = m/q0 + I modulo 1 (I an integer).

sin(2*pi*v) = sin(2*pi*m/q0) ~ 2*pi*m/q0 when the message ratio q0/Delta is
large. It is computed as cos(2*pi*(v - 1/4)/2^r) by a Chebyshev interpolant
on |v| <= K (input pre-divided by K, so the series lives on [-1, 1] and needs
no affine level), followed by r double-angle steps cos(2t) = 2cos(t)^2 - 1:
dividing the angle by 2^r keeps the interpolant's degree near 2*pi*K/2^r
instead of 2*pi*K. Each double-angle step can multiply an error by up to 4,
so the interpolant is asked for ~2^-45, which leaves headroom at 50-bit scale.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import chebyshev as C

from ..polynomial import ChebyshevSeries


class EvalMod:
    def __init__(self, k_range: float, double_angle: int, degree: int | None = None,
                 target_error: float = 2.0 ** -44):
        self.k_range = float(k_range)
        self.double_angle = int(double_angle)
        scale = 2.0 ** self.double_angle
        kr = self.k_range

        def f(y):
            return np.cos(2.0 * np.pi * (kr * y - 0.25) / scale)

        if degree is None:
            # smallest 2^j - 1 degree (those fill their depth) meeting the target
            grid = np.cos(np.linspace(0, np.pi, 4001))
            for j in range(3, 9):
                degree = (1 << j) - 1
                c = C.chebinterpolate(f, degree)
                if np.max(np.abs(C.chebval(grid, c) - f(grid))) <= target_error:
                    break
        self.series = ChebyshevSeries(C.chebinterpolate(f, degree), -1.0, 1.0)

    @property
    def depth(self) -> int:
        return self.series.depth(min_depth=True) + self.double_angle

    def reference(self, y):
        """Float64 model of the encrypted circuit (same polynomial, same steps)."""
        c = self.series(np.asarray(y))
        for _ in range(self.double_angle):
            c = 2.0 * c * c - 1.0
        return c

    def evaluate(self, ev, ct):
        """ct holds y = v/K on the table scale; returns sin(2*pi*v) on the table scale."""
        c = ev.evaluate_chebyshev(ct, self.series, min_depth=True)
        for _ in range(self.double_angle):
            c = ev.add_const(ev.mul_int(ev.square(c, rescale=True), 2), -1.0)
        return c


def default_k_range(n: int, hamming_weight: int | None) -> int:
    """Bound on |I| for ModRaise: I_j is a sum of h+1 terms uniform in [-1/2, 1/2].

    Seven standard deviations (sigma = sqrt((h+1)/12)) keeps the chance that any
    of the N coefficients leaves the interval below ~2^-30 for N <= 2^16.
    """
    h = hamming_weight if hamming_weight is not None else (2 * n) // 3
    sigma = math.sqrt((h + 1) / 12.0)
    return int(math.ceil(7.0 * sigma))
