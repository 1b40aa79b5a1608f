"""Bytes counted on the wire by the real collectives equal the planner's
prediction exactly, per block and strategy, on a small config; the
planner's trace refreshes where the plaintext mirror does."""

import numpy as np
import pytest

from aegis_hpc.parallel.planner import BLOCKS, Planner

TOKENS = 8       # tiny model at the test preset: 8 keys per attention ciphertext


@pytest.fixture(scope="module")
def params():
    from aegis_hpc.ckks.params import preset

    return preset("test")


@pytest.fixture(scope="module")
def planner(comm, params):
    return Planner("tiny", params, comm.size, TOKENS * comm.size // 2, layers=1)


@pytest.fixture(scope="module")
def skeleton(comm, params):
    from aegis_hpc.parallel.skeleton import Skeleton

    return Skeleton(comm, params)


def check(skeleton, plan):
    predicted = plan.bytes_by_block()
    assert skeleton.run(plan) == predicted, (plan.strategy, plan.grid)
    return predicted


@pytest.mark.mpi(min_size=2)
def test_aegis_matches_and_only_attention_talks(planner, skeleton):
    by = check(skeleton, planner.aegis())
    assert by["attention"] > 0
    assert all(by[b] == 0 for b in BLOCKS if b != "attention")


@pytest.mark.mpi(min_size=2)
def test_limb_matches_and_every_block_talks(planner, skeleton):
    by = check(skeleton, planner.limb())
    assert all(by[b] > 0 for b in BLOCKS)
    aegis = planner.aegis().bytes_by_block()
    assert aegis["attention"] < by["attention"]


@pytest.mark.mpi(min_size=2)
def test_replicate_matches_and_only_linear_layers_talk(planner, skeleton):
    by = check(skeleton, planner.replicate())
    assert all(by[b] > 0 for b in ("QKV", "out_proj", "FFN"))
    assert by["attention"] == by["layernorm"] == 0


@pytest.mark.mpi(min_size=2)
def test_trace_refreshes_where_the_mirror_does(comm, planner, params):
    from aegis_hpc.nn import mirror

    from aegis_hpc.nn import models

    x = models.embed_text("tiny", ["word " * (planner.tokens - 2)])[0]
    assert len(x) == planner.tokens
    _, stats = mirror.run("tiny", [x], layers=1, slots=params.slots, max_level=params.max_level)
    tr = planner.trace
    assert tr.blocks * tr.refreshes_per_block + tr.refreshes_shared == stats.refreshes
