"""Limb-parallel evaluation (strategy limb): every op the encoder uses gives the
single-rank evaluator's ciphertext bit for bit, and each exchange sends
exactly the bytes planner.py predicts for the limb design."""

import numpy as np
import pytest

from conftest import host

ckks = pytest.importorskip("aegis_hpc.ckks")

STEPS = [1, 3, 8]


@pytest.fixture(scope="module")
def setup(comm):
    from aegis_hpc.parallel.limb import LimbEvaluator

    ctx = ckks.Context.from_preset("test")
    sk, keys = comm.mpi.bcast(ctx.keygen(rotations=STEPS + [2, 4, 12], conjugate=True) if comm.rank == 0 else None, root=0)
    rng = np.random.default_rng(5)
    a = ctx.encrypt(rng.uniform(-1, 1, ctx.slots), sk, seed=b"a")
    b = ctx.encrypt(rng.uniform(-1, 1, ctx.slots), sk, seed=b"b")
    return ctx, sk, ctx.evaluator(keys), LimbEvaluator(ctx, keys, comm, site="t-limb"), a, b


def same(lev, want, got_local):
    got = lev.gather(got_local, "check")
    assert (got.level, got.scale, got.slots) == (want.level, want.scale, want.slots)
    assert np.array_equal(host(got.data), host(want.data))


@pytest.mark.mpi(min_size=2)
def test_limb_ops_are_bit_identical_to_one_rank(comm, setup):
    from aegis_hpc.ckks.polynomial import ChebyshevSeries

    ctx, sk, ev, lev, a, b = setup
    A, B = lev.scatter(a), lev.scatter(b)
    assert A.data.shape[-2] == len(range(comm.rank, a.limbs, comm.size))   # only its own limbs
    same(lev, ev.mul(a, b, rescale=True), lev.mul(A, B, rescale=True))
    want, got = ev.rotate_hoisted(a, STEPS), lev.rotate_hoisted(A, STEPS)
    for s in STEPS:
        same(lev, want[s], got[s])
    same(lev, ev.add_const(ev.mul_const(a, 0.3, rescale=True), 0.5),
         lev.add_const(lev.mul_const(A, 0.3, rescale=True), 0.5))
    # levels differ: add goes through adjust (a constant product and a rescale)
    same(lev, ev.sub(a, ev.mul(a, b, rescale=True)), lev.sub(A, lev.mul(A, B, rescale=True)))
    # the limb-local ops on the evaluator's row hooks
    v = np.random.default_rng(4).uniform(-1, 1, ctx.slots)
    pt = ctx.encode(v, level=a.level, scale=a.scale)
    same(lev, ev.neg(a), lev.neg(A))
    same(lev, ev.mul_int(a, 7), lev.mul_int(A, 7))
    same(lev, ev.mul_plain(a, v, rescale=True), lev.mul_plain(A, v, rescale=True))
    same(lev, ev.add(a, pt), lev.add(A, pt))
    same(lev, ev.sub(a, pt), lev.sub(A, pt))
    same(lev, ev.add_const(a, 0.25 - 0.5j), lev.add_const(A, 0.25 - 0.5j))
    same(lev, ev.drop_level(a, 2), lev.drop_level(A, 2))
    same(lev, ev.conjugate(a), lev.conjugate(A))
    lt = ckks.LinearTransform(matrix=np.random.default_rng(2).uniform(-1, 1, (16, 16)), slots=16)
    x = ctx.encrypt(np.linspace(-1, 1, 16), sk, slots=16, seed=b"x")
    same(lev, lt.evaluate(ev, x), lt.evaluate(lev, lev.scatter(x)))
    series = ChebyshevSeries.interpolate(np.tanh, -1, 1, 15)
    y = lev.gather(lev.evaluate_chebyshev(A, series))
    same(lev, ev.evaluate_chebyshev(a, series), lev.scatter(y))
    # and the numbers are right, not just equal
    assert np.max(np.abs(ctx.decrypt(y, sk).real - np.tanh(ctx.decrypt(a, sk).real))) < 1e-3


def _workload(ev, a, b, lt, x, series):
    """One of each exchange the encoder makes, on any evaluator."""
    ev.mul(a, b, rescale=True)                   # relinearization (full key switch) + rescale
    ev.rotate_hoisted(a, STEPS)                  # one ModUp, one ModDown per rotation
    ev.sub(a, ev.mul(a, b, rescale=True))        # adjust: a rescale of the higher operand
    lt.evaluate(ev, x)                           # BSGS: hoisted baby steps, giant key switches
    ev.evaluate_chebyshev(a, series)


@pytest.mark.mpi(min_size=2)
def test_limb_exchanges_send_what_the_planner_predicts(comm, setup):
    """The planner's TraceEvaluator counts the primitives of the same calls;
    its limb transfers priced per comm.wire_bytes must equal the bytes the
    limb evaluator's all-gathers counted, per exchange kind."""
    from aegis_hpc.ckks.polynomial import ChebyshevSeries
    from aegis_hpc.parallel import planner

    ctx, sk, ev, lev, a, b = setup
    params = ctx.params
    lt = ckks.LinearTransform(matrix=np.random.default_rng(2).uniform(-1, 1, (16, 16)), slots=16)
    x = ctx.encrypt(np.linspace(-1, 1, 16), sk, slots=16, seed=b"x")
    series = ChebyshevSeries.interpolate(np.tanh, -1, 1, 15)
    comm.stats.reset()
    _workload(lev, lev.scatter(a), lev.scatter(b), lt, lev.scatter(x), series)
    counted = {site: comm.mpi.allreduce(comm.stats.total_bytes(f"t-limb/{site}"))
               for site in ("modup", "moddown", "rescale")}
    assert counted.pop("moddown") == 0        # input broadcast: one collective per key switch

    tev = planner.TraceEvaluator(params)
    ct = planner._Ct
    _workload(tev, ct(a.level, a.slots), ct(b.level, b.slots), lt, ct(x.level, x.slots), series)
    tr = planner.Trace(per_block=tev.counts, shared={}, kv_levels=[], refreshes_per_block=0,
                       refreshes_shared=0, S=16, B=1, blocks=1, chunks=1, dh=16, keys=0, calibration="")
    predicted = dict.fromkeys(counted, 0)
    for t in planner.limb_transfers(tr, params, comm.size):
        predicted[{"q": "modup", "qtop": "rescale"}[t.basis]] += planner.predicted_bytes(t, params.n)
    assert counted == predicted
    assert all(v > 0 for v in counted.values())


@pytest.mark.mpi(min_size=2)
def test_limb_key_switch_is_one_collective(comm, setup):
    """Input broadcast: a rotation (one key switch) and a relinearised product
    each make exactly one all-gather, of c1 for ModUp; ModDown sends nothing."""
    ctx, sk, ev, lev, a, b = setup
    A, B = lev.scatter(a), lev.scatter(b)
    for op in (lambda: lev.rotate(A, 3), lambda: lev.mul(A, B)):
        comm.stats.reset()
        op()
        calls = {k: s.calls for k, s in comm.stats.sites.items() if k.startswith("t-limb/")}
        assert calls == {"t-limb/modup": 1}
