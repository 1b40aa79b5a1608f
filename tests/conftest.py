import os

import pytest

os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")


@pytest.fixture(scope="session")
def ctx():
    from aegis_hpc.ckks import Context

    return Context.from_preset("test")


@pytest.fixture(scope="session")
def rng():
    import numpy as np

    return np.random.default_rng(20261125)
