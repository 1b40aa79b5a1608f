"""aegis_hpc.io: round trips are bit-identical and still decrypt; damaged files are refused."""

import json
import os
import stat

import h5py
import numpy as np
import pytest

from aegis_hpc import io
from aegis_hpc.backend import to_numpy
from aegis_hpc.ckks import Context, Parameters
from aegis_hpc.ckks.bootstrap.bootstrapper import encapsulation_rows

pytestmark = pytest.mark.filterwarnings("ignore::aegis_hpc.io.InsecureParametersWarning")

DECRYPT_TOL = 1e-6


@pytest.fixture(scope="module")
def keys(ctx):
    return ctx.keygen(rotations=[1, 3, -2], conjugate=True)


@pytest.fixture(scope="module")
def matrix(rng):
    return rng.uniform(-1, 1, (5, 12))


def encrypt_rows(ctx, sk, x):
    return [ctx.encrypt(row, sk, slots=16) for row in x]


def same(a, b):
    return np.array_equal(to_numpy(a), to_numpy(b))


# ---- params and keys ---------------------------------------------------------------
def test_params_round_trip_and_insecure_warning(ctx, tmp_path):
    io.write_params(tmp_path / "p.h5", ctx.params)
    with pytest.warns(io.InsecureParametersWarning, match="INSECURE 'test'"):
        back = io.read_params(tmp_path / "p.h5")
    assert back == ctx.params and back.fingerprint == ctx.params.fingerprint and back.insecure


def _relabel(path, name=None, canonical=None):
    """Rewrite /params as a forger would, keeping the file's fingerprint consistent."""
    with h5py.File(path, "r+") as f:
        g = f["params"]
        if name is not None:
            g.attrs["name"] = name
        if canonical is not None:
            text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
            fp = Parameters.from_canonical(canonical, unsafe_allow_insecure=True).fingerprint
            g.attrs["canonical"], g.attrs["fingerprint"], f.attrs["params_fingerprint"] = text, fp, fp


def test_insecure_opt_out_only_for_the_exact_test_preset(ctx, tmp_path):
    path = tmp_path / "p.h5"
    io.write_params(path, ctx.params)
    _relabel(path, name="demo")
    with pytest.raises(io.FormatError, match="below 128-bit security"):
        io.read_params(path)
    weaker = dict(ctx.params.canonical(), q=ctx.params.canonical()["q"][:-2])
    io.write_params(path, ctx.params, force=True)
    _relabel(path, canonical=weaker)
    with pytest.raises(io.FormatError, match="below 128-bit security"):
        io.read_params(path)


def test_params_tampering_is_detected(ctx, tmp_path):
    path = tmp_path / "p.h5"
    io.write_params(path, ctx.params)
    with h5py.File(path, "r+") as f:
        f["params"].attrs["canonical"] = f["params"].attrs["canonical"].replace('"dnum":4', '"dnum":3')
    with pytest.raises(io.FormatError, match="hashes to"):
        io.read_params(path)


def test_secret_key_round_trip_mode_0600(ctx, keys, tmp_path):
    sk, _ = keys
    path = tmp_path / "secret.h5"
    io.write_secret_key(path, ctx.params, sk)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    back_ctx, back = io.read_secret_key(path, ctx)
    assert back_ctx is ctx and same(back.coeffs, sk.coeffs) and same(back.ntt, sk.ntt)
    _, fresh = io.read_secret_key(path)       # builds its own context from the file
    assert same(fresh.ntt, sk.ntt)


@pytest.mark.parametrize("compress", [True, False])
def test_eval_keys_round_trip_and_still_work(ctx, keys, matrix, tmp_path, compress):
    sk, ek = keys
    path = tmp_path / "eval.h5"
    io.write_eval_keys(path, ctx.params, ek, seed_compression=compress)
    _, back = io.read_eval_keys(path, ctx)
    assert same(back.public.b, ek.public.b) and same(back.public.a, ek.public.a)
    assert back.public.seed == ek.public.seed
    assert sorted(back.galois) == sorted(ek.galois)
    for mine, theirs in [(back.relin, ek.relin)] + [(back.galois[g], ek.galois[g]) for g in ek.galois]:
        assert same(mine.b, theirs.b) and same(mine.a, theirs.a) and mine.seeds == theirs.seeds
        assert to_numpy(mine.b).dtype == np.uint32 and to_numpy(mine.a).dtype == np.uint32
    ev = ctx.evaluator(back)
    ct = ctx.encrypt(matrix[0], back.public, slots=16)
    got = ctx.decrypt(ev.rescale(ev.mul(ev.rotate(ct, 3), ct)), sk)
    padded = np.pad(matrix[0], (0, 4))
    want = np.roll(padded, -3) * padded
    assert np.max(np.abs(got - want)) < DECRYPT_TOL


@pytest.fixture(scope="module")
def boot():
    bctx = Context.from_preset("test-boot")
    return (bctx, *bctx.keygen(bootstrap=True))


def test_bootstrap_keys_round_trip_and_bootstrap_after_load(boot, tmp_path):
    """Encapsulation keys survive HDF5 bit for bit (seed-compressed or not), and the
    loaded keys bootstrap (bound: test_bootstrap.BOOT_BOUND)."""
    bctx, sk, ek = boot
    for compress in (False, True):
        path = tmp_path / f"eval{int(compress)}.h5"
        io.write_eval_keys(path, bctx.params, ek, seed_compression=compress)
        _, back = io.read_eval_keys(path)   # context from the file: test-boot may be insecure
        assert io.has_bootstrap_keys(back) and sorted(back.galois) == sorted(ek.galois)
        for name in ("to_ephemeral", "from_ephemeral"):
            mine, theirs = getattr(back.bootstrap, name), getattr(ek.bootstrap, name)
            assert mine.b.shape == theirs.b.shape and mine.a.shape == theirs.a.shape
            assert same(mine.b, theirs.b) and same(mine.a, theirs.a) and mine.seeds == theirs.seeds
    # the truncated key towards the sparse secret: P' and the level-0 primes only
    p = bctx.params
    assert back.bootstrap.to_ephemeral.b.shape == (1, len(encapsulation_rows(p)), p.n)
    x = np.random.default_rng(4).uniform(-1, 1, bctx.slots)
    out = bctx.evaluator(back).bootstrap(bctx.encrypt(x, sk, level=0))
    assert out.level > 0 and np.abs(bctx.decrypt(out, sk) - x).max() < 2.0 ** -18
    # keys without them say so
    io.write_eval_keys(tmp_path / "plain.h5", bctx.params, type(ek)(public=ek.public, relin=ek.relin,
                                                                   fingerprint=ek.fingerprint))
    assert not io.has_bootstrap_keys(io.read_eval_keys(tmp_path / "plain.h5")[1])
    assert "bootstrapping keys: no" in io.describe(tmp_path / "plain.h5")
    assert any(ln.startswith("bootstrapping keys: yes") for ln in io.describe(path))


def test_damaged_bootstrap_key_is_refused(boot, tmp_path):
    bctx, _, ek = boot
    path = tmp_path / "eval.h5"
    io.write_eval_keys(path, bctx.params, ek, seed_compression=False)
    with h5py.File(path, "r+") as f:
        f["bootstrap/to_ephemeral/seeds"][0, 0] ^= 1
    with pytest.raises(io.FormatError, match="to_ephemeral/a does not match its seed"):
        io.read_eval_keys(path)


def test_seed_compression_halves_the_eval_file(ctx, keys, tmp_path):
    io.write_eval_keys(tmp_path / "s.h5", ctx.params, keys[1])
    io.write_eval_keys(tmp_path / "f.h5", ctx.params, keys[1], seed_compression=False)
    ratio = os.path.getsize(tmp_path / "s.h5") / os.path.getsize(tmp_path / "f.h5")
    assert 0.49 < ratio < 0.52


def test_stored_a_must_match_its_seed(ctx, keys, tmp_path):
    path = tmp_path / "f.h5"
    io.write_eval_keys(path, ctx.params, keys[1], seed_compression=False)
    with h5py.File(path, "r+") as f:
        f["relin/seeds"][0, 0] ^= 1
    with pytest.raises(io.FormatError, match="does not match its seed"):
        io.read_eval_keys(path, ctx)


def test_secret_key_refused_where_public_keys_belong(ctx, keys, tmp_path):
    io.write_secret_key(tmp_path / "secret.h5", ctx.params, keys[0])
    with pytest.raises(io.FormatError, match="is a secret-key file; refusing"):
        io.read_eval_keys(tmp_path / "secret.h5", ctx)


def test_key_from_another_parameter_set_names_both_fingerprints(ctx, keys, tmp_path):
    io.write_secret_key(tmp_path / "secret.h5", ctx.params, keys[0])
    other = Context(Parameters.from_canonical(dict(ctx.params.canonical(), scale_bits=38), name="x",
                                              unsafe_allow_insecure=True))
    with pytest.raises(io.FormatError) as err:
        io.read_secret_key(tmp_path / "secret.h5", other)
    assert ctx.params.fingerprint in str(err.value) and other.params.fingerprint in str(err.value)


# ---- ciphertext tensors ---------------------------------------------------------------
def test_ciphertexts_round_trip_bit_identical(ctx, keys, matrix, tmp_path):
    sk = keys[0]
    cts = encrypt_rows(ctx, sk, matrix)
    io.write_ciphertexts(tmp_path / "ct.h5", cts, shape=matrix.shape)
    t = io.read_ciphertexts(tmp_path / "ct.h5", ctx.params)
    assert (t.shape, t.packing, t.start, t.total) == (matrix.shape, io.ROW_PER_CIPHERTEXT, 0, 5)
    for a, b in zip(t.ciphertexts, cts):
        assert same(a.data, b.data) and (a.level, a.scale, a.slots, a.is_complex) == (
            b.level, b.scale, b.slots, b.is_complex)
    assert np.max(np.abs(io.decode_rows(ctx, t, sk) - matrix)) < DECRYPT_TOL
    part = io.read_ciphertexts(tmp_path / "ct.h5", ctx.params, slice(1, 3))
    assert part.start == 1 and all(same(a.data, b.data) for a, b in zip(part.ciphertexts, cts[1:3]))


def test_lower_level_and_complex_ciphertexts_round_trip(ctx, keys, tmp_path):
    sk, ek = keys
    z = np.array([1 + 2j, -0.5j, 0.25, 3])
    ev = ctx.evaluator(ek)
    ct = ev.rescale(ev.mul(ctx.encrypt(z, sk), ctx.encrypt(z, sk)))
    io.write_ciphertexts(tmp_path / "c.h5", [ct], shape=(1, 4))
    back = io.read_ciphertexts(tmp_path / "c.h5", ctx.params).ciphertexts[0]
    assert back.level == ct.level < ctx.params.max_level and back.is_complex and same(back.data, ct.data)
    assert np.max(np.abs(ctx.decrypt(back, sk) - z * z)) < DECRYPT_TOL


def test_ciphertext_file_overhead_below_5_percent(ctx, keys, matrix, tmp_path):
    cts = encrypt_rows(ctx, keys[0], matrix)
    io.write_ciphertexts(tmp_path / "ct.h5", cts, shape=matrix.shape)
    raw = sum(ct.data.size * 4 for ct in cts)
    assert os.path.getsize(tmp_path / "ct.h5") <= 1.05 * raw


def test_residues_out_of_range_are_refused(ctx, keys, matrix, tmp_path):
    path = tmp_path / "ct.h5"
    io.write_ciphertexts(path, encrypt_rows(ctx, keys[0], matrix[:1]), shape=(1, 12))
    with h5py.File(path, "r+") as f:
        f["ciphertexts/data"][0, 0, 0, 0] = ctx.params.q[0]
    with pytest.raises(io.FormatError, match="out of range"):
        io.read_ciphertexts(path, ctx.params)


def test_token_block_row_width_is_checked(ctx, keys, tmp_path):
    """A token-blocks file records its row width: 12 features in 3 chunks of 4 slots
    round-trip; a width that is no power of two, or one that does not match the
    ciphertext count, is refused; a file without the attribute (older files) reads as
    one chunk."""
    x = np.random.default_rng(4).uniform(-1, 1, (6, 12))
    path = tmp_path / "tb.h5"
    cts = [ctx.encrypt(v, keys[0], slots=v.size) for v in io.pack_rows(x, ctx.params.slots, 4)]
    assert len(cts) == 3
    io.write_ciphertexts(path, cts, shape=x.shape, packing=io.TOKEN_BLOCKS, row_width=4)
    t = io.read_ciphertexts(path, ctx.params)
    assert t.row_slots == 4 and np.max(np.abs(io.decode_rows(ctx, t, keys[0]) - x)) < DECRYPT_TOL
    for bad, why in ((3, "not a power of two"), (16, "does not match 3 ciphertexts")):
        with h5py.File(path, "r+") as f:
            f["ciphertexts"].attrs["row_slots"] = bad
        with pytest.raises(io.FormatError, match=why):
            io.read_ciphertexts(path, ctx.params)
    with h5py.File(path, "r+") as f:
        del f["ciphertexts"].attrs["row_slots"]
    with pytest.raises(io.FormatError, match="with rows of 16"):
        io.read_ciphertexts(path, ctx.params)


def test_sharded_tensor_in_one_process(ctx, keys, matrix, tmp_path):
    """Shards + index without MPI (tests/mpi runs the same under mpirun)."""
    sk = keys[0]
    cts = encrypt_rows(ctx, sk, matrix)
    index = tmp_path / "out.h5"
    paths = []
    for rank in range(3):
        part = io.rank_range(len(cts), rank, 3)
        paths.append(io.shard_path(index, rank))
        io.write_ciphertexts(paths[-1], cts[part], shape=matrix.shape,
                             shard=io.Shard(rank, 3, part.start, len(cts)))
    io.write_index(index, reversed(paths))
    whole = io.read_ciphertexts(index, ctx.params)
    assert all(same(a.data, b.data) for a, b in zip(whole.ciphertexts, cts)) and len(whole.ciphertexts) == 5
    assert np.max(np.abs(io.decode_rows(ctx, whole, sk) - matrix)) < DECRYPT_TOL
    with h5py.File(index, "r") as f:          # a plain h5py user sees one tensor
        assert np.array_equal(f["ciphertexts/data"][()], np.stack([to_numpy(c.data) for c in cts]))
    os.unlink(paths[2])                        # rank 0 reads its range without the others
    mine = io.read_ciphertexts(index, ctx.params, io.rank_range(5, 0, 3))
    assert len(mine.ciphertexts) == 2
    with pytest.raises(io.FormatError, match="shard file .* is missing"):
        io.read_ciphertexts(index, ctx.params)


def test_index_refuses_incomplete_shard_sets(ctx, keys, matrix, tmp_path):
    cts = encrypt_rows(ctx, keys[0], matrix)
    p0 = io.shard_path(tmp_path / "o.h5", 0)
    io.write_ciphertexts(p0, cts[:2], shape=matrix.shape, shard=io.Shard(0, 2, 0, 5))
    with pytest.raises(io.FormatError, match="cover 2 of 5"):
        io.write_index(tmp_path / "o.h5", [p0])


# ---- weights, atomicity, inspect -----------------------------------------------------------
def test_weights_round_trip(ctx, rng, tmp_path):
    w = {"encoder.layer.0.weight": rng.standard_normal((384, 1536)).astype(np.float32),
         "bias": rng.standard_normal(7)}
    io.write_weights(tmp_path / "w.h5", w, ctx.params.fingerprint)
    back = io.read_weights(tmp_path / "w.h5", ctx.params.fingerprint)
    assert back.keys() == w.keys() and all(np.array_equal(back[k], w[k]) and back[k].dtype == w[k].dtype
                                           for k in w)
    with pytest.raises(io.FormatError, match="does not match"):
        io.read_weights(tmp_path / "w.h5", "0" * 64)


def test_failed_write_leaves_nothing(ctx, keys, tmp_path):
    bad = [ctx.encrypt([1.0], keys[0]), ctx.encrypt([1.0], keys[0], level=1)]
    with pytest.raises(io.FormatError, match="must share level"):
        io.write_ciphertexts(tmp_path / "ct.h5", bad, shape=(2, 1))

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with io.atomic_output(tmp_path / "x.h5"):
            raise Boom
    assert os.listdir(tmp_path) == []


def test_existing_output_needs_force(ctx, tmp_path):
    io.write_params(tmp_path / "p.h5", ctx.params)
    with pytest.raises(io.OutputExistsError, match="--force"):
        io.write_params(tmp_path / "p.h5", ctx.params)
    io.write_params(tmp_path / "p.h5", ctx.params, force=True)


def test_inspect_never_shows_key_material(ctx, keys, tmp_path):
    sk, ek = keys
    io.write_secret_key(tmp_path / "s.h5", ctx.params, sk)
    io.write_eval_keys(tmp_path / "e.h5", ctx.params, ek)
    text = "\n".join(io.describe(tmp_path / "s.h5", verify=True) + io.describe(tmp_path / "e.h5"))
    assert "secret-key" in text and "/secret_key/coeffs  int8 (2048,)" in text
    assert ek.public.seed.hex() not in text and "rotation=3" in text
    assert str(list(to_numpy(sk.coeffs[:6]))).strip("[]") not in text
