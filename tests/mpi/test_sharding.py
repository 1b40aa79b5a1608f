"""Every redistribution between shard specs, on every grid of the world, is bit-exact."""

import itertools

import numpy as np
import pytest

from aegis_hpc.parallel.sharding import (HEAD, LIMB, REPLICATED, TOKEN, RankGrid, ShardSpec,
                                     gather_full, redistribute, redistribute_async, shard)

from conftest import host, residues

SPECS = [ShardSpec(i, l) for i in ("token", "head", "replicated") for l in ("full", "split")]


def grids(size):
    return [(t, size // t) for t in range(1, size + 1) if size % t == 0]


@pytest.fixture(scope="module")
def all_grids(comm):
    return {shape: RankGrid(comm, *shape) for shape in grids(comm.size)}


def global_tensor(tg, limbs, moduli):
    # rows and cols divisible by the token groups; limbs deliberately ragged for 4 groups
    return residues(np.random.default_rng(7), (2 * tg, 2 * tg, 2, limbs, 32), moduli)


@pytest.mark.mpi(min_size=2)
def test_every_pair_of_specs_round_trips(comm, all_grids, test_moduli):
    for (tg, lg), grid in all_grids.items():
        moduli = test_moduli[:6]
        full = global_tensor(tg, 6, moduli)
        for a, b in itertools.product(SPECS, SPECS):
            x = shard(full, a, grid, moduli, level=2)
            y = redistribute(x, b, f"rt.{a}->{b}")
            assert y.spec == b
            assert np.array_equal(host(y.local), host(shard(full, b, grid, moduli).local)), (tg, lg, a, b)
            back = redistribute(y, a, "rt.back")
            assert np.array_equal(host(back.local), host(x.local)), (tg, lg, a, b)
            assert back.level == 2 and back.moduli == tuple(moduli)


@pytest.mark.mpi(min_size=2)
def test_ulysses_all_to_all_bytes_and_async_progress(comm, all_grids, test_moduli):
    tg = comm.size
    grid = all_grids[(tg, 1)]
    moduli = test_moduli[:4]
    full = global_tensor(tg, 4, moduli)
    comm.stats.reset()
    pending = redistribute_async(shard(full, TOKEN, grid, moduli), HEAD, "u.t2h")
    while not pending.test():
        pass
    y = pending.wait()
    assert np.array_equal(host(y.local), host(shard(full, HEAD, grid, moduli).local))
    local_residues = full.size // tg
    assert comm.stats.sites["u.t2h"].bytes_sent == (tg - 1) * (local_residues // tg) * 4


@pytest.mark.mpi(min_size=2)
def test_limb_gather_pads_ragged_blocks(comm, all_grids, test_moduli):
    lg = comm.size
    grid = all_grids[(1, lg)]
    limbs = 2 * lg + 1  # never divisible: the last block is short
    moduli = test_moduli[:limbs]
    full = global_tensor(1, limbs, moduli)
    comm.stats.reset()
    x = shard(full, LIMB, grid, moduli)
    assert np.array_equal(host(gather_full(x, "g.limb")), full)
    block = -(-limbs // lg)
    items, polys = 2 * 2, 2
    assert comm.stats.sites["g.limb"].bytes_sent == (lg - 1) * items * polys * block * 32 * 4
    assert redistribute(x, REPLICATED, "g2").local.shape == full.shape
