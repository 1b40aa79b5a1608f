"""The encoder's collectives (aegis_hpc.parallel.encoder): the k/v all-gather of
token sharding and the all-reduced partial products of tensor parallelism
give one rank's ciphertexts bit for bit, and send the bytes their shapes say."""

import numpy as np
import pytest

from conftest import host

ckks = pytest.importorskip("aegis_hpc.ckks")


@pytest.fixture(scope="module")
def keyed(comm):
    ctx = ckks.Context.from_preset("test")
    lt = ckks.LinearTransform(matrix=np.random.default_rng(3).uniform(-1, 1, (32, 32)), slots=32)
    sk, keys = comm.mpi.bcast(ctx.keygen(rotations=lt.rotations()) if comm.rank == 0 else None, root=0)
    return ctx, sk, keys, lt


CHUNKS = 2    # feature chunks of every k and v block


def rank_blocks(ctx, sk, rank, sl):
    """What `rank` holds for its token blocks `sl`: (K, V) of each, CHUNKS feature
    chunks apiece; seeded, so every rank can rebuild every other rank's blocks."""
    from aegis_hpc.nn.ops import Chunks

    def chunks(name, value, j):
        return Chunks(ctx.encrypt(np.full(8, value + c), sk, slots=8, level=2, seed=b"%s%d.%d.%d" % (name, rank, j, c))
                      for c in range(CHUNKS))
    return {(0, j): (chunks(b"K", 100 * rank + j, j), chunks(b"V", -j, j)) for j in range(sl.start, sl.stop)}


@pytest.mark.mpi(min_size=2)
def test_block_gather_returns_every_block_and_runs_the_work(comm, keyed):
    from aegis_hpc.parallel.comm import wire_bytes
    from aegis_hpc.parallel.encoder import BlockGather
    from aegis_hpc.parallel.planner import blocks_per_rank
    from aegis_hpc.io import rank_range

    ctx, sk, _, _ = keyed
    total = 2 * comm.size + 1           # uneven shards
    ranges = [rank_range(total, r, comm.size) for r in range(comm.size)]
    every = [rank_blocks(ctx, sk, r, sl) for r, sl in enumerate(ranges)]
    done = []
    comm.stats.reset()
    gather = BlockGather(comm, site="t-kv")
    out = gather(every[comm.rank], [lambda: done.append(1), lambda: done.append(2)])
    assert done == [1, 2]
    assert sorted(out) == [(0, j) for j in range(total)]
    for key, parts in out.items():
        want = [p[key] for p in every if key in p]      # the one rank holding it
        assert len(parts) == len(want) == 1
        for (K, V), (K0, V0) in zip(parts, want):
            assert len(K) == len(V) == CHUNKS
            for k, k0 in zip((*K, *V), (*K0, *V0)):
                assert np.array_equal(host(k.data), host(k0.data))
                assert (k.level, k.scale, k.slots) == (k0.level, k0.scale, k0.slots)
    width = blocks_per_rank(total, comm.size)
    assert width == max(len(p) for p in every)
    ct_size = every[0][(0, 0)][0][0].data.size
    assert comm.stats.sites["t-kv"].bytes_sent == wire_bytes("allgather", width * 2 * CHUNKS * ct_size, comm.size)
    assert gather.overlap.in_flight_s >= gather.overlap.blocked_s >= 0


@pytest.mark.mpi(min_size=2)
def test_tensor_parallel_linear_is_one_ranks_result(comm, keyed):
    from aegis_hpc.parallel.comm import wire_bytes
    from aegis_hpc.parallel.encoder import TensorParallelOps
    from aegis_hpc.nn.ops import CipherOps

    ctx, sk, keys, lt = keyed
    x = ctx.encrypt(np.linspace(-1, 1, 32), sk, slots=32, level=3, seed=b"x")
    want = CipherOps(ctx, ctx.evaluator(keys), refresh="none").lintrans(x, lt)
    comm.stats.reset()
    tp = TensorParallelOps(comm, ctx, ctx.evaluator(keys), refresh="none", site="t-tp")
    got = tp.lintrans(x, lt)
    assert np.array_equal(host(got.data), host(want.data)) and (got.level, got.scale) == (want.level, want.scale)
    assert np.allclose(ctx.decrypt(got, sk).real, lt_apply(lt, np.linspace(-1, 1, 32)), atol=1e-4)
    assert comm.stats.sites["t-tp"].bytes_sent == wire_bytes("allreduce", x.data.size, comm.size)


def lt_apply(lt, v):
    rows = np.arange(lt.slots)
    m = np.zeros((lt.slots, lt.slots))
    for k, d in lt.diagonals.items():
        m[rows, (rows + k) % lt.slots] = d
    return m @ v


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("overlap", [True, False])
def test_q_work_runs_during_the_gather_only_with_overlap(comm, keyed, overlap):
    """infer --no-overlap: the q projections run before the k/v gather starts, the
    baseline for the time the overlap hides; the gathered groups are the same."""
    from aegis_hpc.parallel.encoder import BlockGather
    from aegis_hpc.nn.block import _gather_during

    ctx, sk, _, _ = keyed
    every = [rank_blocks(ctx, sk, r, range(r, r + 1)) for r in range(comm.size)]
    gather = BlockGather(comm, site="t-kv-order", overlap=overlap)
    events, start = [], comm.iallgather
    comm.iallgather = lambda *a, **k: (events.append("gather"), start(*a, **k))[1]
    try:
        out = _gather_during(gather, every[comm.rank], [lambda: events.append("q")])
    finally:
        del comm.iallgather
    assert events == (["gather", "q"] if overlap else ["q", "gather"])
    assert sorted(out) == [(0, r) for r in range(comm.size)]
    assert all(np.array_equal(host(out[(0, r)][0][0][c].data), host(every[r][(0, r)][0][c].data))
               for r in range(comm.size) for c in range(CHUNKS))
