"""Ciphertext tensors: one file, one shard of a distributed tensor, or an index of shards.

A tensor is a batch of ciphertexts sharing level, scale, slot count and limb
count, stored as one uint32 dataset (count, 2, limbs, N) in NTT form, plus the
layout that says what the batch means (shape in tokens x features, packing).
A distributed writer gives each rank a contiguous range of the batch in its
own shard file; the index file stitches the shards with an HDF5 virtual
dataset so a plain h5py user sees one tensor. Our reader does not read
through the virtual dataset: HDF5 silently fills a missing source with zeros,
so it opens the shards itself and checks each one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numpy as np

from ..backend import get_xp, residue_dtype, to_numpy
from ..ckks.bits import pow2_at_least
from ..ckks.ciphertext import Ciphertext
from . import container
from .container import FormatError

ROW_PER_CIPHERTEXT = "row-per-ciphertext"
TOKEN_BLOCKS = "token-blocks"
PACKINGS = (ROW_PER_CIPHERTEXT, TOKEN_BLOCKS)
STORAGE = ("single", "shard", "index")


def row_slots(features: int) -> int:
    """Slots of one row in a token-blocks tensor of one chunk: the power of two at or
    above the features."""
    return pow2_at_least(features)


def chunk_slots(features: int) -> int:
    """Row slots of the feature-chunked alternative: the largest power of two that
    divides the features (768 -> 256: three chunks with no padding)."""
    return features & -features


def token_block_widths(features: int, max_slots: int, unit: int = 1) -> list[int]:
    """The row widths a token-blocks tensor of `features` may be packed with, one chunk
    first: row_slots(features), and chunk_slots(features) where it is smaller, fits the
    ring and is a multiple of `unit` (the model's head size: a head stays in a chunk)."""
    one, alt = row_slots(features), chunk_slots(features)
    return [one] + ([alt] if alt < one and alt % unit == 0 and alt <= max_slots else [])


def token_block_slots(rows: int, features: int, max_slots: int, unit: int = 1) -> int:
    """S, the row width of a token-blocks tensor of rows x features: of
    token_block_widths, the one with the fewest ciphertexts (ties: one chunk)."""
    def count(S):
        return feature_chunks(features, S) * -(-rows // rows_per_ciphertext(rows, S, max_slots))
    return min(token_block_widths(features, max_slots, unit), key=count)


def stored_row_slots(g, features: int) -> int:
    """The row width of a token-blocks /ciphertexts group: its `row_slots`, or one chunk
    for files from before feature chunks."""
    return int(container.attr(g, "row_slots", "i")) if "row_slots" in g.attrs else row_slots(features)


def row_width_error(S: int, features: int, max_slots: int, unit: int = 1) -> str | None:
    """Why S cannot be the row width of a token-blocks tensor of `features` (None: it can)."""
    if S < 1 or S & (S - 1) or S > max_slots:
        return f"row width {S} is not a power of two of at most {max_slots} slots"
    if S < features and features % S:
        return f"row width {S} neither holds nor divides {features} features"
    if S % unit:
        return f"row width {S} is not a multiple of the head size {unit}"
    return None


def feature_chunks(features: int, S: int) -> int:
    return -(-features // S)


def rows_per_ciphertext(rows: int, S: int, max_slots: int) -> int:
    """B of a token-blocks tensor with rows of S slots: a ciphertext holds B consecutive
    rows (of one feature chunk), row b in slots [b S, b S + min(S, features)) of B S
    slots; B is the power of two at or above `rows`, at most max_slots / S."""
    return max(1, min(pow2_at_least(rows), max_slots // S))


def slot_use(values: int, ciphertexts: int, ring_slots: int) -> float:
    """The share of the ring's slots that `values` numbers fill in `ciphertexts` ciphertexts."""
    return values / (ciphertexts * ring_slots)


def pack_rows(values, max_slots: int, S: int | None = None) -> list:
    """A (rows, features) array as the slot vectors of its token-blocks ciphertexts:
    block by block, and within a block its feature chunks in order (S: the row width,
    default row_slots(features), one chunk)."""
    values = np.asarray(values)
    T, F = values.shape
    S = S or row_slots(F)
    B, C = rows_per_ciphertext(T, S, max_slots), feature_chunks(F, S)
    padded = np.zeros((T, C * S), dtype=values.dtype)
    padded[:, :F] = values
    out = []
    for lo in range(0, T, B):
        for c in range(C):
            v = np.zeros((B, S), dtype=values.dtype)
            v[: min(B, T - lo)] = padded[lo:lo + B, c * S:(c + 1) * S]
            out.append(v.ravel())
    return out


def unpack_rows(vectors, rows: int, features: int, S: int | None = None) -> np.ndarray:
    """The inverse of pack_rows: the slot vectors of a whole token-blocks tensor
    (in order) -> its (rows, features) array."""
    S = S or row_slots(features)
    C = feature_chunks(features, S)
    vectors = [np.asarray(v).reshape(-1, S) for v in vectors]
    blocks = [np.concatenate(vectors[j:j + C], axis=1)[:, :features] for j in range(0, len(vectors), C)]
    return np.concatenate(blocks)[:rows]


@dataclass
class CiphertextTensor:
    ciphertexts: list          # Ciphertext objects of ciphertext indices [start, start + len)
    shape: tuple               # logical (tokens, features) of the whole tensor
    packing: str
    start: int = 0             # index of ciphertexts[0] in the whole tensor
    total: int = 0             # ciphertexts in the whole tensor
    key_id: str | None = None  # secret key these are encrypted under (files before it: None)
    model: str | None = None   # encoder output: the model and layer count that made it
    layers: int | None = None
    row_slots: int = 0         # token-blocks: slots of a token row in one feature chunk


@dataclass(frozen=True)
class Shard:
    index: int                 # this shard's number, 0..count-1 (normally the rank)
    count: int                 # shards in the tensor (normally the world size)
    start: int                 # index of this shard's first ciphertext in the whole tensor
    total: int                 # ciphertexts in the whole tensor


def _common(cts) -> dict:
    if not cts:
        raise FormatError("no ciphertexts to write")
    first = cts[0]
    meta = {"level": int(first.level), "scale": float(first.scale), "slots": int(first.slots),
            "is_complex": bool(first.is_complex), "limbs": int(first.limbs)}
    for ct in cts:
        if (ct.level, ct.scale, ct.slots, bool(ct.is_complex), ct.limbs, ct.fingerprint) != (
                first.level, first.scale, first.slots, bool(first.is_complex), first.limbs,
                first.fingerprint):
            raise FormatError("ciphertexts of one tensor must share level, scale, slots, limbs "
                              "and parameter set")
    return meta


def write_ciphertexts(path, cts, *, shape, packing: str = ROW_PER_CIPHERTEXT, force: bool = False,
                      shard: Shard | None = None, key_id: str | None = None,
                      encoder: tuple | None = None, row_width: int | None = None) -> None:
    """Write a tensor (or, with `shard`, this rank's part of one). `key_id`
    (io.secret_key_id) names the secret key, so a wrong key of the same
    parameter set is refused instead of decrypting to noise. `encoder`
    (model, layers) marks an encoder output: decryption checks its values
    against the bound of that layer's LayerNorm. `row_width`: a token-blocks tensor's
    row width S (default row_slots(features): one chunk)."""
    cts = list(cts)
    meta = _common(cts)
    n = cts[0].data.shape[-1]
    total = shard.total if shard else len(cts)
    if shard and not (0 <= shard.index < shard.count and 0 <= shard.start
                      and shard.start + len(cts) <= shard.total):
        raise FormatError(f"shard {shard} does not fit its tensor")
    with container.create(path, "ciphertexts", cts[0].fingerprint, force=force) as f:
        g = f.create_group("ciphertexts")
        g.attrs.update(meta)
        g.attrs.update({"shape": np.asarray(shape, np.int64), "packing": packing, "count": len(cts),
                        "total": total, "start": shard.start if shard else 0,
                        "storage": "shard" if shard else "single"})
        if shard:
            g.attrs.update({"shard_index": shard.index, "shard_count": shard.count})
        if key_id:
            g.attrs["key_id"] = key_id
        if encoder:
            g.attrs.update({"model": encoder[0], "layers": int(encoder[1])})
        if packing == TOKEN_BLOCKS:
            g.attrs["row_slots"] = int(row_width or row_slots(shape[1]))
        ds = container.new_dataset(g, "data", (len(cts), 2, meta["limbs"], n), np.uint32)
        for i, ct in enumerate(cts):
            ds[i] = to_numpy(ct.data).astype(np.uint32)


def write_index(path, shard_paths, force: bool = False) -> None:
    """Index file over shard files already written (call after every rank has finished)."""
    shard_paths = [os.fspath(p) for p in shard_paths]
    metas = [_shard_meta(p) for p in shard_paths]
    metas.sort(key=lambda m: m["start"])
    first = metas[0]
    same = ("level", "scale", "slots", "is_complex", "limbs", "packing", "total", "fingerprint",
            "n", "shard_count", "key_id", "model", "layers", "row_slots")
    expected_start = 0
    for m in metas:
        if m["storage"] != "shard":
            raise FormatError(f"{m['path']}: not a shard (storage={m['storage']!r})")
        bad = [k for k in same if m[k] != first[k]]
        if bad or m["shape"] != first["shape"]:
            raise FormatError(f"{m['path']}: {', '.join(bad) or 'shape'} differs from {first['path']}")
        if m["start"] != expected_start:
            raise FormatError(f"{m['path']}: starts at ciphertext {m['start']}, expected {expected_start}")
        expected_start += m["count"]
    if expected_start != first["total"] or len(metas) != first["shard_count"]:
        raise FormatError(f"shards cover {expected_start} of {first['total']} ciphertexts in "
                          f"{len(metas)} of {first['shard_count']} files")

    full = (first["total"], 2, first["limbs"], first["n"])
    layout = h5py.VirtualLayout(shape=full, dtype=np.uint32)
    index_dir = os.path.dirname(os.path.abspath(path))
    # Relative names: HDF5 looks for them next to the index file, so the
    # directory of shards can be moved or copied as a whole.
    names = [os.path.relpath(os.path.abspath(m["path"]), index_dir) for m in metas]
    for m, name in zip(metas, names):
        src = h5py.VirtualSource(name, "ciphertexts/data", shape=(m["count"],) + full[1:])
        layout[m["start"]:m["start"] + m["count"]] = src
    with container.create(path, "ciphertexts", first["fingerprint"], force=force) as f:
        g = f.create_group("ciphertexts")
        g.attrs.update({k: first[k] for k in ("level", "scale", "slots", "is_complex", "limbs",
                                              "packing", "total")})
        if first["key_id"]:
            g.attrs["key_id"] = first["key_id"]
        if first["model"]:
            g.attrs.update({"model": first["model"], "layers": first["layers"]})
        if first["packing"] == TOKEN_BLOCKS:
            g.attrs["row_slots"] = first["row_slots"]
        g.attrs.update({"shape": np.asarray(first["shape"], np.int64), "count": first["total"],
                        "start": 0, "storage": "index", "shard_files": names,
                        "shard_starts": np.array([m["start"] for m in metas], np.int64),
                        "shard_counts": np.array([m["count"] for m in metas], np.int64)})
        g.create_virtual_dataset("data", layout, fillvalue=0)


def _meta(path, g, n) -> dict:
    """Layout attributes of a /ciphertexts group, type-checked."""
    a = container.attr
    meta = {"path": path, "fingerprint": container.fingerprint_of(g.file), "n": n,
            "level": int(a(g, "level", "i")), "scale": float(a(g, "scale", "f")),
            "slots": int(a(g, "slots", "i")), "is_complex": bool(a(g, "is_complex", "b")),
            "limbs": int(a(g, "limbs", "i")), "packing": a(g, "packing", "U"),
            "count": int(a(g, "count", "i")), "total": int(a(g, "total", "i")),
            "start": int(a(g, "start", "i")), "storage": a(g, "storage", "U"),
            "shape": tuple(int(x) for x in np.asarray(a(g, "shape", "i")).ravel()),
            "key_id": a(g, "key_id", "U") if "key_id" in g.attrs else None,
            "model": a(g, "model", "U") if "model" in g.attrs else None,
            "layers": int(a(g, "layers", "i")) if "layers" in g.attrs else None}
    if meta["storage"] not in STORAGE:
        raise FormatError(f"{path}: unknown storage {meta['storage']!r}")
    if meta["storage"] == "shard":
        meta["shard_count"] = int(a(g, "shard_count", "i"))
    if len(meta["shape"]) != 2 or min(meta["shape"]) < 1 or meta["count"] < 1 or not (
            0 <= meta["start"] and meta["start"] + meta["count"] <= meta["total"]):
        raise FormatError(f"{path}: inconsistent tensor layout attributes")
    if meta["packing"] not in PACKINGS:
        raise FormatError(f"{path}: unknown packing {meta['packing']!r}")
    if meta["packing"] == ROW_PER_CIPHERTEXT and (meta["shape"][0] != meta["total"]
                                                  or meta["shape"][1] > meta["slots"]):
        raise FormatError(f"{path}: shape {meta['shape']} does not match {meta['total']} ciphertexts "
                          f"of {meta['slots']} slots packed {ROW_PER_CIPHERTEXT}")
    meta["row_slots"] = 0
    if meta["packing"] == TOKEN_BLOCKS:
        T, F = meta["shape"]
        S = meta["row_slots"] = stored_row_slots(g, F)
        why = row_width_error(S, F, n // 2)
        if why:
            raise FormatError(f"{path}: {why}")
        B = rows_per_ciphertext(T, S, n // 2)
        if meta["slots"] != B * S or meta["total"] != -(-T // B) * feature_chunks(F, S):
            raise FormatError(f"{path}: shape {meta['shape']} does not match {meta['total']} ciphertexts "
                              f"of {meta['slots']} slots packed {TOKEN_BLOCKS} with rows of {S}")
    return meta


def _shard_meta(path) -> dict:
    with container.open_checked(path, "ciphertexts") as f:
        g = container.group(f, "ciphertexts")
        ds = container.dataset(g, "data", np.uint32, (None, 2, None, None))
        meta = _meta(path, g, ds.shape[3])
        if ds.shape[:3] != (meta["count"], 2, meta["limbs"]):
            raise FormatError(f"{path}: /ciphertexts/data shape {ds.shape} disagrees with its attributes")
        return meta


def _read_block(path, params, lo, hi, expect=None):
    """Ciphertexts [lo, hi) of the file's own range, checked against `params` (and `expect`)."""
    with container.open_checked(path, "ciphertexts", params.fingerprint, "the key's parameters") as f:
        g = container.group(f, "ciphertexts")
        meta = _meta(path, g, params.n)
        if expect is not None:
            diff = [k for k, v in expect.items() if meta.get(k) != v]
            if diff:
                raise FormatError(f"{path}: {', '.join(diff)} differ from the index file")
        if not 0 <= meta["level"] <= params.max_level or meta["limbs"] != params.limbs_at(meta["level"]):
            raise FormatError(f"{path}: level {meta['level']} with {meta['limbs']} limbs does not fit "
                              f"the parameter set")
        if meta["slots"] & (meta["slots"] - 1) or not 1 <= meta["slots"] <= params.slots:
            raise FormatError(f"{path}: slot count {meta['slots']} invalid for N=2^{params.log_n}")
        ds = container.dataset(g, "data", np.uint32, (meta["count"], 2, meta["limbs"], params.n))
        data = ds[lo:hi]
    container.below_moduli(data, params.q[: meta["limbs"]], f"{path}: /ciphertexts/data")
    xp = get_xp()
    cts = [Ciphertext(data=xp.asarray(d.astype(residue_dtype())), level=meta["level"], scale=meta["scale"],
                      slots=meta["slots"], fingerprint=params.fingerprint, is_complex=meta["is_complex"])
           for d in data]
    return meta, cts


def read_ciphertexts(path, params, select: slice | None = None) -> CiphertextTensor:
    """Ciphertexts of a single file, a shard, or (through its shards) an index file.

    `select` picks a contiguous range of ciphertext indices of the whole tensor;
    for an index file only the shards overlapping it are opened, which is how a
    rank reads its own part under any rank layout (see `rank_range`).
    """
    path = os.fspath(path)
    with container.open_checked(path, "ciphertexts", params.fingerprint, "the key's parameters") as f:
        g = container.group(f, "ciphertexts")
        meta = _meta(path, g, params.n)
        if meta["storage"] == "index":
            files = [str(x) for x in container.attr(g, "shard_files")]
            starts = [int(x) for x in container.attr(g, "shard_starts", "i")]
            counts = [int(x) for x in container.attr(g, "shard_counts", "i")]
    lo, hi, _ = (select or slice(None)).indices(meta["total"])
    if lo >= hi:
        raise FormatError(f"{path}: empty selection {select} of {meta['total']} ciphertexts")
    if meta["storage"] != "index":
        if not meta["start"] <= lo < hi <= meta["start"] + meta["count"]:
            raise FormatError(f"{path}: holds ciphertexts {meta['start']}..{meta['start'] + meta['count'] - 1}, "
                              f"not {lo}..{hi - 1}")
        _, cts = _read_block(path, params, lo - meta["start"], hi - meta["start"])
    else:
        if len(files) != len(starts) or len(files) != len(counts):
            raise FormatError(f"{path}: shard tables have different lengths")
        expect = {k: meta[k] for k in ("level", "scale", "slots", "is_complex", "limbs", "packing",
                                       "total", "shape", "key_id", "model", "layers", "row_slots")}
        cts = []
        base = os.path.dirname(os.path.abspath(path))
        for name, start, count in zip(files, starts, counts):
            a, b = max(lo, start), min(hi, start + count)
            if a >= b:
                continue
            shard = os.path.join(base, name)
            if not os.path.exists(shard):
                raise FormatError(f"{path}: shard file {shard} is missing")
            _, part = _read_block(shard, params, a - start, b - start,
                                  dict(expect, start=start, count=count, storage="shard"))
            cts.extend(part)
        if len(cts) != hi - lo:
            raise FormatError(f"{path}: shards do not cover ciphertexts {lo}..{hi - 1}")
    return CiphertextTensor(ciphertexts=cts, shape=meta["shape"], packing=meta["packing"],
                            start=lo, total=meta["total"], key_id=meta["key_id"], model=meta["model"],
                            layers=meta["layers"], row_slots=meta["row_slots"])


def rank_range(total: int, rank: int, size: int) -> slice:
    """Contiguous, balanced part of `total` ciphertexts for `rank` of `size` (token sharding)."""
    base, extra = divmod(total, size)
    lo = rank * base + min(rank, extra)
    return slice(lo, lo + base + (rank < extra))


def shard_path(base, rank: int) -> str:
    """Conventional shard name next to the index file `base` (e.g. out.h5 -> out.rank0003.h5)."""
    root, ext = os.path.splitext(os.fspath(base))
    return f"{root}.rank{rank:04d}{ext or '.h5'}"


def decode_rows(ctx, tensor: CiphertextTensor, sk) -> np.ndarray:
    """Decrypt a tensor back to its (tokens, features) array."""
    T, F = tensor.shape
    if tensor.packing == ROW_PER_CIPHERTEXT:
        rows = [np.asarray(to_numpy(ctx.decrypt(ct, sk)))[:F] for ct in tensor.ciphertexts]
        return np.stack(rows)
    if tensor.start or len(tensor.ciphertexts) != tensor.total:
        raise FormatError("only a whole token-blocks tensor can be unpacked")
    return unpack_rows([to_numpy(ctx.decrypt(ct, sk)) for ct in tensor.ciphertexts], T, F, tensor.row_slots)
