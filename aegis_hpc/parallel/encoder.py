"""The collectives of the distributed encrypted encoder (python -m aegis_hpc.infer).

- `BlockGather` (strategy aegis, token-block sharding): attention's k/v
  all-gather, one `iallgather` of this rank's k and v blocks, in flight while
  the q projections run (an `OverlapScheduler` polls it between them, so host
  MPI progresses; its report gives the hidden time).
- `TensorParallelOps` (strategy replicate): every rank holds every token;
  each linear layer's runs of giant-step groups are split across ranks and the
  unrescaled partial products are all-reduced (exact, mod each prime), then
  rescaled identically everywhere.

Both go through a `Communicator` (NCCL, CUDA-aware MPI or host MPI), so bytes
are counted per call site in its `CommStats`.
"""

from __future__ import annotations

from ..backend import residue_dtype
from ..nn.ops import CipherOps, Chunks
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


class BlockGather:
    """gather(partials, work) for EncoderRunner.attention (strategy aegis,
    token-block sharding): partials are this rank's k and v blocks {(sid,
    block): (K, V)}; one all-gather of them, in flight while `work` (the q
    projections) runs, gives every rank every block {(sid, block): [(K, V)]}.
    B tokens share a ciphertext, so this sends B times fewer ciphertexts than
    gathering each token's k and v."""

    def __init__(self, comm, site: str = SITE_KV, overlap: bool = True):
        self.comm, self.site = comm, site
        # overlap=False: the q projections run before the gather, which is then
        # waited for at once (block._gather_during): the baseline for infer --no-overlap
        self.overlaps = overlap
        self.overlap = OverlapTotals()

    def __call__(self, partials, work=()):
        from ..ckks import Ciphertext

        if self.comm.size == 1:
            for w in work:
                w()
            return {key: [kv] for key, kv in partials.items()}
        # a block's k and v are Chunks (its feature chunks): sent as 2 x chunks ciphertexts
        items = sorted((key, [*K, *V]) for key, (K, V) in partials.items())
        shapes = {tuple(c.data.shape) for _, parts in items for c in parts}
        # which blocks, at which level and scale, each rank holds: control plane
        # (a rank without tokens still takes part, and must learn the shape)
        listing = self.comm.mpi.allgather(([(key, [_meta(c) for c in parts]) for key, parts in items], shapes))
        all_shapes = set().union(*(sh for _, sh in listing))
        if len(all_shapes) != 1:
            raise CommError(f"k/v blocks differ in shape across ranks: {sorted(all_shapes)}")
        shape = all_shapes.pop()
        # iallgather needs equal blocks: pad to the longest list (padding is sent, so counted)
        width = max(len(lst) for lst, _ in listing)
        count = max((len(metas) for lst, _ in listing for _, metas in lst), default=0)
        xp = self.comm.xp
        buf = xp.zeros((width, count) + shape, dtype=residue_dtype())
        for j, (_, parts) in enumerate(items):
            for c, ct in enumerate(parts):
                buf[j, c] = ct.data
        sched = OverlapScheduler()
        sched.comm("kv", lambda: self.comm.iallgather(buf, self.site))
        for j, w in enumerate(work):
            sched.compute(f"work{j}", w)
        self.overlap.add(sched.run())
        data = sched.result("kv")

        def ct(d, m):
            return Ciphertext(data=d, level=m[0], scale=m[1], slots=m[2], fingerprint=m[3], is_complex=m[4])

        out: dict = {}
        for r, (lst, _) in enumerate(listing):
            for j, (key, metas) in enumerate(lst):
                if r == self.comm.rank:
                    kv = partials[key]
                else:
                    parts = [ct(data[r, j, c], m) for c, m in enumerate(metas)]
                    half = len(parts) // 2
                    kv = (Chunks(parts[:half]), Chunks(parts[half:]))
                out.setdefault(key, []).append(kv)
        return out


class TensorParallelOps(CipherOps):
    """CipherOps whose linear layers are split across the ranks of `comm` by
    runs of giant-step groups (LinearTransform.evaluate(share=...)) and summed by an
    exact modular all-reduce: the result is bit-identical to one rank's."""

    def __init__(self, comm, ctx, evaluator, refresh="client", key_holder=None, site: str = SITE_LINEAR):
        super().__init__(ctx, evaluator, refresh, key_holder)
        self.comm, self.site = comm, site

    def lintrans(self, a, lt):
        if self.comm.size == 1:
            return super().lintrans(a, lt)
        self.stats.tick("rotate", lt.key_switches())
        parts = lt.evaluate(self.ev, a, share=(self.comm.rank, self.comm.size))
        # one all-reduce per output (a BlockTransform's output chunks, a LinearTransform's one)
        out = [self.ev.rescale(p.with_data(self.comm.iallreduce(p.data, self.ctx.params.q[: p.limbs],
                                                                self.site).wait()))
               for p in (parts if isinstance(parts, list) else [parts])]
        return out if isinstance(parts, list) else out[0]
