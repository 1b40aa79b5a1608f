"""Shared fixtures for the MPI tests (run under mpirun with --with-mpi)."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def comm():
    from aegis_hpc.dist.comm import make_comm

    return make_comm("auto")


@pytest.fixture(scope="session")
def test_moduli():
    from aegis_hpc.ckks.params import preset

    return preset("test").q


def residues(rng, shape, moduli):
    """Uniform residues, limb i (axis -2) below moduli[i]."""
    q = np.asarray(moduli, dtype=np.uint64)[:, None]
    return (rng.integers(0, 2**62, size=shape, dtype=np.uint64) % q).astype(np.uint64)
