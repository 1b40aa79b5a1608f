"""Polynomial evaluation in the Chebyshev basis (baby-step giant-step).

p(y) = sum c_k T_k(y) on y = (2x - a - b)/(b - a). Baby steps T_1..T_m and
giant steps T_m, T_2m, T_4m, ... are computed with T_2k = 2T_k^2 - 1 and
T_{2k+1} = 2T_k T_{k+1} - T_1; p is split recursively as q*T_G + r using
T_{G+j} = 2 T_G T_j - T_{G-j}, so the number of ciphertext products is
O(sqrt(d)) + O(d/m). Depth: ceil(log2(d+1)) with m = 2 (`min_depth=True`)
and one more with larger baby steps (fewer products); plus one for the
change of interval unless [a, b] = [-1, 1]. `ChebyshevSeries.depth()`
reports exactly what `evaluate_chebyshev` uses.

A series deeper than the ciphertext's levels is evaluated with a `need`
hook: need(ct, levels, key, bound) returns ct with at least `levels` levels
left (a refresh, by bootstrapping or otherwise), `key` naming the value
(T<k> for a power, q/r<...> for the split's parts) and `bound` its largest
|value| for inputs in [-1, 1] (|T_k| <= 1; a part's sum of |coefficients|).
Every product asks for its operands first, so any degree fits any budget.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import chebyshev as C

_TINY = 1e-15


class ChebyshevSeries:
    def __init__(self, coeffs, a: float = -1.0, b: float = 1.0):
        self.coeffs = np.asarray(coeffs, dtype=np.float64)
        if self.coeffs.ndim != 1 or self.coeffs.size == 0:
            raise ValueError("coefficients must be a non-empty vector")
        if not b > a:
            raise ValueError("interval must have a < b")
        self.a, self.b = float(a), float(b)

    @classmethod
    def interpolate(cls, f, a: float, b: float, degree: int) -> "ChebyshevSeries":
        """Interpolant of f at the Chebyshev nodes of [a, b] (near-minimax)."""
        coeffs = C.chebinterpolate(lambda y: f((y * (b - a) + a + b) / 2.0), degree)
        return cls(coeffs, a, b)

    @property
    def degree(self) -> int:
        return self.coeffs.size - 1

    def __call__(self, x):
        """Plain float64 evaluation, the reference the encrypted result is compared with."""
        y = (2.0 * np.asarray(x) - self.a - self.b) / (self.b - self.a)
        return C.chebval(y, self.coeffs)

    def needs_affine(self) -> bool:
        return not (self.a == -1.0 and self.b == 1.0)

    def baby_size(self, min_depth: bool) -> int:
        k = max(1, math.ceil(math.log2(self.degree + 1)))
        return 2 if min_depth or k <= 2 else 1 << math.ceil(k / 2)

    def depth(self, min_depth: bool = True) -> int:
        k = max(1, math.ceil(math.log2(self.degree + 1)))
        extra = 0 if self.baby_size(min_depth) == 2 else 1
        return k + extra + (1 if self.needs_affine() else 0)


def evaluate_chebyshev(ev, ct, series: ChebyshevSeries, min_depth: bool = True, need=None):
    d = series.degree
    if need is None:
        if series.depth(min_depth) > ct.level:
            raise ValueError(f"polynomial of degree {d} needs {series.depth(min_depth)} levels, "
                             f"ciphertext has {ct.level}")

        def need(x, levels, key, bound):
            return x
    elif series.needs_affine():
        raise ValueError("a refreshed evaluation takes its series on [-1, 1] (fold the change of interval)")
    if series.needs_affine():
        scale = 2.0 / (series.b - series.a)
        y = ev.add_const(ev.mul_const(ct, scale, rescale=True), -(series.a + series.b) / (series.b - series.a))
    else:
        y = ct
    if d == 0:
        return ev.add_const(ev.mul_const(y, 0.0, rescale=True), series.coeffs[0])
    m = min(series.baby_size(min_depth), 1 << math.ceil(math.log2(d + 1)))
    T = {1: y}

    def power(k, levels=1):
        """T_k with `levels` left, refreshed (and kept refreshed) if it has fewer."""
        T[k] = need(cheb(k), levels, f"T{k}", 1.0)
        return T[k]

    def cheb(k):
        if k in T:
            return T[k]
        if k % 2 == 0:
            h = power(k // 2)
            T[k] = ev.add_const(ev.mul_int(ev.square(h, rescale=True), 2), -1.0)
        else:
            lo, hi = power(k // 2), power(k // 2 + 1)
            prod = ev.mul_int(ev.mul(lo, hi, rescale=True), 2)
            T[k] = ev.sub(prod, ev.adjust(cheb(1), prod.level) if cheb(1).level > prod.level else cheb(1))
        return T[k]

    for k in range(2, m):
        cheb(k)
    giants = []
    g = m
    while g <= d:
        cheb(g)
        giants.append(g)
        g *= 2

    def baby(coeffs):
        terms = [(k, c) for k, c in enumerate(coeffs) if k >= 1 and abs(c) > _TINY]
        if not terms:
            terms = [(1, 0.0)]
        for k, _ in terms:
            power(k)
        level = min(T[k].level for k, _ in terms)
        acc = None
        for k, c in terms:
            t = ev.adjust(T[k], level)
            term = ev.mul_const(t, c)
            acc = term if acc is None else ev.add(acc, term)
        acc = ev.add_const(acc, coeffs[0]) if abs(coeffs[0]) > 0 else acc
        return ev.rescale(acc)

    def recurse(coeffs, giant_idx, path=""):
        if len(coeffs) <= m or giant_idx < 0:
            return baby(coeffs)
        G = giants[giant_idx]
        if len(coeffs) - 1 < G:
            return recurse(coeffs, giant_idx - 1, path)
        deg = len(coeffs) - 1
        q = np.zeros(deg - G + 1)
        q[0] = coeffs[G]
        q[1:] = 2.0 * np.asarray(coeffs[G + 1:])
        r = np.array(coeffs[:G], dtype=np.float64)
        for j in range(1, deg - G + 1):
            r[G - j] -= coeffs[G + j]
        # the path names this split uniquely (refresh tags seed re-encryptions)
        qv = need(recurse(q, giant_idx - 1, path + "q"), 1, f"q{path}", float(np.abs(q).sum()))
        rv = recurse(r, giant_idx - 1, path + "r")
        prod = ev.mul(qv, power(G), rescale=True)
        return ev.add(prod, rv)

    return recurse(list(series.coeffs), len(giants) - 1)
