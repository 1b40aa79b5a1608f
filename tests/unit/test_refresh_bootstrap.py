"""Refresh by bootstrapping in the encoder (nn/ops.py, nn/refresh.py, infer --refresh bootstrap).

Bounds: bootstrapping is accurate to 2^-18 on slots within [-1, 1]
(test_bootstrap.BOOT_BOUND); a refresh divides by the site bound B and
multiplies back, so its error bound is B * 2^-18.
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
    """One token (32 slots) with values up to 40, as at the Goldschmidt sites: the
    encrypted refresh and the mirror's agree in value and level; without the 1/B
    it is far less accurate (EvalMod's sine leaves its exact range)."""
    ctx = Context.from_preset("test-boot")
    sk, keys = ctx.keygen(rotations=bootstrap_rotations(ctx.params, slots=32), bootstrap=True)
    ev = ctx.evaluator(keys)
    x = np.random.default_rng(1).uniform(-40, 40, 32)
    bounds = refresh.RefreshBounds({"L0/att/out/a": 40.0})
    assert bounds.of("L0/att/out/a/t3") == 128.0          # power of two >= 2 * 40
    ops = CipherOps(ctx, ev, "bootstrap", bounds=bounds)
    plain = PlainOps(ctx.params.max_level, "bootstrap", bootstrap_level(ctx.params), bounds=bounds)
    ct = ctx.encrypt(x, sk, level=2, slots=32)
    got = ops.need(ct, 3, "L0/att/out/a/t3")
    want = plain.need(PV(x.copy(), 2), 3, "L0/att/out/a/t3")
    assert got.level == want.level == bootstrap_level(ctx.params) == 4
    assert ops.stats.refreshes == plain.stats.refreshes == 1
    assert plain.stats.boot_peak == pytest.approx(np.abs(x).max() / 128.0)
    err = np.abs(ctx.decrypt(got, sk) - want.v).max()
    assert err < 128.0 * BOOT_BOUND
    unscaled = CipherOps(ctx, ev, "bootstrap", bounds=refresh.RefreshBounds({"L0/att/out/a": 0.4}))
    err1 = np.abs(ctx.decrypt(unscaled.need(ct, 3, "L0/att/out/a/t3"), sk) - x).max()
    print(f"refresh of |x| <= 40: error {err:.2e} with B = 128, {err1:.2e} without")
    assert err1 > 128.0 * BOOT_BOUND


def test_too_few_levels_after_bootstrapping_are_refused():
    # test-boot leaves 4 levels (test_bootstrap); tiny's degree-15 exp/invsqrt need 5 and the 1/B one more
    p = Context.from_preset("test-boot").params
    with pytest.raises(DepthError, match=f"bootstrapping leaves {bootstrap_level(p)} levels; model tiny needs 6"):
        refresh.prepare(PlainOps(p.max_level, "bootstrap", bootstrap_level(p)), "tiny", 1, p.slots)


def test_measured_bounds_cover_the_calibration_sentences():
    b = refresh.measure("tiny", 1, 1024)
    # every site got a power of two at or above twice its peak
    assert all(b.b[s] >= 2 * v and np.log2(b.b[s]) % 1 == 0 for s, v in b.peaks.items() if v > 0.5)
    assert b.of("L0/unknown/t0") == max(b.b.values()) and b.misses == 1


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
    # a whole sentence: the bounds B are measured on whole sentences, and a
    # fragment without [CLS]/[SEP] exceeds some of them (boot_peak 1.9-3.3)
    x = models.embed_text("tiny", ["Birds sing."])[0]
    np.save(d / "x.npy", x)
    assert sh("aegis_hpc.client", "encrypt", "--public-key", str(d / "k/eval.h5"), "--input", str(d / "x.npy"),
              "--out", str(d / "s.h5")).returncode == 0
    r = sh("aegis_hpc.infer", "--model", "tiny", "--layers", "1", "--keys", str(d / "k/eval.h5"),
           "--input", str(d / "s.h5"), "--output", str(d / "o.h5"), "--summary", str(d / "o.json"))
    assert r.returncode == 0, r.stderr
    p = Context.from_preset("test-deep-boot").params
    mir, stats = mirror.run("tiny", [x], 1, p.slots, p.max_level, "bootstrap", bootstrap_level(p))
    assert stats.refreshes > 0 and stats.boot_peak < 1.0
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
