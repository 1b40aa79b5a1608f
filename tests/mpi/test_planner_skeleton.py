"""Bytes counted on the wire by the real collectives equal the planner's
prediction exactly, per block and strategy, on small configs."""

import pytest

from aegis_hpc.dist.planner import Algorithm, ModelConfig, Planner

F = 256          # head dim: 4 tokens per ciphertext at N = 2^11, keeps the skeleton fast
ALG = Algorithm(exp_squarings=1, inv_iters=1, gelu_degree=3)


def planner(world, token_groups, heads):
    from aegis_hpc.ckks.params import preset

    m = ModelConfig("skeleton", layers=1, hidden=F * heads, heads=heads, ffn=2 * F * heads,
                    tokens=(1024 // F) * token_groups)
    return Planner(m, preset("test"), world, ALG, refresh_level=6)


@pytest.fixture(scope="module")
def skeleton(comm):
    from aegis_hpc.ckks.params import preset
    from aegis_hpc.dist.skeleton import Skeleton

    return Skeleton(comm, preset("test"))


def check(skeleton, plan, expect_zero=(), expect_nonzero=()):
    predicted = plan.bytes_by_block()
    counted = skeleton.run(plan)
    assert counted == predicted, (plan.strategy, plan.grid)
    for b in expect_zero:
        assert predicted[b] == 0, (plan.strategy, b)
    for b in expect_nonzero:
        assert predicted[b] > 0, (plan.strategy, b)


@pytest.mark.mpi(min_size=2)
def test_aegis_choice_matches_and_only_attention_talks(comm, skeleton):
    p = comm.size
    pl = planner(p, p, heads=p)
    plan = pl.aegis()
    assert plan.grid == (p, 1)
    check(skeleton, plan, expect_zero=("QKV", "out_proj", "layernorm", "FFN"), expect_nonzero=("attention",))


@pytest.mark.mpi(min_size=2)
def test_limb_matches(comm, skeleton):
    plan = planner(comm.size, 1, heads=1).limb()
    check(skeleton, plan, expect_nonzero=("QKV", "attention", "out_proj", "layernorm", "FFN"))


@pytest.mark.mpi(min_size=2)
def test_replicate_matches(comm, skeleton):
    p = comm.size
    plan = planner(p, p, heads=p).replicate()
    check(skeleton, plan, expect_zero=("QKV", "attention", "layernorm"), expect_nonzero=("out_proj", "FFN"))


@pytest.mark.mpi(min_size=4)
def test_aegis_on_a_mixed_grid_matches(comm, skeleton):
    """Token <-> head all-to-all with split limbs, plus limb exchanges inside limb groups."""
    plan = planner(comm.size, 2, heads=2).aegis_at((2, comm.size // 2))
    check(skeleton, plan, expect_nonzero=("attention", "FFN"))
