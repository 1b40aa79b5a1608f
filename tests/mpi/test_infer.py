"""python -m aegis_hpc.infer under mpirun: bit-for-bit across rank counts, one-line errors."""

import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           PYTHONWARNINGS="ignore")
pytestmark = pytest.mark.mpi


def sh(*args, n=None, timeout=600):
    cmd = [sys.executable, "-m", *args]
    if n:
        cmd = ["mpirun", "--oversubscribe", "-n", str(n), *cmd]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun not available")
    d = tmp_path_factory.mktemp("infer")
    assert sh("aegis_hpc.client", "keygen", "--preset", "test", "--for-model", "tiny",
              "--out", str(d / "keys")).returncode == 0
    r = sh("aegis_hpc.client", "encrypt", "--public-key", str(d / "keys/eval.h5"), "--model", "tiny",
           "--text", "Birds sing.", "--out", str(d / "s.h5"))
    assert r.returncode == 0, r.stderr
    return d


def infer(d, out, n, *extra, inp="s.h5", keys="keys/eval.h5"):
    return sh("aegis_hpc.infer", "--model", "tiny", "--layers", "1", "--keys", str(d / keys),
              "--input", str(d / inp), "--output", str(d / out), "--key-holder", str(d / "keys/secret.h5"),
              "--seed", "00ff", *extra, n=n)


def data(path):
    with h5py.File(path) as f:   # reads through the index's virtual dataset
        return f["ciphertexts/data"][...]


def test_same_output_bit_for_bit_on_1_and_2_ranks(work):
    r1 = infer(work, "o1.h5", 1)
    assert r1.returncode == 0, r1.stderr
    r2 = infer(work, "o2.h5", 2)
    assert r2.returncode == 0, r2.stderr
    assert "refreshes through the key holder" in r2.stdout and "summary" in r2.stdout
    assert np.array_equal(data(work / "o1.h5"), data(work / "o2.h5"))
    dec = sh("aegis_hpc.client", "decrypt", "--key", str(work / "keys/secret.h5"), "--input",
             str(work / "o2.h5"), "--out", str(work / "o2.npy"))
    assert dec.returncode == 0, dec.stderr
    chk = sh("aegis_hpc.nn.check", "--model", "tiny", "--layers", "1", "--text", "Birds sing.",
             "--decrypted", str(work / "o2.npy"))
    assert chk.returncode == 0, chk.stdout + chk.stderr


def _one_line_error(r):
    lines = [ln for ln in r.stderr.splitlines() if "aegis_hpc.infer: error" in ln]
    assert r.returncode != 0
    assert lines, r.stderr
    return lines


def test_bad_inputs_fail_with_one_line(work):
    d = work
    # keys of another parameter set
    assert sh("aegis_hpc.client", "keygen", "--preset", "test", "--for-model", "tiny",
              "--out", str(d / "other")).returncode == 0
    r = infer(d, "x1.h5", 2, keys="other/eval.h5")
    assert len(_one_line_error(r)) == 2           # one line from each rank
    # too-low level: drop levels of the input
    with h5py.File(d / "s.h5") as f:
        pass
    from aegis_hpc import io
    from aegis_hpc.ckks import Context

    ctx, keys = io.read_eval_keys(d / "keys/eval.h5")
    t = io.read_ciphertexts(d / "s.h5", ctx.params)
    ev = ctx.evaluator(keys)
    low = [ev.drop_level(c, c.level - 2) for c in t.ciphertexts]
    io.write_ciphertexts(d / "low.h5", low, shape=t.shape)
    assert "level" in _one_line_error(infer(d, "x2.h5", 2, inp="low.h5"))[0]
    # too-long sequence
    long = [t.ciphertexts[0]] * 65
    io.write_ciphertexts(d / "long.h5", long, shape=(65, 32))
    assert "longer" in _one_line_error(infer(d, "x3.h5", 1, inp="long.h5"))[0]
    # missing and corrupt files
    assert _one_line_error(infer(d, "x4.h5", 2, inp="nope.h5"))
    (d / "bad.h5").write_bytes(b"not hdf5 at all" * 10)
    assert _one_line_error(infer(d, "x5.h5", 1, inp="bad.h5"))
