"""``python -m aegis_hpc.bench comm``: collectives on ciphertext tensors
(aegis_hpc.parallel, uint64 residues sent as uint32, modular sums) against the
raw collective of the data plane on a plain uint32 buffer of the same size
(mpi4py Allreduce/Alltoall/Allgather, or cupy.cuda.nccl). Run under mpirun:

    mpirun -n 2 python -m aegis_hpc.bench comm [--comm mpi-host|mpi-cuda|nccl] [--sizes 1,4,16]

Sizes are ciphertexts per rank at the given preset. GB/s is the model's bytes
one rank sends (`comm.wire_bytes`, the same count for both sides) over the
median time; the ratio is raw time / ours (1.0 = no overhead). NCCL refuses
two ranks on one GPU, so a one-GPU machine runs a world of one: the path
executes but nothing crosses a wire (bytes 0, the time is the local work).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

OPS = ("allreduce", "alltoall", "allgather")


def _sync(xp):
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def _time(fn, xp, budget, mpi, min_reps=3):
    """Times of repeated calls; every rank makes the same number (rank 0's
    choice from a warm-up call), or the collectives would not pair up."""
    t0 = time.perf_counter()
    fn()
    _sync(xp)
    reps = mpi.bcast(max(min_reps, min(100, int(budget / max(time.perf_counter() - t0, 1e-6)))), root=0)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(xp)
        times.append(time.perf_counter() - t0)
    return times


class _Raw:
    """The data plane's own collective on a flat uint32 buffer."""

    def __init__(self, comm):
        self.comm, self.xp = comm, comm.xp
        self.nccl = getattr(comm, "nc", None)

    def allreduce(self, buf, out):
        if self.nccl is not None:
            from cupy.cuda import nccl

            self.nccl.allReduce(buf.data.ptr, out.data.ptr, buf.size, nccl.NCCL_UINT32, nccl.NCCL_SUM,
                                self.xp.cuda.get_current_stream().ptr)
        else:
            from mpi4py import MPI

            self.comm.mpi.Allreduce(self._host(buf), self._host(out), op=MPI.SUM)

    def allgather(self, buf, out):
        if self.nccl is not None:
            from cupy.cuda import nccl

            self.nccl.allGather(buf.data.ptr, out.data.ptr, buf.size, nccl.NCCL_UINT32,
                                self.xp.cuda.get_current_stream().ptr)
        else:
            self.comm.mpi.Allgather(self._host(buf), self._host(out))

    def alltoall(self, buf, out):
        if self.nccl is not None:
            from cupy.cuda import nccl

            b, stream = buf.size // self.comm.size, self.xp.cuda.get_current_stream().ptr
            nccl.groupStart()
            for peer in range(self.comm.size):
                self.nccl.send(buf[peer * b:].data.ptr, b, nccl.NCCL_UINT32, peer, stream)
                self.nccl.recv(out[peer * b:].data.ptr, b, nccl.NCCL_UINT32, peer, stream)
            nccl.groupEnd()
        else:
            self.comm.mpi.Alltoall(self._host(buf), self._host(out))

    def _host(self, a):
        # host-staged MPI copies device buffers, as HostMpiComm does; CUDA-aware MPI takes them as is
        if self.xp is np or self.comm.kind == "mpi-cuda":
            return a
        return self.xp.asnumpy(a)


def run(comm, params, sizes, budget) -> dict:
    from ..parallel.comm import wire_bytes

    xp, p = comm.xp, comm.size
    limbs = params.limbs_at(params.max_level)
    moduli = tuple(params.q[:limbs])
    rng = np.random.default_rng(comm.rank)
    raw = _Raw(comm)
    rows = []
    for cts in sizes:
        # alltoall needs axis 0 in `size` equal blocks: cts ciphertexts per destination
        shape = {"allreduce": (cts, 2, limbs, params.n), "allgather": (cts, 2, limbs, params.n),
                 "alltoall": (p * cts, 2, limbs, params.n)}
        for op in OPS:
            q = np.asarray(moduli, dtype=np.uint64)[:, None]
            host = rng.integers(0, 2**62, size=shape[op], dtype=np.uint64) % q
            x = xp.asarray(host)
            residues = x.size
            if op == "allreduce":
                def ours():
                    comm.iallreduce(x, moduli, f"bench/{op}").wait()
            elif op == "alltoall":
                def ours():
                    comm.ialltoall(x, f"bench/{op}").wait()
            else:
                def ours():
                    comm.iallgather(x, f"bench/{op}").wait()
            buf = xp.asarray(host.astype(np.uint32).reshape(-1))
            out = xp.empty(buf.size * (p if op == "allgather" else 1), dtype=np.uint32)

            def theirs():
                getattr(raw, op)(buf, out)
            per_rank = residues // p if op == "alltoall" else residues
            sent = wire_bytes(op, per_rank, p)
            t_ours = statistics.median(_time(ours, xp, budget, comm.mpi))
            t_raw = statistics.median(_time(theirs, xp, budget, comm.mpi))
            # every rank's median, the slowest one counts
            t_ours = comm.mpi.allreduce(t_ours, op=_max())
            t_raw = comm.mpi.allreduce(t_raw, op=_max())
            rows.append({"op": op, "ciphertexts_per_rank": cts, "residues_per_rank": residues,
                         "bytes_sent_per_rank": sent, "ours_ms": 1e3 * t_ours, "raw_ms": 1e3 * t_raw,
                         "ours_gbps": sent / t_ours / 1e9, "raw_gbps": sent / t_raw / 1e9,
                         "raw_over_ours": t_raw / t_ours})
    return {"rows": rows}


def _max():
    from mpi4py import MPI

    return MPI.MAX


def format_table(result: dict) -> str:
    m = result["machine"]
    dev = (m.get("gpu") or {}).get("name") or f"{m['cpu']} ({m['cores']} cores)"
    lines = [f"# Collectives on ciphertext tensors vs raw {result['comm']} ({result['world']} rank(s))", "",
             f"{dev}; {result['describe']}; preset {result['preset']} ({result['params']}); "
             f"median of >= 3 runs, slowest rank. GB/s = bytes one rank sends (model) / time.", "",
             "| op | ciphertexts/rank | MB sent/rank | ours ms | raw ms | ours GB/s | raw GB/s | raw/ours |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['op']} | {r['ciphertexts_per_rank']} | {r['bytes_sent_per_rank'] / 1e6:.2f} | "
                     f"{r['ours_ms']:.2f} | {r['raw_ms']:.2f} | {r['ours_gbps']:.2f} | {r['raw_gbps']:.2f} | "
                     f"{r['raw_over_ours']:.2f} |")
    if result["world"] == 1:
        lines += ["", "World of one rank: nothing crosses a wire; the times are the local work of each path."]
    lines += ["", "ours: parallel.comm (uint64 -> uint32 on the wire; allreduce = reduce-scatter by all-to-all, "
              "modular sum, all-gather). raw: the data plane's collective on a uint32 buffer of the same "
              "residues (a wrapping, not modular, sum for allreduce)."]
    return "\n".join(lines) + "\n"


def main(args) -> int:
    from .. import backend
    from ..ckks.params import preset
    from ..parallel.comm import CommError, make_comm
    from . import machine

    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        if not sizes or min(sizes) < 1:
            raise ValueError
    except ValueError:
        print(f"error: --sizes wants positive integers separated by commas, got {args.sizes!r}")
        return 2
    try:
        params = preset(args.preset)
    except (KeyError, ValueError) as e:
        print(f"error: {e}")
        return 2
    try:
        comm = make_comm(args.comm)
    except CommError as e:
        print(f"error: {e}")
        return 2
    result = {"comm": comm.kind, "world": comm.size, "describe": comm.describe(), "preset": args.preset,
              "params": params.describe(), "machine": machine.describe(backend.name()),
              **run(comm, params, sizes, args.budget)}
    if comm.rank == 0:
        machine.report(result, format_table(result), args,
                       f"comm-{machine.slug(result['machine'])}-{comm.kind}-{comm.size}r-{args.preset}")
    return 0
