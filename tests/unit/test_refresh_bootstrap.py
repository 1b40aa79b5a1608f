"""Refresh by bootstrapping in the encoder (nn/ops.py, nn/refresh.py, infer --refresh bootstrap).

Bounds: bootstrapping is accurate to 2^-18 on slots within [-1, 1]
(test_bootstrap.BOOT_BOUND); a refresh divides by B, the power of two at or
above the site's bound, and multiplies back, so its error bound is B * 2^-18.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aegis_hpc.ckks import Context
from aegis_hpc.ckks.bootstrap import bootstrap_rotations
from aegis_hpc.nn import mirror, models, refresh
from aegis_hpc.nn.ops import PV, CipherOps, DepthError, PlainOps, bootstrap_level

pytestmark = pytest.mark.filterwarnings("ignore::aegis_hpc.io.InsecureParametersWarning")

BOOT_BOUND = 2.0 ** -18
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
           OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def test_one_token_refresh_matches_the_mirror():
    """One token (32 slots) with values up to 40 at a site whose bound is 40: the
    encrypted refresh and the mirror's agree in value and level; without the 1/B
    it is far less accurate (EvalMod's sine leaves its exact range)."""
    ctx = Context.from_preset("test-boot")
    sk, keys = ctx.keygen(rotations=bootstrap_rotations(ctx.params, slots=32), bootstrap=True)
    ev = ctx.evaluator(keys)
    x = np.random.default_rng(1).uniform(-40, 40, 32)
    ops = CipherOps(ctx, ev, "bootstrap")
    plain = PlainOps(ctx.params.max_level, "bootstrap", bootstrap_level(ctx.params))
    ct = ctx.encrypt(x, sk, level=2, slots=32)
    got = ops.need(ct, 3, "L0/att/out/a/t3", 40.0)         # B = 64, the power of two >= 40
    want = plain.need(PV(x.copy(), 2), 3, "L0/att/out/a/t3", 40.0)
    assert got.level == want.level == bootstrap_level(ctx.params) == 4
    assert ops.stats.refreshes == plain.stats.refreshes == 1
    assert plain.stats.domain_use["L0/att/out/a"] == pytest.approx(np.abs(x).max() / 40.0)
    err = np.abs(ctx.decrypt(got, sk) - want.v).max()
    assert err < 64.0 * BOOT_BOUND
    unscaled = CipherOps(ctx, ev, "bootstrap")
    err1 = np.abs(ctx.decrypt(unscaled.need(ct, 3, "L0/att/out/a/t3", 0.4), sk) - x).max()
    print(f"refresh of |x| <= 40: error {err:.2e} with B = 64, {err1:.2e} without")
    assert err1 > 64.0 * BOOT_BOUND


def test_two_values_share_one_bootstrap():
    """need_many pairs two values that need a refresh: one bootstrap of x/2Bx + i y/2By,
    separated by a conjugation. Both come back at the refresh level, real, each within
    the error of one refresh of range 2B of its own bound; the odd one is refreshed alone, one with levels
    enough is left as it is; the mirror counts the same refreshes."""
    ctx = Context.from_preset("test-boot")
    sk, keys = ctx.keygen(rotations=bootstrap_rotations(ctx.params, slots=32), bootstrap=True)
    ops = CipherOps(ctx, ctx.evaluator(keys), "bootstrap")
    top = bootstrap_level(ctx.params)
    plain = PlainOps(ctx.params.max_level, "bootstrap", top)
    rng = np.random.default_rng(2)
    # each value has its own bound (divisor): the pair's second is 8 times smaller
    bounds = [40.0, 5.0, 40.0, 40.0]
    xs = [rng.uniform(-b, b, 32) for b in bounds]
    levels = [2, 1, top + 1, 3]
    cts = [ctx.encrypt(x, sk, level=lv, slots=32) for x, lv in zip(xs, levels)]
    tags = [f"L0/att/g{j}/p0/t0" for j in range(4)]
    got = ops.need_many(cts, 3, tags, bounds)
    want = plain.need_many([PV(x.copy(), lv) for x, lv in zip(xs, levels)], 3, tags, bounds)
    assert ops.stats.refreshes == plain.stats.refreshes == 2      # the pair (0, 1) and 3 alone
    assert ops.ev.counts["bootstrap"] == 2
    assert got[2] is cts[2] and want[2].level == top + 1
    for k in (0, 1, 3):
        assert got[k].level == want[k].level == top and not got[k].is_complex
        err = np.abs(ctx.decrypt(got[k], sk) - xs[k]).max()
        divisor = 8.0 if k == 1 else 64.0              # the power of two at or above the bound
        assert err < 2 * divisor * BOOT_BOUND, (k, err)


def test_too_few_levels_after_bootstrapping_are_refused():
    """Deep polynomials are refreshed inside, so only a floor remains: two products
    and the 1/B of the next bootstrap. A chain leaving 3 levels is refused."""
    p = Context.from_preset("test-boot").params
    assert bootstrap_level(p) == refresh.MIN_REFRESH_LEVELS == 4
    refresh.prepare(PlainOps(p.max_level, "bootstrap", 4), "tiny", 1, p.slots)
    with pytest.raises(DepthError, match="bootstrapping leaves 3 levels; model tiny needs 4"):
        refresh.prepare(PlainOps(p.max_level, "bootstrap", 3), "tiny", 1, p.slots)


def test_every_refresh_bound_holds_for_validation_passages():
    """The mirror with bootstrap refresh points on real passages: every value at a
    refresh site is within the bound bootstrapping divides by (domain use < 1)."""
    from aegis_hpc.nn.calibrate import read_sentences, validation_corpus_path

    p = Context.from_preset("test-deep-boot").params
    texts = [t for t in read_sentences(validation_corpus_path()) if len(t.split()) < 40][:3]
    emb = models.embed_text("tiny", texts)
    _, stats = mirror.run("tiny", emb, 2, p.slots, p.max_level, "bootstrap", bootstrap_level(p))
    site, use = stats.worst()
    assert stats.refreshes > 0 and use < 1.0, (site, use)


def sh(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_infer_refresh_bootstrap_end_to_end(tmp_path):
    """keygen --bootstrap, encrypt, infer (bootstrap is the default with such keys),
    decrypt: one sentence (5 tokens) of tiny through one layer; the decrypted output
    is the mirror's with the same refresh points, within 4e-3."""
    d = tmp_path
    r = sh("aegis_hpc.client", "keygen", "--preset", "test-deep-boot", "--for-model", "tiny", "--bootstrap",
           "--out", str(d / "k"))
    assert r.returncode == 0 and "bootstrapping keys" in r.stderr, r.stderr
    assert "bootstrapping keys: yes" in sh("aegis_hpc.client", "inspect", str(d / "k/eval.h5")).stdout
    x = models.embed_text("tiny", ["Birds sing."])[0]
    np.save(d / "x.npy", x)
    assert sh("aegis_hpc.client", "encrypt", "--public-key", str(d / "k/eval.h5"), "--input", str(d / "x.npy"),
              "--out", str(d / "s.h5")).returncode == 0
    r = sh("aegis_hpc.infer", "--model", "tiny", "--layers", "1", "--keys", str(d / "k/eval.h5"),
           "--input", str(d / "s.h5"), "--output", str(d / "o.h5"), "--summary", str(d / "o.json"))
    assert r.returncode == 0, r.stderr
    p = Context.from_preset("test-deep-boot").params
    mir, stats = mirror.run("tiny", [x], 1, p.slots, p.max_level, "bootstrap", bootstrap_level(p))
    assert stats.refreshes > 0 and stats.worst()[1] < 1.0
    assert f"refresh: bootstrap (server-only, no key holder); bootstraps: {stats.refreshes}" in r.stdout
    assert json.loads((d / "o.json").read_text())["bootstraps"] == stats.refreshes
    assert sh("aegis_hpc.client", "decrypt", "--key", str(d / "k/secret.h5"), "--input", str(d / "o.h5"),
              "--out", str(d / "o.npy")).returncode == 0
    err = np.abs(np.load(d / "o.npy") - mir[0]).max()
    print(f"infer --refresh bootstrap: {stats.refreshes} bootstraps, |decrypted - mirror| = {err:.2e}")
    assert err < 4e-3
    # keys without bootstrapping keys: one-line error
    assert sh("aegis_hpc.client", "keygen", "--preset", "test", "--for-model", "tiny",
              "--out", str(d / "plain")).returncode == 0
    r = sh("aegis_hpc.infer", "--model", "tiny", "--layers", "1", "--keys", str(d / "plain/eval.h5"),
           "--input", str(d / "s.h5"), "--output", str(d / "o2.h5"), "--refresh", "bootstrap")
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("aegis_hpc.infer: error")]
    assert r.returncode == 2 and len(errs) == 1 and "holds no bootstrapping keys" in errs[0], r.stderr
