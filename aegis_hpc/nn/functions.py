"""The encoder's non-linear steps, written once against the ops interface (nn/ops.py).

The same code runs on ciphertexts (CipherOps), on the plaintext mirror's slot
vectors (PlainOps) and on whole float64 matrices (MatrixOps, the fast mirror
of nn.mirror.encode). What a layout provides is passed in: `sum_keys(parts,
tag, bound)` (one value per query row and head, over every key, broadcast
back over the slots it came from) and `sum_features(x, tag, bound)` (a
token's sum, broadcast over its features); `bound` bounds the sum, for a
refresh the layout may need on the way (its masks take a level).

Every `need` names its site and gives the bound of the value it refreshes:
bootstrapping divides by it, the key holder of `--refresh client` checks it,
the mirror reports how much of it a value used (nn/domains.py).
"""

from __future__ import annotations

import math

import numpy as np

from .approx import GeluApprox, InvSqrtApprox, SoftmaxApprox

# CKKS noise and float rounding: a value that may sit on the edge of [-1, 1]
# gets this much room in its refresh bound
EDGE = 1.01


def series_bound(series) -> float:
    """max |series| on [-1, 1] (every series here runs on [-1, 1]), with EDGE's room.
    Not beyond the interval: a degree-255 series at 1.01 is 10^8 times its values
    inside, and an input there is outside its domain anyway."""
    key = id(series)
    hit = _SERIES_BOUND.get(key)
    if hit is None or hit[0] is not series:
        ys = np.linspace(-1.0, 1.0, 8001)
        hit = _SERIES_BOUND[key] = (series, float(np.abs(series(ys)).max()) * EDGE)
    return hit[1]


_SERIES_BOUND: dict = {}


# ---- GELU ----------------------------------------------------------------------------------
def gelu(ops, us, approx: GeluApprox, tags):
    """GELU of values at one site (a token block's FFN chunks): each u is already
    y = (2u - lo - hi)/(hi - lo) (the map rides on W_up); their input refreshes pair."""
    return ops.cheb_many(us, approx.series, tags, EDGE)


# ---- LayerNorm -----------------------------------------------------------------------------
def _offset(ops, x, c, active, key):
    """x + c where the layout's sums are real (`active`: a plaintext mask; None: all).
    Elsewhere (padding tokens, heads) the sums are 0 and stay 0: the polynomial
    then sees y = 0, the middle of its interval, instead of an offset outside it."""
    return ops.add_const(x, c) if active is None else ops.add_plain(x, active * c, (key, id(active), c))


def layernorm(ops, h, gamma, beta, approx: InvSqrtApprox, sum_features, d: int, eps: float, tag,
              h_bound: float, sum_levels: int = 0, active=None):
    """gamma (h - mean) / sqrt(var + eps) + beta over the token's d features.

    var' = a var + o lies in [-1, 1] (a, o: approx.input_scale) at no extra level:
    a and sqrt(a) ride on the products that make the mean and the mean square.
    sum_levels: levels the layout's sum_features takes (a mask); active: where
    its sums are real (see _offset)."""
    a, o = approx.input_scale()
    h = ops.need(h, 2 + sum_levels, tag + "/in", h_bound)
    s1 = sum_features(h, tag + "/s1", d * h_bound)
    s2 = sum_features(ops.mul(h, h), tag + "/s2", d * h_bound * h_bound)
    m = ops.mul_const(s1, math.sqrt(a) / d)
    var = _offset(ops, ops.sub(ops.mul_const(s2, a / d), ops.mul(m, m)), o + a * eps, active, "ln-offset")
    if approx.newton:
        # vh below is made from var as well: give var here the levels vh's Newton product
        # takes, so that a short var is refreshed as var' (bound 1, no prescale) and not
        # later as vh, which may then have no level left for its 1/B (bert-base layer 6)
        var = ops.need(var, 2, tag + "/var", EDGE)
    y = ops.cheb(var, approx.start, tag + "/isq", EDGE)
    y_bound = (1.0 + approx.error) / math.sqrt(approx.domain.lo) * EDGE
    if approx.newton:
        # -v/2 from var' (the exact affine map back), beside the start polynomial
        vh = ops.mul_const(_offset(ops, var, -o, active, "ln-back"), -0.5 / a)
        # a Newton step from the start's error e lands below 1.5 e^2 and above it
        start_bound = 1.5 / math.sqrt(approx.domain.lo)
        for k in range(approx.newton):
            y = ops.need(y, 2, f"{tag}/n{k}", start_bound)
            vh = ops.need(vh, 1, f"{tag}/n{k}v", approx.domain.hi * 0.5 * EDGE)
            y = ops.add(ops.mul_const(y, 1.5), ops.mul(ops.mul(vh, y), ops.mul(y, y)))
    cg = ops.sub(ops.mul_plain(h, gamma, ("g", id(gamma))), ops.mul_plain(s1, gamma / d, ("gn", id(gamma))))
    # |gamma (h - mean)| <= |gamma| (|h| + |mean|)
    cg_bound = 2.0 * float(np.max(np.abs(gamma))) * h_bound
    out = ops.mul(ops.need(cg, 1, tag + "/cg", cg_bound), ops.need(y, 1, tag + "/y", y_bound))
    return ops.add_plain(out, beta, ("b", id(beta)))


# ---- softmax -------------------------------------------------------------------------------
def softmax(ops, y_parts, valid, n: int, sm: SoftmaxApprox, sum_keys, tag, active=None):
    """Normalize-and-square softmax (approx.SoftmaxApprox) of score rows.

    y_parts: the scores of the row's key groups as y = exp_scale (s - rowmean) +
    exp_offset, in [-1, 1] (the caller folds the map into its masks). valid[j]: the
    plaintext validity mask of part j (0 on padding keys); n: valid keys; active:
    where the sums over keys are real (see _offset). Returns (p_parts, inv,
    p_bound, inv_bound): the attention output is sum_keys(p * V) * inv."""
    e_bound = series_bound(sm.exp)
    parts = range(len(y_parts))
    # the parts' refreshes at each site below are shared two by two (ops.need_many)
    es = ops.cheb_many(y_parts, sm.exp, [f"{tag}/g{j}/exp" for j in parts], EDGE)
    es = ops.need_many(es, 1, [f"{tag}/g{j}/e" for j in parts], e_bound)
    # the scale is the layer's (its first normaliser's): part of what the key names
    p = [ops.mul_plain(e, valid[j] * sm.mask_scale(n), ("smask", id(valid[j]), n, sm.mask_scale(n)))
         for j, e in enumerate(es)]
    p_bound = e_bound * sm.mask_scale(n)
    for t, st in enumerate(sm.steps):
        p = ops.need_many(p, 2, [f"{tag}/g{j}/p{t}" for j in range(len(p))], p_bound)
        S = sum_keys([ops.mul(x, x) for x in p], f"{tag}/S{t}", st.scale * st.domain.hi * EDGE)
        g_series = sm.g(t)
        g = ops.cheb(_offset(ops, S, st.offset, active, "sm-step"), g_series, f"{tag}/s{t}", EDGE)
        g = ops.need(g, 1, f"{tag}/s{t}g", series_bound(g_series))
        # p g = sqrt(next) P / sqrt(S) (1 +- err) with P <= sqrt(S)
        q_bound = math.sqrt(sm._next_scale(t)) * (1.0 + st.error) * EDGE
        pg = ops.need_many([ops.mul(x, g) for x in p], 1, [f"{tag}/g{j}/q{t}" for j in parts], q_bound)
        p = [_square(ops, x) for x in pg]
        p_bound = q_bound * q_bound
    D = sum_keys(p, f"{tag}/D", sm.final_scale * sm.final_domain.hi * EDGE)
    inv = ops.cheb(_offset(ops, D, sm.final_offset, active, "sm-final"), sm.final, f"{tag}/inv", EDGE)
    inv_bound = series_bound(sm.final) * EDGE
    for k in range(sm.final_newton):
        inv = ops.need(inv, 2, f"{tag}/inv{k}", inv_bound)
        D = ops.need(D, 1, f"{tag}/inv{k}d", sm.final_scale * sm.final_domain.hi * EDGE)
        inv = ops.mul(inv, ops.add_const(ops.mul_const(ops.mul(D, inv), -1.0), 2.0))
    return p, inv, p_bound, inv_bound


def _square(ops, x):
    return ops.mul(x, x)
