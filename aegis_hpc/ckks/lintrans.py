"""Plaintext-matrix x encrypted-vector products by the baby-step giant-step diagonal method.

y = sum_k diag_k * rot(x, k) with diag_k[i] = M[i, (i+k) mod n]. Writing
k = g + b (g a multiple of n1, b < n1), y = sum_g rot( sum_b rot(diag_k, -g) * rot(x, b), g ):
n1 baby rotations of x and about n/n1 giant rotations, ~2*sqrt(n) key
switches instead of n.

Rotation keys are the memory that every rank holds whole (a key at N=2^16 is
~300 MB), so the default key set is the powers of two:

- giant steps by Horner's rule within a run of groups,
  acc = inner_g + rot(acc, n1): one key (n1) however many groups. The groups
  are cut into RUNS fixed runs; each run's result is rotated to its offset by
  power-of-two steps. Fixed, not per world size, so tensor-parallel shares
  (whole runs per rank) add up to the one-rank result bit for bit.
- baby steps (`keys="pow2"`): a tree over the power-of-two keys, rot(x, p + 2^i)
  hoisted from rot(x, p) for every 2^i below p's lowest bit: each baby is one
  key switch as before, but n1/2 ModUps instead of one. `keys="all"` keeps
  one key per baby step and hoists every baby from x (fastest, n1 keys).
"""

from __future__ import annotations

import math

import numpy as np

from .bits import pow2_at_least

RUNS = 4
KEY_SETS = ("pow2", "all")


def pow2_parts(amount: int) -> list[int]:
    """The powers of two that add up to `amount` (its set bits), largest first."""
    return [1 << b for b in range(amount.bit_length() - 1, -1, -1) if amount >> b & 1]


class LinearTransform:
    """y = M x over `slots` slots. `period` < slots: every diagonal is `period`-periodic
    (stored as its first `period` values, encoded as `period`-slot plaintexts: compact,
    N/(2 period) times smaller); `block_diagonal` builds such a transform."""

    def __init__(self, matrix=None, diagonals: dict | None = None, slots: int | None = None,
                 baby_steps: int | None = None, keys: str = "pow2", period: int | None = None):
        if (matrix is None) == (diagonals is None):
            raise ValueError("give exactly one of matrix or diagonals")
        if keys not in KEY_SETS:
            raise ValueError(f"keys must be one of {KEY_SETS}, got {keys!r}")
        if matrix is not None:
            m = np.asarray(matrix)
            if m.ndim != 2:
                raise ValueError("matrix must be 2-D")
            n = slots or pow2_at_least(max(m.shape))
            if max(m.shape) > n:
                raise ValueError(f"{m.shape} matrix does not fit {n} slots")
            full = np.zeros((n, n), dtype=m.dtype)
            full[: m.shape[0], : m.shape[1]] = m
            rows = np.arange(n)
            diagonals = {}
            for k in range(n):
                d = full[rows, (rows + k) % n]
                if np.any(d != 0):
                    diagonals[k] = d
        else:
            n = slots
            if n is None:
                raise ValueError("slots is required with diagonals")
            diagonals = {int(k) % n: np.asarray(v) for k, v in diagonals.items()}
        self.period = period or n
        if n % self.period or any(np.size(v) != self.period for v in diagonals.values()):
            raise ValueError(f"diagonals of a {n}-slot transform with period {self.period} must hold "
                             f"{self.period} values, and the period must divide {n}")
        self.slots = n
        self.diagonals = diagonals
        self.keys = keys
        count = max(1, len(diagonals))
        self.n1 = baby_steps or 1 << max(0, math.ceil(math.log2(math.sqrt(count))))
        if self.n1 & (self.n1 - 1):
            raise ValueError(f"baby_steps must be a power of two, got {self.n1}")
        self._groups = self._split()
        giants = list(self._groups)
        cut = np.array_split(np.arange(len(giants)), RUNS)
        # the rotation plan, fixed by the diagonals: (parent, steps) of the baby
        # tree and, per non-empty run, (run, power-of-two steps per gap)
        self._tree = self._baby_tree(sorted({k % self.n1 for ks in self._groups.values() for k in ks}))
        runs = [[giants[i] for i in c] for c in cut]
        self._run_steps = [(run, self._giant_steps(run)) for run in runs if run]
        self._plaintexts = {}

    @classmethod
    def block_diagonal(cls, matrix, block: int, slots: int, **kw) -> "LinearTransform":
        """The same block x block matrix on each of the slots/block consecutive blocks
        (token rows packed `block` slots apart): y_b = M x_b. Its diagonals are the
        offsets -block < k < block, each block-periodic."""
        m = np.zeros((block, block))
        src = np.asarray(matrix)
        if src.ndim != 2 or max(src.shape) > block or slots % block:
            raise ValueError(f"{src.shape} matrix does not fit blocks of {block} of {slots} slots")
        m[: src.shape[0], : src.shape[1]] = src
        rows = np.arange(block)
        diagonals = {}
        for k in range(1 - block, block):
            cols = rows + k
            ok = (cols >= 0) & (cols < block)
            d = np.zeros(block)
            d[ok] = m[rows[ok], cols[ok]]
            if np.any(d):
                diagonals[k] = d
        return cls(diagonals=diagonals, slots=slots, period=block, **kw)

    def block_matrix(self) -> np.ndarray:
        """The period x period matrix applied to each block (period < slots), or the whole one."""
        P, n = self.period, self.slots
        m = np.zeros((P, P))
        rows = np.arange(P)
        for k, d in self.diagonals.items():
            k = k if k < n // 2 else k - n
            if P == n:
                m[rows, (rows + k) % n] = d
            else:
                cols = rows + k
                ok = (cols >= 0) & (cols < P)
                m[rows[ok], cols[ok]] = d[ok]
        return m

    def _split(self):
        groups: dict[int, list[int]] = {}
        for k in sorted(self.diagonals):
            groups.setdefault(k - k % self.n1, []).append(k)
        return groups

    # ---- the rotation plan ------------------------------------------------------------
    def _baby_tree(self, babies):
        """[(parent, steps)]: rotations of baby `parent` by `steps`, hoisted
        together, in an order where every parent exists before it is used."""
        if self.keys == "all":
            return [(0, [b for b in babies if b])]
        need = set()
        for b in babies:
            while b:                  # b and its ancestors b - lowbit(b), ...
                need.add(b)
                b -= b & -b
        tree = []
        for p in [0] + sorted(need):
            low = p & -p or self.n1
            steps = [1 << i for i in range(low.bit_length() - 1) if p + (1 << i) in need]
            if steps:
                tree.append((p, steps))
        return tree

    def _giant_steps(self, run):
        """Rotations of Horner's rule over one run (highest group first), then
        the run's offset: lists of power-of-two steps, one list per gap."""
        gaps = [hi - lo for lo, hi in zip(run, run[1:])]
        return [pow2_parts(g) for g in reversed(gaps)] + ([pow2_parts(run[0])] if run[0] else [])

    def rotations(self) -> list[int]:
        """Rotation steps whose Galois keys this transform needs."""
        steps = {s for _, ss in self._tree for s in ss}
        steps |= {s for _, gaps in self._run_steps for gap in gaps for s in gap}
        return sorted(steps - {0})

    def _giant_rotations(self) -> int:
        return sum(len(gap) for _, gaps in self._run_steps for gap in gaps)

    def key_switches(self) -> int:
        """Key switches of one evaluation (every rotation is one)."""
        return sum(len(ss) for _, ss in self._tree) + self._giant_rotations()

    def modups(self) -> int:
        """ModUps of one evaluation: one per hoisted batch of babies, one per giant rotation."""
        return len(self._tree) + self._giant_rotations()

    # ---- evaluation -------------------------------------------------------------------
    def _encoded(self, ev, level, scale):
        key = (level, scale)
        pts = self._plaintexts.get(key)
        if pts is None:
            # pre-rotate by -giant so the giant rotation can come after the sum
            order = [(k, giant) for giant, ks in self._groups.items() for k in ks]
            rows = np.stack([np.roll(self.diagonals[k], giant) for k, giant in order])
            pts = dict(zip((k for k, _ in order), ev.ctx.encode_many(rows, level=level, scale=scale,
                                                                     slots=self.period, compact=True)))
            self._plaintexts = {key: pts}  # keep one level's encoding: weights are large
        return pts

    def _rotate_babies(self, ev, ct):
        babies = {0: ct}
        for parent, steps in self._tree:
            for s, out in ev.rotate_hoisted(babies[parent], steps).items():
                babies[parent + s] = out
        return babies

    def release(self):
        """Drop the cached plaintext diagonals (device memory between layers)."""
        self._plaintexts = {}

    def evaluate(self, ev, ct, rescale: bool = True, share: tuple | None = None):
        """share=(i, n): only runs i, i+n, ... and no rescale -- the partial
        sum of tensor parallelism. Partials of i = 0..n-1 add up (mod each
        prime) to exactly the unrescaled full result, because every run is
        computed whole on one rank and the full result is the sum of the runs."""
        _check_input(self, ct)
        if not self._groups:
            raise ValueError("empty linear transform")
        scale = ev.rescale_target_scale(ct.scale, ct.level)
        runs = _runs_of(self, share)
        if not runs:
            return ct.with_data(ev.xp.zeros_like(ct.data), scale=ct.scale * scale)
        pts = self._encoded(ev, ct.level, scale)
        babies = self._rotate_babies(ev, ct)

        def inner(giant):
            ks = self._groups[giant]
            return ev.mul_plain_sum([babies[k % self.n1] for k in ks], [pts[k] for k in ks])

        total = _horner(ev, runs, inner)
        return ev.rescale(total) if rescale and share is None else total


def _check_input(lt, ct):
    if lt.slots % ct.slots or ct.slots % lt.period:
        raise ValueError(f"transform for {lt.slots} slots (period {lt.period}) applied to a "
                         f"{ct.slots}-slot ciphertext")


def _runs_of(plan, share):
    """The plan's giant-step runs, or with share=(i, n) runs i, i+n, ... (tensor parallelism)."""
    return [(run, steps) for j, (run, steps) in enumerate(plan._run_steps)
            if share is None or j % share[1] == share[0]]


def _horner(ev, runs, inner):
    """sum over the runs of Horner's rule over their giant groups: acc = inner(g) + rot(acc, gap),
    then the run's offset. inner(g) may be None (no diagonal of that group): a zero term."""
    total = None
    for run, gaps in runs:
        acc, steps = None, iter(gaps)
        for n, giant in enumerate(reversed(run)):
            if n:
                gap = next(steps)
                if acc is not None:
                    for s in gap:
                        acc = ev.rotate(acc, s)
            term = inner(giant)
            if term is not None:
                acc = term if acc is None else ev.add(acc, term)
        offset = next(steps, [])
        if acc is not None:
            for s in offset:
                acc = ev.rotate(acc, s)
            total = acc if total is None else ev.add(total, acc)
    return total


class BlockTransform:
    """y_j = sum_i M_ji x_i for a matrix cut into blocks: `blocks[j][i]` is the
    LinearTransform of M_ji (None: a zero block), all of one slot count, period,
    baby-step size and key set. Feature-chunked activations (nn/packing.py) use
    it: a hidden x hidden weight on hidden / S chunk ciphertexts.

    Each input's baby steps are rotated once for every output, and an output's
    inner products over all its inputs are summed before its giant steps, so a
    product costs inputs x babies + outputs x giants key switches instead of
    inputs x outputs x (babies + giants). The giant steps follow one plan made
    from the union of the blocks' diagonals, so tensor-parallel shares of runs
    still add up to the one-rank result bit for bit."""

    def __init__(self, blocks):
        rows = [list(r) for r in blocks]
        present = [lt for r in rows for lt in r if lt is not None]
        if not rows or not present or any(len(r) != len(rows[0]) for r in rows):
            raise ValueError("blocks must be a non-empty grid with at least one transform")
        first = present[0]
        if any((lt.slots, lt.period, lt.n1, lt.keys) != (first.slots, first.period, first.n1, first.keys)
               for lt in present):
            raise ValueError("blocks must share slots, period, baby steps and key set")
        self.blocks = rows
        self.outputs, self.inputs = len(rows), len(rows[0])
        self.slots, self.period = first.slots, first.period
        union = sorted({k for lt in present for k in lt.diagonals})
        self.plan = LinearTransform(diagonals={k: np.zeros(self.period) for k in union}, slots=self.slots,
                                    period=self.period, baby_steps=first.n1, keys=first.keys)
        self._used = [any(r[i] is not None for r in rows) for i in range(self.inputs)]

    @classmethod
    def block_diagonal(cls, matrix, block: int, slots: int, **kw) -> "BlockTransform":
        """An (outputs x inputs) matrix, cut into block x block pieces (the last ones
        zero-padded), as a grid of LinearTransform.block_diagonal: the same matrix on
        every token row of chunk ciphertexts that hold `block` features per row."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.ndim != 2:
            raise ValueError("matrix must be 2-D")
        outs, ins = -(-m.shape[0] // block), -(-m.shape[1] // block)
        # one baby-step size for every block (the count of a dense block's diagonals)
        kw.setdefault("baby_steps", 1 << max(0, math.ceil(math.log2(math.sqrt(2 * block - 1)))))
        grid = []
        for j in range(outs):
            row = []
            for i in range(ins):
                piece = m[j * block:(j + 1) * block, i * block:(i + 1) * block]
                row.append(LinearTransform.block_diagonal(piece, block, slots, **kw) if np.any(piece) else None)
            grid.append(row)
        return cls(grid)

    def rotations(self) -> list[int]:
        return self.plan.rotations()

    def key_switches(self) -> int:
        babies = sum(len(ss) for _, ss in self.plan._tree)
        return sum(self._used) * babies + self.outputs * self.plan._giant_rotations()

    def block_matrix(self, j: int, i: int) -> np.ndarray:
        lt = self.blocks[j][i]
        return np.zeros((self.period, self.period)) if lt is None else lt.block_matrix()

    def release(self):
        for row in self.blocks:
            for lt in row:
                if lt is not None:
                    lt.release()

    def evaluate(self, ev, cts, rescale: bool = True, share: tuple | None = None) -> list:
        """The outputs y_0..y_{outputs-1}; share as LinearTransform.evaluate (no rescale)."""
        cts = list(cts)
        if len(cts) != self.inputs:
            raise ValueError(f"{self.outputs} x {self.inputs} block transform applied to {len(cts)} ciphertexts")
        for ct in cts:
            _check_input(self.plan, ct)
        level = min(ct.level for ct in cts)
        cts = [ev.adjust(ct, level) if ct.level > level else ct for ct in cts]
        # one scale product for every term of a sum: the plaintexts of an input whose
        # scale differs make up the difference
        s0 = ev.rescale_target_scale(cts[0].scale, level)
        scales = [s0 if ct.scale == cts[0].scale else cts[0].scale * s0 / ct.scale for ct in cts]
        runs = _runs_of(self.plan, share)

        def zero():   # an output with no term (no run of this share, or only zero blocks)
            return cts[0].with_data(ev.xp.zeros_like(cts[0].data), scale=cts[0].scale * s0)
        if not runs:
            return [zero() for _ in range(self.outputs)]
        babies = [self.plan._rotate_babies(ev, ct) if used else None for ct, used in zip(cts, self._used)]
        n1 = self.plan.n1
        out = []
        for row in self.blocks:
            pts = [None if lt is None else lt._encoded(ev, level, s) for lt, s in zip(row, scales)]

            def inner(giant, row=row, pts=pts):
                cs, ps = [], []
                for i, lt in enumerate(row):
                    for k in [] if lt is None else lt._groups.get(giant, ()):
                        cs.append(babies[i][k % n1])
                        ps.append(pts[i][k])
                return ev.mul_plain_sum(cs, ps) if cs else None

            total = _horner(ev, runs, inner)
            if total is None:
                total = zero()
            out.append(ev.rescale(total) if rescale and share is None else total)
        return out
