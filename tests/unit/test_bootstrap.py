"""Bootstrapping on the `test-boot` preset (N=2^11, insecure; dense secret,
ModRaise under an ephemeral sparse secret of weight 32, like `n16-boot`).

Bound: ModRaise + CoeffToSlot + EvalMod + SlotToCoeff at message ratio
Q0/Delta = 2^8 reach ~2^-22 max error on uniform [-1, 1] slots; we assert
2^-18 so noise variation between runs never flakes.
"""

import math
from dataclasses import replace

import numpy as np
import pytest

from aegis_hpc import backend
from aegis_hpc.ckks import Context, preset
from aegis_hpc.ckks.bootstrap import (Bootstrapper, BootstrapError, EvalMod, bootstrap_rotations,
                                      default_config, dft)
from aegis_hpc.ckks.bootstrap.bootstrapper import (ENCAPSULATION_MAX_LOG_QP, check_encapsulation_security,
                                                   encapsulation_special)
from aegis_hpc.ckks.encoder import Encoder
from aegis_hpc.ckks.keys import galois_element_conjugate
from aegis_hpc.ckks.keyswitch import KeySwitcher
from aegis_hpc.ckks.params import HE_STANDARD_128

BOOT_BOUND = 2.0 ** -18
MIN_LEVELS_AFTER = 4


@pytest.fixture(scope="module")
def bctx():
    return Context.from_preset("test-boot")


@pytest.fixture(scope="module")
def bkeys(bctx):
    return bctx.keygen(bootstrap=True)


@pytest.fixture(scope="module")
def bev(bctx, bkeys):
    return bctx.evaluator(bkeys[1])


def _bitrev(n):
    bits = int(math.log2(n))
    return np.array([int(format(i, f"0{bits}b")[::-1], 2) for i in range(n)])


@pytest.mark.parametrize("log_n,levels", [(5, 1), (7, 2), (11, 3), (11, 4)])
def test_factored_dft_matches_the_encoder(log_n, levels):
    n_ring, n = 1 << log_n, 1 << (log_n - 1)
    m = np.random.default_rng(0).standard_normal(n_ring)
    z = Encoder(log_n).from_coefficients(m, 1.0, n)
    w = (m[:n] + 1j * m[n:])[_bitrev(n)]
    x = w
    for mat in dft.slot_to_coeff_matrices(n_ring, n, levels):
        x = dft.apply_plain(mat, x)
    y = z
    for mat in dft.coeff_to_slot_matrices(n_ring, n, levels):
        y = dft.apply_plain(mat, y)
    assert np.abs(x - z).max() < 1e-11 and np.abs(y - w).max() < 1e-12
    # few diagonals per level is the point of the factorisation
    assert all(len(mat) < 2 ** (math.ceil((log_n - 1) / levels) + 1)
               for mat in dft.coeff_to_slot_matrices(n_ring, n, levels))


def test_evalmod_polynomial_is_sine_on_the_range():
    em = EvalMod(k_range=12, double_angle=3)
    v = np.concatenate([k + np.linspace(-1e-3, 1e-3, 101) for k in range(-12, 13)])
    assert np.abs(em.reference(v / em.input_divisor) - np.sin(2 * np.pi * v)).max() < 2.0 ** -36
    # with the arcsine step it is 2*pi*(v - round(v)) itself over every message slots |z| <= 1
    # give (coefficients |m| <= Delta, mod1.py), in units of the largest: to 2^-27.5 at the
    # message ratio 2^8, 2^-23.9 at n16-boot's 2^7; the Taylor step (1/6) leaves 2^-21.1 there
    em = EvalMod(k_range=12, double_angle=3, arcsine=True)
    for ratio_bits, bound_bits in ((8, -27.5), (7, -23.9)):
        s_max = 2 * np.pi * 2.0 ** -ratio_bits
        v = np.concatenate([k + np.linspace(-1, 1, 401) * 2.0 ** -ratio_bits for k in range(-12, 13)])
        frac = 2 * np.pi * (v - np.round(v))
        assert np.abs(em.reference(v / em.input_divisor, s_max) - frac).max() < 2.0 ** bound_bits * s_max
    taylor = np.abs(em.reference(v / em.input_divisor) - frac).max() / s_max
    assert 2.0 ** -21.2 < taylor < 2.0 ** -21


def test_bootstrap_keys(bctx, bkeys):
    galois = bkeys[1].galois
    assert galois_element_conjugate(bctx.params.n) in galois
    assert len(galois) == len(bootstrap_rotations(bctx.params)) + 1
    p = bctx.params
    down = bkeys[1].bootstrap.to_ephemeral
    # the key towards the sparse secret exists only at the modulus of level 0 and two of the
    # ten special primes
    assert encapsulation_special(p) == 2 < len(p.p)
    assert down.b.shape == (1, encapsulation_special(p) + p.limbs_at(0), p.n)
    assert bkeys[1].bootstrap.from_ephemeral.b.shape[1] == len(p.qp)


def test_encapsulation_key_modulus_is_within_the_sparse_secret_bound():
    """The key s -> s' (h = 32) at n16-boot: Q0 and two special primes, 2^124, against
    Lattigo's 2^121 (Q0*P0) + 3 bits (bootstrapper docstring); it was 2^248 on all of P."""
    p = preset("n16-boot")
    log_q0 = math.log2(math.prod(p.q[: p.limbs_at(0)]))
    log_p = math.log2(math.prod(p.p[: encapsulation_special(p)]))
    log_qp = check_encapsulation_security(p)
    assert log_qp == pytest.approx(log_q0 + log_p) and log_qp <= ENCAPSULATION_MAX_LOG_QP <= 124
    assert log_p >= log_q0 - 1           # key-switching noise ~Q0/P' stays ~ a fresh key's
    assert math.log2(math.prod(p.p)) + log_q0 > ENCAPSULATION_MAX_LOG_QP + 100  # the old key, on all of P
    # a secure ring below 2^16 has no reference for h = 32 at this modulus: refused
    with pytest.raises(BootstrapError, match="ephemeral secret"):
        check_encapsulation_security(preset("demo"))


@pytest.mark.parametrize("special", [None, 2])
def test_switch_over_a_subset_of_the_special_primes(bctx, bkeys, bev, special):
    """Level-0 switch to another secret, as the encapsulation does, on P' = 2 primes or all
    of P. Bound 2^-32: measured 2^-36.7..-37.7 over P' (coefficient noise ~Q0/P' * sigma *
    sqrt(N) ~ 2^7), 2^-43 over P; one special prime (P' = 2^31 << Q0) gives 2^-4.8."""
    p, kg = bctx.params, bctx.keygenerator
    sk, other = bkeys[0], kg.secret_key()
    ks = KeySwitcher(p, bev.ring, special=special)
    key = kg.switching_key(other, sk.ntt, level=0, special=special)
    assert key.b.shape[1] == (special or len(p.p)) + p.limbs_at(0)
    x = np.random.default_rng(6).uniform(-1, 1, bctx.slots)
    ct = bctx.encrypt(x, sk, level=0)
    u = ks.switch(ct.data[1], key, 0)
    qc = bev._qc(ct.limbs)
    out = ct.with_data(backend.asarray(np.stack([backend.to_numpy((ct.data[0] + u[0]) % qc),
                                                 backend.to_numpy(u[1])])))
    err = np.abs(bctx.decrypt(out, other) - x).max()
    print(f"level-0 switch over {special or len(p.p)} special primes: max error 2^{math.log2(err):.1f}")
    assert err < 2.0 ** -32


def test_bootstrap_refreshes_a_last_level_ciphertext(bctx, bkeys, bev):
    sk = bkeys[0]
    x = np.random.default_rng(1).uniform(-1, 1, bctx.slots)
    ct = bctx.encrypt(x, sk, level=0)
    out = bev.bootstrap(ct)
    err = np.abs(bctx.decrypt(out, sk) - x).max()
    boot = Bootstrapper(bev)
    assert out.level == boot.output_level >= MIN_LEVELS_AFTER
    assert out.scale == pytest.approx(bctx.params.scale_at(out.level), rel=1e-9)
    print(f"test-boot: levels after bootstrapping {out.level}/{bctx.max_level}, "
          f"max error {err:.3g} (2^{math.log2(err):.1f})")
    assert err < BOOT_BOUND


def test_bootstrap_large_coefficients(bctx, bkeys, bev):
    """A near-constant vector puts ~Delta in one coefficient: the worst case of sin(x) ~ x."""
    sk = bkeys[0]
    x = 0.95 + 0.05 * np.random.default_rng(3).uniform(-1, 1, bctx.slots)
    out = bev.bootstrap(bctx.encrypt(x, sk, level=0))
    err = np.abs(bctx.decrypt(out, sk) - x).max()
    print(f"test-boot, constant-like input: max error {err:.3g} (2^{math.log2(err):.1f})")
    assert err < BOOT_BOUND


@pytest.mark.parametrize("slots", [64, 4])
def test_sparse_slot_bootstrap(bctx, bkeys, bev, slots):
    sk, keys = bkeys
    bctx.add_rotation_keys(sk, keys, bootstrap_rotations(bctx.params, slots=slots))
    rng = np.random.default_rng(slots)
    x = rng.uniform(-1, 1, slots) + 1j * rng.uniform(-1, 1, slots)  # complex: both halves count
    out = bev.bootstrap(bctx.encrypt(x, sk, level=0, slots=slots))
    assert out.slots == slots and out.is_complex and out.level == Bootstrapper(bev).output_level
    err = np.abs(bctx.decrypt(out, sk) - x).max()
    print(f"test-boot, {slots} complex slots: max error {err:.3g} (2^{math.log2(err):.1f})")
    assert err < BOOT_BOUND


def test_quarter_slots_beside_full_slots(bctx, bkeys, bev):
    """N/4 sparse slots run their last CoeffToSlot and first SlotToCoeff stage at 2n = N/2
    slots, the full pipeline's count at the same stage index, with other matrices: a process
    bootstrapping both keeps the two sets of plaintexts apart (it raised a KeyError, or could
    reuse the other pipeline's plaintexts)."""
    sk, keys = bkeys
    full, quarter = bctx.params.slots, bctx.params.slots // 2
    bctx.add_rotation_keys(sk, keys, bootstrap_rotations(bctx.params, slots=quarter))
    rng = np.random.default_rng(9)
    for slots in (full, quarter, full):
        x = rng.uniform(-1, 1, slots)
        out = bev.bootstrap(bctx.encrypt(x, sk, level=0, slots=None if slots == full else slots))
        assert out.slots == slots and np.abs(bctx.decrypt(out, sk) - x).max() < BOOT_BOUND


def test_message_boost(bctx, bkeys, bev):
    """n16-boot scales m by 2 before ModRaise (message ratio 2^7); same result here."""
    sk, keys = bkeys
    bctx.add_rotation_keys(sk, keys, bootstrap_rotations(bctx.params, slots=4))
    config = replace(default_config(bctx.params), message_boost_bits=1)
    x = np.random.default_rng(5).uniform(-1, 1, 4)
    out = Bootstrapper(bev, config).bootstrap(bctx.encrypt(x, sk, level=0, slots=4))
    assert np.abs(bctx.decrypt(out, sk) - x).max() < BOOT_BOUND


def test_largest_coefficients_at_the_boosted_ratio(bctx, bkeys, bev):
    """A constant vector of ones puts the whole message in one coefficient of Delta, the
    largest slots |z| <= 1 allow: at n16-boot's message ratio 2^7 the Taylor arcsine step
    left 2^-21.1 there (2^-20.9 measured here), the minimax one 2^-24.1 (mod1.py), under
    this ring's noise (2^-22.8 measured)."""
    sk, _ = bkeys
    out = Bootstrapper(bev, replace(default_config(bctx.params), message_boost_bits=1)).bootstrap(
        bctx.encrypt(np.ones(bctx.params.slots), sk, level=0))
    assert np.abs(bctx.decrypt(out, sk) - 1.0).max() < 2.0 ** -22


def test_n16_boot_preset_is_secure_and_leaves_ten_levels():
    p = preset("n16-boot")
    assert p.log_n == 16 and not p.insecure and p.log_qp <= HE_STANDARD_128[p.n]
    assert p.secret_hamming_weight is None  # dense secret: the table's assumption holds
    config = default_config(p)
    assert p.max_level - config.depth() >= 10
    # EvalMod amplifies the rescale noise of CoeffToSlot's output, of its square and of
    # the sine series ~2^10 (mod1.py): those levels carry the raised scale of params.py
    cts_out = p.max_level - config.cts_levels
    series_out = cts_out - 1 - config.evalmod().series.depth(min_depth=True)
    assert all(p.scale_at(lvl) > 2.0 ** 58.5 for lvl in range(series_out, cts_out + 1))
    assert p.scale_at(p.max_level) == 2.0 ** 54 and p.scale_at(cts_out - config.evalmod().depth) < 2.0 ** 54.1
    assert len(bootstrap_rotations(p, config)) < 60  # keys of ~310 MB each at this size


def test_short_chains_are_refused():
    with pytest.raises(BootstrapError, match="levels"):
        Context.from_preset("test").keygen(bootstrap=True)


def test_mul_bootstrap_mul_chain(bctx, bkeys, bev):
    sk = bkeys[0]
    rng = np.random.default_rng(2)
    a, b, c = (rng.uniform(-1, 1, bctx.slots) for _ in range(3))
    ca = bctx.encrypt(a, sk, level=1)
    cb = bctx.encrypt(b, sk, level=1)
    low = bev.mul(ca, cb, rescale=True)
    assert low.level == 0
    fresh = bev.bootstrap(low)
    out = bev.mul(fresh, bctx.encrypt(c, sk), rescale=True)
    assert out.level == fresh.level - 1
    err = np.abs(bctx.decrypt(out, sk) - a * b * c).max()
    assert err < BOOT_BOUND


@pytest.mark.parametrize("level,special", [(1, None), (3, None), (2, 2)])
def test_moddown_rescale_is_the_rounded_division(bctx, bev, level, special):
    """A product's relinearise-and-rescale divides x = acc + P d by P q_T (T: the top prime
    group) once: round(x / (P q_T)) exactly (centred) over Q_{l-1}, d the product's (d0, d1)."""
    p, ring = bctx.params, bev.ring
    ks = bev.ks if special is None else KeySwitcher(p, ring, special=special)
    rows = ks.rows(level)
    moduli = [p.qp[i] for i in rows]
    limbs = p.limbs_at(level)
    keep = limbs - p.primes_per_level
    rng = np.random.default_rng(10 + level)
    coeff = np.stack([np.stack([rng.integers(0, q, p.n, dtype=np.uint64) for q in moduli]) for _ in range(2)])
    d = np.stack([np.stack([rng.integers(0, q, p.n, dtype=np.uint64) for q in p.q[:limbs]]) for _ in range(2)])
    acc = ring.ntt(backend.asarray(coeff), rows)
    d_ntt = ring.ntt(backend.asarray(d), list(range(limbs)))
    got = ks.moddown_rescale(acc, level, addend=(d_ntt[0], d_ntt[1]))
    assert got.shape == (2, keep, p.n)
    got = backend.to_numpy(ring.intt(got, list(range(keep))))
    big_p, big_q, q_l = math.prod(ks.p), math.prod(moduli), math.prod(p.q[:limbs])
    big_d = big_p * math.prod(p.q[keep:limbs])
    for c in range(2):
        x = sum(coeff[c, i].astype(object) * (big_q // q) * pow(big_q // q, -1, q) for i, q in enumerate(moduli))
        dx = sum(d[c, i].astype(object) * (q_l // q) * pow(q_l // q, -1, q) for i, q in enumerate(p.q[:limbs]))
        x = (x + big_p * dx) % big_q
        want = (2 * x + big_d) // (2 * big_d)
        for j, q in enumerate(p.q[:keep]):
            np.testing.assert_array_equal(got[c, j], (want % q).astype(np.uint64), err_msg=f"poly {c} limb {j}")


@pytest.mark.parametrize("level,special", [(0, None), (3, None), (0, 2)])
def test_moddown_is_the_rounded_division(bctx, bev, level, special):
    """ModDown returns round(x / P) exactly (centred), not a floor off by up to |P|;
    also over P' = the first two special primes (the encapsulation key's).

    The approximate basis conversion alone gives (x - [x]_P - v*P)/P with
    0 <= v <= |P|; that error, times the dense secret, made a rotation ~2^4.7
    noisier than a rescale and biased every key switch the same way.
    """
    p, ring = bctx.params, bev.ring
    ks = bev.ks if special is None else KeySwitcher(p, ring, special=special)
    rows = ks.rows(level)
    moduli = [p.qp[i] for i in rows]
    rng = np.random.default_rng(level)
    coeff = np.stack([rng.integers(0, q, p.n, dtype=np.uint64) for q in moduli])
    got = ks.moddown(ring.ntt(backend.asarray(coeff), rows), level)
    got = backend.to_numpy(ring.intt(got, list(range(p.limbs_at(level)))))
    big_p, big_q = math.prod(ks.p), math.prod(moduli)
    # exact CRT of the extended residues, then the rounded quotient
    x = sum(coeff[i].astype(object) * (big_q // q) * pow(big_q // q, -1, q) for i, q in enumerate(moduli)) % big_q
    want = (2 * x + big_p) // (2 * big_p)
    for j, q in enumerate(p.q[: p.limbs_at(level)]):
        np.testing.assert_array_equal(got[j], (want % q).astype(np.uint64))
