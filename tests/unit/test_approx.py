"""Each approximation over its whole domain (dense grids and both endpoints), and the
domains themselves: construction bounds hold for every input, including the worst ones."""

import math

import numpy as np
import pytest

from aegis_hpc.ckks.polynomial import ChebyshevSeries, evaluate_chebyshev
from aegis_hpc.nn import approx, domains, functions, models, reference
from aegis_hpc.nn.domains import Domain
from aegis_hpc.nn.ops import MatrixOps, PlainEvaluator, PV


@pytest.fixture(scope="module")
def minilm():
    return domains.Domains("minilm"), approx.build("minilm", 6)


def test_ln_output_bound_is_reached_and_never_exceeded():
    rng = np.random.default_rng(3)
    d = 48
    gamma, beta = rng.normal(size=d), rng.normal(size=d)
    bound = domains.ln_output_bound(gamma, beta)
    # the extreme input for feature 5: all of the norm on it, the rest equal, with
    # gamma_5 n_5 of beta_5's sign
    n = np.full(d, -1.0 / math.sqrt(d - 1))
    n[5] = math.sqrt(d - 1)
    n *= np.sign(gamma[5] * beta[5])
    assert n.sum() == pytest.approx(0.0, abs=1e-12) and (n * n).sum() == pytest.approx(d)
    x = models.layer_norm(n * 7.0 + 3.0, gamma, beta, 0.0)   # any scale, any mean
    assert abs(x[5]) == pytest.approx(bound[5], rel=1e-12)
    for _ in range(200):
        y = models.layer_norm(rng.standard_t(1.5, size=d) * rng.uniform(0.1, 100), gamma, beta, 0.0)
        assert np.all(np.abs(y) <= bound + 1e-9)


def test_affine_range_contains_every_layernorm_output_and_is_tight():
    rng = np.random.default_rng(4)
    d, m = 32, 10
    w, b = rng.normal(size=(m, d)), rng.normal(size=m)
    gamma, beta = rng.normal(size=d), rng.normal(size=d)
    c, r = domains.affine_range(w, b, gamma, beta)
    for _ in range(500):
        x = models.layer_norm(rng.standard_cauchy(size=d), gamma, beta, 0.0)
        u = w @ x + b
        assert np.all(np.abs(u - c) <= r + 1e-9)
    # the input that maximises row 0: n along the centred row (scaled to ||n||^2 = d)
    a = w[0] * gamma
    n = (a - a.mean()) / np.linalg.norm(a - a.mean()) * math.sqrt(d)
    assert (w @ (gamma * n + beta) + b)[0] == pytest.approx(c[0] + r[0])


def test_gelu_within_tolerance_on_the_whole_construction_range(minilm):
    dom, apx = minilm
    for i, a in enumerate(apx):
        lo, hi = dom[i].gelu.lo, dom[i].gelu.hi
        assert a.gelu.domain.kind == "construction"
        u = np.concatenate([np.linspace(lo, hi, 50001), [lo, hi]])
        scale, offset = a.gelu.input_map()
        err = np.abs(a.gelu.series(scale * u + offset) - reference.gelu(u)).max()
        assert err <= approx.GELU_TOL, (i, err)
        assert abs(scale * lo + offset + 1) < 1e-12 and abs(scale * hi + offset - 1) < 1e-12


def test_layernorm_inverse_sqrt_on_the_whole_variance_domain(minilm):
    _, apx = minilm
    for a in apx:
        for isq in (a.ln1, a.ln2):
            lo, hi = isq.domain.lo, isq.domain.hi
            v = np.concatenate([np.geomspace(lo, hi, 20001), [lo, hi]])
            rel = np.abs(isq(v) * np.sqrt(v) - 1.0).max()
            assert rel <= approx.INVSQRT_TOL, (lo, hi, rel)


def _rows(spread, n, rng):
    """Score rows at the corners of the spread [-L, R] around the row mean."""
    L, R = spread
    rows = [np.zeros(n)]                                    # uniform: sum p^2 at its lower bound
    spike = np.full(n, -R / (n - 1))
    spike[0] = R                                            # one key R above the mean
    rows.append(spike)
    dip = np.full(n, L / (n - 1))
    dip[-1] = -L                                            # one key L below the mean
    rows.append(dip)
    for _ in range(40):
        z = rng.uniform(-L, R, n) * rng.uniform(0, 1)
        rows.append(z - z.mean())
    return np.array([r for r in rows if r.max() - r.mean() <= R + 1e-9 and r.mean() - r.min() <= L + 1e-9])


@pytest.mark.parametrize("layer,n", [(0, 2), (0, 37), (0, 512), (1, 128), (5, 9)])
def test_softmax_on_the_corners_of_its_domain(minilm, layer, n):
    dom, apx = minilm
    sm = apx[layer].softmax(n)
    rows = _rows(dom[layer].scores_spread, n, np.random.default_rng(n))
    exact = np.exp(rows - rows.max(-1, keepdims=True))
    exact /= exact.sum(-1, keepdims=True)
    got = sm(rows)
    assert np.abs(got - exact).max() < 1e-6
    # every intermediate (exp input, step sums, final sum) stayed inside its interval
    ops = MatrixOps()
    y = sm.exp_scale * (rows - rows.mean(-1, keepdims=True)) + sm.exp_offset
    p, inv, *_ = functions.softmax(ops, [y], [np.ones(n)], n, sm,
                                  lambda ps, tag, bound: sum(q.sum(-1, keepdims=True) for q in ps), "sm")
    assert np.abs(p[0] * inv - got).max() < 1e-12
    site, use = ops.stats.worst()
    assert use < 1.0, (site, use)


def test_softmax_key_buckets_share_one_approximation(minilm):
    _, apx = minilm
    assert apx[0].softmax(65) is apx[0].softmax(128)
    with pytest.raises(ValueError, match="built for 65..128 keys"):
        apx[0].softmax(128).mask_scale(64)


def test_deep_polynomial_with_refreshes_matches_the_series():
    """Degree 255 (depth 8) on a budget of 3 levels: every product asks for its operands
    first, the value is the series' and each refresh is counted once."""
    rng = np.random.default_rng(5)
    series = ChebyshevSeries(rng.normal(size=256) / np.arange(1, 257), -1.0, 1.0)
    x = rng.uniform(-1, 1, 64)
    refreshed = []

    def need(ct, levels, key, bound):
        if ct.level >= levels + 1:
            return ct
        assert np.abs(ct.v).max() <= bound * (1 + 1e-9)      # the bounds the hook reports hold
        refreshed.append(key)
        return PV(ct.v, 3)

    out = evaluate_chebyshev(PlainEvaluator(), PV(x, 3), series, need=need)
    assert np.abs(out.v - series(x)).max() < 1e-9
    assert refreshed and len(refreshed) == len(set(refreshed))     # unique tags: unique re-encryptions
    with pytest.raises(ValueError, match="needs 8 levels"):
        evaluate_chebyshev(PlainEvaluator(), PV(x, 3), series)


def test_series_bound_is_the_interval_s_not_beyond(minilm):
    """A refresh bound is what bootstrapping divides by: MiniLM's degree-255 GELU is
    below ~50 on [-1, 1] but ~10^8 at 1.01, and a bound from there cost every
    refresh of its output ~2^27 of precision (found on the bootstrapped encoder)."""
    _, apx = minilm
    g = apx[0].gelu.series
    assert g.degree == 255
    ys = np.linspace(-1, 1, 100001)
    inside = np.abs(g(ys)).max()
    assert inside <= functions.series_bound(g) <= inside * functions.EDGE * (1 + 1e-6)
    assert abs(g(1.01)) > 1e6 * inside
