"""The collectives of the distributed encrypted encoder (python -m aegis_hpc.infer).

- `TokenGather` (strategy aegis, token sharding): attention's k/v all-gather,
  one `iallgather` of this rank's k and v ciphertexts, in flight while the q
  projections run (an `OverlapScheduler` polls it between them, so host MPI
  progresses; its report gives the hidden time).
- `TensorParallelOps` (strategy replicate): every rank holds every token;
  each linear layer's giant-step groups are split across ranks and the
  unrescaled partial products are all-reduced (exact, mod each prime), then
  rescaled identically everywhere.

Both go through a `Communicator` (NCCL, CUDA-aware MPI or host MPI), so bytes
are counted per call site in its `CommStats`.
"""

from __future__ import annotations

import numpy as np

from ..io import rank_range
from ..nn.ops import CipherOps
from .comm import CommError
from .overlap import OverlapScheduler

SITE_KV = "infer/attention/kv"
SITE_LINEAR = "infer/linear/allreduce"


def _meta(ct):
    return (ct.level, ct.scale, ct.slots, ct.fingerprint, ct.is_complex, tuple(ct.data.shape))


class OverlapTotals:
    """Sums of OverlapScheduler reports over a run."""

    def __init__(self):
        self.in_flight_s = 0.0
        self.blocked_s = 0.0

    def add(self, report):
        self.in_flight_s += report.comm_in_flight_s
        self.blocked_s += report.comm_blocked_s

    @property
    def hidden_s(self) -> float:
        return max(0.0, self.in_flight_s - self.blocked_s)


class TokenGather:
    """gather(items, work) for EncoderRunner.attention: items are this rank's
    (gid, k, v), gids the contiguous `rank_range` of the token shard; returns
    every token's (gid, k, v) sorted by gid, having run `work` meanwhile."""


    def __init__(self, comm, total: int, site: str = SITE_KV, overlap: bool = True):
        self.comm, self.site = comm, site
        # overlap=False: the q projections run before the gather, which is then
        # waited for at once (block._gather_during): the baseline for infer --no-overlap
        self.overlaps = overlap
        self.ranges = [rank_range(total, r, comm.size) for r in range(comm.size)]
        # iallgather needs equal blocks: pad to the largest shard (padding is sent, so counted)
        self.width = max(s.stop - s.start for s in self.ranges)
        self.overlap = OverlapTotals()

    def __call__(self, items, work=()):
        from ..ckks import Ciphertext

        if self.comm.size == 1:
            for w in work:
                w()
            return sorted(items, key=lambda t: t[0])
        mine = self.ranges[self.comm.rank]
        items = sorted(items, key=lambda t: t[0])
        if [g for g, _, _ in items] != list(range(mine.start, mine.stop)):
            raise CommError(f"rank {self.comm.rank} holds tokens {[g for g, _, _ in items]}, "
                            f"the token shard is {mine.start}..{mine.stop - 1}")
        local = (_meta(items[0][1]), _meta(items[0][2])) if items else None
        for _, k, v in items:
            if (_meta(k), _meta(v)) != local:
                raise CommError("k/v of one rank differ in level or scale")
        # a rank without tokens still takes part, and must learn the shape: control plane
        metas = [m for m in self.comm.mpi.allgather(local) if m is not None]
        if any(m != metas[0] for m in metas):
            raise CommError(f"k/v metadata differ across ranks: {metas}")
        (k_meta, v_meta) = metas[0]
        if k_meta[-1] != v_meta[-1]:
            raise CommError("k and v have different shapes")
        xp = self.comm.xp
        buf = xp.zeros((self.width, 2) + k_meta[-1], dtype=np.uint64)
        for j, (_, k, v) in enumerate(items):
            buf[j, 0] = k.data
            buf[j, 1] = v.data
        sched = OverlapScheduler()
        sched.comm("kv", lambda: self.comm.iallgather(buf, self.site))
        for j, w in enumerate(work):
            sched.compute(f"work{j}", w)
        self.overlap.add(sched.run())
        parts = sched.result("kv")

        def ct(data, m):
            return Ciphertext(data=data, level=m[0], scale=m[1], slots=m[2], fingerprint=m[3], is_complex=m[4])

        out = []
        for r, sl in enumerate(self.ranges):
            if r == self.comm.rank:
                out.extend(items)
                continue
            for j, g in enumerate(range(sl.start, sl.stop)):
                out.append((g, ct(parts[r, j, 0], k_meta), ct(parts[r, j, 1], v_meta)))
        return out


class TensorParallelOps(CipherOps):
    """CipherOps whose linear layers are split across the ranks of `comm` by
    giant-step groups (LinearTransform.evaluate(share=...)) and summed by an
    exact modular all-reduce: the result is bit-identical to one rank's."""

    def __init__(self, comm, ctx, evaluator, refresh="client", key_holder=None, site: str = SITE_LINEAR):
        super().__init__(ctx, evaluator, refresh, key_holder)
        self.comm, self.site = comm, site

    def lintrans(self, a, lt):
        if self.comm.size == 1:
            return super().lintrans(a, lt)
        self.stats.tick("rotate", len(lt.rotations()))
        part = lt.evaluate(self.ev, a, share=(self.comm.rank, self.comm.size))
        summed = self.comm.iallreduce(part.data, self.ctx.params.q[: part.limbs], self.site).wait()
        return self.ev.rescale(part.with_data(summed))
