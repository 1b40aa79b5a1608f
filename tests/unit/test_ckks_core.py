"""CKKS core against numpy: NTT, basis conversion, encoding, every evaluator op.

Bounds are for the `test` preset (N=2^11, scale ~2^40, uniform ternary secret):
fresh encryption noise is ~2^8 / 2^40 per slot, key switching adds ~2^12/2^40.
"""

import math

import numpy as np
import pytest

from aegis_hpc.ckks import (ChebyshevSeries, Context, EncodingError, EvaluationError,
                            InsecureParametersError, LinearTransform, MissingKeyError, build, preset)
from aegis_hpc.ckks.lintrans import BlockTransform
from aegis_hpc.backend import to_numpy
from aegis_hpc.ckks.ntt import RingTables
from aegis_hpc.ckks.params import HE_STANDARD_128, PRESETS
from aegis_hpc.ckks.primes import is_prime
from aegis_hpc.ckks.rns import BasisConverter

FRESH = 1e-8          # fresh encryption, additions
MUL = 1e-7            # after multiplications and rescales
KEYSWITCH = 1e-6      # rotations, conjugation, transforms


@pytest.fixture(scope="module")
def keys(ctx):
    return ctx.keygen(rotations=[1, 2, 3, -1, -7, 100], conjugate=True)


@pytest.fixture(scope="module")
def ev(ctx, keys):
    return ctx.evaluator(keys[1])


def rand(rng, n, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, n)


# ---- parameters and security ----------------------------------------------------
def test_presets_are_valid_chains():
    for name in PRESETS:
        p = preset(name)
        two_n = 2 * p.n
        assert all(is_prime(q) and q % two_n == 1 and q < 2 ** 31 for q in p.qp)
        assert len(set(p.qp)) == len(p.qp)
        assert p.insecure == bool(PRESETS[name].get("unsafe_allow_insecure"))
        # scale table lands within 3 % of 2^scale_bits (or the level's own bits) at every level
        want = PRESETS[name].get("level_scale_bits", {})
        assert all(abs(math.log2(s) - want.get(lvl, p.scale_bits)) < 0.05 for lvl, s in enumerate(p.scales))


def test_secure_presets_meet_the_128_bit_bound():
    secure = [name for name, kw in PRESETS.items() if not kw.get("unsafe_allow_insecure")]
    assert {"demo", "n16"} <= set(secure)
    for name in secure:
        p = preset(name)
        assert p.log_qp <= HE_STANDARD_128[p.n]
    assert preset("n16").log_n == 16 and preset("n16").log_qp > 0.95 * HE_STANDARD_128[1 << 16]


def test_insecure_parameters_are_refused():
    with pytest.raises(InsecureParametersError, match="exceeds the 128-bit"):
        build(log_n=11, levels=10, scale_bits=40, primes_per_level=2)
    with pytest.raises(InsecureParametersError):
        Context(build(log_n=14, levels=9, scale_bits=46, primes_per_level=2))


def test_fingerprint_is_stable_and_distinct():
    assert preset("test").fingerprint == preset("test").fingerprint
    assert preset("test").fingerprint != preset("demo").fingerprint


# ---- NTT and RNS -------------------------------------------------------------------
def _negacyclic_schoolbook(a, b, q):
    n = len(a)
    conv = np.convolve(np.array(a, dtype=object), np.array(b, dtype=object))
    out = [0] * n
    for k, v in enumerate(conv):
        if k < n:
            out[k] += v
        else:
            out[k - n] -= v
    return np.array([x % q for x in out], dtype=np.uint64)


@pytest.mark.parametrize("log_n", [10, 11, 12])
def test_ntt_matches_schoolbook_negacyclic_product(log_n, rng):
    p = build(log_n=log_n, levels=2, scale_bits=30, primes_per_level=1, unsafe_allow_insecure=True)
    ring = RingTables(p.qp, p.log_n)
    idx = list(range(len(p.qp)))
    q = np.array(p.qp, dtype=np.uint64)[:, None]
    a = rng.integers(0, 2 ** 31, (len(idx), p.n)).astype(np.uint64) % q
    b = rng.integers(0, 2 ** 31, (len(idx), p.n)).astype(np.uint64) % q
    fa, fb = ring.ntt(a, idx), ring.ntt(b, idx)
    assert np.array_equal(ring.intt(fa, idx), a)
    prod = ring.intt(fa * fb % q, idx)
    for i in (0, len(idx) - 1):
        assert np.array_equal(prod[i], _negacyclic_schoolbook(a[i], b[i], int(q[i, 0])))


def test_basis_conversion_against_big_integer_crt(rng, ctx):
    p = ctx.params
    src, dst = p.q[:7], p.q[7:12] + p.p
    big_a = math.prod(src)
    values = [int.from_bytes(rng.bytes(40), "little") % big_a for _ in range(64)]
    x = np.array([[v % a for v in values] for a in src], dtype=np.uint64)
    y = BasisConverter(src, dst).convert(x)
    for j, b in enumerate(dst):
        for k, v in enumerate(values):
            # fast conversion returns v + u*A with 0 <= u < |A basis|
            u = next((u for u in range(len(src)) if (v + u * big_a) % b == int(y[j, k])), None)
            assert u is not None


# ---- encoding and encryption ---------------------------------------------------------
def test_encode_decode_roundtrip(ctx, rng):
    z = rand(rng, ctx.slots) + 1j * rand(rng, ctx.slots)
    pt = ctx.encode(z)
    assert np.abs(ctx.decode(pt) - z).max() < 1e-9
    short = rand(rng, 8)
    assert np.abs(ctx.decode(ctx.encode(short)) - short).max() < 1e-9


def test_batched_encoding_is_each_row_encoded_alone(ctx, rng, monkeypatch):
    """Linear transforms encode their diagonals in batches: the plaintexts must
    not depend on the batch (FFT rows, chunk boundaries), and equal the
    textbook residues of the rounded coefficients, reduced on the host."""
    import aegis_hpc.ckks.context as context_mod

    rows = rng.uniform(-1, 1, (5, 64))
    rows[3] = 0.0
    monkeypatch.setattr(context_mod, "ENCODE_BATCH_BYTES", 2 * ctx.params.limbs_at(2) * ctx.params.n * 8)
    batch = ctx.encode_many(rows, level=2, slots=64)
    limbs = ctx.params.limbs_at(2)
    q = np.array(ctx.params.q[:limbs], dtype=np.int64)[:, None]
    for row, pt in zip(rows, batch):
        alone = ctx.encode(row, level=2, slots=64)
        assert np.array_equal(to_numpy(pt.data), to_numpy(alone.data))
        coeffs, _ = ctx.encoder.to_coefficients(row, ctx.params.scale_at(2), 64)
        want = ctx.ring.ntt(ctx.xp.asarray((coeffs[None, :] % q).astype(np.uint64)), list(range(limbs)))
        assert np.array_equal(to_numpy(pt.data), to_numpy(want))
        assert (pt.level, pt.slots, pt.is_complex) == (2, 64, False)
    assert np.abs(ctx.decode(batch[1]) - rows[1]).max() < 1e-9


def test_fresh_encryption_secret_and_public(ctx, keys, rng):
    sk, ek = keys
    x = rand(rng, ctx.slots)
    assert np.abs(ctx.decrypt(ctx.encrypt(x, sk), sk) - x).max() < FRESH
    assert np.abs(ctx.decrypt(ctx.encrypt(x, ek), sk) - x).max() < 1e-7  # public-key noise ~ sqrt(N) larger


def test_public_key_encryption_is_the_textbook_formula(ctx, keys, rng, monkeypatch):
    """The message's coefficients ride in e0's NTT (linearity): the ciphertext equals
    (v pk.b + e0 + NTT(m), v pk.a + e1) built step by step from the same draws, for
    full and sparse slots and a lower level; a Plaintext input takes the same noise."""
    from aegis_hpc.ckks import keys as K
    from aegis_hpc.ckks.params import ERROR_ETA
    from aegis_hpc.ckks.sampling import SmallSampler, fresh_seed

    sk, ek = keys
    kg, n = ctx.keygenerator, ctx.params.n
    for count, level in ((ctx.slots, None), (24, 1)):
        x = rand(rng, count)
        seed = fresh_seed()
        monkeypatch.setattr(K, "fresh_seed", lambda: seed)
        got = ctx.encrypt(x, ek, level=level)
        from_pt = ctx.encrypt(ctx.encode(x, level=level), ek)
        small = SmallSampler(seed, "enc-pk")
        pt = ctx.encode(x, level=level)
        idx = list(range(ctx.params.limbs_at(pt.level)))
        v, e0, e1 = kg.small_to_ntt(np.stack([small.ternary(n), small.centered_binomial(n, ERROR_ETA),
                                              small.centered_binomial(n, ERROR_ETA)]), idx)
        q = ctx.ring.q_col(idx)
        pk = ek.public
        want = np.stack([(v * pk.b[:len(idx)] % q + e0 + pt.data) % q, (v * pk.a[:len(idx)] % q + e1) % q])
        for ct in (got, from_pt):
            assert np.array_equal(to_numpy(ct.data), want)
            assert (ct.level, ct.slots, ct.scale) == (pt.level, pt.slots, pt.scale)
        assert np.abs(ctx.decrypt(got, sk)[:count] - x).max() < 1e-7
    with pytest.raises(ValueError, match="level 99 outside"):
        ctx.encrypt(rand(rng, 8), ek, level=99)


def test_encryption_is_randomised(ctx, keys, rng):
    sk, _ = keys
    x = rand(rng, 16)
    a, b = ctx.encrypt(x, sk), ctx.encrypt(x, sk)
    assert not np.array_equal(a.data, b.data)


def test_wrong_key_does_not_decrypt(ctx, keys, rng):
    sk, _ = keys
    other, _ = ctx.keygen()
    x = rand(rng, ctx.slots)
    err = np.abs(ctx.decrypt(ctx.encrypt(x, sk), other) - x).max()
    assert err > 1e3  # uniformly random mod q0*q1 / scale


# ---- arithmetic --------------------------------------------------------------------
def test_add_sub_neg_constants(ctx, keys, ev, rng):
    sk, _ = keys
    x, y = rand(rng, ctx.slots), rand(rng, ctx.slots)
    cx, cy = ctx.encrypt(x, sk), ctx.encrypt(y, sk)
    assert np.abs(ctx.decrypt(ev.add(cx, cy), sk) - (x + y)).max() < FRESH
    assert np.abs(ctx.decrypt(ev.sub(cx, cy), sk) - (x - y)).max() < FRESH
    assert np.abs(ctx.decrypt(ev.neg(cx), sk) + x).max() < FRESH
    assert np.abs(ctx.decrypt(ev.add_const(cx, 0.75), sk) - (x + 0.75)).max() < FRESH
    assert np.abs(ctx.decrypt(ev.mul_int(cx, 3), sk) - 3 * x).max() < 3 * FRESH
    assert np.abs(ctx.decrypt(ev.mul_const(cx, -1.37, rescale=True), sk) + 1.37 * x).max() < MUL
    assert np.abs(ctx.decrypt(ev.add(cx, ctx.encode(y)), sk) - (x + y)).max() < FRESH
    assert np.abs(ctx.decrypt(ev.mul_plain(cx, y, rescale=True), sk) - x * y).max() < MUL


@pytest.mark.parametrize("fused", [False, True])
def test_mul_relin_rescale_chain_to_last_level(ctx, keys, ev, rng, fused):
    """mul then rescale, and mul(rescale=True): one division by P q_T (moddown_rescale)."""
    sk, _ = keys
    x = rand(rng, ctx.slots)
    cx = ctx.encrypt(x, sk)
    acc, ref = cx, x.copy()
    for expected_level in range(ctx.max_level - 1, -1, -1):
        acc = ev.mul(acc, cx, rescale=True) if fused else ev.rescale(ev.mul(acc, cx))
        ref = ref * x
        assert acc.level == expected_level
        assert abs(acc.scale / ctx.params.scale_at(expected_level) - 1) < 1e-9
        assert np.abs(ctx.decrypt(acc, sk) - ref).max() < MUL
    with pytest.raises(EvaluationError, match="level"):
        ev.rescale(acc)
    with pytest.raises(EvaluationError, match="level"):
        ev.mul(acc, acc, rescale=True)


def test_mixed_levels_are_adjusted_exactly(ctx, keys, ev, rng):
    sk, _ = keys
    x, y = rand(rng, ctx.slots), rand(rng, ctx.slots)
    low = ev.rescale(ev.mul(ctx.encrypt(x, sk), ctx.encrypt(x, sk)))
    low = ev.rescale(ev.mul(low, low))
    high = ctx.encrypt(y, sk)
    out = ev.add(high, low)
    assert out.level == low.level
    assert np.abs(ctx.decrypt(out, sk) - (y + x ** 4)).max() < MUL
    prod = ev.rescale(ev.mul(high, low))
    assert np.abs(ctx.decrypt(prod, sk) - y * x ** 4).max() < MUL


@pytest.mark.parametrize("step", [1, 2, 3, -1, -7, 100])
def test_rotations(ctx, keys, ev, rng, step):
    sk, _ = keys
    x = rand(rng, ctx.slots)
    out = ctx.decrypt(ev.rotate(ctx.encrypt(x, sk), step), sk)
    assert np.abs(out - np.roll(x, -step)).max() < KEYSWITCH


def test_rotation_of_short_vectors_is_cyclic(ctx, keys, ev, rng):
    sk, _ = keys
    x = rand(rng, 16)
    out = ctx.decrypt(ev.rotate(ctx.encrypt(x, sk), 3), sk)
    assert out.shape == (16,)
    assert np.abs(out - np.roll(x, -3)).max() < KEYSWITCH


def test_conjugation(ctx, keys, ev, rng):
    sk, _ = keys
    z = rand(rng, ctx.slots) + 1j * rand(rng, ctx.slots)
    out = ctx.decrypt(ev.conjugate(ctx.encrypt(z, sk)), sk)
    assert np.abs(out - np.conj(z)).max() < KEYSWITCH


def test_hoisted_rotations_equal_plain_ones(ctx, keys, ev, rng):
    sk, _ = keys
    x = rand(rng, ctx.slots)
    ct = ctx.encrypt(x, sk)
    hoisted = ev.rotate_hoisted(ct, [1, 2, 3, -1])
    for step, rot in hoisted.items():
        # a lone rotation switches the rotated c1, a hoisted one permutes the shared ModUp's
        # digits: both key-switch sigma(c1), differing only in the conversion's Q_j multiple
        plain = ev.rotate(ct, step)
        assert np.abs(ctx.decrypt(rot, sk) - np.roll(x, -step)).max() < KEYSWITCH
        assert np.abs(ctx.decrypt(plain, sk) - np.roll(x, -step)).max() < KEYSWITCH
    # a group of one is the lone rotation
    assert np.array_equal(ev.rotate_hoisted(ct, [100])[100].data, ev.rotate(ct, 100).data)


def test_key_inner_product_over_a_row_share_is_those_rows_of_the_whole(ctx, keys, ev, rng):
    """KeySwitcher.inner over a subset of the extended rows (a limb rank's share: every P row
    and some Q rows, ext holding just those) is exactly those rows of the whole sum, with and
    without a Galois map."""
    from aegis_hpc.ckks.keys import galois_element_for_rotation

    ct = ctx.encrypt(rand(rng, ctx.slots), keys[0])
    ks, level = ev.ks, ct.level
    ext = ks.modup(ct.data[1], level)
    key = keys[1].galois[galois_element_for_rotation(1, ctx.params.n)]
    limbs = ctx.params.limbs_at(level)
    share = list(range(ks.n_p)) + [ks.n_p + i for i in range(1, limbs, 2)]
    for perm in (None, ctx.ring.automorphism_permutation(galois_element_for_rotation(3, ctx.params.n))):
        whole = to_numpy(ks.inner(ext, key, level, perm))
        part = to_numpy(ks.inner(ext[:, share], key, level, perm, rows=share))
        assert part.shape == (2, len(share), ctx.params.n)
        np.testing.assert_array_equal(part, whole[:, share])


class CountingEvaluator:
    """Counts what a transform does to the real evaluator: rotations (key
    switches) and ModUps (one per hoisted batch)."""

    def __init__(self, ev):
        self.ev, self.rotations, self.modups = ev, 0, 0

    def __getattr__(self, name):
        return getattr(self.ev, name)

    def rotate_hoisted(self, ct, steps):
        todo = [s for s in steps if s % ct.slots]
        self.rotations += len(todo)
        self.modups += bool(todo)
        return self.ev.rotate_hoisted(ct, steps)

    def rotate(self, ct, step):
        return self.rotate_hoisted(ct, [step])[step]


@pytest.mark.parametrize("key_set", ["pow2", "all"])
def test_linear_transform_matches_matrix_product(ctx, rng, key_set):
    n = 64
    m = rng.uniform(-1, 1, (n, n))
    lt = LinearTransform(m, keys=key_set)
    sk, ek = ctx.keygen(rotations=lt.rotations())
    ev = CountingEvaluator(ctx.evaluator(ek))
    x = rand(rng, n)
    out = lt.evaluate(ev, ctx.encrypt(x, sk))
    assert out.level == ctx.max_level - 1
    assert np.abs(ctx.decrypt(out, sk) - m @ x).max() < 1e-6 * n
    # baby-step giant-step: n1 = 8 babies, 8 groups in 4 runs of 2 (Horner by
    # 8 inside a run: 4 rotations; offsets 16, 32, 48 = 32 + 16: 4 more)
    assert lt.n1 == 8 and ev.rotations == lt.key_switches() == 7 + 4 + 4
    assert ev.modups == lt.modups()
    if key_set == "pow2":
        assert lt.rotations() == [1, 2, 4, 8, 16, 32]
        assert ev.modups == 4 + 8      # parents 0, 2, 4, 6 of the baby tree; each giant step
    else:
        assert lt.rotations() == [1, 2, 3, 4, 5, 6, 7, 8, 16, 32]
        assert ev.modups == 1 + 8


def test_linear_transform_shares_add_up_to_the_whole_bit_for_bit(ctx, rng):
    """Tensor parallelism: runs split over `world` ranks, summed mod q."""
    n = 64
    lt = LinearTransform(rng.uniform(-1, 1, (n, n)))
    sk, ek = ctx.keygen(rotations=lt.rotations())
    ev = ctx.evaluator(ek)
    ct = ctx.encrypt(rand(rng, n), sk)
    whole = lt.evaluate(ev, ct, rescale=False)
    for world in (2, 3, 4, 5):
        parts = [lt.evaluate(ev, ct, share=(i, world)) for i in range(world)]
        total = parts[0]
        for p in parts[1:]:
            total = ev.add(total, p)
        assert np.array_equal(to_numpy(total.data), to_numpy(whole.data)) and total.scale == whole.scale


def test_block_transform_is_the_block_matrix_product(ctx, rng):
    """A 48 x 32 matrix on token rows of 16-slot chunks (3 output x 2 input chunks, 4
    rows each): y_j = sum_i M_ji x_i within every row, each input's babies rotated once
    and each output's giants once (2 x babies + 3 x giants key switches, under half of
    rotating per block: 32 against 78), and tensor-parallel shares add up to the whole bit for bit."""
    S, rows, slots = 16, 4, 64
    m = rng.uniform(-1, 1, (48, 32))
    bt = BlockTransform.block_diagonal(m, S, slots)
    assert (bt.outputs, bt.inputs) == (3, 2)
    sk, ek = ctx.keygen(rotations=bt.rotations())
    ev = CountingEvaluator(ctx.evaluator(ek))
    x = rng.uniform(-1, 1, (rows, 32))
    chunks = [ctx.encrypt(x[:, i * S:(i + 1) * S].ravel(), sk, slots=slots) for i in range(2)]
    out = bt.evaluate(ev, chunks)
    y = np.concatenate([ctx.decrypt(o, sk).real.reshape(rows, S) for o in out], axis=1)
    assert all(o.level == ctx.max_level - 1 for o in out)
    assert np.abs(y - x @ m.T).max() < KEYSWITCH * 32
    babies = sum(len(ss) for _, ss in bt.plan._tree)
    giants = bt.plan._giant_rotations()
    assert ev.rotations == bt.key_switches() == 2 * babies + 3 * giants
    assert bt.key_switches() * 2 < sum(lt.key_switches() for row in bt.blocks for lt in row)
    whole = bt.evaluate(ctx.evaluator(ek), chunks, rescale=False)
    parts = [bt.evaluate(ctx.evaluator(ek), chunks, share=(r, 3)) for r in range(3)]
    for j in range(3):
        total = parts[0][j]
        for p in parts[1:]:
            total = ctx.evaluator(ek).add(total, p[j])
        assert np.array_equal(to_numpy(total.data), to_numpy(whole[j].data))


def test_sparse_transforms_rotate_only_through_power_of_two_keys(ctx, rng):
    n = 64
    lt = LinearTransform(diagonals={0: rand(rng, n), 3: rand(rng, n), 40: rand(rng, n), 61: rand(rng, n)}, slots=n)
    assert all(r & (r - 1) == 0 for r in lt.rotations())
    sk, ek = ctx.keygen(rotations=lt.rotations())
    x = rand(rng, n)
    out = ctx.evaluator(ek).linear_transform(ctx.encrypt(x, sk), lt)
    want = sum(d * np.roll(x, -k) for k, d in lt.diagonals.items())
    assert np.abs(ctx.decrypt(out, sk) - want).max() < KEYSWITCH * n


def test_compact_plaintexts_are_the_full_ones_in_runs(ctx, keys, ev, rng):
    """A sparse plaintext's NTT values come in runs of N/(2*slots): the
    compact form keeps one per run (uint32) and every product is bit-identical."""
    sk, _ = keys
    slots, level = 64, 3
    rows = rng.uniform(-1, 1, (3, slots))
    full = ctx.encode_many(rows, level=level, slots=slots)
    compact = ctx.encode_many(rows, level=level, slots=slots, compact=True)
    run = ctx.slots // slots
    ct = ctx.encrypt(rand(rng, slots), sk, level=level, slots=slots)
    for f, c in zip(full, compact):
        assert c.run == run and c.data.dtype == np.uint32 and c.data.shape == (f.data.shape[0], ctx.params.n // run)
        assert np.array_equal(to_numpy(c.expanded(ctx.xp).data), to_numpy(f.data))
        assert np.array_equal(to_numpy(ev.mul_plain(ct, c).data), to_numpy(ev.mul_plain(ct, f).data))
        assert np.array_equal(to_numpy(ev.add(ct, c).data), to_numpy(ev.add(ct, f).data))
    assert np.abs(ctx.decode(compact[0]) - rows[0]).max() < 1e-9
    with pytest.raises(ValueError, match="keys must be one of"):
        LinearTransform(np.eye(4), keys="some")


def gelu(v):
    from math import erf, sqrt

    return np.array([0.5 * t * (1 + erf(t / sqrt(2))) for t in np.ravel(v)]).reshape(np.shape(v))


@pytest.mark.parametrize("name,f,a,b,degree,approx_bound", [
    ("exp", np.exp, -8.0, 0.0, 15, 1e-6),
    ("gelu", gelu, -6.0, 6.0, 63, 2e-3),
    ("inv_sqrt", lambda v: 1 / np.sqrt(v), 0.25, 4.0, 31, 1e-4),
])
def test_chebyshev_evaluation(ctx, keys, ev, rng, name, f, a, b, degree, approx_bound):
    sk, _ = keys
    series = ChebyshevSeries.interpolate(f, a, b, degree)
    x = rng.uniform(a, b, ctx.slots)
    ct = ctx.encrypt(x, sk)
    out = ev.evaluate_chebyshev(ct, series)
    assert ct.level - out.level == series.depth() == math.ceil(math.log2(degree + 1)) + 1
    got = ctx.decrypt(out, sk)
    assert np.abs(got - series(x)).max() < 1e-6          # encryption error alone
    assert np.abs(got - f(x)).max() < approx_bound       # plus approximation error


# ---- bad input --------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(ctx, keys, ev, rng):
    sk, _ = keys
    with pytest.raises(EncodingError, match="do not fit"):
        ctx.encrypt(np.ones(ctx.slots + 1), sk)
    with pytest.raises(EncodingError, match="NaN"):
        ctx.encrypt(np.array([1.0, np.nan]), sk)
    a = ctx.encrypt(rand(rng, 16), sk)
    b = ctx.encrypt(rand(rng, 32), sk)
    with pytest.raises(EvaluationError, match="slot counts differ"):
        ev.add(a, b)
    with pytest.raises(EvaluationError, match="values for a ciphertext of 16 slots"):
        ev.mul_plain(a, np.ones(8))
    squared = ev.mul(a, a)  # scale Delta^2, not rescaled
    with pytest.raises(EvaluationError, match="scales differ"):
        ev.add(squared, a)
    with pytest.raises(MissingKeyError, match="rotation 5"):
        ev.rotate(a, 5)
    with pytest.raises(EvaluationError, match="cannot raise level"):
        ev.adjust(ev.rescale(ev.mul(a, a)), ctx.max_level)
    other = Context.from_preset("demo")
    foreign = other.encrypt(np.ones(4), other.keygenerator.secret_key())
    with pytest.raises(EvaluationError, match="another parameter set"):
        ev.add(a, foreign)
    with pytest.raises(EvaluationError, match="another parameter set"):
        ctx.decrypt(foreign, sk)
    with pytest.raises(EvaluationError, match="evaluation keys are for parameters"):
        other.evaluator(keys[1])
    # a rescaled key switch's one division has no place for a Galois map's gathered addend
    perm = ctx.ring.automorphism_permutation(5)
    with pytest.raises(ValueError, match="rescaled key switch takes no Galois map"):
        ev.ks.switch(a.data[1], keys[1].relin, a.level, addend=(a.data[0], None), perm=perm, rescale=True)


def test_seeded_secret_key_encryption_is_reproducible(ctx, keys, rng):
    sk, ek = keys
    x = rand(rng, 32)
    a = ctx.encrypt(x, sk, seed=b"s" * 32)
    assert np.array_equal(a.data, ctx.encrypt(x, sk, seed=b"s" * 32).data)
    assert not np.array_equal(a.data, ctx.encrypt(x, sk, seed=b"t" * 32).data)
    assert np.abs(ctx.decrypt(a, sk) - x).max() < FRESH
    with pytest.raises(EvaluationError, match="only for secret-key"):
        ctx.encrypt(x, ek, seed=b"s" * 32)


def test_pow2_at_least():
    from aegis_hpc.ckks.bits import pow2_at_least

    for n in range(0, 1100):
        p = pow2_at_least(n)
        assert (p & (p - 1)) == 0 and p >= max(n, 1) and (p == 1 or p // 2 < n)


def test_real_values_take_the_real_fft_and_encode_the_same():
    """Real slot values are encoded with a real FFT (half the work); the coefficients
    agree with the complex path's to one unit of rounding, at full and sparse slot
    counts, and decode to the values."""
    from aegis_hpc.ckks.encoder import Encoder

    enc = Encoder(12)
    rng = np.random.default_rng(4)
    for slots in (enc.n // 2, 64):
        x = rng.uniform(-1, 1, (3, slots))
        real, _ = enc.sparse_coefficients_many(x, 2.0 ** 40, slots)
        cplx, _ = enc.sparse_coefficients_many(x.astype(np.complex128), 2.0 ** 40, slots)
        assert np.abs(real - cplx).max() <= 1
        coeffs = np.zeros(enc.n)
        coeffs[:: enc.n // (2 * slots)] = real[0]
        assert np.abs(enc.from_coefficients(coeffs, 2.0 ** 40, slots).real - x[0]).max() < 1e-9


def test_ops_on_32_bit_words_equal_those_on_64_bit_words(ctx, keys, ev, rng):
    """A device ciphertext holds 32-bit words (backend.residue_dtype) and the ops without a
    kernel of their own run this Python code on them: every op, given the same residues as
    uint32, returns the residues it returns for uint64 (no product taken in 32 bits)."""
    sk, ek = keys
    a, b = ctx.encrypt(rand(rng, ctx.slots), ek.public), ctx.encrypt(rand(rng, ctx.slots), sk)
    pt = ctx.encode(rand(rng, ctx.slots), level=a.level)
    ops = {
        "add": lambda x, y: ev.add(x, y), "sub": lambda x, y: ev.sub(x, y), "neg": lambda x, y: ev.neg(x),
        "add_const": lambda x, y: ev.add_const(x, 0.3), "add_plain": lambda x, y: ev.add(x, pt),
        "mul_const": lambda x, y: ev.mul_const(x, 0.7, rescale=True), "mul_int": lambda x, y: ev.mul_int(x, 3),
        "mul_plain": lambda x, y: ev.mul_plain(x, pt, rescale=True), "mul_by_i": lambda x, y: ev.mul_by_i(x),
        "mul": lambda x, y: ev.mul(x, y), "mul_rescale": lambda x, y: ev.mul(x, y, rescale=True),
        "rotate": lambda x, y: ev.rotate(x, 3), "hoisted": lambda x, y: ev.rotate_hoisted(x, [1, 2])[2],
        "conjugate": lambda x, y: ev.conjugate(x), "adjust": lambda x, y: ev.adjust(x, x.level - 1),
        "mul_plain_sum": lambda x, y: ev.mul_plain_sum([x, y], [pt, pt]),
    }

    def words32(ct):
        return ct.with_data(ct.data.astype(np.uint32))

    for name, op in ops.items():
        want, got = op(a, b), op(words32(a), words32(b))
        assert want.data.dtype == np.uint64, name
        assert np.array_equal(got.data.astype(np.uint64), want.data), name
    assert np.array_equal(ctx.decrypt(words32(a), sk), ctx.decrypt(a, sk))
