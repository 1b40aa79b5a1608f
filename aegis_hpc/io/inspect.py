"""Human-readable summary of any aegis-hpc file: structure and sizes, never key material."""

from __future__ import annotations

import math
import os

import h5py
import numpy as np

from . import container

# Attributes shown per group; anything else (in particular anything a future
# writer adds) stays hidden, so inspect cannot leak material by accident.
_SHOWN = {"level", "scale", "slots", "limbs", "is_complex", "packing", "count", "total", "start",
          "storage", "shape", "shard_index", "shard_count", "shard_files", "element", "rotation",
          "key_id", "name", "insecure", "description", "model", "layers"}


def _fmt(name, value) -> str:
    if name == "scale":
        return f"2^{math.log2(float(value)):.3f}"
    if isinstance(value, np.ndarray):
        return "[" + ", ".join(str(x) for x in value.tolist()) + "]"
    return str(value)


def _packing_line(group, f) -> str:
    """Rows per ciphertext, feature chunks and slot use: the share of the ring's slots the values fill."""
    from .ciphertexts import ROW_PER_CIPHERTEXT, feature_chunks, slot_use, stored_row_slots

    attrs = group.attrs
    T, F = (int(x) for x in np.asarray(attrs["shape"]).ravel())
    total, slots = int(attrs["total"]), int(attrs["slots"])
    data = f["ciphertexts/data"]
    ring_slots = data.shape[-1] // 2
    if attrs["packing"] == ROW_PER_CIPHERTEXT:
        per_ct, chunks = "1 row", ""
    else:
        S = stored_row_slots(group, F)
        C = feature_chunks(F, S)
        per_ct = f"{slots // S} row(s) of {S} slots"
        chunks = f", features in {C} chunks of {S}" if C > 1 else ""
    return (f"packing {attrs['packing']}: {T} x {F} values, {per_ct} per ciphertext of {slots} slots{chunks}; "
            f"slot use {100.0 * slot_use(T * F, total, ring_slots):.1f} % of {total} x {ring_slots} ring slots")


def describe(path, verify: bool = False) -> list[str]:
    """Lines of the summary. With `verify`, every dataset is read once (checksums checked)."""
    path = os.fspath(path)
    lines = []
    with container.open_checked(path) as f:
        a = f.attrs
        lines.append(f"file: {path} ({os.path.getsize(path):,} bytes)")
        lines.append(f"kind: {a['kind']}  format: {a['format']} version {a['format_version']}  "
                     f"writer: {a.get('writer', '?')}")
        lines.append(f"parameter fingerprint: {a['params_fingerprint']}")
        for key in ("seed_compression", "key_id"):
            if key in a:
                lines.append(f"{key}: {a[key]}")
        if a["kind"] == "public-keys":
            lines.append("bootstrapping keys: " + ("yes (/bootstrap: encapsulation keys for "
                                                   "Evaluator.bootstrap)" if "bootstrap" in f else "no"))

        def visit(name, obj):
            shown = [f"{k}={_fmt(k, obj.attrs[k])}" for k in sorted(obj.attrs) if k in _SHOWN]
            if isinstance(obj, h5py.Group):
                lines.append(f"/{name}/" + (f"  {' '.join(shown)}" if shown else ""))
                if name == "ciphertexts" and "shape" in obj.attrs:
                    lines.append("  " + _packing_line(obj, f))
                return
            raw = obj.size * obj.dtype.itemsize
            kind = "virtual" if obj.is_virtual else (
                f"chunks {obj.chunks}{' fletcher32' if obj.fletcher32 else ''}")
            stored = "" if obj.is_virtual else f", stored {obj.id.get_storage_size():,} bytes"
            lines.append(f"/{name}  {obj.dtype} {obj.shape}  {kind}  raw {raw:,} bytes{stored}")
            if verify:
                obj[()]

        f.visititems(visit)
        if verify:
            lines.append("verify: every dataset read, checksums ok")
    return lines
