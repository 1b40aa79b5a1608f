"""Plaintext model weights (kind weights): named numeric arrays under /weights.

They carry the fingerprint of the parameter set they were prepared for, so a
server cannot pair weights scaled for one ring with keys of another.
"""

from __future__ import annotations

import numpy as np

from . import container
from .container import FormatError

_NUMERIC = "biufc"


def write_weights(path, weights: dict, fingerprint: str, force: bool = False) -> None:
    arrays = {}
    for name, value in weights.items():
        arr = np.ascontiguousarray(value)
        if not name or "/" in name or name.startswith("."):
            raise FormatError(f"weight name {name!r}: must be non-empty, without '/' or leading '.'")
        if arr.dtype.kind not in _NUMERIC:
            raise FormatError(f"weight {name!r}: dtype {arr.dtype} is not numeric")
        arrays[name] = arr
    with container.create(path, "weights", fingerprint, force=force) as f:
        g = f.create_group("weights")
        g.attrs["count"] = len(arrays)
        for name, arr in arrays.items():
            container.new_dataset(g, name, arr.shape, arr.dtype, data=arr)


def read_weights(path, fingerprint: str | None = None, names=None) -> dict:
    """name -> numpy array; `names` limits the read to those weights."""
    with container.open_checked(path, "weights", fingerprint, "the parameter set") as f:
        g = container.group(f, "weights")
        present = list(g.keys())
        if len(present) != int(container.attr(g, "count", "i")):
            raise FormatError(f"{path}: /weights holds {len(present)} arrays, count says "
                              f"{int(g.attrs['count'])}")
        out = {}
        for name in present if names is None else names:
            ds = g.get(name)
            if not hasattr(ds, "dtype") or ds.dtype.kind not in _NUMERIC:
                raise FormatError(f"{path}: /weights/{name} is missing or not numeric")
            out[name] = container.dataset(g, name, ds.dtype)[()]
        return out
