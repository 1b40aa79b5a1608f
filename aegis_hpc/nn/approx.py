"""Approximations of the encoder's non-polynomial functions, built on nn/domains.py.

Each is chosen for the worst point of its domain, never fitted to text:

- GELU: one Chebyshev interpolant of the erf GELU on the layer's GELU input
  range (construction). The map of that range onto [-1, 1] is folded into
  the FFN up-projection (block.PreparedModel), so the series runs on [-1, 1]
  with no affine level. Degree: the lowest of 31..255 within GELU_TOL on the
  whole range (MiniLM's layer 0 needs 255: its range is [-63, 50]).
  Polynomials deeper than the levels between refreshes are evaluated with
  refreshes inside (nn/ops.py), so the degree never bends to a preset.
- LayerNorm: 1/sqrt(var) on the measured variance domain: a minimax start
  (relative error, Lawson's algorithm), then Newton steps y <- y (3 - v y^2)/2,
  as many as the worst point of the domain needs for INVSQRT_TOL.
- Softmax, per layer and key count n (normalize-and-square, Cho et al., CCS
  2024): z = s - rowmean lies in [-L, R] (measured spread). p_0 = exp(z/2^k)/n
  has a row sum in [1, e^(R/2^k)] (Jensen: the row mean of z is 0), so the
  first normalisation's domain is known by construction; k steps
  p <- (p / sqrt(sum p^2))^2 then give exp(z)/sum up to one per-row factor
  each, and every such factor cancels in the final division. The steps only
  keep values bounded, so their s^(-1/2) is crude (relative error
  <= STEP_TOL) and low degree; sum p^2 of a row normalised within (1 +- e)^2
  lies in [(1-e)^4/n, (1+e)^4 min(1, e^W/(n-1+e^W))] (W the spread of the
  step's exponent). The last division is accurate (Chebyshev + Newton).
  k is the least with R/2^k <= EXP_SPAN, so the first normalisation stays
  cheap; a wide spread costs log2 of it.
Every constant that maps a domain onto [-1, 1] rides on an earlier product
(head mask, validity mask, the previous step's factor), so no series spends
a level on its change of variable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.polynomial import chebyshev as C

from ..ckks import ChebyshevSeries
from ..ckks.bits import pow2_at_least
from .domains import Domain, Domains
from .reference import gelu as exact_gelu

GELU_TOL = 1e-4
GELU_DEGREES = (31, 63, 127, 255)
INVSQRT_TOL = 1e-7
STEP_TOL = 0.3
FINAL_TOL = 1e-7
EXP_TOL = 1e-7
DEGREES = (3, 7, 15, 31, 63)


# ---- fitting ----------------------------------------------------------------------------
def _grid(lo, hi, n=1001):
    """Chebyshev-like points plus a geometric grid (relative errors live near 0 for 1/x)."""
    pts = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.linspace(0, np.pi, n))
    if lo > 0:
        pts = np.concatenate([pts, np.geomspace(lo, hi, n)])
    return np.unique(np.concatenate([pts, [lo, hi]]))


def minimax_relative(f, lo, hi, degree, iterations=40) -> ChebyshevSeries:
    """Chebyshev series on [lo, hi] of the given degree minimising max |p/f - 1|
    (Lawson's iteratively reweighted least squares; f > 0 on [lo, hi])."""
    x = _grid(lo, hi)
    y = (2 * x - lo - hi) / (hi - lo)
    fx = f(x)
    V = C.chebvander(y, degree) / fx[:, None]
    wts = np.full(x.size, 1.0 / x.size)
    best, best_err = None, np.inf
    for _ in range(iterations):
        # weighted normal equations: the Chebyshev columns are near-orthogonal on this grid
        coef = np.linalg.solve((V * wts[:, None]).T @ V, V.T @ wts)
        r = np.abs(V @ coef - 1.0)
        err = r.max()
        if err < best_err:
            best, best_err = coef, err
        wts = wts * r
        wts /= wts.sum()
    return ChebyshevSeries(best, lo, hi)


def relative_error(series, f, lo, hi) -> float:
    x = _grid(lo, hi)
    return float(np.max(np.abs(series(x) / f(x) - 1.0)))


def on_unit(series: ChebyshevSeries, scale=1.0) -> ChebyshevSeries:
    """The same polynomial as a function of y in [-1, 1] (times `scale`): the caller
    supplies y = (2x - a - b)/(b - a) through constants folded into earlier products."""
    return ChebyshevSeries(series.coeffs * scale, -1.0, 1.0)


# ---- GELU --------------------------------------------------------------------------------
@dataclass
class GeluApprox:
    domain: Domain
    series: ChebyshevSeries       # on [-1, 1]: y = (2u - lo - hi)/(hi - lo)
    error: float                  # max |series - GELU| on the domain

    def input_map(self):
        """(scale, offset): y = scale * u + offset, folded into W_up, b_up."""
        lo, hi = self.domain.lo, self.domain.hi
        return 2.0 / (hi - lo), -(lo + hi) / (hi - lo)


def build_gelu(domain: Domain) -> GeluApprox:
    lo, hi = domain.lo, domain.hi

    def g(y):
        return exact_gelu(lo + (np.asarray(y) + 1.0) * (hi - lo) / 2.0)

    ys = np.linspace(-1.0, 1.0, 20001)
    for d in GELU_DEGREES:
        s = ChebyshevSeries.interpolate(g, -1.0, 1.0, d)
        err = float(np.abs(s(ys) - g(ys)).max())
        if err <= GELU_TOL:
            break
    return GeluApprox(domain, s, err)


# ---- LayerNorm ---------------------------------------------------------------------------
@dataclass
class InvSqrtApprox:
    domain: Domain
    start: ChebyshevSeries        # ~ v^(-1/2) as a function of y = (2v - lo - hi)/(hi - lo)
    newton: int
    error: float                  # max relative error after the Newton steps, on the domain

    def input_scale(self):
        """var' = scale * var + offset lies in [-1, 1] (LayerNorm folds scale into its sums)."""
        lo, hi = self.domain.lo, self.domain.hi
        return 2.0 / (hi - lo), -(lo + hi) / (hi - lo)

    def __call__(self, v):
        """float64 value of the whole method (the mirror's and the tests' reference)."""
        v = np.asarray(v, dtype=np.float64)
        s, o = self.input_scale()
        y = self.start(s * v + o)
        for _ in range(self.newton):
            y = y * (3.0 - v * y * y) / 2.0
        return y


def _newton_steps(start_err, tol, rate):
    """Steps for a relative error to fall under tol when each step maps e -> rate e^2."""
    e, n = start_err, 0
    while e > tol:
        e2 = rate * e * e
        if e2 >= e or n > 12:
            raise ValueError(f"Newton does not converge from relative error {start_err:.3g}")
        e, n = e2, n + 1
    return n


def build_invsqrt(domain: Domain) -> InvSqrtApprox:
    lo, hi = domain.lo, domain.hi

    def f(v):
        return 1.0 / np.sqrt(v)

    best = None
    for d in DEGREES:
        s = minimax_relative(f, lo, hi, d)
        err = relative_error(s, f, lo, hi)
        if err < 0.5:
            steps = _newton_steps(err, INVSQRT_TOL, 1.5)
            cost = s.depth() + 2 * steps
            if best is None or cost < best[0]:
                best = (cost, s, steps)
            if steps == 0:
                break      # higher degrees only cost more
    if best is None:
        raise ValueError(f"no start for 1/sqrt on [{lo:.3g}, {hi:.3g}]")
    _, s, steps = best
    approx = InvSqrtApprox(domain, on_unit(s), steps, 0.0)
    x = _grid(lo, hi)
    approx.error = float(np.max(np.abs(approx(x) * np.sqrt(x) - 1.0)))
    return approx


# ---- softmax -----------------------------------------------------------------------------
NOISE_REL = 1e-3   # every derived domain is widened by this (CKKS noise, rounding)


@dataclass
class NormalizeStep:
    """One step p <- (p g(y))^2, y = sum(p^2) + offset. Its input p is sqrt(scale) times
    the unscaled P whose sum of squares S lies in `domain`, so y maps S onto [-1, 1]."""
    domain: Domain                 # of S = sum P^2
    fit: ChebyshevSeries           # ~ S^(-1/2), coefficients in y on [-1, 1]
    error: float                   # max |fit(y) sqrt(S) - 1| on the domain

    @property
    def scale(self):
        return 2.0 / (self.domain.hi - self.domain.lo)

    @property
    def offset(self):
        return -(self.domain.lo + self.domain.hi) / (self.domain.hi - self.domain.lo)


@dataclass
class SoftmaxApprox:
    keys: int                      # the largest key count this approximation serves (a power of two)
    domain: Domain                 # z = s - rowmean
    k: int                         # normalize-and-square steps
    exp: ChebyshevSeries           # exp(z / 2^k) in y = exp_scale * z + exp_offset
    steps: list                    # NormalizeStep, k of them
    final_domain: Domain           # of the last row sum D = sum P
    final: ChebyshevSeries         # ~ 1/D' in y = D' + final_offset, D' = final_scale * D
    final_newton: int

    @staticmethod
    def _map(dom):
        return 2.0 / (dom.hi - dom.lo), -(dom.lo + dom.hi) / (dom.hi - dom.lo)

    @property
    def exp_scale(self):
        return self._map(self.domain)[0]

    @property
    def exp_offset(self):
        return self._map(self.domain)[1]

    @property
    def final_scale(self):
        return self._map(self.final_domain)[0]

    @property
    def final_offset(self):
        return self._map(self.final_domain)[1]

    def _next_scale(self, t):
        """Scale the input of what follows step t needs: the next step's sqrt(c) on p, or
        the final sum's c on p itself (its sum is linear in p)."""
        return math.sqrt(self.steps[t + 1].scale) if t + 1 < len(self.steps) else self.final_scale

    def mask_scale(self, n):
        """p_0 = exp * valid * mask_scale(n) for rows of n keys: 1/n (exactly: the first
        domain rests on sum exp(z)/n >= 1) times the first input's scale."""
        if not self.keys // 2 < n <= self.keys:
            raise ValueError(f"softmax built for {self.keys // 2 + 1}..{self.keys} keys used for {n}")
        return (math.sqrt(self.steps[0].scale) if self.steps else self.final_scale) / n

    def g(self, t) -> ChebyshevSeries:
        """Step t's factor: p_t g_t = sqrt(next scale) P_t / sqrt(S_t), so (p g)^2 is the next input.
        p_t carries sqrt(c_t): g = sqrt(next) / sqrt(c_t) * S^(-1/2), all in the coefficients."""
        c = self.steps[t].scale
        return ChebyshevSeries(self.steps[t].fit.coeffs * math.sqrt(self._next_scale(t)) / math.sqrt(c),
                               -1.0, 1.0)

    def final_value(self, d_scaled):
        """1 / D' for the scaled final sum D' (float64 reference)."""
        y = self.final(d_scaled + self.final_offset)
        for _ in range(self.final_newton):
            y = y * (2.0 - d_scaled * y)
        return y

    def depth(self) -> int:
        """Levels from z to the normalised probabilities (no refreshes counted)."""
        d = self.exp.depth() + 1
        for t in range(self.k):
            d += 3 + self.g(t).depth()
        return d + self.final.depth() + 2 * self.final_newton + 1

    def __call__(self, s, valid=None):
        """Probabilities of score rows s (last axis = keys), float64, by the encrypted
        method's own steps: the reference the block code and the tests compare with."""
        s = np.asarray(s, dtype=np.float64)
        valid = np.ones(s.shape[-1]) if valid is None else np.asarray(valid, dtype=np.float64)
        n = int(valid.sum())
        z = (s - (s * valid).sum(-1, keepdims=True) / n) * valid
        p = self.exp(self.exp_scale * z + self.exp_offset) * valid * self.mask_scale(n)
        for t, st in enumerate(self.steps):
            y = (p * p).sum(-1, keepdims=True) + st.offset
            p = (p * self.g(t)(y)) ** 2
        d = p.sum(-1, keepdims=True)
        return p * self.final_value(d)


def _fit_step(domain: Domain) -> NormalizeStep:
    lo, hi = domain.lo, domain.hi

    def f(v):
        return 1.0 / np.sqrt(v)

    for d in DEGREES:
        s = minimax_relative(f, lo, hi, d)
        err = relative_error(s, f, lo, hi)
        if err <= STEP_TOL:
            return NormalizeStep(domain, ChebyshevSeries(s.coeffs, -1.0, 1.0), err)
    raise ValueError(f"no normaliser of degree <= {DEGREES[-1]} for sums in [{lo:.3g}, {hi:.3g}]")


def _widen(lo, hi):
    return Domain(lo * (1 - NOISE_REL), hi * (1 + NOISE_REL), "construction")


def key_bucket(n: int) -> int:
    """Rows of n keys use the softmax built for the power of two at or above n."""
    return pow2_at_least(n)


def build_softmax(domain: Domain, keys: int) -> SoftmaxApprox:
    """The softmax for rows of keys/2+1..keys keys (keys a power of two): the least
    deep of the step counts k whose first normalisation is feasible (its sums span
    e^(2R/2^k)); fewer steps mean wider first sums and dearer normalisers."""
    k0 = max(0, math.ceil(math.log2(max(domain.hi, 1e-9) / MAX_EXP_SPAN)))
    best = None
    for k in range(k0, k0 + 4):
        try:
            sm = _build_softmax(domain, keys, k)
        except ValueError:
            continue
        if best is None or sm.depth() < best.depth():
            best = sm
    if best is None:
        raise ValueError(f"no softmax for scores in [{domain.lo:.3g}, {domain.hi:.3g}] over {keys} keys")
    return best


MAX_EXP_SPAN = 8.0


def _build_softmax(domain: Domain, keys: int, k: int) -> SoftmaxApprox:
    n, n_lo = keys, keys // 2 + 1    # every domain below holds for each count in n_lo..n
    lo_e, hi_e = domain.lo / 2 ** k, domain.hi / 2 ** k

    def e(y):
        return np.exp((domain.lo + (np.asarray(y) + 1.0) * (domain.hi - domain.lo) / 2.0) / 2 ** k)

    ys = np.linspace(-1.0, 1.0, 20001)
    for d in (7, 15, 31, 63):
        exp_series = ChebyshevSeries.interpolate(e, -1.0, 1.0, d)
        # absolute, against the row mean's value 1 (entries far below it weigh nothing);
        # k squarings multiply a relative error by 2^k
        if np.abs(exp_series(ys) - e(ys)).max() <= EXP_TOL * 2.0 ** -k:
            break
    # S_0 = sum P_0^2 with P_0 = exp(z/2^k)/n: sum P_0 in [1, e^hi_e] (Jensen), so
    # S_0 in [1/n, e^(2 hi_e)/n]; after a step the sum of P is within (1 +- err)^2
    steps, s_lo, s_hi = [], 1.0 / n, math.exp(2 * hi_e) / n_lo
    width = domain.hi - domain.lo
    for t in range(k):
        st = _fit_step(_widen(s_lo, s_hi))
        steps.append(st)
        lo_n, hi_n = (1 - st.error) ** 2, (1 + st.error) ** 2
        w = width / 2 ** (k - t - 1)           # spread of the next step's exponent
        s_lo = lo_n ** 2 / n
        s_hi = hi_n ** 2 * min(1.0, math.exp(min(w, 700.0)) / (n_lo - 1 + math.exp(min(w, 700.0))))
    f_lo, f_hi = ((1 - steps[-1].error) ** 2, (1 + steps[-1].error) ** 2) if k else (1.0, math.exp(hi_e))
    final_domain = _widen(f_lo, f_hi)
    fs, fo = SoftmaxApprox._map(final_domain)
    a, b = fs * final_domain.lo, fs * final_domain.hi
    fin = minimax_relative(lambda x: 1.0 / x, a, b, 15)
    ferr = relative_error(fin, lambda x: 1.0 / x, a, b)
    return SoftmaxApprox(keys=n, domain=domain, k=k, exp=exp_series, steps=steps, final_domain=final_domain,
                         final=ChebyshevSeries(fin.coeffs, -1.0, 1.0),
                         final_newton=_newton_steps(ferr, FINAL_TOL, 1.0))


# ---- one layer ---------------------------------------------------------------------------
@dataclass
class LayerApprox:
    gelu: GeluApprox
    ln1: InvSqrtApprox
    ln2: InvSqrtApprox
    scores: Domain
    _softmax: dict = field(default_factory=dict)

    def softmax(self, keys: int) -> SoftmaxApprox:
        """The softmax for rows of `keys` keys (its normalisers depend on the count,
        by powers of two: key_bucket)."""
        b = key_bucket(keys)
        if b not in self._softmax:
            self._softmax[b] = build_softmax(self.scores, b)
        return self._softmax[b]


_BUILT: dict = {}


def build(name: str, layers: int, domains: Domains | None = None) -> list:
    from . import models

    key = (models.canonical_name(name), layers)
    if domains is None and key in _BUILT:
        return _BUILT[key]
    dom = domains or Domains(name)
    out = [LayerApprox(gelu=build_gelu(d.gelu), ln1=build_invsqrt(d.var1), ln2=build_invsqrt(d.var2),
                       scores=d.scores) for d in dom.layers[:layers]]
    if domains is None:
        _BUILT[key] = out
    return out
