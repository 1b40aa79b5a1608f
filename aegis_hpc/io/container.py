"""What every aegis-hpc HDF5 file shares: header, checked datasets, atomic writes.

Readers turn every way a file can be wrong (not HDF5, truncated, checksum
failure, missing piece, wrong dtype or shape, foreign parameter set) into one
exception type, FormatError, whose message is a single line naming the file,
so command lines can print it as is.
"""

from __future__ import annotations

import glob
import math
import os
import secrets
import socket
import time
from contextlib import contextmanager

import h5py
import numpy as np

from .. import __version__

FORMAT = "aegis-hpc"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
KINDS = ("params", "public-keys", "secret-key", "ciphertexts", "weights")

# Chunks of about 1 MiB: big enough that the per-chunk index and checksum cost
# well under 1 % of the bytes, small enough that a partial read (one token
# range of a tensor) does not drag whole multi-GiB tensors through memory.
CHUNK_BYTES = 1 << 20

# Test hook: seconds to sleep after each dataset is written, so a test can
# kill a writer while the file is provably half-written.
_PAUSE_ENV = "AEGIS_IO_TEST_PAUSE_S"


class FormatError(ValueError):
    """A file is missing, damaged, of the wrong kind or for another parameter set."""


class OutputExistsError(FormatError):
    pass


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ---- writing -----------------------------------------------------------------
def check_output(path, force: bool) -> None:
    path = os.fspath(path)
    if os.path.lexists(path) and not force:
        raise OutputExistsError(f"{path} already exists (use --force to overwrite)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FormatError(f"{path}: directory {parent} does not exist")


def _temp_prefix(path: str) -> str:
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(head, f".{tail}.{socket.gethostname()}.")


def _remove_stale_temps(path: str) -> None:
    """Temp files of writers on this host that were killed before they could clean up."""
    prefix = _temp_prefix(path)
    for tmp in glob.glob(glob.escape(prefix) + "*.tmp"):
        pid = tmp[len(prefix):].split(".")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        except PermissionError:
            pass


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path, force: bool = False, secret: bool = False):
    """Yield a temporary path next to `path`; rename it into place only on success.

    The temp file is created with its final permissions (0600 for secrets)
    before any byte is written, so a secret never sits in a readable file.
    """
    path = os.fspath(path)
    check_output(path, force)
    _remove_stale_temps(path)
    tmp = f"{_temp_prefix(path)}{os.getpid()}.{secrets.token_hex(4)}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644))
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextmanager
def create(path, kind: str, fingerprint: str, force: bool = False, secret: bool = False):
    """New file of `kind` with the common header; yields the open h5py.File."""
    assert kind in KINDS, kind
    with atomic_output(path, force=force, secret=secret) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                            "params_fingerprint": fingerprint, "writer": f"aegis_hpc {__version__}"})
            yield f


def chunk_shape(shape, itemsize: int) -> tuple:
    """Trailing axes whole, leading axes cut so that a chunk is at most about CHUNK_BYTES.

    HDF5 allocates edge chunks in full, so the one axis that is cut gets the
    largest chunk length whose padding stays within 1 % of the axis.
    """
    chunks = []
    for i, d in enumerate(shape):
        inner = math.prod(shape[i + 1:]) * itemsize
        c = max(1, min(d, CHUNK_BYTES // max(inner, 1)))
        while c > 1 and -(-d // c) * c - d > d // 100:
            c -= 1
        chunks.append(c)
    return tuple(chunks)


def pause_for_tests() -> None:
    delay = os.environ.get(_PAUSE_ENV)
    if delay:
        time.sleep(float(delay))


def new_dataset(group, name, shape, dtype, data=None):
    """Chunked, fletcher32-checked dataset (optionally filled with `data`)."""
    shape = tuple(int(s) for s in shape)
    if not shape or 0 in shape:
        raise FormatError(f"dataset {name!r}: empty or scalar arrays cannot be stored (shape {shape})")
    dtype = np.dtype(dtype)
    ds = group.create_dataset(name, shape=shape, dtype=dtype, data=data,
                              chunks=chunk_shape(shape, dtype.itemsize), fletcher32=True)
    pause_for_tests()
    return ds


# ---- reading -----------------------------------------------------------------
def _header_error(path, f, kind, fingerprint, fingerprint_source):
    attrs = f.attrs
    if attrs.get("format") != FORMAT:
        return f"{path}: not an {FORMAT} file (no format=\"{FORMAT}\" attribute)"
    version = attrs.get("format_version")
    if version is None or int(version) not in SUPPORTED_VERSIONS:
        return (f"{path}: unsupported format_version {version} "
                f"(this reader supports {', '.join(map(str, SUPPORTED_VERSIONS))})")
    got = attrs.get("kind")
    kinds = (kind,) if isinstance(kind, str) else tuple(kind or ())
    if kinds and got not in kinds:
        if got == "secret-key":
            return (f"{path} is a secret-key file; refusing to read it where "
                    f"{' or '.join(kinds)} are expected (secret keys never leave the client)")
        return f"{path}: file of kind {got!r}, expected {' or '.join(kinds)}"
    fp = attrs.get("params_fingerprint")
    if not isinstance(fp, str) or len(fp) != 64:
        return f"{path}: missing or malformed params_fingerprint attribute"
    if fingerprint is not None and fp != fingerprint:
        return (f"{path}: parameter fingerprint {fp} does not match {fingerprint}"
                f" of {fingerprint_source}")
    return None


@contextmanager
def open_checked(path, kind=None, fingerprint: str | None = None, fingerprint_source="the key"):
    """Open for reading after checking format, version, kind and (optionally) fingerprint.

    Any h5py/OS error raised inside the block becomes a FormatError naming the file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise FormatError(f"{path}: not a readable HDF5 file ({one_line(e)})") from None
    try:
        with f:
            problem = _header_error(path, f, kind, fingerprint, fingerprint_source)
            if problem:
                raise FormatError(problem)
            yield f
    except FormatError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        if "filter returned failure" in str(e):
            raise FormatError(f"{path}: checksum (fletcher32) mismatch, the file is corrupted") from None
        raise FormatError(f"{path}: damaged or malformed file ({one_line(e)})") from None


def fingerprint_of(f) -> str:
    return str(f.attrs["params_fingerprint"])


def group(parent, name):
    if name not in parent or not isinstance(parent[name], h5py.Group):
        raise FormatError(f"{parent.file.filename}: missing group {parent.name.rstrip('/')}/{name}")
    return parent[name]


def dataset(parent, name, dtype, shape=None):
    """The dataset, after checking it exists, has the checksum filter, dtype and shape.

    `shape` may contain None for an axis of any length.
    """
    where = f"{parent.file.filename}: {parent.name.rstrip('/')}/{name}"
    if name not in parent or not isinstance(parent[name], h5py.Dataset):
        raise FormatError(f"{where}: missing dataset")
    ds = parent[name]
    if ds.dtype != np.dtype(dtype):
        raise FormatError(f"{where}: dtype {ds.dtype}, expected {np.dtype(dtype)}")
    if shape is not None and (len(ds.shape) != len(shape) or any(
            want is not None and got != want for got, want in zip(ds.shape, shape))):
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise FormatError(f"{where}: shape {ds.shape}, expected {want}")
    if not ds.fletcher32 and not ds.is_virtual:
        raise FormatError(f"{where}: dataset has no fletcher32 checksum")
    return ds


def attr(obj, name, kind=None):
    """Attribute `name`, checked to be of the numpy kind ('i', 'f', 'b', 'U' for str)."""
    where = f"{obj.file.filename}: {obj.name}"
    if name not in obj.attrs:
        raise FormatError(f"{where}: missing attribute {name!r}")
    value = obj.attrs[name]
    if kind == "U":
        if not isinstance(value, str):
            raise FormatError(f"{where}: attribute {name!r} must be a string")
        return value
    arr = np.asarray(value)
    ok = {"i": "iu", "f": "fiu", "b": "b"}.get(kind)
    if ok is not None and arr.dtype.kind not in ok:
        raise FormatError(f"{where}: attribute {name!r} has type {arr.dtype}, expected {kind}")
    return value


def below_moduli(arr: np.ndarray, moduli, where: str) -> None:
    """Every residue row must be below its prime (catches forged or mis-typed data)."""
    col = np.asarray(moduli, dtype=np.uint64).reshape((len(moduli), 1))
    if not bool(np.all(arr < col)):
        raise FormatError(f"{where}: residues out of range for the parameter set's primes")
