"""EvalMod: the homomorphic reduction of v = m/q0 + I modulo 1 (I an integer).

sin(2*pi*v) = sin(2*pi*m/q0) ~ 2*pi*m/q0 when the message ratio q0/Delta is
large. It is computed as cos(2*pi*(v - 1/4)/2^r) followed by r double-angle
steps cos(2t) = 2cos(t)^2 - 1; dividing the angle by 2^r keeps the degree
near 2*pi*K/2^r instead of 2*pi*K.

The input arrives as y = v/K' with K' = K + 1/4 (the bootstrapper folds 1/K'
into a scale, which is free), so y - 1/(4K') lies in [-1, 1] and the
function to approximate, cos(2*pi*K'*(y - 1/(4K'))/2^r), is *even* there:
it is a Chebyshev series in T_2(y) = 2y^2 - 1 of half the degree. One
squaring then replaces half of the ciphertext products of a generic series
of the same depth (T_2k(y) = T_k(T_2(y))).

Each double-angle step can multiply an error by up to 4, so the series is
asked for ~2^-44, which leaves headroom at a 2^54 scale.

Noise, not that error, sets the precision. For v near an integer the phase
2*pi*(v - 1/4)/2^r lies pi/2^(r+1) from a multiple of pi, where the cosine is
flat: an error in the series' output reaches sin(2*pi*v) multiplied by
~2^(2r+1)/pi, and a rescale error in u = 2y^2 - 1 multiplied by ~2*pi*K'^2 in
all (independent of r; a generic odd+even series in y measured the same).
Only a larger scale on those levels lowers it (params.py, n16-boot).

With the presets' message ratio q0/Delta = 2^8, sin(2*pi*m/q0) is off from
2*pi*m/q0 by a relative (2*pi*m/q0)^2/6, up to 2^-12.7 for a message whose
coefficients reach Delta (e.g. a constant vector of ones): random slots have
tiny coefficients and never show it, real activations do. The optional
arcsine step c + a*c^3 (2 levels) removes most of it. Its domain is what holds
for every input: slots |z| <= 1 give coefficients |m_j| <= 1 (each is a mean
of the slots times roots of unity, N/2 of them and their conjugates), so
s = 2*pi*m/q0 stays within s_max = 2*pi*Delta/q0, and `a` is the minimax
coefficient there (arcsine_cubic), not the Taylor 1/6. The Taylor step leaves
3*s^5/40 at the edge: 2^-21.1 of the message at n16-boot's ratio 2^7 (message
boost), which a constant vector of ones showed as 20.4-20.5 bits on one H200
while uniform slots gave 21.8-22.1; the minimax one leaves 2^-24.1 there
(2^-28.1 at the ratio 2^8).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.polynomial import chebyshev as C

from ..polynomial import ChebyshevSeries


@lru_cache(maxsize=None)
def arcsine_cubic(s_max: float) -> float:
    """The a of the arcsine step c + a*c^3 (c = sin s) that minimises max |c + a*c^3 - s|
    over |s| <= s_max; 1/6 (Taylor) without a range. The error is a maximum of functions
    affine in a, so convex in a: a ternary search finds it."""
    if not s_max:
        return 1.0 / 6.0
    s = np.linspace(0.0, s_max, 4097)
    c = np.sin(s)

    def worst(a):
        return np.max(np.abs(c + a * c ** 3 - s))

    # the Taylor remainder is -3 s^5 / 40: the best a lies above 1/6 by less than 0.1 s_max^2
    lo, hi = 1.0 / 6.0, 1.0 / 6.0 + 0.1 * s_max * s_max
    for _ in range(100):
        m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        if worst(m1) < worst(m2):
            hi = m2
        else:
            lo = m1
    return (lo + hi) / 2


class EvalMod:
    def __init__(self, k_range: float, double_angle: int, degree: int | None = None,
                 target_error: float = 2.0 ** -44, arcsine: bool = False):
        self.arcsine = bool(arcsine)
        self.k_range = float(k_range)
        self.k_eff = self.k_range + 0.25
        self.double_angle = int(double_angle)
        angle = 2.0 * np.pi * self.k_eff / 2.0 ** self.double_angle

        def f_of_u(u):  # cos(angle * y) with u = 2y^2 - 1, i.e. y = sqrt((u+1)/2)
            return np.cos(angle * np.sqrt(np.clip((u + 1.0) / 2.0, 0.0, None)))

        grid = np.cos(np.linspace(0, np.pi, 4001))
        if degree is None:
            # smallest 2^j - 1 degree (those fill their depth) meeting the target
            for j in range(2, 8):
                degree = (1 << j) - 1
                c = C.chebinterpolate(f_of_u, degree)
                if np.max(np.abs(C.chebval(grid, c) - f_of_u(grid))) <= target_error:
                    break
        self.series = ChebyshevSeries(C.chebinterpolate(f_of_u, degree), -1.0, 1.0)

    @property
    def input_divisor(self) -> float:
        """The bootstrapper hands over v / input_divisor."""
        return self.k_eff

    @property
    def depth(self) -> int:
        return 1 + self.series.depth(min_depth=True) + self.double_angle + (2 if self.arcsine else 0)

    def reference(self, y, s_max=None):
        """Float64 model of the encrypted circuit (same polynomial, same steps)."""
        y = np.asarray(y) - 0.25 / self.k_eff
        c = self.series(2.0 * y * y - 1.0)
        for _ in range(self.double_angle):
            c = 2.0 * c * c - 1.0
        return c + arcsine_cubic(s_max) * c ** 3 if self.arcsine else c

    def evaluate(self, ev, ct, s_max=None):
        """ct holds y = v/K' on the table scale; returns sin(2*pi*v) (arcsine: 2*pi*frac(v),
        its step fitted to |2*pi*frac(v)| <= s_max)."""
        y = ev.add_const(ct, -0.25 / self.k_eff)
        u = ev.add_const(ev.mul_int(ev.square(y, rescale=True), 2), -1.0)
        c = ev.evaluate_chebyshev(u, self.series, min_depth=True)
        for _ in range(self.double_angle):
            c = ev.add_const(ev.mul_int(ev.square(c, rescale=True), 2), -1.0)
        if self.arcsine:
            c2 = ev.square(c, rescale=True)
            c3 = ev.mul(ev.mul_const(c, arcsine_cubic(s_max), rescale=True), c2, rescale=True)
            c = ev.add(c3, c)
        return c


def default_k_range(n: int, hamming_weight: int | None) -> int:
    """Bound on |I| for ModRaise: I_j is a sum of h+1 terms uniform in [-1/2, 1/2].

    Seven standard deviations (sigma = sqrt((h+1)/12)) keeps the chance that any
    of the N coefficients leaves the interval below ~2^-20 for N <= 2^16.
    """
    h = hamming_weight if hamming_weight is not None else (2 * n) // 3
    sigma = math.sqrt((h + 1) / 12.0)
    return int(math.ceil(7.0 * sigma))
