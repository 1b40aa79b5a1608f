"""Sharded ciphertext output under mpirun: one shard per rank, an index stitching them.

Run: mpirun --oversubscribe -n 2 python -m pytest --with-mpi tests/mpi/test_io_shards.py
(and -n 4). Each rank encrypts a different, uneven number of tokens.
"""

import os
import tempfile

import h5py
import numpy as np
import pytest

from aegis_hpc import io
from aegis_hpc.backend import to_numpy

pytestmark = pytest.mark.filterwarnings("ignore::aegis_hpc.io.InsecureParametersWarning")

DECRYPT_TOL = 1e-6
FEATURES = 24


@pytest.mark.mpi(min_size=2)
def test_shards_read_back_as_one_tensor(ctx):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    counts = [r + 1 for r in range(size)]          # uneven on purpose
    total = sum(counts)
    x = np.random.default_rng(11).uniform(-1, 1, (total, FEATURES))
    sk = comm.bcast(ctx.keygen()[0] if rank == 0 else None)
    workdir = comm.bcast(tempfile.mkdtemp(prefix="aegis-shards-") if rank == 0 else None)
    index = os.path.join(workdir, "hidden.h5")

    start = sum(counts[:rank])
    mine = [ctx.encrypt(row, sk, slots=32) for row in x[start:start + counts[rank]]]
    io.write_ciphertexts(io.shard_path(index, rank), mine, shape=x.shape,
                         shard=io.Shard(rank, size, start, total))
    comm.Barrier()
    if rank == 0:
        io.write_index(index, [io.shard_path(index, r) for r in range(size)])
    comm.Barrier()

    whole = io.read_ciphertexts(index, ctx.params)
    assert len(whole.ciphertexts) == total and whole.shape == x.shape
    assert np.max(np.abs(io.decode_rows(ctx, whole, sk) - x)) < DECRYPT_TOL
    for got, want in zip(whole.ciphertexts[start:], mine):
        assert np.array_equal(to_numpy(got.data), to_numpy(want.data))

    # A plain h5py user sees one tensor through the virtual dataset.
    with h5py.File(index, "r") as f:
        data = f["ciphertexts/data"]
        assert data.shape == (total, 2, ctx.params.limbs_at(ctx.params.max_level), ctx.params.n)
        assert np.array_equal(data[start:start + counts[rank]], np.stack([to_numpy(c.data) for c in mine]))

    # A different rank layout (balanced split) opens only the shards it overlaps.
    part = io.rank_range(total, rank, size)
    sub = io.read_ciphertexts(index, ctx.params, part)
    assert sub.start == part.start and len(sub.ciphertexts) == part.stop - part.start
    assert np.max(np.abs(io.decode_rows(ctx, sub, sk) - x[part])) < DECRYPT_TOL

    comm.Barrier()
    if rank == 0:
        for name in os.listdir(workdir):
            os.unlink(os.path.join(workdir, name))
        os.rmdir(workdir)
