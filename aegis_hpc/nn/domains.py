"""Input domains of the encoder's approximated functions: where every bound comes from.

Two kinds of bound, and every site says which one it uses (`Domain.kind`):

- "construction": true for every input, derived from the weights alone. A
  LayerNorm output is gamma * n + beta with n zero-mean and sum(n^2) = d, so
  |n_f| <= sqrt(d - 1) and a linear function a . x + c of it lies within
  c +- sqrt(d) * ||a - mean(a)||. That bounds the layer inputs, q, k, v
  (their bootstrap refreshes) and the FFN's GELU input, per layer.
- "measured": the largest value over the calibration corpus
  (inputs/calibration/, disjoint from the validation corpus), widened by a
  stated margin. Used where construction is too loose to run an
  approximation on: the attention scores (the weights bound them by
  100-970 for MiniLM where text reaches 80), the variance at LayerNorm
  (construction: 300-55,000; text: 0.1-131) and the residual stream's
  magnitude (the LayerNorm input, a bootstrap refresh site).

Scores are taken relative to their row mean, z = s - mean_j(s), so that by
Jensen's inequality the row's sum of exp(z) is at least the key count: the
softmax's first normalisation has a domain bounded below by construction;
only the spread (R above the mean, L below) is measured.

`python -m aegis_hpc.nn.calibrate --model NAME` measures and writes
calibration/NAME.json; `Domains` combines it with the construction bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import models

# Margins on measured bounds. Softmax cost grows with log2 of the score spread
# and LayerNorm's with log2 of the variance ratio, so wide margins are cheap.
SCORE_MARGIN = 1.5
VAR_MARGIN = 2.0
RESIDUAL_MARGIN = 2.0
# CKKS noise moves a value by far less than this; bounds that exclude zero or
# sit on the edge of a polynomial's interval keep this much room
NOISE_ROOM = 1e-3


class DomainError(ValueError):
    """A value left the domain its approximation (or bootstrap bound) was built for."""


@dataclass(frozen=True)
class Domain:
    lo: float
    hi: float
    kind: str          # "construction" or "measured x<margin>"

    def use(self, values) -> float:
        """Where the values sit in the domain: max |2x - lo - hi| / (hi - lo); above 1 is outside."""
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return 0.0
        return float(np.max(np.abs(2.0 * v - self.lo - self.hi)) / (self.hi - self.lo))


def ln_output_bound(gamma, beta) -> np.ndarray:
    """Per feature, the largest |LayerNorm output|: |gamma| sqrt(d - 1) + |beta| (construction)."""
    d = gamma.size
    return np.abs(gamma) * math.sqrt(d - 1) + np.abs(beta)


def affine_range(weight, bias, gamma, beta):
    """Per output row i, the range of W_i . (gamma * n + beta) + b_i over every
    zero-mean n with ||n||^2 = d: centre c_i and radius r_i (construction)."""
    a = weight * gamma[None, :]
    c = weight @ beta + bias
    r = math.sqrt(gamma.size) * np.linalg.norm(a - a.mean(axis=1, keepdims=True), axis=1)
    return c, r


def _ln_params(w, i):
    """gamma, beta of the LayerNorm whose output enters layer i."""
    key = "embeddings.LayerNorm" if i == 0 else f"encoder.layer.{i - 1}.output.LayerNorm"
    return w[key + ".weight"], w[key + ".bias"]


@dataclass
class LayerDomains:
    x: np.ndarray              # per feature |layer input| bound (construction)
    qkv: dict                  # "q"/"k"/"v" -> per feature |.| bound (construction)
    scores_spread: tuple       # (L, R): z = s - rowmean in [-L, R] (measured x SCORE_MARGIN)
    var1: Domain               # LayerNorm after attention (measured x VAR_MARGIN)
    var2: Domain               # LayerNorm after the FFN
    gelu: Domain               # GELU input (construction)
    residual: float            # |LayerNorm input| (measured x RESIDUAL_MARGIN)
    score_abs: float           # |attention score| (measured x SCORE_MARGIN)
    mid: np.ndarray            # per feature |LayerNorm after attention| bound (construction)
    out: np.ndarray            # per feature |layer output| bound (construction)

    @property
    def scores(self) -> Domain:
        L, R = self.scores_spread
        return Domain(-L - NOISE_ROOM, R + NOISE_ROOM, f"measured x{SCORE_MARGIN}")


class Domains:
    """Per layer domains of model `name` (construction + calibration/NAME.json)."""

    def __init__(self, name: str, calibration: dict | None = None):
        self.cfg = cfg = models.config(name)
        cal = calibration if calibration is not None else models.load_calibration(name)
        if cal.get("format") != CALIBRATION_FORMAT:
            raise models.ModelError(f"calibration of {cfg.name} is in an old format; run "
                                    f"python -m aegis_hpc.nn.calibrate --model {cfg.name}")
        self.calibration = cal
        w = models.weights(name)
        self.layers = []
        for i in range(cfg.layers):
            m = cal["layers"][str(i)]
            p = f"encoder.layer.{i}."
            g0, b0 = _ln_params(w, i)
            qkv = {}
            for key, what in (("q", "query"), ("k", "key"), ("v", "value")):
                c, r = affine_range(w[p + f"attention.self.{what}.weight"], w[p + f"attention.self.{what}.bias"],
                                    g0, b0)
                qkv[key] = np.abs(c) + r
            g1, b1 = w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]
            c, r = affine_range(w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"], g1, b1)
            gelu = Domain(float(np.min(c - r)) - NOISE_ROOM, float(np.max(c + r)) + NOISE_ROOM, "construction")
            L = SCORE_MARGIN * max(m["score_below_mean"])
            R = SCORE_MARGIN * max(m["score_above_mean"])
            self.layers.append(LayerDomains(
                x=ln_output_bound(g0, b0), qkv=qkv, scores_spread=(L, R),
                var1=_var_domain(m["var1"]), var2=_var_domain(m["var2"]), gelu=gelu,
                residual=RESIDUAL_MARGIN * m["residual_abs"], score_abs=SCORE_MARGIN * m["score_abs"],
                mid=ln_output_bound(g1, b1), out=ln_output_bound(w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])))

    def __getitem__(self, i) -> LayerDomains:
        return self.layers[i]

    def output_bound(self, layers: int) -> np.ndarray:
        """What `client decrypt` checks an encoder output of `layers` layers against."""
        return self.layers[layers - 1].out


def output_bound(name: str, layers: int) -> np.ndarray:
    """Per feature, the largest |output| of `layers` encoder layers: the bound of the last
    LayerNorm (construction, weights only; `client decrypt` checks results against it)."""
    cfg = models.config(name)
    if not 1 <= layers <= cfg.layers:
        raise models.ModelError(f"model {cfg.name} has {cfg.layers} layers, not {layers}")
    w = models.weights(name)
    p = f"encoder.layer.{layers - 1}.output.LayerNorm"
    return ln_output_bound(w[p + ".weight"], w[p + ".bias"])


def _var_domain(measured) -> Domain:
    lo, hi = measured
    return Domain(lo / VAR_MARGIN * (1 - NOISE_ROOM), hi * VAR_MARGIN * (1 + NOISE_ROOM), f"measured x{VAR_MARGIN}")


CALIBRATION_FORMAT = 2


def describe(dom: Domains) -> list:
    """One line per site: bound, kind (for docs and `nn.calibrate --show`)."""
    out = []
    for i, d in enumerate(dom.layers):
        L, R = d.scores_spread
        out.append(f"layer {i}: input |x| <= {d.x.max():.1f} (construction); |q|,|k|,|v| <= "
                   f"{d.qkv['q'].max():.1f}, {d.qkv['k'].max():.1f}, {d.qkv['v'].max():.1f} (construction); "
                   f"scores - row mean in [{-L:.1f}, {R:.1f}] ({d.scores.kind}); "
                   f"GELU input [{d.gelu.lo:.1f}, {d.gelu.hi:.1f}] (construction); "
                   f"variance [{d.var1.lo:.3g}, {d.var1.hi:.3g}] and [{d.var2.lo:.3g}, {d.var2.hi:.3g}] "
                   f"({d.var1.kind}); |LayerNorm input| <= {d.residual:.1f} (measured x{RESIDUAL_MARGIN})")
    return out
