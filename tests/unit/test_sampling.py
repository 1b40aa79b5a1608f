"""Randomness: distributions, seeding and the sparse secret."""

import numpy as np

from aegis_hpc.ckks import Context, build
from aegis_hpc.ckks.params import ERROR_ETA
from aegis_hpc.ckks.sampling import SmallSampler, Stream, chacha20_rows, fresh_seed, sparse_ternary, uniform_mod


def test_chacha20_is_rfc_8439():
    """RFC 8439 section 2.3.2: key 00..1f, nonce 00:00:00:09:00:00:00:4a:00:00:00:00, counter 1."""
    key = np.frombuffer(bytes(range(32)), dtype="<u4")
    nonce = np.frombuffer(bytes.fromhex("000000090000004a00000000"), dtype="<u4")
    words = chacha20_rows(key, [nonce], 1, 1)[0]
    assert " ".join(f"{w:08x}" for w in words) == (
        "e4e7f110 15593bd1 1fdd0f50 c47120a3 c7f4d1c7 0368c033 9aaa2204 4e6cd4c3 "
        "466482d2 09aa9f07 05d7c214 a2028bd9 d19c12b5 b94e16de e883d0cb 4e3c50a2")
    # counters run on: block 2 of a two-block call is block 1 of a call from counter 2
    two = chacha20_rows(key, [nonce], 1, 2)[0]
    assert np.array_equal(two[16:], chacha20_rows(key, [nonce], 2, 1)[0])


def test_uniform_is_reproducible_from_its_seed_and_in_range():
    seed = fresh_seed()
    primes = [1073479681, 1071513601, 268369921]        # 30-, 30- and 28-bit
    a = uniform_mod(seed, primes, 4096)
    assert np.array_equal(a, uniform_mod(seed, primes, 4096))
    assert not np.array_equal(a, uniform_mod(fresh_seed(), primes, 4096))
    # a row depends on its prime alone: any subset of rows gives the same values
    assert np.array_equal(a[2], uniform_mod(seed, primes[2:], 4096)[0])
    assert (a < np.array(primes, dtype=np.uint64)[:, None]).all()
    # mean of a uniform variable on [0, q): q/2 within 5 standard errors
    for row, q in zip(a, primes):
        assert abs(row.mean() - q / 2) < 5 * q / np.sqrt(12 * row.size)


def test_fresh_seeds_differ():
    assert fresh_seed() != fresh_seed()


def test_ternary_and_error_distributions():
    small = SmallSampler(fresh_seed(), "test")
    s = small.ternary(1 << 16)
    counts = np.array([(s == v).sum() for v in (-1, 0, 1)]) / s.size
    assert set(np.unique(s)) == {-1, 0, 1}
    # each share 1/3 within 5 standard errors (sqrt(2/9 / 2^16) = 0.0018)
    assert np.all(np.abs(counts - 1 / 3) < 0.01)
    e = small.centered_binomial(1 << 16, ERROR_ETA)
    assert abs(e.mean()) < 5 * np.sqrt(ERROR_ETA / 2 / e.size)
    assert abs(e.var() - ERROR_ETA / 2) < 0.3 and np.abs(e).max() <= ERROR_ETA
    # the exact law: P(e = k) = C(2 eta, eta + k) / 4^eta
    from math import comb
    for k in (0, 3, 7):
        p = comb(2 * ERROR_ETA, ERROR_ETA + k) / 4 ** ERROR_ETA
        assert abs((e == k).mean() - p) < 5 * np.sqrt(p * (1 - p) / e.size)


def test_small_sampler_draws_are_reproducible_and_independent():
    seed = fresh_seed()
    a, b = SmallSampler(seed, "x"), SmallSampler(seed, "x")
    first = a.ternary(4096)
    assert np.array_equal(first, b.ternary(4096))               # same seed and label: same draws
    assert not np.array_equal(first, a.ternary(4096))           # the next draw is another stream
    assert not np.array_equal(first, SmallSampler(seed, "y").ternary(4096))   # another label


def test_ternary_redraws_the_one_biased_word():
    """2^32 - 1 is the only word outside 3 * floor(2^32 / 3): it must be redrawn, not
    reduced (it would make -1 more likely than 1); coefficient i takes word i + n, then
    i + 2n, ... of its draw, whatever the other coefficients drew."""
    small = SmallSampler(fresh_seed(), "r")
    bad = 0xFFFFFFFF
    laps = {0: [bad, 5, bad, 7] + [9] * 12, 16: [bad, 11, 4, 6] + [0] * 12, 32: [8] + [bad] * 15}
    small._stream = lambda draw, word0, count: np.array(laps[word0][:count], dtype=np.uint32)
    got = small.ternary(16)
    assert got.tolist() == [8 % 3 - 1, 5 % 3 - 1, 4 % 3 - 1, 7 % 3 - 1] + [9 % 3 - 1] * 12


def test_ternary_redraw_matches_the_raw_stream():
    """The same rule on a real stream: a word that occurs in it (the test hook `reject`)
    is replaced by the word n further on in the same draw."""
    seed = fresh_seed()
    n = 4096
    raw = SmallSampler(seed, "z")._stream(0, 0, 3 * n).astype(np.int64)
    reject = int(raw[17])
    want = np.where(raw[:n] == reject, np.where(raw[n:2 * n] == reject, raw[2 * n:], raw[n:2 * n]), raw[:n])
    got = SmallSampler(seed, "z").ternary(n, reject=reject)
    assert (raw[:n] == reject).sum() >= 1
    assert np.array_equal(got, want % 3 - 1)


def test_sparse_secret_has_exact_hamming_weight_and_works():
    h = sparse_ternary(Stream(fresh_seed(), "h"), 2048, 64)
    assert np.count_nonzero(h) == 64 and set(np.unique(h)) <= {-1, 0, 1}
    params = build(log_n=11, levels=3, scale_bits=40, primes_per_level=2, secret_hamming_weight=64,
                   unsafe_allow_insecure=True)
    ctx = Context(params)
    sk, keys = ctx.keygen()
    assert np.count_nonzero(sk.coeffs) == 64
    x = np.linspace(-1, 1, ctx.slots)
    ev = ctx.evaluator(keys)
    out = ctx.decrypt(ev.rescale(ev.mul(ctx.encrypt(x, sk), ctx.encrypt(x, sk))), sk)
    assert np.abs(out - x * x).max() < 1e-7
