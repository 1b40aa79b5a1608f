"""python -m aegis_hpc.infer under mpirun: every strategy gives the -n 1 output
bit for bit at this world size, sends the bytes the planner predicts, and
bad input gives one-line errors.

Rank 0 of the test job launches the runs (mpirun -n 1 and -n WORLD as
subprocesses); the other ranks wait without spinning, so the runs get the
cores.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import launcher_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = launcher_env(PYTHONPATH=ROOT, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
pytestmark = pytest.mark.mpi
# 41 tokens: 2 blocks of 32 at N = 2^11; two sequences of it, 4 blocks, split over 1, 2 and 4 ranks
TEXT = ("Birds sing in the morning, and the river runs over grey stones while the old mill turns "
        "slowly in the wind near the village where we were born, long before the first snow of the year.")
TOKENS, SEQUENCES = 41, 2
SHORT = 2                           # "" -> [CLS] [SEP]: one block; limb and replicate run it on every rank
CHUNK_ROW = 16                      # c.h5: the same text in 2 feature chunks of 16 slots (one head each)


def sh(*args, n=None, timeout=900):
    cmd = [sys.executable, "-m", *args]
    if n:
        cmd = ["mpirun", "--oversubscribe", "-n", str(n), *cmd]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def rank0_only(comm, fn):
    """Run fn on rank 0 while the others sleep in a nonblocking barrier."""
    try:
        if comm.rank == 0:
            return fn()
    finally:
        req = comm.mpi.Ibarrier()
        while not req.Test():
            time.sleep(0.05)


@pytest.fixture(scope="module")
def work(comm, tmp_path_factory):
    """Keys, the input and the -n 1 output, on rank 0. A failure is handed to
    the tests (raised inside rank0_only) so that no rank waits forever."""
    def setup():
        if shutil.which("mpirun") is None:
            pytest.skip("mpirun not available")
        d = tmp_path_factory.mktemp("infer")
        assert sh("aegis_hpc.client", "keygen", "--preset", "test", "--for-model", "tiny",
                  "--row-slots", str(CHUNK_ROW), "--out", str(d / "keys")).returncode == 0
        for text, name, extra in ((TEXT, "s", []), ("", "short", []), (TEXT, "c", ["--row-slots", str(CHUNK_ROW)])):
            r = sh("aegis_hpc.client", "encrypt", "--public-key", str(d / "keys/eval.h5"), "--model", "tiny",
                   "--text", text, "--out", str(d / f"{name}.h5"), *extra)
            assert r.returncode == 0, r.stderr
        assert models_tokens(TEXT) == TOKENS
        for name in ("s", "short", "c"):
            r1 = infer(d, f"{name}1.h5", 1, inp=f"{name}.h5")
            assert r1.returncode == 0, r1.stderr
        return d

    def caught():
        try:
            return setup()
        except BaseException as e:  # noqa: B036 -- pytest's skip is a BaseException
            return e

    return rank0_only(comm, caught)


def ready(work):
    if isinstance(work, BaseException):
        raise work
    return work


def models_tokens(text):
    from aegis_hpc.nn import models

    return len(models.tokenize([text], 1 << 20)[0])


def infer(d, out, n, *extra, inp="s.h5", keys="keys/eval.h5", holder="keys/secret.h5"):
    """The input `inp` as SEQUENCES sequences (the same text twice, outputs out and out2)
    for the long input, one for the others."""
    seqs = SEQUENCES if inp in ("s.h5", "c.h5") else 1
    outs = [str(d / out)] + [str(d / f"{out}.{k}.h5") for k in range(1, seqs)]
    return sh("aegis_hpc.infer", "--model", "tiny", "--layers", "1", "--keys", str(d / keys),
              "--input", *[str(d / inp)] * seqs, "--output", *outs, "--key-holder", str(d / holder),
              "--seed", "00ff", *extra, n=n)


def data(path):
    with h5py.File(path) as f:   # reads through the index's virtual dataset
        return f["ciphertexts/data"][...]


def planned(world, strategy, tokens, sequences, row_width=None):
    """The planner's bytes, summed over ranks, for infer's run (its trace of the encoder)."""
    from aegis_hpc.ckks.params import preset
    from aegis_hpc.parallel import planner

    params = preset("test")
    tr = planner.trace("tiny", params, tokens, 1, sequences, row_width)
    transfers = getattr(planner, f"{strategy}_transfers")(tr, params, world)
    return sum(planner.predicted_bytes(t, params.n) for t in transfers)


def run_strategy(d, strategy, world, name="s", tokens=TOKENS * SEQUENCES):
    out = f"{name}-{strategy}{world}.h5"
    r = infer(d, out, world, "--strategy", strategy, "--summary", str(d / f"{out}.json"), inp=f"{name}.h5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "summary" in r.stdout
    assert np.array_equal(data(d / f"{name}1.h5"), data(d / out)), f"{strategy} at {world} ranks differs from 1"
    with open(d / f"{out}.json") as f:
        s = json.load(f)
    assert (s["strategy"], s["world"], s["tokens"], s["layers"]) == (strategy, world, tokens, 1)
    assert len(s["peak_memory_bytes"]) == world and min(s["peak_memory_bytes"]) > 2**20
    assert set(s["blocks"]) == {"layer 0 attention", "layer 0 ffn"}
    return s, sum(b["bytes"] for b in s["blocks"].values())


def check_aegis(d, world, name, row_width=None):
    """aegis at `world` ranks on input `name`: the -n 1 bits, the planner's bytes, no
    traffic outside attention, and a decryption within the check's bound."""
    s, total = run_strategy(d, "aegis", world, name)
    assert total == planned(world, "aegis", TOKENS, SEQUENCES, row_width) > 0
    assert s["blocks"]["layer 0 ffn"]["bytes"] == 0          # only attention talks
    assert 0 <= s["comm_wait_seconds"] and 0 <= s["hidden_seconds"]
    dec = sh("aegis_hpc.client", "decrypt", "--key", str(d / "keys/secret.h5"), "--input",
             str(d / f"{name}-aegis{world}.h5"), "--out", str(d / f"{name}.npy"))
    assert dec.returncode == 0, dec.stderr
    chk = sh("aegis_hpc.nn.check", "--model", "tiny", "--layers", "1", "--text", TEXT,
             "--decrypted", str(d / f"{name}.npy"))
    assert chk.returncode == 0, chk.stdout + chk.stderr


@pytest.mark.mpi(min_size=2)
def test_aegis_same_bits_as_one_rank_and_bytes_as_planned(comm, work):
    rank0_only(comm, lambda: check_aegis(ready(work), comm.size, "s"))


@pytest.mark.mpi(min_size=2)
def test_feature_chunks_same_bits_as_one_rank_and_bytes_as_planned(comm, work):
    """Inputs in feature chunks (client encrypt --row-slots): ranks hold whole token
    blocks and every chunk of their k and v goes on the wire, as the planner predicts."""
    rank0_only(comm, lambda: check_aegis(ready(work), comm.size, "c", CHUNK_ROW))


@pytest.mark.mpi(min_size=2)
def test_limb_same_bits_as_one_rank_and_bytes_as_planned(comm, work):
    def check():
        _, total = run_strategy(ready(work), "limb", comm.size, "short", SHORT)
        assert total == planned(comm.size, "limb", SHORT, 1) > 0

    rank0_only(comm, check)


@pytest.mark.mpi(min_size=2)
def test_replicate_same_bits_as_one_rank(comm, work):
    def check():
        s, _ = run_strategy(ready(work), "replicate", comm.size, "short", SHORT)
        # tensor parallel: every linear layer all-reduces its partial products
        assert all(b["bytes"] > 0 for b in s["blocks"].values())

    rank0_only(comm, check)


def _one_line_error(r):
    lines = [ln for ln in r.stderr.splitlines() if "aegis_hpc.infer: error" in ln]
    assert r.returncode != 0
    assert lines, r.stderr
    return lines


@pytest.mark.mpi(min_size=2)
def test_bad_inputs_fail_with_one_line(comm, work):
    def check():
        from aegis_hpc import io

        d = ready(work)
        # another key pair of the same parameter set: against the key holder's key,
        # and (key holder matching) against the key the ciphertexts name
        assert sh("aegis_hpc.client", "keygen", "--preset", "test", "--for-model", "tiny",
                  "--out", str(d / "other")).returncode == 0
        r = infer(d, "x1.h5", 2, keys="other/eval.h5")
        assert len(_one_line_error(r)) == 2           # one line from each rank
        r = infer(d, "x6.h5", 2, keys="other/eval.h5", holder="other/secret.h5")
        assert all("do not match the ciphertexts" in line for line in _one_line_error(r))
        # too-low level: drop levels of the input
        ctx, keys = io.read_eval_keys(d / "keys/eval.h5")
        t = io.read_ciphertexts(d / "s.h5", ctx.params)
        ev = ctx.evaluator(keys)
        low = [ev.drop_level(c, c.level - 1) for c in t.ciphertexts]
        io.write_ciphertexts(d / "low.h5", low, shape=t.shape, packing=io.TOKEN_BLOCKS)
        assert "level" in _one_line_error(infer(d, "x2.h5", 2, inp="low.h5"))[0]
        # too-long sequence: 65 tokens, 3 blocks of 32
        long = [t.ciphertexts[0]] * 3
        io.write_ciphertexts(d / "long.h5", long, shape=(65, 32), packing=io.TOKEN_BLOCKS)
        assert "longer" in _one_line_error(infer(d, "x3.h5", 1, inp="long.h5"))[0]
        # inputs of two row widths in one run (one chunk and feature chunks)
        r = sh("aegis_hpc.infer", "--model", "tiny", "--layers", "1", "--keys", str(d / "keys/eval.h5"),
               "--input", str(d / "s.h5"), str(d / "c.h5"), "--output", str(d / "x7.h5"), str(d / "x8.h5"),
               "--key-holder", str(d / "keys/secret.h5"), n=1)
        assert "--row-slots" in _one_line_error(r)[0] and not (d / "x7.h5").exists()
        # missing and corrupt files
        assert _one_line_error(infer(d, "x4.h5", 2, inp="nope.h5"))
        (d / "bad.h5").write_bytes(b"not hdf5 at all" * 10)
        assert _one_line_error(infer(d, "x5.h5", 1, inp="bad.h5"))

    rank0_only(comm, check)
