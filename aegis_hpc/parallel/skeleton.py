"""Communication skeleton: run a plan's transfers through the real
collectives on dummy ciphertext-shaped arrays (zeros, correct shapes and
moduli) and count what goes on the wire. No FHE; the point is that the
sharding code, not the planner's arithmetic, decides the buffer sizes, so
comparing the two checks the planner."""

from __future__ import annotations

from .planner import Plan, Transfer
from .sharding import CipherTensor, RankGrid, local_slices, redistribute


class Skeleton:
    def __init__(self, comm, params):
        self.comm, self.params = comm, params
        self._grids: dict = {}

    def grid(self, shape) -> RankGrid:
        # splitting is collective: every rank asks for grids in the same order
        if shape not in self._grids:
            self._grids[shape] = RankGrid(self.comm, *shape)
        return self._grids[shape]

    def _dummy(self, t: Transfer, grid: RankGrid) -> CipherTensor:
        moduli = t.moduli(self.params)
        rs, cs, ls = local_slices((t.rows, t.cols), len(moduli), t.src, grid)
        shape = (rs.stop - rs.start, cs.stop - cs.start, t.polys, ls.stop - ls.start, self.params.n)
        local = self.comm.xp.zeros(shape, dtype="uint64")
        return CipherTensor(local, (t.rows, t.cols), moduli, t.src, grid, level=t.level)

    def run_transfer(self, t: Transfer, site: str):
        if t.kind == "allreduce":
            x = self.comm.xp.zeros((t.rows, t.cols, t.polys, t.limbs, self.params.n), dtype="uint64")
            for _ in range(t.count):
                self.comm.iallreduce(x, t.moduli(self.params), site).wait()
            return
        if t.kind == "allgather":
            rows = t.rows // self.comm.size
            x = self.comm.xp.zeros((rows, t.cols, t.polys, t.limbs, self.params.n), dtype="uint64")
            for _ in range(t.count):
                self.comm.iallgather(x, site).wait()
            return
        grid = self.grid(t.grid)
        x = self._dummy(t, grid)
        for _ in range(t.count):
            redistribute(x, t.dst, site)

    def run(self, plan: Plan) -> dict:
        """Bytes sent per block, summed over all ranks (the planner's unit)."""
        stats = self.comm.stats
        before = {b: stats.total_bytes(f"skeleton/{plan.strategy}/{b}/") for b in plan.bytes_by_block()}
        for t in plan.transfers:
            self.run_transfer(t, f"skeleton/{plan.strategy}/{t.block}/{t.site}")
        mine = {b: stats.total_bytes(f"skeleton/{plan.strategy}/{b}/") - before[b] for b in before}
        return {b: self.comm.mpi.allreduce(v) for b, v in mine.items()}
