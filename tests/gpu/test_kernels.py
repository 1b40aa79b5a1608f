"""Every CUDA kernel against the numpy reference, bit for bit, on random inputs.

Skipped where cupy is missing or no GPU is usable. Reference objects are built
and called with the numpy backend selected, device objects with cupy, so the
two paths never share state.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

cp = pytest.importorskip("cupy")
try:
    _GPU = cp.cuda.runtime.getDeviceCount() > 0
except Exception:  # noqa: BLE001 - any CUDA failure means "no usable GPU"
    _GPU = False
if not _GPU:
    pytest.skip("no usable GPU", allow_module_level=True)

from aegis_hpc import backend as be  # noqa: E402
from aegis_hpc.backend import kernels  # noqa: E402
from aegis_hpc.ckks import params as P  # noqa: E402
from aegis_hpc.ckks.context import Context  # noqa: E402
from aegis_hpc.ckks.keys import EvaluationKeys, PublicKey, SwitchingKey  # noqa: E402
from aegis_hpc.ckks.ntt import RingTables  # noqa: E402
from aegis_hpc.ckks.primes import largest_ntt_primes, ntt_primes_near  # noqa: E402
from aegis_hpc.ckks.rns import BasisConverter  # noqa: E402


@contextmanager
def using(name):
    prev = be._state["name"]
    be.select(name)
    try:
        yield
    finally:
        if prev is None:
            be._state.update(name=None, xp=None)
        else:
            be.select(prev)


def residues(rng, primes, n, lead=()):
    return np.stack([rng.integers(0, q, lead + (n,), dtype=np.uint64) for q in primes], axis=-2)


def ring_pair(primes, log_n):
    with using("numpy"):
        ref = RingTables(primes, log_n)
    with using("cupy"):
        dev = RingTables(primes, log_n)
    return ref, dev


def mixed_primes(log_n, count):
    """Primes of several sizes (31-bit and ~20-25-bit), as real chains have."""
    two_n = 2 << log_n
    big = largest_ntt_primes((count + 1) // 2, two_n)
    small = ntt_primes_near(2.0 ** max(22, log_n + 5), two_n, count // 2, exclude=big)
    return big + small


@pytest.mark.parametrize("log_n,limbs,lead", [(10, 1, ()), (11, 3, (2,)), (12, 4, ()), (13, 5, (2,)),
                                               (14, 2, (3,)), (15, 6, (2,)), (16, 3, ()), (17, 2, ())])
def test_ntt_intt_bit_exact(log_n, limbs, lead):
    rng = np.random.default_rng(log_n * 10 + limbs)
    primes = mixed_primes(log_n, limbs + 2)
    ref, dev = ring_pair(primes, log_n)
    idx = [0, 2, 3, 1, 4, 5, 6, 7][:limbs]  # a non-prefix selection, in non-sorted order
    x = residues(rng, [primes[i] for i in idx], 1 << log_n, lead)
    with using("numpy"):
        want_f = ref.ntt(x, idx)
        want_i = ref.intt(x, idx)
    with using("cupy"):
        got_f = kernels.ntt(dev, cp.asarray(x), idx)
        got_i = kernels.intt(dev, cp.asarray(x), idx)
        back = kernels.intt(dev, got_f, idx)
    np.testing.assert_array_equal(cp.asnumpy(got_f), want_f)
    np.testing.assert_array_equal(cp.asnumpy(got_i), want_i)
    np.testing.assert_array_equal(cp.asnumpy(back), x)


def test_ntt_of_strided_view():
    rng = np.random.default_rng(7)
    primes = mixed_primes(12, 6)
    ref, dev = ring_pair(primes, 12)
    x = residues(rng, primes, 1 << 12, (2,))
    with using("numpy"):
        want = ref.ntt(x[:, 3:], [3, 4, 5])
    with using("cupy"):
        got = dev.ntt(cp.asarray(x)[:, 3:], [3, 4, 5])
    np.testing.assert_array_equal(cp.asnumpy(got), want)


@pytest.mark.parametrize("log_n", [12, 14, 16])
def test_ntt_word_sizes_and_row_selection(log_n):
    """32-bit storage in and out, out-of-place into another word size, and an in-place
    transform of selected rows only (ModUp's layout) equal the reference."""
    rng = np.random.default_rng(log_n)
    primes = mixed_primes(log_n, 5)
    ref, dev = ring_pair(primes, log_n)
    idx = [3, 0, 4, 1]
    x = residues(rng, [primes[i] for i in idx], 1 << log_n, (2,))
    with using("numpy"):
        want_f, want_i = ref.ntt(x, idx), ref.intt(x, idx)
    with using("cupy"):
        x32 = cp.asarray(x.astype(np.uint32))
        for out in (np.uint32, np.uint64):
            got = kernels.ntt(dev, x32, idx, out_dtype=out)
            assert got.dtype == out
            np.testing.assert_array_equal(cp.asnumpy(got), want_f)
            np.testing.assert_array_equal(cp.asnumpy(kernels.intt(dev, x32, idx, out_dtype=out)), want_i)
        # rows 1 and 6 of the (8, N) view, primes idx[1] and idx[2]: the others stay as they were
        y = x32.copy()
        sel = (cp.asarray(np.array([1, 6], dtype=np.int32)), cp.asarray(np.array([idx[1], idx[2]], dtype=np.int32)))
        kernels.ntt(dev, y, None, inplace=True, rows_sel=sel)
        flat_x, flat_y = x.reshape(8, -1), cp.asnumpy(y).reshape(8, -1)
        np.testing.assert_array_equal(flat_y[1], want_f[0, 1])
        np.testing.assert_array_equal(flat_y[6], want_f[1, 2])
        keep = [0, 2, 3, 4, 5, 7]
        np.testing.assert_array_equal(flat_y[keep], flat_x[keep])


# N = 2^11 takes ModUp's conversion then a one-pass NTT; N = 2^13 / 2^15 / 2^16 the conversion
# fused with the register pass (CH = 2 / 8 / 16 positions a column), digits of 1 to 7 limbs
_KS_SPECS = {
    "n13": dict(log_n=13, levels=6, scale_bits=40, primes_per_level=2, base_primes=2, dnum=5),
    "n15": dict(log_n=15, levels=4, scale_bits=44, primes_per_level=2, base_primes=2, dnum=3),
    "n16": dict(log_n=16, levels=6, scale_bits=50, primes_per_level=2, base_primes=2, dnum=2),
}


@pytest.mark.parametrize("preset,special", [("test-boot", None), ("test-boot", 2), ("test-demo", None),
                                            ("n13", None), ("n15", 2), ("n16", None)])
def test_modup_moddown_bit_exact(preset, special):
    """The fused device ModUp (32-bit words, the digits' own rows copied), ModDown
    (conversion and centring in one kernel) and ModDown with the rescale (divisor P q_T, the
    addend times q_T^-1, from the inner product's 32-bit words) equal the numpy KeySwitcher
    at several levels."""
    from aegis_hpc.ckks.keyswitch import KeySwitcher

    prm = P.build(**_KS_SPECS[preset], unsafe_allow_insecure=True) if preset in _KS_SPECS else P.preset(preset)
    rng = np.random.default_rng(5)
    with using("numpy"):
        ks_ref = KeySwitcher(prm, Context(prm).ring, special=special)
    with using("cupy"):
        ks_dev = KeySwitcher(prm, Context(prm).ring, special=special)
    for level in (prm.max_level, prm.max_level // 2, 0):
        limbs = prm.limbs_at(level)
        d = residues(rng, prm.q[:limbs], prm.n)
        acc = residues(rng, [prm.qp[i] for i in ks_ref.rows(level)], prm.n, (2,))
        add = residues(rng, prm.q[:limbs], prm.n, (2,))
        with using("numpy"):
            want_up, want_down = ks_ref.modup(d, level), ks_ref.moddown(acc, level)
            want_mr = ks_ref.moddown_rescale(acc, level, addend=(add[0], add[1])) if level else None
        with using("cupy"):
            got_up, got_down = ks_dev.modup(cp.asarray(d), level), ks_dev.moddown(cp.asarray(acc), level)
            # the tensor product's 32-bit words as ModUp's input and as the addends
            got_up32 = ks_dev.modup(cp.asarray(d.astype(np.uint32)), level)
            got_mr = [ks_dev.moddown_rescale(cp.asarray(acc.astype(np.uint32)), level,
                                             addend=(dev_add[0], dev_add[1]))
                      for dev_add in (cp.asarray(add), cp.asarray(add.astype(np.uint32)))] if level else []
        assert got_up.dtype == np.uint32
        np.testing.assert_array_equal(cp.asnumpy(got_up), want_up, err_msg=f"modup level {level}")
        np.testing.assert_array_equal(cp.asnumpy(got_up32), want_up, err_msg=f"modup 32-bit level {level}")
        np.testing.assert_array_equal(cp.asnumpy(got_down), want_down, err_msg=f"moddown level {level}")
        for got in got_mr:
            np.testing.assert_array_equal(cp.asnumpy(got), want_mr, err_msg=f"moddown_rescale level {level}")


def _switcher_pair(preset, special, rng):
    """The chain of a preset (or a _KS_SPECS spec), then (ring, KeySwitcher, random switching key
    of 32-bit words) made with the numpy backend and the same made with cupy."""
    from aegis_hpc.ckks.keyswitch import KeySwitcher

    prm = P.build(**_KS_SPECS[preset], unsafe_allow_insecure=True) if preset in _KS_SPECS else P.preset(preset)
    sides = []
    for backend in ("numpy", "cupy"):
        with using(backend):
            ring = Context(prm).ring
            sides.append([ring, KeySwitcher(prm, ring, special=special)])
    key_rows = [prm.qp[i] for i in sides[0][1].rows(prm.max_level)]
    digits = len(prm.digits_at(prm.max_level))
    kb, ka = (np.stack([residues(rng, key_rows, prm.n) for _ in range(digits)]).astype(np.uint32)
              for _ in range(2))
    sides[0].append(SimpleNamespace(b=kb, a=ka))
    sides[1].append(SimpleNamespace(b=cp.asarray(kb), a=cp.asarray(ka)))
    return prm, tuple(sides[0]), tuple(sides[1])


@pytest.mark.parametrize("preset,special", [("test-boot", None), ("n13", None), ("n15", 2), ("n16", None)])
def test_modup_inner_bit_exact(preset, special):
    """One key switch's ModUp and inner product with ModUp's last NTT pass inside the inner
    product (kernels.modup_inner; N = 2^11 has no register pass and takes modup then
    ks_inner) equal the numpy KeySwitcher's inner(modup(d[..., perm])): no map, two Galois
    maps and a random permutation (applied by the INTT's first reads and the own rows'
    loads), 64- and 32-bit input words, at several levels (the key has more rows than a
    lower level uses)."""
    from aegis_hpc.ckks.keys import galois_element_conjugate, galois_element_for_rotation

    rng = np.random.default_rng(7)
    prm, (ring_ref, ks_ref, key_ref), (ring_dev, ks_dev, key_dev) = _switcher_pair(preset, special, rng)
    maps = [None, galois_element_for_rotation(3, prm.n), galois_element_conjugate(prm.n), "random"]
    for level in (prm.max_level, prm.max_level // 2, 0):
        d = residues(rng, prm.q[: prm.limbs_at(level)], prm.n)
        for g in maps:
            if g == "random":
                perm_ref = rng.permutation(prm.n)
                perm_dev = cp.asarray(perm_ref)
            elif g is not None:
                perm_ref, perm_dev = ring_ref.automorphism_permutation(g), ring_dev.automorphism_permutation(g)
            else:
                perm_ref = perm_dev = None
            with using("numpy"):
                want = ks_ref.inner(ks_ref.modup(d if perm_ref is None else d[..., perm_ref], level),
                                    key_ref, level)
            with using("cupy"):
                got = [ks_dev.modup_inner(cp.asarray(x), key_dev, level, perm_dev)
                       for x in (d, d.astype(np.uint32))]
            for word, g_ in zip(("64", "32"), got):
                assert g_.dtype == np.uint32
                np.testing.assert_array_equal(cp.asnumpy(g_), want, err_msg=f"level {level}, map {g}, {word}-bit d")
            # a limb rank's share of the rows (every P row, every other Q row): ks_inner with
            # the key's rows of that share
            share = list(range(ks_ref.n_p)) + [ks_ref.n_p + i for i in range(0, prm.limbs_at(level), 2)]
            with using("numpy"):
                ext = ks_ref.modup(d, level)
                want_share = ks_ref.inner(ext, key_ref, level, perm_ref)[:, share]
            with using("cupy"):
                got_share = ks_dev.inner(cp.asarray(ext[:, share]), key_dev, level, perm_dev, rows=share)
            np.testing.assert_array_equal(cp.asnumpy(got_share), want_share, err_msg=f"share, level {level}, map {g}")


@pytest.mark.parametrize("preset,special", [("test-boot", None), ("n13", None), ("n15", 2), ("n16", None)])
def test_switch_bit_exact(preset, special):
    """A whole key switch (kernels.switch: ks_modup_inner leaves the P rows past ModDown's first
    INTT pass where ModDown is fused, N = 2^11 runs the separate kernels) equals the numpy
    KeySwitcher.switch: a rotation's (a Galois map, c0 gathered as the addend), a product's
    (two addends, with and without the rescale) and a bare one, at several levels."""
    from aegis_hpc.ckks.keys import galois_element_for_rotation

    rng = np.random.default_rng(11)
    prm, (ring_ref, ks_ref, key_ref), (ring_dev, ks_dev, key_dev) = _switcher_pair(preset, special, rng)
    g = galois_element_for_rotation(5, prm.n)
    perm_ref, perm_dev = ring_ref.automorphism_permutation(g), ring_dev.automorphism_permutation(g)
    for level in (prm.max_level, prm.max_level // 2, 0):
        limbs = prm.limbs_at(level)
        d = residues(rng, prm.q[:limbs], prm.n)
        add = residues(rng, prm.q[:limbs], prm.n, (2,))
        cases = {"bare": dict(), "rotation": dict(addend=(add[0], None), perm=True),
                 "product": dict(addend=(add[0], add[1]))}
        if level:
            cases["product, rescaled"] = dict(addend=(add[0], add[1]), rescale=True)
        for name, kw in cases.items():
            perm = kw.pop("perm", False)
            with using("numpy"):
                want = ks_ref.switch(d, key_ref, level, perm=perm_ref if perm else None, **kw)
            dev_kw = dict(kw, addend=tuple(None if x is None else cp.asarray(x.astype(np.uint32))
                                           for x in kw["addend"])) if "addend" in kw else kw
            with using("cupy"):
                got = ks_dev.switch(cp.asarray(d.astype(np.uint32)), key_dev, level,
                                    perm=perm_dev if perm else None, **dev_kw)
            assert got.dtype == np.uint32
            np.testing.assert_array_equal(cp.asnumpy(got), want, err_msg=f"{name}, level {level}")


@pytest.mark.parametrize("log_n,n_src,n_dst,lead", [(10, 1, 3, ()), (12, 3, 7, ()), (13, 5, 9, (2,)),
                                                    (15, 4, 20, ()), (11, 17, 4, ())])
def test_basis_convert_bit_exact(log_n, n_src, n_dst, lead):
    rng = np.random.default_rng(n_src * 100 + n_dst)
    primes = mixed_primes(log_n, n_src + n_dst)
    src, dst = primes[:n_src], primes[n_src:]
    x = residues(rng, src, 1 << log_n, lead)
    with using("numpy"):
        want = BasisConverter(src, dst).convert(x)
    with using("cupy"):
        got = BasisConverter(src, dst).convert(cp.asarray(x))
    np.testing.assert_array_equal(cp.asnumpy(got), want)


@pytest.mark.parametrize("log_n,digits,rows,use_perm", [(10, 1, 3, False), (12, 3, 6, True),
                                                        (13, 5, 9, True), (14, 7, 4, False)])
def test_ks_inner_bit_exact(log_n, digits, rows, use_perm):
    rng = np.random.default_rng(digits * 10 + rows)
    n = 1 << log_n
    primes = mixed_primes(log_n, rows + 2)
    ext = np.stack([residues(rng, primes[:rows], n) for _ in range(digits)])
    key_rows = primes[:rows] + primes[rows:rows + 2]  # the key has more rows than the level uses
    kb = np.stack([residues(rng, key_rows, n) for _ in range(digits + 1)]).astype(np.uint32)
    ka = np.stack([residues(rng, key_rows, n) for _ in range(digits + 1)]).astype(np.uint32)
    perm = rng.permutation(n) if use_perm else None
    qc = np.array(primes[:rows], dtype=np.uint64)[:, None]
    e = ext[..., perm] if use_perm else ext
    want = np.zeros((2, rows, n), dtype=np.uint64)
    for j in range(digits):
        want[0] = (want[0] + e[j] * kb[j, :rows].astype(np.uint64) % qc) % qc
        want[1] = (want[1] + e[j] * ka[j, :rows].astype(np.uint64) % qc) % qc
    key = SimpleNamespace(b=cp.asarray(kb), a=cp.asarray(ka))
    got = kernels.ks_inner(cp.asarray(ext), key, cp.asarray(qc), rows,
                           None if perm is None else cp.asarray(perm))
    np.testing.assert_array_equal(cp.asnumpy(got), want)


@pytest.mark.parametrize("log_n,digits,rows,count", [(12, 3, 6, 3), (13, 5, 9, 8)])
def test_ks_inner_many_bit_exact(log_n, digits, rows, count):
    """A hoisted group's inner products in one launch, each rotation against the numpy sum
    over digits of its gathered ext times its own key (one rotation without a permutation)."""
    rng = np.random.default_rng(log_n + count)
    n = 1 << log_n
    primes = mixed_primes(log_n, rows + 1)
    ext = np.stack([residues(rng, primes[:rows], n) for _ in range(digits)])
    qc = np.array(primes[:rows], dtype=np.uint64)[:, None]
    keys, perms, want = [], [], []
    for k in range(count):
        kb = np.stack([residues(rng, primes, n) for _ in range(digits)]).astype(np.uint32)
        ka = np.stack([residues(rng, primes, n) for _ in range(digits)]).astype(np.uint32)
        perm = None if k == 1 else rng.permutation(n)
        e = ext if perm is None else ext[..., perm]
        acc = np.zeros((2, rows, n), dtype=np.uint64)
        for j in range(digits):
            acc[0] = (acc[0] + e[j] * kb[j, :rows].astype(np.uint64) % qc) % qc
            acc[1] = (acc[1] + e[j] * ka[j, :rows].astype(np.uint64) % qc) % qc
        keys.append(SimpleNamespace(b=cp.asarray(kb), a=cp.asarray(ka)))
        perms.append(None if perm is None else cp.asarray(perm))
        want.append(acc)
    got = kernels.ks_inner_many(cp.asarray(ext), keys, cp.asarray(qc), rows, perms)
    assert len(got) == count
    for k in range(count):
        np.testing.assert_array_equal(cp.asnumpy(got[k]), want[k], err_msg=f"rotation {k}")


def test_elementwise_bit_exact():
    rng = np.random.default_rng(3)
    primes = mixed_primes(12, 5)
    n = 1 << 12
    qc = np.array(primes, dtype=np.uint64)[:, None]
    a, b = residues(rng, primes, n, (2,)), residues(rng, primes, n, (2,))
    c = residues(rng, primes, 1)
    qd = cp.asarray(qc)
    A, B = cp.asarray(a), cp.asarray(b)
    np.testing.assert_array_equal(cp.asnumpy(kernels.add_mod(A, B, qd)), (a + b) % qc)
    np.testing.assert_array_equal(cp.asnumpy(kernels.mul_mod(A, B, qd)), a * b % qc)
    d0, d1, d2 = kernels.tensor(A, B, qd)
    assert d0.dtype == d1.dtype == d2.dtype == np.uint32
    np.testing.assert_array_equal(cp.asnumpy(d0), a[0] * b[0] % qc)
    np.testing.assert_array_equal(cp.asnumpy(d1), (a[0] * b[1] % qc + a[1] * b[0] % qc) % qc)
    np.testing.assert_array_equal(cp.asnumpy(d2), a[1] * b[1] % qc)
    np.testing.assert_array_equal(cp.asnumpy(kernels.sub_mod(A, B, qd)), (a + qc - b) % qc)
    # a device ciphertext's 32-bit words: each result keeps the word of the operand it updates
    A32, B32 = cp.asarray(a.astype(np.uint32)), cp.asarray(b.astype(np.uint32))
    for name, got, want in (("add", kernels.add_mod(A32, B32, qd), (a + b) % qc),
                            ("sub", kernels.sub_mod(A32, B32, qd), (a + qc - b) % qc),
                            ("sub 64", kernels.sub_mod(A32, B, qd), (a + qc - b) % qc),
                            ("mul", kernels.mul_mod(A32, B, qd), a * b % qc),
                            ("add_first", kernels.add_first(A32, cp.asarray(c), qd, True),
                             np.stack([(a[0] + qc - c) % qc, a[1]])),
                            ("tensor", kernels.tensor(A32, B32, qd)[1],
                             (a[0] * b[1] % qc + a[1] * b[0] % qc) % qc)):
        assert got.dtype == np.uint32, name
        np.testing.assert_array_equal(cp.asnumpy(got), want, err_msg=name)
    # plaintext (L, N) and constant (L, 1) on the first polynomial only, added and subtracted
    for addend in (b[1], c, b[1].astype(np.uint32)):
        for negate in (False, True):
            want = a.copy()
            want[0] = (a[0] + (qc - addend if negate else addend)) % qc
            got = kernels.add_first(A, cp.asarray(addend), qd, negate)
            np.testing.assert_array_equal(cp.asnumpy(got), want)
    # a compact plaintext's uint32 rows times a ciphertext
    np.testing.assert_array_equal(cp.asnumpy(kernels.mul_mod(A, cp.asarray(b[1].astype(np.uint32)), qd)),
                                  a * b[1] % qc)
    # a * b + c, 32-bit a and c (a public-key encryption's noise), into a given array of the
    # device ciphertext's words
    out = cp.empty(A[0].shape, dtype=cp.uint32)
    kernels.mul_add(cp.asarray(a[0].astype(np.uint32)), cp.asarray(b[0]), cp.asarray(a[1].astype(np.uint32)),
                    qd, out)
    np.testing.assert_array_equal(cp.asnumpy(out), (a[0] * b[0] % qc + a[1]) % qc)


def test_barrett_constants_cached_for_views_of_a_column():
    """A fresh broadcast view of one modulus column (mul_plain's compact path) reuses the
    column's Barrett constants: no new cache entry (and no host copy) per call."""
    primes = mixed_primes(12, 3)
    qd = cp.asarray(np.array(primes, dtype=np.uint64)[:, None])
    a = cp.asarray(residues(np.random.default_rng(5), primes, 1 << 12, (2,)))
    want = cp.asnumpy(a) * cp.asnumpy(a) % cp.asnumpy(qd)
    np.testing.assert_array_equal(cp.asnumpy(kernels.mul_mod(a, a, qd[..., None][..., 0])), want)
    size = len(kernels._state["mu"])
    for _ in range(3):
        np.testing.assert_array_equal(cp.asnumpy(kernels.mul_mod(a, a, qd[..., None][..., 0])), want)
    assert len(kernels._state["mu"]) == size


@pytest.mark.parametrize("log_n,row0,perm,adds", [(12, 0, False, (False, False)), (13, 2, False, (True, True)),
                                                  (14, 3, True, (True, False))])
def test_ntt_scale_down_add_bit_exact(log_n, row0, perm, adds):
    """ModDown's and rescale's last step stored by the NTT's shared-memory pass: (a - NTT(b)) * inv
    with a rotation's gathered c0 or a product's d0, d1 fused in; a in 64- or 32-bit words."""
    rng = np.random.default_rng(row0)
    primes = mixed_primes(log_n, 7)
    n, limbs = 1 << log_n, 4
    ref, dev = ring_pair(primes[:limbs], log_n)
    qc = np.array(primes[:limbs], dtype=np.uint64)[:, None]
    full = np.stack([residues(rng, primes[:row0] + primes[:limbs] + primes[:1], n) for _ in range(2)])
    b = residues(rng, primes[:limbs], n, (2,))
    inv = residues(rng, primes[:limbs], 1)
    addend = [residues(rng, primes[:limbs], n) if on else None for on in adds]
    p = rng.permutation(n) if perm else None
    with using("numpy"):
        b_ntt = ref.ntt(b, list(range(limbs)))
    want = (full[:, row0:row0 + limbs] + qc - b_ntt) * inv % qc
    for c, x in enumerate(addend):
        if x is not None:
            want[c] = (want[c] + (x if p is None else x[:, p])) % qc
    # the key inner product hands over 32-bit words, and the tensor product's addends are 32-bit
    for word, add_word in ((np.uint64, np.uint64), (np.uint32, np.uint32), (np.uint32, None)):
        adds = [None if x is None else cp.asarray(x.astype(add_word or (np.uint32 if c else np.uint64)))
                for c, x in enumerate(addend)]   # None: one addend of each word size
        got = kernels.ntt_scale_down_add(dev, cp.asarray(b.astype(np.uint32)), range(limbs),
                                         cp.asarray(full.astype(word)), row0, cp.asarray(inv), cp.asarray(qc),
                                         adds, None if p is None else cp.asarray(p))
        assert got.dtype == np.uint32
        np.testing.assert_array_equal(cp.asnumpy(got), want, err_msg=f"{word}, {add_word}")


# ---- whole operations: the device evaluator against the numpy evaluator ----------------

def _keys_to_device(keys):
    def swk(k):
        return SwitchingKey(b=cp.asarray(k.b), a=cp.asarray(k.a), seeds=k.seeds, fingerprint=k.fingerprint)

    pub = keys.public
    return EvaluationKeys(public=PublicKey(b=cp.asarray(pub.b), a=cp.asarray(pub.a), seed=pub.seed,
                                           fingerprint=pub.fingerprint),
                          relin=swk(keys.relin), galois={g: swk(k) for g, k in keys.galois.items()},
                          fingerprint=keys.fingerprint)


def _on_device(ct):
    """A host ciphertext as the device holds it: 32-bit words (backend.residue_dtype)."""
    return replace(ct, data=cp.asarray(ct.data.astype(np.uint32)))


# more rotations than one ks_inner_many launch takes (kernels.KS_MANY = 8)
HOISTED = [1, 3, -2, 2, 4, 5, 6, 7, 9, -5]


@pytest.mark.parametrize("spec", [
    dict(log_n=11, levels=3, scale_bits=40, primes_per_level=2, base_primes=2, dnum=3),
    dict(log_n=12, levels=4, scale_bits=28, primes_per_level=1, base_primes=1, dnum=2),
    dict(log_n=13, levels=2, scale_bits=44, primes_per_level=2, base_primes=2, dnum=6),
])
def test_evaluator_ops_bit_exact(spec):
    prm = P.build(**spec, unsafe_allow_insecure=True)
    rng = np.random.default_rng(spec["log_n"])
    with using("numpy"):
        ctx = Context(prm)
        sk, keys = ctx.keygen(rotations=HOISTED, conjugate=True)
        ev = ctx.evaluator(keys)
        ct = ctx.encrypt(rng.uniform(-1, 1, prm.slots), keys.public)
        ct2 = ctx.encrypt(rng.uniform(-1, 1, prm.slots), keys.public)
        ref_prod = ev.mul(ct, ct2, rescale=True)
        want = {"mul": ev.mul(ct, ct2).data, "mul_rescale": ref_prod.data,
                "rescale": ev.rescale(ct).data, "rot1": ev.rotate(ct, 1).data,
                "switch": ev.ks.switch(ct.data[1], keys.relin, ct.level)}
        hoisted = ev.rotate_hoisted(ct, HOISTED)
        want.update({f"h{s}": c.data for s, c in hoisted.items()})
        low = ev.drop_level(ct, prm.max_level - 1)
        want["rescale_low"] = ev.rescale(low).data
        values = rng.uniform(-1, 1, prm.slots)
        pt = ctx.encode(values, level=ct.level)
        want.update({"add": ev.add(ct, ct2).data, "sub": ev.sub(ct, ct2).data, "neg": ev.neg(ct).data,
                     "add_const": ev.add_const(ct, -0.25).data, "add_plain": ev.add(ct, pt).data,
                     "mul_const": ev.mul_const(ct, 0.75).data, "mul_plain": ev.mul_plain(ct, pt).data,
                     "mul_by_i": ev.mul_by_i(ct).data, "conjugate": ev.conjugate(ct).data})
    with using("cupy"):
        dctx = Context(prm)
        dev = dctx.evaluator(_keys_to_device(keys))
        dct, dct2 = _on_device(ct), _on_device(ct2)
        got = {"mul": dev.mul(dct, dct2).data, "mul_rescale": dev.mul(dct, dct2, rescale=True).data,
               "rescale": dev.rescale(dct).data, "rot1": dev.rotate(dct, 1).data,
               "switch": dev.ks.switch(dct.data[1], dev.keys.relin, dct.level)}
        got.update({f"h{s}": c.data for s, c in dev.rotate_hoisted(dct, HOISTED).items()})
        got["rescale_low"] = dev.rescale(_on_device(low)).data
        dpt = dctx.encode(values, level=ct.level)     # the device's encoding, 32-bit words
        assert dpt.data.dtype == np.uint32
        np.testing.assert_array_equal(cp.asnumpy(dpt.data), pt.data)
        got.update({"add": dev.add(dct, dct2).data, "sub": dev.sub(dct, dct2).data, "neg": dev.neg(dct).data,
                    "add_const": dev.add_const(dct, -0.25).data, "add_plain": dev.add(dct, dpt).data,
                    "mul_const": dev.mul_const(dct, 0.75).data, "mul_plain": dev.mul_plain(dct, dpt).data,
                    "mul_by_i": dev.mul_by_i(dct).data, "conjugate": dev.conjugate(dct).data})
    for name in want:
        np.testing.assert_array_equal(cp.asnumpy(got[name]), want[name], err_msg=name)
        if name != "switch":    # every op's ciphertext stays in the device's 32-bit words
            assert got[name].dtype == np.uint32, name
    # and the device result still decrypts to the product (guards the reference too)
    with using("numpy"):
        prod = replace(ref_prod, data=cp.asnumpy(got["mul_rescale"]))
        err = np.max(np.abs(ctx.decrypt(prod, sk) - ctx.decrypt(ct, sk) * ctx.decrypt(ct2, sk)))
    assert err < 1e-3


@pytest.mark.parametrize("block,slots", [(16, 512), (1024, 1024)])
def test_linear_transform_bit_exact(block, slots):
    """A linear transform's inner sums run as one mul_plain_sum kernel on the device
    (compact diagonals for a block-diagonal matrix, full ones for a dense matrix):
    identical to the numpy evaluator's mul_plain + add."""
    from aegis_hpc.ckks.lintrans import LinearTransform

    prm = P.build(log_n=11, levels=3, scale_bits=40, primes_per_level=2, base_primes=2, dnum=3,
                  unsafe_allow_insecure=True)
    rng = np.random.default_rng(block)
    m = rng.uniform(-1, 1, (block, block))
    with using("numpy"):
        lt = LinearTransform.block_diagonal(m, block, slots) if block < slots else LinearTransform(m)
        ctx = Context(prm)
        sk, keys = ctx.keygen(rotations=lt.rotations())
        ct = ctx.encrypt(rng.uniform(-1, 1, slots), keys.public, slots=slots)
        want = lt.evaluate(ctx.evaluator(keys), ct)
    with using("cupy"):
        lt_dev = LinearTransform.block_diagonal(m, block, slots) if block < slots else LinearTransform(m)
        dev = Context(prm).evaluator(_keys_to_device(keys))
        got = lt_dev.evaluate(dev, _on_device(ct))
    np.testing.assert_array_equal(cp.asnumpy(got.data), want.data)
    assert got.data.dtype == np.uint32
    assert got.scale == want.scale and got.level == want.level


def test_chacha20_and_uniform_sampling_bit_exact():
    """The CUDA ChaCha20 keystream and the uniform rows it feeds equal the numpy
    reference (RFC 8439 vector in tests/unit/test_sampling.py), so a key's `a`
    regenerates from its seed identically on CPU and GPU."""
    from aegis_hpc.ckks import sampling

    key = np.frombuffer(bytes(range(32)), dtype="<u4")
    nonces = np.array([[9, 0x4a000000, 0], [1, 2, 3], [2147352577, 0x61656769, 0]], dtype=np.uint32)
    got = kernels.chacha20_rows(key, nonces, 1, 513).get()
    assert np.array_equal(got, sampling.chacha20_rows(key, nonces, 1, 513))
    seed = sampling.fresh_seed()
    primes = mixed_primes(16, 6)
    ref = sampling.uniform_mod(seed, primes, 1 << 16)
    dev = sampling.uniform_mod(seed, primes, 1 << 16, cp)
    assert np.array_equal(ref, dev.get())


def test_small_sampling_and_public_key_encryption_bit_exact(monkeypatch):
    """Secrets' and errors' coefficients drawn on the GPU equal numpy's from the same
    seed, and so does a whole public-key encryption (sampling, NTTs, products)."""
    from aegis_hpc.ckks import keys as K
    from aegis_hpc.ckks import sampling

    seed = sampling.fresh_seed()
    ref, dev = sampling.SmallSampler(seed, "t"), sampling.SmallSampler(seed, "t", cp)
    assert np.array_equal(ref.ternary(1 << 16), dev.ternary(1 << 16).get())
    assert np.array_equal(ref.centered_binomial(1 << 16, P.ERROR_ETA), dev.centered_binomial(1 << 16, P.ERROR_ETA).get())
    monkeypatch.setattr(K, "fresh_seed", lambda: seed)      # the encryption's draw, made twice
    prm = P.build(log_n=12, levels=3, scale_bits=40, primes_per_level=2, base_primes=2, dnum=3,
                  unsafe_allow_insecure=True)
    x = np.random.default_rng(5).uniform(-1, 1, prm.slots)
    with using("numpy"):
        ctx = Context(prm)
        sk, keys = ctx.keygen()
        want = ctx.encrypt(x, keys.public)
        assert np.abs(ctx.decrypt(want, sk) - x).max() < 1e-6
    with using("cupy"):
        got = Context(prm).encrypt(x, _keys_to_device(keys).public)
    np.testing.assert_array_equal(cp.asnumpy(got.data), want.data)
    assert got.data.dtype == np.uint32


def test_encryption_noise_kernel_bit_exact():
    """A public-key encryption's v, e0 + m and e1, drawn and reduced mod each prime in one
    kernel, equal numpy's three draws from the same seed: with a message of full-size
    coefficients, and with no message and a `reject` word that occurs in the ternary
    draw's stream (its redraw path, which the real 2^32 - 1 almost never takes)."""
    from aegis_hpc.ckks import sampling

    log_n = 12
    n = 1 << log_n
    primes = mixed_primes(log_n, 4)
    qc = cp.asarray(np.array(primes, dtype=np.uint64)[:, None])
    seed = sampling.fresh_seed()
    msg = np.random.default_rng(9).integers(-(1 << 61), 1 << 61, n)
    raw = sampling.SmallSampler(seed, "k")._stream(0, 0, n)
    for reject, message in ((sampling.TERNARY_REJECT, msg), (int(raw[5]), None)):
        ref = sampling.SmallSampler(seed, "k")
        v = ref.ternary(n, reject=reject)
        e0, e1 = (ref.centered_binomial(n, P.ERROR_ETA) for _ in range(2))
        if message is not None:
            e0 = e0 + message
        want = np.stack([v, e0, e1])[:, None, :] % np.array(primes, dtype=np.int64)[:, None]
        dev = sampling.SmallSampler(seed, "k", cp)
        got = kernels.encryption_noise(dev, n, P.ERROR_ETA, qc, None if message is None else cp.asarray(message),
                                       reject=reject)
        np.testing.assert_array_equal(cp.asnumpy(got), want)
        assert dev.next_draws(1)[2] == 3              # the three draws are spent


def test_bootstrap_replayed_as_a_cuda_graph_is_bit_identical():
    """The first bootstrap of a key runs eagerly, the second captures a CUDA graph and the
    rest replay it (backend/graphs.py): every output against an eager bootstrap of the same
    input, bit for bit, also after host uploads have recycled the pinned staging buffers a
    wrongly captured host-to-device copy would read; and a replayed output decrypts."""
    from aegis_hpc.ckks.bootstrap.bootstrapper import Bootstrapper

    with using("cupy"):
        ctx = Context.from_preset("test-boot")
        sk, keys = ctx.keygen(bootstrap=True)
        ev = ctx.evaluator(keys)
        graphed, eager = Bootstrapper(ev), Bootstrapper(ev)
        eager._graphs = None
        assert graphed._graphs is not None
        rng = np.random.default_rng(11)
        xs = [rng.uniform(-1, 1, ctx.slots) for _ in range(4)]
        cts = [ctx.encrypt(x, sk, level=0) for x in xs]
        counts = dict(ev.counts)
        outs = [graphed.bootstrap(c) for c in cts]
        switches = ev.counts["keyswitch"] - counts["keyswitch"]
        assert graphed.replays(cts[0])
        for _ in range(8):
            cp.asarray(rng.integers(0, 2 ** 31, 1 << 14))
        outs.append(graphed.bootstrap(cts[1]))
        before = ev.counts["keyswitch"]
        wants = [eager.bootstrap(c) for c in cts + [cts[1]]]
        # a replay counts the key switches an eager call does
        assert switches * 5 == 4 * (ev.counts["keyswitch"] - before)
        for i, (got, want) in enumerate(zip(outs, wants)):
            assert (got.level, got.scale, got.slots) == (want.level, want.scale, want.slots)
            np.testing.assert_array_equal(cp.asnumpy(got.data), cp.asnumpy(want.data), err_msg=f"call {i}")
            assert got.data.dtype == np.uint32 and cts[0].data.dtype == np.uint32
        err = np.abs(ctx.decrypt(outs[3], sk) - xs[3]).max()
    assert err < 2.0 ** -18   # tests/unit/test_bootstrap.py BOOT_BOUND
