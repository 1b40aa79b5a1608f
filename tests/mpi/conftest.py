"""Shared fixtures for the MPI tests (run under mpirun with --with-mpi)."""

import os

import numpy as np
import pytest

# what mpirun sets for the job a rank belongs to; a nested mpirun that sees these
# refuses ("does not support recursive calls") or joins the wrong job
_JOB_PARAMS = ("orte_", "ess", "pmix", "initial_wdir", "shmem_runtime", "num_procs", "cpu_type",
               "mpi_oversubscribe", "rmaps_base_oversubscribe", "hwloc_base_binding_policy", "prefixes")


@pytest.fixture(scope="session")
def comm():
    from aegis_hpc.parallel.comm import make_comm

    return make_comm("auto")


@pytest.fixture(scope="session")
def test_moduli():
    from aegis_hpc.ckks.params import preset

    return preset("test").q


def host(a):
    """numpy copy of a result of either backend: the NCCL plane returns device arrays."""
    from aegis_hpc.backend import to_numpy

    return np.asarray(to_numpy(a))


def residues(rng, shape, moduli):
    """Uniform residues, limb i (axis -2) below moduli[i]."""
    q = np.asarray(moduli, dtype=np.uint64)[:, None]
    return (rng.integers(0, 2**62, size=shape, dtype=np.uint64) % q).astype(np.uint64)


def launcher_env(**extra):
    """Environment for an mpirun started from inside a test rank: the job's
    identity removed, the user's own MCA settings kept (a container may need
    e.g. OMPI_MCA_plm=isolated to launch at all)."""
    env = {}
    for k, v in os.environ.items():
        family, _, rest = k.partition("_")
        if family in ("OMPI", "PMIX", "PRTE", "OPAL") and not k.startswith("OMPI_ALLOW_RUN_AS_ROOT"):
            mca, _, param = rest.partition("_")
            if mca != "MCA" or param.lower().startswith(_JOB_PARAMS):
                continue
        env[k] = v
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", **extra)
    return env
