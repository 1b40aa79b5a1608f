"""Communicators: one nonblocking interface over three data planes.

MPI is always the control plane (ranks, unique-id broadcast, errors). The data
plane is picked once (`make_comm`): NCCL through cupy when the backend is on
GPUs, CUDA-aware MPI when the MPI library says it can take device pointers,
host-staged MPI on numpy buffers otherwise (CI).

Wire format. Every residue is below 2^31 (DESIGN: "RNS primes below 2^31"),
so payloads travel as uint32 whatever the in-memory dtype (backend.residue_dtype:
uint32 on the device, uint64 in the numpy reference): half the bytes of sending
uint64 words, and no copy where the buffer is uint32 already. Sums never use a
floating-point or a wrapping reduction: a modular reduce-scatter is an
all-to-all of uint32 blocks followed by a local uint64 sum (P residues < 2^31
cannot overflow 64 bits for P < 2^33) and a reduction mod each limb's prime;
an all-reduce is that reduce-scatter followed by an all-gather.

Bytes sent (`wire_bytes`) is the number of bytes ONE rank puts on the wire
for one call, under the bandwidth-optimal algorithm for the call (pairwise
exchange for all-to-all, ring for all-gather). It is computed from the
buffers actually passed, and is what the planner predicts:

    alltoall(blocks of b residues)         (P-1) * b * 4
    allgather(b residues per rank)         (P-1) * b * 4
    reduce_scatter(blocks of b residues)   (P-1) * b * 4      (= its all-to-all)
    allreduce(n residues)                  2 * (P-1) * ceil(n/P) * 4

(the all-reduce pads n to a multiple of P; the padding is sent, so counted).
A group of one rank sends nothing. The MPI library may internally choose
another algorithm; the count is the model of the wire, not a packet capture.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np

from .. import backend

WIRE_DTYPE = np.uint32
WIRE_ITEMSIZE = 4
KINDS = ("nccl", "mpi-cuda", "mpi-host")


class CommError(RuntimeError):
    pass


def wire_bytes(op: str, residues: int, group: int) -> int:
    """Bytes one rank sends for one call (see the module docstring)."""
    if group <= 1:
        return 0
    if op in ("alltoall", "allgather", "reduce_scatter"):
        return (group - 1) * residues * WIRE_ITEMSIZE
    if op == "allreduce":
        return 2 * (group - 1) * math.ceil(residues / group) * WIRE_ITEMSIZE
    raise ValueError(f"unknown collective {op!r}")


# ---- accounting -------------------------------------------------------------

@dataclass
class SiteStats:
    op: str
    calls: int = 0
    bytes_sent: int = 0
    wait_s: float = 0.0


class CommStats:
    """Bytes sent and time blocked in wait(), per call site.

    Shared by a communicator and the sub-communicators split from it, so one
    table covers the whole grid.
    """

    def __init__(self):
        self.sites: dict[str, SiteStats] = {}

    def record(self, site: str, op: str, nbytes: int):
        s = self.sites.setdefault(site, SiteStats(op))
        s.calls += 1
        s.bytes_sent += nbytes

    def add_wait(self, site: str, seconds: float):
        self.sites[site].wait_s += seconds

    def total_bytes(self, prefix: str = "") -> int:
        return sum(s.bytes_sent for k, s in self.sites.items() if k.startswith(prefix))

    def reset(self):
        self.sites.clear()

    def rows(self):
        return [(k, s.op, s.calls, s.bytes_sent, s.wait_s) for k, s in sorted(self.sites.items())]

    def table(self) -> str:
        lines = [f"{'site':<32} {'op':<15} {'calls':>7} {'bytes sent':>14} {'wait s':>9}"]
        for site, op, calls, nbytes, wait in self.rows():
            lines.append(f"{site:<32} {op:<15} {calls:>7} {nbytes:>14,} {wait:>9.4f}")
        return "\n".join(lines)


# ---- requests ---------------------------------------------------------------

class Request:
    """A collective in flight. A chain of raw stages, each followed by a
    continuation that either returns the next (raw, continuation) stage or the
    final result wrapped in `_Done`."""

    def __init__(self, stats: CommStats, site: str, raw, cont):
        self._stats, self._site = stats, site
        self._raw, self._cont = raw, cont
        self._result = None
        self._done = False

    def _advance(self):
        nxt = self._cont()
        if isinstance(nxt, _Done):
            self._done, self._result = True, nxt.value
        else:
            self._raw, self._cont = nxt

    def test(self) -> bool:
        """Drive progress without blocking; True once the result is ready."""
        while not self._done and self._raw.test():
            self._advance()
        return self._done

    def wait(self, timeout: float | None = None):
        """Block until done and return the result. With a timeout (or
        AEGIS_COMM_TIMEOUT seconds) a dead peer raises instead of hanging; under
        `abort_on_error` that aborts the job."""
        if timeout is None and os.environ.get("AEGIS_COMM_TIMEOUT"):
            timeout = float(os.environ["AEGIS_COMM_TIMEOUT"])
        t0 = time.perf_counter()
        while not self._done:
            if timeout is None:
                self._raw.wait()
                self._advance()
            elif not self.test():
                if time.perf_counter() - t0 > timeout:
                    raise TimeoutError(f"collective at site {self._site!r} not done after {timeout} s")
                time.sleep(0)
        self._stats.add_wait(self._site, time.perf_counter() - t0)
        return self._result


class _Done:
    def __init__(self, value):
        self.value = value


class _Complete:
    """Raw stage for work that needed no communication."""

    def test(self):
        return True

    def wait(self):
        return None


# ---- the interface ----------------------------------------------------------

def _moduli_column(xp, moduli, limbs):
    if len(moduli) != limbs:
        raise CommError(f"{len(moduli)} moduli for {limbs} limbs")
    return xp.asarray(np.asarray(moduli, dtype=np.uint64))[:, None]


class Communicator:
    """Nonblocking collectives on xp arrays; each returns a Request whose
    wait() gives the result. Ciphertext arrays have limbs on axis -2."""

    kind = "abstract"

    def __init__(self, mpi_comm, stats: CommStats | None = None):
        self.mpi = mpi_comm
        self.rank = mpi_comm.Get_rank()
        self.size = mpi_comm.Get_size()
        self.stats = stats if stats is not None else CommStats()
        self.xp = backend.get_xp()

    # data-plane primitives on flat, contiguous wire buffers (subclasses)
    def _raw_alltoall(self, send, recv):
        raise NotImplementedError

    def _raw_allgather(self, send, recv):
        raise NotImplementedError

    def _empty(self, n):
        return self.xp.empty(n, dtype=WIRE_DTYPE)

    def _spawn(self, mpi_sub) -> "Communicator":
        return type(self)(mpi_sub, self.stats)

    def split(self, color: int, key: int | None = None) -> "Communicator":
        """Sub-communicator (same data plane, same stats table)."""
        return self._spawn(self.mpi.Split(color, self.rank if key is None else key))

    def describe(self) -> str:
        from mpi4py import MPI

        lib = MPI.Get_library_version().splitlines()[0].split(",")[0]
        return f"data plane {self.kind} over {self.size} rank(s); control plane {lib}"

    def report(self):
        if self.rank == 0:
            print(self.describe(), flush=True)

    # -- helpers ---------------------------------------------------------
    def _to_wire(self, x):
        # host arrays are accepted on a device plane, as mpi4py accepts any buffer
        return self.xp.ascontiguousarray(self.xp.asarray(x), dtype=WIRE_DTYPE).reshape(-1)

    def _start(self, site, op, residues, raw, cont):
        self.stats.record(site, op, wire_bytes(op, residues, self.size))
        return Request(self.stats, site, raw, cont)

    def _blocks(self, x, what):
        if x.shape[0] % self.size:
            raise CommError(f"{what}: axis 0 ({x.shape[0]}) not divisible by {self.size} ranks")
        return x.shape[0] // self.size

    # -- collectives ---------------------------------------------------------
    def ialltoall(self, x, site: str) -> Request:
        """Axis 0 holds `size` equal blocks; block j goes to rank j. The result
        has x's shape, block j coming from rank j."""
        self._blocks(x, "alltoall")
        send, dtype, shape = self._to_wire(x), x.dtype, x.shape
        recv = self._empty(send.size)
        raw = self._raw_alltoall(send, recv)
        return self._start(site, "alltoall", send.size // self.size, raw,
                           lambda: _Done(recv.reshape(shape).astype(dtype, copy=False)))

    def iallgather(self, x, site: str) -> Request:
        """Result (size, *x.shape): entry j is rank j's x."""
        send, dtype, shape = self._to_wire(x), x.dtype, x.shape
        recv = self._empty(send.size * self.size)
        raw = self._raw_allgather(send, recv)
        return self._start(site, "allgather", send.size, raw,
                           lambda: _Done(recv.reshape((self.size,) + shape).astype(dtype, copy=False)))

    def ireduce_scatter(self, x, moduli, site: str) -> Request:
        """Axis 0 holds `size` blocks; rank j gets the sum over ranks of block j,
        reduced mod moduli[i] on limb i (axis -2). Exact."""
        k = self._blocks(x, "reduce_scatter")
        qcol = _moduli_column(self.xp, moduli, x.shape[-2])
        send, dtype = self._to_wire(x), x.dtype
        recv = self._empty(send.size)
        raw = self._raw_alltoall(send, recv)
        out_shape = (k,) + x.shape[1:]

        def reduce():
            parts = recv.reshape((self.size,) + out_shape).astype(np.uint64)
            return _Done((parts.sum(axis=0) % qcol).astype(dtype, copy=False))

        return self._start(site, "reduce_scatter", send.size // self.size, raw, reduce)

    def iallreduce(self, x, moduli, site: str) -> Request:
        """Sum over ranks of x, reduced mod moduli[i] on limb i (axis -2). Exact.

        Reduce-scatter over the flattened (padded) array, then all-gather: the
        ring all-reduce volume, with uint32 on the wire."""
        xp, p = self.xp, self.size
        limbs, n_coeff = x.shape[-2], x.shape[-1]
        qvec = xp.asarray(np.asarray(moduli, dtype=np.uint64))
        if qvec.size != limbs:
            raise CommError(f"{qvec.size} moduli for {limbs} limbs")
        dtype, shape, n = x.dtype, x.shape, x.size
        chunk = math.ceil(n / p)
        send = self._empty(chunk * p)
        send[:n] = self._to_wire(x)
        send[n:] = 0
        recv = self._empty(chunk * p)
        # modulus of every element of this rank's chunk (flat index -> limb);
        # padding gets modulus 1 so it stays 0
        idx = xp.arange(self.rank * chunk, (self.rank + 1) * chunk, dtype=np.int64)
        q_chunk = xp.where(idx < n, qvec[(xp.minimum(idx, n - 1) // n_coeff) % limbs], 1)
        gathered = self._empty(chunk * p)

        def after_scatter():
            mine = recv.reshape(p, chunk).astype(np.uint64).sum(axis=0) % q_chunk
            return self._raw_allgather(self._to_wire(mine), gathered), after_gather

        def after_gather():
            return _Done(gathered[:n].reshape(shape).astype(dtype, copy=False))

        raw = self._raw_alltoall(send, recv) if p > 1 else _Complete()
        if p == 1:
            recv[:] = send
        return self._start(site, "allreduce", n, raw, after_scatter)


class MpiComm(Communicator):
    """Buffers through mpi4py. `staged` copies device arrays to the host and
    back (mpi-host); without staging device pointers go straight to a
    CUDA-aware MPI (mpi-cuda)."""

    staged = True

    def _host(self, a):
        return backend.to_numpy(a) if self.staged else a

    def _wrap(self, mpi_req, recv, host_recv):
        if host_recv is recv:
            return _MpiRaw(mpi_req, None)
        return _MpiRaw(mpi_req, lambda: recv.__setitem__(slice(None), self.xp.asarray(host_recv)))

    def _raw_alltoall(self, send, recv):
        backend.sync()
        hs, hr = self._host(send), self._host(recv)
        return self._wrap(self.mpi.Ialltoall(hs, hr), recv, hr)

    def _raw_allgather(self, send, recv):
        backend.sync()
        hs, hr = self._host(send), self._host(recv)
        return self._wrap(self.mpi.Iallgather(hs, hr), recv, hr)


class HostMpiComm(MpiComm):
    kind = "mpi-host"
    staged = True


class MpiCudaComm(MpiComm):
    kind = "mpi-cuda"
    staged = False


class _MpiRaw:
    def __init__(self, req, finish):
        self.req, self.finish = req, finish

    def _finished(self):
        if self.finish is not None:
            self.finish()
            self.finish = None

    def test(self):
        done = self.req.Test()
        if done:
            self._finished()
        return done

    def wait(self):
        self.req.Wait()
        self._finished()


class NcclComm(Communicator):
    """NCCL through cupy.cuda.nccl; the unique id travels over MPI. Work is
    queued on a communication stream of its own, after what the current
    stream has queued so far (an event), so kernels queued while a
    collective is in flight run beside it instead of behind it; a recorded
    event marks completion, and the buffers stay referenced until then (the
    memory pool orders reuse by stream, and would not see the other one)."""

    kind = "nccl"

    def __init__(self, mpi_comm, stats: CommStats | None = None):
        super().__init__(mpi_comm, stats)
        # NVLink SHARP multicast buffers have failed to register on shared nodes.
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
        import cupy
        from cupy.cuda import nccl

        self._nccl = nccl
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = mpi_comm.bcast(uid, root=0)
        self.nc = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._stream = cupy.cuda.Stream(non_blocking=True)

    def _launch(self, enqueue, *buffers):
        import cupy

        ready = cupy.cuda.Event(disable_timing=True)
        ready.record(cupy.cuda.get_current_stream())
        self._stream.wait_event(ready)
        enqueue(self._stream.ptr)
        done = cupy.cuda.Event(disable_timing=True)
        done.record(self._stream)
        return _EventRaw(done, buffers)

    def _raw_alltoall(self, send, recv):
        nccl = self._nccl
        b = send.size // self.size

        def enqueue(stream):
            nccl.groupStart()
            for peer in range(self.size):
                self.nc.send(send[peer * b:].data.ptr, b, nccl.NCCL_UINT32, peer, stream)
                self.nc.recv(recv[peer * b:].data.ptr, b, nccl.NCCL_UINT32, peer, stream)
            nccl.groupEnd()

        return self._launch(enqueue, send, recv)

    def _raw_allgather(self, send, recv):
        return self._launch(lambda stream: self.nc.allGather(send.data.ptr, recv.data.ptr, send.size,
                                                             self._nccl.NCCL_UINT32, stream), send, recv)


class _EventRaw:
    def __init__(self, ev, buffers=()):
        self.ev, self._buffers = ev, buffers

    def test(self):
        if self.ev.done:
            self._buffers = ()
            return True
        return False

    def wait(self):
        self.ev.synchronize()
        self._buffers = ()


def mpi_reports_cuda() -> bool:
    from mpi4py import MPI

    query = getattr(MPI, "Query_cuda_support", None)
    if query is not None:
        try:
            return bool(query())
        except Exception:
            return False
    return False


def _nccl_available() -> bool:
    try:
        from cupy.cuda import nccl  # noqa: F401

        return nccl.available if hasattr(nccl, "available") else True
    except Exception:
        return False


def make_comm(kind: str = "auto", mpi_comm=None) -> Communicator:
    """The data plane for this job: `auto` takes NCCL on GPUs, else CUDA-aware
    MPI on GPUs if reported, else host-staged MPI. AEGIS_COMM overrides auto."""
    from mpi4py import MPI

    mpi_comm = mpi_comm if mpi_comm is not None else MPI.COMM_WORLD
    kind = (os.environ.get("AEGIS_COMM", "auto") if kind == "auto" else kind).lower()
    gpu = backend.is_gpu()
    if kind == "auto":
        kind = ("nccl" if gpu and _nccl_available() else
                "mpi-cuda" if gpu and mpi_reports_cuda() else "mpi-host")
    if kind == "nccl":
        if not (gpu and _nccl_available()):
            raise CommError("--comm nccl needs the cupy backend on a GPU with NCCL")
        return NcclComm(mpi_comm)
    if kind == "mpi-cuda":
        if not (gpu and mpi_reports_cuda()):
            raise CommError("--comm mpi-cuda needs the cupy backend and a CUDA-aware MPI")
        return MpiCudaComm(mpi_comm)
    if kind == "mpi-host":
        return HostMpiComm(mpi_comm)
    raise CommError(f"unknown communicator {kind!r}; choose auto, {', '.join(KINDS)}")
