"""python -m aegis_hpc.client through subprocesses: the happy path and every user mistake.

A mistake must end in exactly one "error: ..." line on stderr (other lines may
only be warnings, e.g. the insecure `test` preset's), exit status 2 and no
traceback.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from aegis_hpc import io
from aegis_hpc.ckks import Context, Parameters

pytestmark = pytest.mark.filterwarnings("ignore::aegis_hpc.io.InsecureParametersWarning")

REPO = Path(__file__).resolve().parents[2]
DECRYPT_TOL = 1e-6


def cli(*args, env=None, check=True):
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "aegis_hpc.client", *map(str, args)],
                          capture_output=True, text=True, env=full_env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def refused(*args, match):
    """Run a command that must fail as a user error; return its error line."""
    proc = cli(*args, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and lines, proc.stderr
    assert lines[-1].startswith("error: ") and match in lines[-1], proc.stderr
    assert all(line.startswith("warning: ") for line in lines[:-1]), proc.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A key directory, an input matrix and its ciphertext file, made with the CLI:
    150 rows of 10 values pack 64 rows (of 16 slots) to a ciphertext at N = 2^11, 3 ciphertexts."""
    d = tmp_path_factory.mktemp("client")
    x = np.random.default_rng(5).uniform(-1, 1, (150, 10))
    np.save(d / "x.npy", x)
    cli("keygen", "--preset", "test", "--rotations", "1,-1,4", "--out", d / "keys")
    cli("encrypt", "--key", d / "keys/secret.h5", "--input", d / "x.npy", "--out", d / "ct.h5")
    return d, x


def damaged_copy(work, tmp_path, name="ct.h5"):
    target = tmp_path / Path(name).name
    shutil.copy(work[0] / name, target)
    return target


# ---- happy path -------------------------------------------------------------------------
def test_keygen_encrypt_decrypt_round_trip(work, tmp_path):
    d, x = work
    assert oct(os.stat(d / "keys/secret.h5").st_mode & 0o777) == "0o600"
    cli("decrypt", "--key", d / "keys/secret.h5", "--input", d / "ct.h5", "--out", tmp_path / "r.npy")
    got = np.load(tmp_path / "r.npy")
    assert got.shape == x.shape and np.max(np.abs(got - x)) < DECRYPT_TOL


def test_feature_chunks_round_trip_and_inspect(work, tmp_path):
    """--row-slots 2: the 10 features in 5 chunks of 2 slots, 256 rows a ciphertext (150
    padded to 256: one block of 5 ciphertexts); decryption gives the matrix back and
    inspect names the chunks. A width that neither holds nor divides 10 is refused."""
    d, x = work
    cli("encrypt", "--key", d / "keys/secret.h5", "--input", d / "x.npy", "--out", tmp_path / "c.h5",
        "--row-slots", "2")
    t = io.read_ciphertexts(tmp_path / "c.h5", Context.from_preset("test").params)
    assert (t.row_slots, t.total, t.ciphertexts[0].slots) == (2, 5, 512)
    cli("decrypt", "--key", d / "keys/secret.h5", "--input", tmp_path / "c.h5", "--out", tmp_path / "r.npy")
    assert np.max(np.abs(np.load(tmp_path / "r.npy") - x)) < DECRYPT_TOL
    out = cli("inspect", tmp_path / "c.h5").stdout
    assert "256 row(s) of 2 slots per ciphertext of 512 slots, features in 5 chunks of 2; slot use 29.3 %" in out
    refused("encrypt", "--key", d / "keys/secret.h5", "--input", d / "x.npy", "--out", tmp_path / "b.h5",
            "--row-slots", "4", match="row width 4 neither holds nor divides 10 features")
    assert not (tmp_path / "b.h5").exists()


def test_public_key_encryption(work, tmp_path):
    d, x = work
    cli("encrypt", "--public-key", d / "keys/eval.h5", "--input", d / "x.npy", "--out", tmp_path / "c.h5")
    cli("decrypt", "--key", d / "keys/secret.h5", "--input", tmp_path / "c.h5", "--out", tmp_path / "r.npy")
    assert np.max(np.abs(np.load(tmp_path / "r.npy") - x)) < DECRYPT_TOL


def test_another_key_of_the_same_parameters_is_refused(work, tmp_path):
    """The ciphertext file names its secret key (key_id), through public- and
    secret-key encryption and through an index of shards, so a second key pair
    of the same preset is refused instead of decrypting to noise."""
    d, x = work
    cli("keygen", "--preset", "test", "--out", tmp_path / "other")
    own = io.secret_key_id(io.read_secret_key(d / "keys/secret.h5")[1])
    cli("encrypt", "--public-key", d / "keys/eval.h5", "--input", d / "x.npy", "--out", tmp_path / "p.h5")
    ctx, _ = io.read_secret_key(d / "keys/secret.h5")
    tensor = io.read_ciphertexts(tmp_path / "p.h5", ctx.params)
    assert io.read_ciphertexts(d / "ct.h5", ctx.params).key_id == tensor.key_id == own
    paths = [io.shard_path(tmp_path / "i.h5", r) for r in range(2)]
    for r, p in enumerate(paths):
        part = io.rank_range(3, r, 2)
        io.write_ciphertexts(p, tensor.ciphertexts[part], shape=x.shape, packing=io.TOKEN_BLOCKS,
                             shard=io.Shard(r, 2, part.start, 3), key_id=own)
    io.write_index(tmp_path / "i.h5", paths)
    assert io.read_ciphertexts(tmp_path / "i.h5", ctx.params).key_id == own
    for name in ("p.h5", "i.h5"):
        refused("decrypt", "--key", tmp_path / "other/secret.h5", "--input", tmp_path / name,
                "--out", tmp_path / "r.npy", match="wrong secret key")
    assert not (tmp_path / "r.npy").exists()


def test_decrypt_accepts_an_index_of_shards(work, tmp_path):
    d, x = work
    ctx_path = d / "keys/secret.h5"
    ctx, _ = io.read_secret_key(ctx_path)
    cts = io.read_ciphertexts(d / "ct.h5", ctx.params).ciphertexts
    assert len(cts) == 3
    paths = [io.shard_path(tmp_path / "i.h5", r) for r in range(2)]
    for r, p in enumerate(paths):
        part = io.rank_range(3, r, 2)
        io.write_ciphertexts(p, cts[part], shape=x.shape, packing=io.TOKEN_BLOCKS,
                             shard=io.Shard(r, 2, part.start, 3))
    io.write_index(tmp_path / "i.h5", paths)
    cli("decrypt", "--key", ctx_path, "--input", tmp_path / "i.h5", "--out", tmp_path / "r.npy")
    assert np.max(np.abs(np.load(tmp_path / "r.npy") - x)) < DECRYPT_TOL


def test_decrypt_checks_an_encoder_output_against_its_last_layernorm(work, tmp_path):
    """An infer output names its model and layers: decryption checks every value is
    within |gamma_f| sqrt(d - 1) + |beta_f| of that layer's last LayerNorm. A result
    beyond it (here: 32 features of 3 x the bound) is an error and nothing is written."""
    from aegis_hpc.nn.domains import output_bound

    d, _ = work
    ctx, sk = io.read_secret_key(d / "keys/secret.h5")
    bound = output_bound("tiny", 1)
    good = np.tile(bound * 0.9, (3, 1)) * np.array([[1.0], [-1.0], [0.5]])
    for name, rows in (("good", good), ("bad", good * 3.0)):
        cts = [ctx.encrypt(r, sk, slots=32) for r in rows]
        io.write_ciphertexts(tmp_path / f"{name}.h5", cts, shape=rows.shape, key_id=io.secret_key_id(sk),
                             encoder=("tiny", 1))
    assert io.read_ciphertexts(tmp_path / "good.h5", ctx.params).model == "tiny"
    cli("decrypt", "--key", d / "keys/secret.h5", "--input", tmp_path / "good.h5", "--out", tmp_path / "g.npy")
    assert np.max(np.abs(np.load(tmp_path / "g.npy") - good)) < DECRYPT_TOL
    refused("decrypt", "--key", d / "keys/secret.h5", "--input", tmp_path / "bad.h5", "--out", tmp_path / "b.npy",
            match="numerically broken: 96 value(s) outside the bound of its last LayerNorm")
    assert not (tmp_path / "b.npy").exists()


def test_inspect_shows_structure_not_key_material(work):
    d, _ = work
    out = cli("inspect", d / "keys/eval.h5").stdout
    assert "kind: public-keys" in out and "format: aegis-hpc version 1" in out and "rotation=4" in out
    with h5py.File(d / "keys/eval.h5") as f:
        seed = bytes(f["public/seed"][()])
    assert seed.hex() not in out and str(list(seed)[:4]).strip("[]") not in out
    out = cli("inspect", "--verify", d / "keys/secret.h5").stdout
    assert "kind: secret-key" in out and "checksums ok" in out
    out = cli("inspect", d / "ct.h5").stdout
    assert "level=10" in out and "shape=[150, 10]" in out and "packing=token-blocks" in out
    # 1500 values in 3 ciphertexts of 1024 slots
    assert "64 row(s) of 16 slots per ciphertext of 1024 slots; slot use 48.8 % of 3 x 1024 ring slots" in out


# ---- user mistakes --------------------------------------------------------------------------
def test_wrong_kind(work, tmp_path):
    d, _ = work
    refused("decrypt", "--key", d / "keys/eval.h5", "--input", d / "ct.h5", "--out", tmp_path / "r.npy",
            match="kind 'public-keys', expected secret-key")


def test_secret_key_where_public_keys_belong(work, tmp_path):
    d, _ = work
    refused("encrypt", "--public-key", d / "keys/secret.h5", "--input", d / "x.npy",
            "--out", tmp_path / "c.h5", match="is a secret-key file; refusing")


def test_fingerprint_mismatch_names_both(work, tmp_path):
    d, _ = work
    mine = io.read_params(d / "keys/secret.h5")
    other = Context(Parameters.from_canonical(dict(mine.canonical(), scale_bits=38), name="other",
                                              unsafe_allow_insecure=True))
    sk, _ = other.keygen()
    io.write_ciphertexts(tmp_path / "c.h5", [other.encrypt([0.5], sk)], shape=(1, 1))
    line = refused("decrypt", "--key", d / "keys/secret.h5", "--input", tmp_path / "c.h5",
                   "--out", tmp_path / "r.npy", match="does not match")
    assert mine.fingerprint in line and other.params.fingerprint in line


def test_truncated_file(work, tmp_path):
    d, _ = work
    target = damaged_copy(work, tmp_path)
    os.truncate(target, os.path.getsize(target) // 2)
    refused("decrypt", "--key", d / "keys/secret.h5", "--input", target, "--out", tmp_path / "r.npy",
            match="truncated")


@pytest.mark.parametrize("name,dataset", [("ct.h5", "ciphertexts/data"),
                                          ("keys/secret.h5", "secret_key/coeffs")])
def test_flipped_byte_inside_a_dataset(work, tmp_path, name, dataset):
    d, _ = work
    target = damaged_copy(work, tmp_path, name)
    if name.startswith("keys/"):
        os.chmod(target, 0o600)
    with h5py.File(target) as f:
        chunk = f[dataset].id.get_chunk_info(0)
    with open(target, "r+b") as fh:
        fh.seek(chunk.byte_offset + chunk.size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))
    key = target if name.startswith("keys/") else d / "keys/secret.h5"
    ct = d / "ct.h5" if name.startswith("keys/") else target
    refused("decrypt", "--key", key, "--input", ct, "--out", tmp_path / "r.npy", match="fletcher32")


def test_missing_dataset(work, tmp_path):
    d, _ = work
    target = damaged_copy(work, tmp_path)
    with h5py.File(target, "r+") as f:
        del f["ciphertexts/data"]
    refused("decrypt", "--key", d / "keys/secret.h5", "--input", target, "--out", tmp_path / "r.npy",
            match="/ciphertexts/data: missing dataset")


def test_wrong_dtype(work, tmp_path):
    d, _ = work
    target = damaged_copy(work, tmp_path)
    with h5py.File(target, "r+") as f:
        data = f["ciphertexts/data"][()]
        del f["ciphertexts/data"]
        f.create_dataset("ciphertexts/data", data=data.astype(np.float64), chunks=True, fletcher32=True)
    refused("decrypt", "--key", d / "keys/secret.h5", "--input", target, "--out", tmp_path / "r.npy",
            match="dtype float64, expected uint32")


def test_wrong_shape(work, tmp_path):
    d, _ = work
    target = damaged_copy(work, tmp_path, "keys/secret.h5")
    os.chmod(target, 0o600)
    with h5py.File(target, "r+") as f:
        del f["secret_key/coeffs"]
        f.create_dataset("secret_key/coeffs", data=np.zeros(1024, np.int8), chunks=True, fletcher32=True)
    refused("decrypt", "--key", target, "--input", d / "ct.h5", "--out", tmp_path / "r.npy",
            match="shape (1024,), expected (2048)")


def test_unknown_format_version(work, tmp_path):
    d, _ = work
    target = damaged_copy(work, tmp_path)
    with h5py.File(target, "r+") as f:
        f.attrs["format_version"] = 99
    refused("inspect", target, match="unsupported format_version 99")


def test_not_an_aegis_file(work):
    d, _ = work
    refused("inspect", d / "x.npy", match="not a readable HDF5 file")


def test_existing_output_refused_without_force(work, tmp_path):
    d, _ = work
    before = os.path.getmtime(d / "ct.h5")
    refused("encrypt", "--key", d / "keys/secret.h5", "--input", d / "x.npy", "--out", d / "ct.h5",
            match="already exists (use --force")
    refused("keygen", "--preset", "test", "--out", d / "keys", match="already exists")
    assert os.path.getmtime(d / "ct.h5") == before
    shutil.copy(d / "ct.h5", tmp_path / "c.h5")
    cli("encrypt", "--key", d / "keys/secret.h5", "--input", d / "x.npy", "--out", tmp_path / "c.h5",
        "--force")


@pytest.mark.parametrize("args,match", [
    (["frobnicate"], "invalid choice"),
    (["encrypt", "--input", "x.npy", "--out", "c.h5"], "required"),
    (["keygen", "--preset", "nope", "--out", "k"], "unknown preset"),
    (["keygen", "--preset", "test", "--rotations", "1,x", "--out", "K"], "comma-separated integers"),
    (["keygen", "--preset", "test", "--bootstrap", "--out", "K"], "use a preset ending in -boot"),
    (["encrypt", "--key", "missing.h5", "--input", "x.npy", "--out", "c.h5"], "no such file"),
])
def test_usage_mistakes(work, tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    refused(*args, match=match)


def test_bad_input_array(work, tmp_path):
    d, _ = work
    np.save(tmp_path / "v.npy", np.zeros(5))
    refused("encrypt", "--key", d / "keys/secret.h5", "--input", tmp_path / "v.npy", "--out",
            tmp_path / "c.h5", match="expected a non-empty 2-D array")


def test_text_needs_a_known_model(work, tmp_path):
    d, _ = work
    line = refused("encrypt", "--key", d / "keys/secret.h5", "--text", "hello", "--model", "no-such-model",
                   "--out", tmp_path / "c.h5", match="model")
    assert "no-such-model" in line or "not installed" in line


def test_killed_writer_leaves_no_file(work, tmp_path):
    d, _ = work
    target = tmp_path / "ct.h5"
    env = dict(os.environ, PYTHONPATH=str(REPO), AEGIS_IO_TEST_PAUSE_S="60")
    proc = subprocess.Popen([sys.executable, "-m", "aegis_hpc.client", "encrypt", "--key",
                             str(d / "keys/secret.h5"), "--input", str(d / "x.npy"), "--out", str(target)],
                            env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob(".ct.h5.*.tmp")) and time.time() < deadline:
            time.sleep(0.05)
        temps = list(tmp_path.glob(".ct.h5.*.tmp"))
        assert temps, "writer never started"
        time.sleep(0.3)           # now inside the pause, after the dataset was created
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not target.exists()
    # The next writer to the same target sweeps the dead writer's temp file away.
    cli("encrypt", "--key", d / "keys/secret.h5", "--input", d / "x.npy", "--out", target)
    assert target.exists() and not list(tmp_path.glob(".ct.h5.*.tmp"))
