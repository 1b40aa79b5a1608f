"""iallreduce of real ciphertexts decrypts to the sum of the plaintexts, and
sharded ciphertexts come back bit-exact through every grid."""

import numpy as np
import pytest

from conftest import host

ckks = pytest.importorskip("aegis_hpc.ckks")


@pytest.fixture(scope="module")
def keyed(comm):
    ctx = ckks.Context.from_preset("test")
    # one secret key for the job (the client's); each rank encrypts with fresh randomness
    sk = comm.mpi.bcast(ctx.keygen()[0] if comm.rank == 0 else None, root=0)
    return ctx, sk


def values(rank, slots):
    return np.random.default_rng(100 + rank).uniform(-1, 1, slots)


@pytest.mark.mpi(min_size=2)
def test_allreduce_of_ciphertexts_decrypts_to_the_sum(comm, keyed):
    ctx, sk = keyed
    level = 3
    ct = ctx.encrypt(values(comm.rank, ctx.slots), sk, level=level)
    moduli = ctx.params.q[: ct.limbs]
    comm.stats.reset()
    total = comm.iallreduce(ct.data, moduli, "ckks.sum").wait()
    summed = ct.with_data(total)
    expect = sum(values(r, ctx.slots) for r in range(comm.size))
    err = np.max(np.abs(ctx.decrypt(summed, sk) - expect))
    # fresh-encryption noise is ~2^-30 of the scale per rank; sums of P add P of them
    assert err < 1e-5 * comm.size, err
    assert comm.stats.sites["ckks.sum"].bytes_sent == 2 * (comm.size - 1) * -(-ct.data.size // comm.size) * 4


@pytest.mark.mpi(min_size=2)
def test_ciphertext_tensor_survives_token_head_limb_moves(comm, keyed):
    from aegis_hpc.parallel.sharding import (HEAD, LIMB, TOKEN, RankGrid, ciphertext_at, redistribute, shard,
                                         stack_ciphertexts)

    ctx, sk = keyed
    p = comm.size
    # rank 0 encrypts a p x p grid; everyone gets the same ciphertexts
    cts = comm.mpi.bcast([ctx.encrypt(np.full(ctx.slots, i / 10), sk, level=1) for i in range(p * p)]
                         if comm.rank == 0 else None, root=0)
    full, meta = stack_ciphertexts(cts, cols=p)
    grid = RankGrid(comm, p, 1)
    x = shard(full, TOKEN, grid, ctx.params.q[: full.shape[3]], **meta)
    y = redistribute(redistribute(redistribute(x, HEAD, "ct.t2h"), LIMB, "ct.h2l"), TOKEN, "ct.l2t")
    assert np.array_equal(host(y.local), host(x.local))
    row = ciphertext_at(y, 0, 0)
    i = comm.rank * p  # first ciphertext of this rank's token block
    assert np.allclose(ctx.decrypt(row, sk), i / 10, atol=1e-6)
