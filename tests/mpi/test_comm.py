"""Collectives of every data plane against a numpy reference, and their byte counts."""

import math

import numpy as np
import pytest

from aegis_hpc.parallel.comm import CommStats, wire_bytes

from conftest import host, residues

N = 64


def per_rank(comm, shape, moduli, salt=0):
    """What rank r contributes; every rank can rebuild every other rank's data."""
    return [residues(np.random.default_rng(1000 * salt + r), shape, moduli) for r in range(comm.size)]


@pytest.mark.mpi(min_size=2)
def test_alltoall_moves_block_j_to_rank_j(comm):
    p = comm.size
    q = comm_q = (2**31 - 1,) * 3
    data = per_rank(comm, (2 * p, 2, 3, N), comm_q, salt=1)
    comm.stats.reset()
    out = host(comm.ialltoall(data[comm.rank], "t.alltoall").wait())
    expect = np.concatenate([data[j][2 * comm.rank:2 * comm.rank + 2] for j in range(p)])
    assert out.dtype == np.uint64 and np.array_equal(out, expect)
    assert comm.stats.sites["t.alltoall"].bytes_sent == (p - 1) * 2 * 2 * 3 * N * 4
    assert len(q) == 3


@pytest.mark.mpi(min_size=2)
def test_allgather_stacks_every_rank(comm):
    data = per_rank(comm, (1, 2, 4, N), (97, 193, 257, 641), salt=2)
    comm.stats.reset()
    req = comm.iallgather(data[comm.rank], "t.allgather")
    while not req.test():
        pass
    out = host(req.wait())
    assert np.array_equal(out, np.stack(data))
    assert comm.stats.sites["t.allgather"].bytes_sent == (comm.size - 1) * 2 * 4 * N * 4


@pytest.mark.mpi(min_size=2)
def test_reduce_scatter_and_allreduce_are_exact_mod_each_limb(comm, test_moduli):
    p, moduli = comm.size, test_moduli[:5]
    data = per_rank(comm, (p, 2, 5, N), moduli, salt=3)
    exact = sum(d.astype(object) for d in data) % np.array(moduli, dtype=object)[:, None]
    comm.stats.reset()
    rs = host(comm.ireduce_scatter(data[comm.rank], moduli, "t.rs").wait())
    ar = host(comm.iallreduce(data[comm.rank], moduli, "t.ar").wait())
    assert np.array_equal(rs.astype(object), exact[comm.rank:comm.rank + 1])
    assert np.array_equal(ar.astype(object), exact)
    n = data[0].size
    assert comm.stats.sites["t.rs"].bytes_sent == (p - 1) * (n // p) * 4
    assert comm.stats.sites["t.ar"].bytes_sent == 2 * (p - 1) * math.ceil(n / p) * 4


@pytest.mark.mpi(min_size=2)
def test_allreduce_pads_sizes_not_divisible_by_ranks(comm, test_moduli):
    moduli = test_moduli[:3]
    data = per_rank(comm, (2, 3, 7), moduli, salt=4)  # 42 residues: ragged for 4 ranks
    exact = sum(d.astype(object) for d in data) % np.array(moduli, dtype=object)[:, None]
    comm.stats.reset()
    out = host(comm.iallreduce(data[comm.rank], moduli, "t.ragged").wait())
    assert np.array_equal(out.astype(object), exact)
    assert comm.stats.sites["t.ragged"].bytes_sent == 2 * (comm.size - 1) * math.ceil(42 / comm.size) * 4


@pytest.mark.mpi(min_size=2)
def test_stats_accumulate_per_site_and_shared_with_splits(comm):
    comm.stats.reset()
    sub = comm.split(color=comm.rank % 2)
    x = np.zeros((sub.size, 1, 1, 8), dtype=np.uint64)
    for _ in range(3):
        sub.ialltoall(x, "t.sub").wait()
    s = comm.stats.sites["t.sub"]
    assert s.calls == 3 and s.bytes_sent == 3 * (sub.size - 1) * 8 * 4 and s.wait_s >= 0
    assert "t.sub" in comm.stats.table()


def test_wire_bytes_formulas():
    assert wire_bytes("alltoall", 10, 1) == 0
    assert wire_bytes("alltoall", 10, 4) == 120
    assert wire_bytes("allgather", 10, 4) == 120
    assert wire_bytes("allreduce", 10, 4) == 2 * 3 * 3 * 4
    with pytest.raises(ValueError):
        wire_bytes("bcast", 1, 2)
    assert CommStats().total_bytes() == 0
