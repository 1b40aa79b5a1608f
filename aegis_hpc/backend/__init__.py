"""Array backend: numpy or cupy, chosen once per process.

Everything above this package is written against ``xp`` (``get_xp()``), so one
code path serves CPU and GPU. ``AEGIS_BACKEND=numpy|cupy|auto`` chooses; auto
takes cupy only when a GPU is actually usable, so CI and laptops get numpy.
"""

from __future__ import annotations

import os

_state = {"name": None, "xp": None}


class BackendError(RuntimeError):
    pass


def _cupy_usable():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def local_rank() -> int:
    for var in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def select(name: str | None = None):
    """Pick the backend. Called implicitly by get_xp(); tests may call it again."""
    name = (name or os.environ.get("AEGIS_BACKEND", "auto")).lower()
    if name not in ("numpy", "cupy", "auto"):
        raise BackendError(f"AEGIS_BACKEND must be numpy, cupy or auto, not {name!r}")
    if name == "auto":
        name = "cupy" if _cupy_usable() else "numpy"
    if name == "cupy":
        if not _cupy_usable():
            raise BackendError("AEGIS_BACKEND=cupy but no usable GPU/cupy was found")
        import cupy

        # One rank per GPU: the rank's local index picks the device.
        cupy.cuda.Device(local_rank() % cupy.cuda.runtime.getDeviceCount()).use()
        _state.update(name="cupy", xp=cupy)
    else:
        import numpy

        _state.update(name="numpy", xp=numpy)
    return _state["xp"]


def get_xp():
    if _state["xp"] is None:
        select()
    return _state["xp"]


def name() -> str:
    get_xp()
    return _state["name"]


def is_gpu() -> bool:
    return name() == "cupy"


def to_numpy(a):
    """Host copy of an array of either backend (no-op for numpy)."""
    if hasattr(a, "get"):
        return a.get()
    return a


def residue_dtype():
    """The word a ciphertext's residues are held in on this backend: uint32 on the device,
    where every kernel reads and writes 32-bit words (residues are below 2^31, so a 64-bit
    word would move as many zero bytes as residue bytes), uint64 in the numpy reference,
    whose products (a * b % q) are taken in the operands' own dtype."""
    import numpy

    return numpy.uint32 if is_gpu() else numpy.uint64


def asarray(a, dtype=None):
    return get_xp().asarray(a, dtype=dtype)


def sync():
    """Wait for queued device work (timing and before host-staged MPI)."""
    if is_gpu():
        import cupy

        cupy.cuda.get_current_stream().synchronize()
