"""Polynomial approximations of the non-polynomial parts, on calibrated ranges.

- GELU: Chebyshev interpolant of the erf GELU on the calibrated input range
  (widened by a margin). The map of that range onto [-1, 1] is folded into
  the FFN up-projection's weights and bias (block.PreparedModel), so the
  series is evaluated on [-1, 1] with no affine step: that level buys one
  more doubling of the degree (63 instead of 31 within the "demo" preset's
  6 levels), which is what takes MiniLM from cosine ~0.94 to ~0.9999.
- Softmax: scores are shifted by the calibrated per-layer maximum c, so the
  exponent is <= 0 (up to the margin); exp(z) = p(z)^(2^r) with p the
  interpolant of exp(z / 2^r) (range reduction by repeated squaring, as in
  THE-X / Powerformer style HE softmax); the denominator is divided by
  its calibrated bound B (so x = d/B is in (0, 1]) and inverted by
  Goldschmidt's iteration 1/x = prod_k (1 + e^(2^k)), e = 1 - x: one level
  per step, the step count set by the calibrated dynamic range of d. The
  shift c is per (layer, head), which narrows that range a lot.
- LayerNorm: 1/sqrt(var + eps) by a Chebyshev start and Newton steps
  y <- y (3 - v y^2) / 2.

Degrees are chosen so one polynomial fits one refresh period (the GELU
degree follows the parameter set's level count: 63 on "demo", 127 on
"test"); refreshes happen between steps, never inside a polynomial. The
mirror therefore depends on the parameter set, as the encrypted run does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ckks import ChebyshevSeries
from .reference import gelu as exact_gelu

DEGREES = {"exp": 15, "invsqrt": 15}
NEWTON = {"invsqrt": 3}


def _widen(lo, hi, frac, floor=0.0):
    w = max(hi - lo, 1e-3)
    return lo - frac * w - floor, hi + frac * w + floor


@dataclass
class LayerApprox:
    gelu: ChebyshevSeries      # on [-1, 1]: the input is (u - lo) * 2 / (hi - lo) - 1, see gelu_domain
    exp: ChebyshevSeries
    exp_squarings: int
    shift: np.ndarray          # per head
    inv_bound: float           # denominators are divided by this, landing in (0, 1]
    inv_iterations: int
    invsqrt1: ChebyshevSeries
    invsqrt2: ChebyshevSeries
    invsqrt_newton: int
    inv_max: float = 1.0       # largest 1/x Goldschmidt produces (calibrated)

    def exp_value(self, z):
        y = self.exp(z)
        for _ in range(self.exp_squarings):
            y = y * y
        return y


def gelu_degree(max_level: int) -> int:
    """Largest degree whose evaluation (on [-1, 1], no change of interval)
    fits one refresh period, capped at 127: wide calibrated ranges (MiniLM's
    first layers see GELU inputs in [-17, 25]) need it."""
    return max(7, min(127, (1 << max_level) - 1))


def gelu_domain(cal: dict) -> tuple:
    """GELU input range [lo, hi] of one layer; block.PreparedModel maps it onto [-1, 1]."""
    return _widen(*cal["gelu"], 0.15, 0.5)


def _on_unit(f, lo, hi):
    return lambda y: f(lo + (np.asarray(y) + 1.0) * (hi - lo) / 2.0)


def build_layer(cal: dict, degrees=None, newton=None, max_level: int = 6) -> LayerApprox:
    deg = dict(DEGREES, **(degrees or {}))
    nw = dict(NEWTON, **(newton or {}))
    dom = gelu_domain(cal)
    gu = _on_unit(exact_gelu, *dom)
    if "gelu" in deg:
        g = ChebyshevSeries.interpolate(gu, -1.0, 1.0, deg["gelu"])
    else:
        # lowest degree that is accurate on the range, within one refresh period
        ys = np.linspace(-1.0, 1.0, 4001)
        for d in (15, 31, 63, 127):
            g = ChebyshevSeries.interpolate(gu, -1.0, 1.0, d)
            if d >= gelu_degree(max_level) or np.abs(g(ys) - gu(ys)).max() < 1e-6:
                break
    c = np.asarray(cal["head_max"], dtype=np.float64)
    hmin = np.asarray(cal["head_min"], dtype=np.float64)
    # masked and padded slots hold score 0, so -c must be inside the domain too
    lo, hi = _widen(float(np.min(np.minimum(hmin, 0.0) - c)), max(0.0, float(np.max(-c))), 0.15, 0.5)
    r = max(0, min(6, math.ceil(math.log2(max((hi - lo) / 4.0, 1.0)))))
    e = ChebyshevSeries.interpolate(lambda z: np.exp(z / 2.0 ** r), lo, hi, deg["exp"])
    dlo, dhi = cal["den"]
    bound = 1.5 * dhi
    # Goldschmidt: relative error after n steps is (1 - d/bound)^(2^n)
    xmin = max(dlo / 2.0 / bound, 1e-12)
    n_inv = max(1, math.ceil(math.log2(math.log(1e-7) / math.log1p(-xmin))))

    def isq(rng):
        vlo, vhi = rng
        return ChebyshevSeries.interpolate(lambda x: 1.0 / np.sqrt(x), vlo / 2.0, vhi * 1.5, deg["invsqrt"])

    return LayerApprox(gelu=g, exp=e, exp_squarings=r, shift=c, inv_bound=bound, inv_iterations=n_inv,
                       invsqrt1=isq(cal["var1"]), invsqrt2=isq(cal["var2"]), invsqrt_newton=nw["invsqrt"],
                       inv_max=1.0 / xmin)


def build(calibration: dict, layers: int, max_level: int = 6, **kw) -> list:
    if layers > len(calibration["layers"]):
        raise ValueError(f"calibration covers {len(calibration['layers'])} layers, {layers} asked for")
    return [build_layer(calibration["layers"][str(i)], max_level=max_level, **kw) for i in range(layers)]
