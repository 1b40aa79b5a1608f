"""Sharded ciphertext tensors over a rank grid of token groups x limb groups.

A tensor is a 2-D grid of ciphertexts, items (rows, cols): rows run over
token blocks, cols over feature blocks, which for attention tensors are the
heads. Each ciphertext has `polys` polynomials (2 for a ciphertext, 1 for the
c1 part a key switch extends) of `limbs` RNS limbs of N coefficients, so the
global array is (rows, cols, polys, limbs, N).

Shard kinds (names as in Megatron-LM / DeepSpeed-Ulysses):
- token shard: rows split over token groups (sequence parallel);
- head shard: cols split over token groups (Ulysses: all tokens, some heads);
- limb shard: limbs split over limb groups (the prior multi-GPU designs);
- replicated: every rank holds everything on that axis.
A `ShardSpec` says what happens on each grid axis: `items` in token | head |
replicated (over the token-group axis), `limbs` in full | split (over the
limb-group axis).

Rows/cols split into equal contiguous blocks (divisibility is required: an
uneven all-to-all would need per-rank sizes the planner would also have to
carry). Limbs split into blocks of ceil(L / limb_groups), the last ones
shorter or empty; a limb gather sends blocks padded to that size, and the
padding is counted as sent because it is.

Redistribution shrinks first and grows last: a limb split or a drop of
replicated items happens locally before any exchange, a limb gather after,
so every collective moves the smallest buffer that the transition allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .comm import Communicator, Request

ITEM_KINDS = ("token", "head", "replicated")
LIMB_KINDS = ("full", "split")


class ShardError(ValueError):
    pass


@dataclass(frozen=True)
class ShardSpec:
    items: str = "token"
    limbs: str = "full"

    def __post_init__(self):
        if self.items not in ITEM_KINDS or self.limbs not in LIMB_KINDS:
            raise ShardError(f"bad shard spec items={self.items!r} limbs={self.limbs!r}")

    def __str__(self):
        return f"{self.items}/{self.limbs}-limbs"


TOKEN = ShardSpec("token", "full")
HEAD = ShardSpec("head", "full")
LIMB = ShardSpec("replicated", "split")
REPLICATED = ShardSpec("replicated", "full")


class RankGrid:
    """token_groups x limb_groups ranks; rank r sits at (r // limb_groups, r % limb_groups).

    `tokens` connects the ranks of one limb group across token groups (where
    token <-> head all-to-alls run); `limbs` connects the ranks of one token
    group (where limb gathers run)."""

    def __init__(self, comm: Communicator, token_groups: int, limb_groups: int = 1):
        if token_groups * limb_groups != comm.size:
            raise ShardError(f"grid {token_groups}x{limb_groups} does not cover {comm.size} ranks")
        self.comm = comm
        self.token_groups, self.limb_groups = token_groups, limb_groups
        self.t, self.l = divmod(comm.rank, limb_groups)
        self.tokens = comm.split(color=self.l, key=self.t)
        self.limbs = comm.split(color=self.t, key=self.l)

    @property
    def shape(self):
        return (self.token_groups, self.limb_groups)


def limb_block(limbs: int, groups: int) -> int:
    return math.ceil(limbs / groups)


def limb_range(limbs: int, groups: int, index: int) -> range:
    c = limb_block(limbs, groups)
    return range(min(index * c, limbs), min((index + 1) * c, limbs))


def _split_range(n: int, groups: int, index: int, what: str) -> slice:
    if n % groups:
        raise ShardError(f"{what}: {n} not divisible by {groups} token groups")
    b = n // groups
    return slice(index * b, (index + 1) * b)


def local_slices(items, limbs, spec: ShardSpec, grid: RankGrid):
    """(rows, cols, limbs) slices of the global tensor held by this rank."""
    rows, cols = items
    tg, t = grid.token_groups, grid.t
    rs = _split_range(rows, tg, t, "rows") if spec.items == "token" else slice(0, rows)
    cs = _split_range(cols, tg, t, "cols (heads)") if spec.items == "head" else slice(0, cols)
    lr = limb_range(limbs, grid.limb_groups, grid.l) if spec.limbs == "split" else range(limbs)
    return rs, cs, slice(lr.start, lr.stop)


@dataclass
class CipherTensor:
    """This rank's shard of a ciphertext grid plus the metadata to rebuild it."""

    local: object            # xp array (rows_loc, cols_loc, polys, limbs_loc, N)
    items: tuple             # global (rows, cols)
    moduli: tuple            # the modulus of every global limb
    spec: ShardSpec
    grid: RankGrid
    level: int | None = None
    scale: float | None = None
    slots: int | None = None
    fingerprint: str | None = None

    @property
    def limbs(self) -> int:
        return len(self.moduli)

    @property
    def local_moduli(self) -> tuple:
        return self.moduli[local_slices(self.items, self.limbs, self.spec, self.grid)[2]]

    def with_local(self, local, spec: ShardSpec) -> "CipherTensor":
        return replace(self, local=local, spec=spec)


def shard(full, spec: ShardSpec, grid: RankGrid, moduli, **meta) -> CipherTensor:
    """This rank's piece of a global array that every rank holds (tests, loaders)."""
    if full.ndim != 5:
        raise ShardError("a ciphertext tensor is (rows, cols, polys, limbs, N)")
    items, moduli = tuple(full.shape[:2]), tuple(int(q) for q in moduli)
    if len(moduli) != full.shape[3]:
        raise ShardError(f"{len(moduli)} moduli for {full.shape[3]} limbs")
    rs, cs, ls = local_slices(items, len(moduli), spec, grid)
    local = grid.comm.xp.asarray(full[rs, cs, :, ls]).copy()
    return CipherTensor(local, items, moduli, spec, grid, **meta)


# ---- redistribution -----------------------------------------------------------

class PendingTensor:
    """A redistribution in flight: a sequence of collectives, each started when
    the previous one's result exists. test() drives it without blocking."""

    def __init__(self, tensor: CipherTensor, steps):
        self._tensor = tensor
        self._steps = list(steps)
        self._req: Request | None = None
        self._finish = None
        self._advance_local()

    def _advance_local(self):
        # run local steps, stop at (and start) the next collective
        while self._req is None and self._steps:
            out = self._steps.pop(0)(self._tensor)
            if isinstance(out, CipherTensor):
                self._tensor = out
            else:
                self._req, self._finish = out

    def test(self) -> bool:
        while self._req is not None and self._req.test():
            self._tensor = self._finish(self._req.wait())
            self._req = None
            self._advance_local()
        return self._req is None

    def wait(self) -> CipherTensor:
        while self._req is not None:
            self._tensor = self._finish(self._req.wait())
            self._req = None
            self._advance_local()
        return self._tensor


def _limb_split_local(x: CipherTensor) -> CipherTensor:
    spec = ShardSpec(x.spec.items, "split")
    ls = local_slices(x.items, x.limbs, spec, x.grid)[2]
    return x.with_local(x.local[:, :, :, ls].copy(), spec)


def _limb_gather(site):
    def step(x: CipherTensor):
        g = x.grid
        c = limb_block(x.limbs, g.limb_groups)
        loc = x.local
        pad = x.grid.comm.xp.zeros(loc.shape[:3] + (c, loc.shape[4]), dtype=loc.dtype)
        pad[:, :, :, : loc.shape[3]] = loc
        req = g.limbs.iallgather(pad, site)

        def finish(parts):  # (lg, r, c, polys, c, N) -> limbs concatenated
            moved = g.comm.xp.moveaxis(parts, 0, 3)
            full = moved.reshape(loc.shape[:3] + (g.limb_groups * c, loc.shape[4]))[:, :, :, : x.limbs]
            return x.with_local(g.comm.xp.ascontiguousarray(full), ShardSpec(x.spec.items, "full"))

        return req, finish

    return step


def _items_local(target: str):
    """replicated -> token/head: keep this rank's block."""
    def step(x: CipherTensor):
        spec = ShardSpec(target, x.spec.limbs)
        rs, cs, _ = local_slices(x.items, x.limbs, spec, x.grid)
        return x.with_local(x.local[rs, cs].copy(), spec)

    return step


def _swap_axes01(xp, a):
    return xp.ascontiguousarray(xp.swapaxes(a, 0, 1))


def _token_to_head(site):
    def step(x: CipherTensor):
        g, xp = x.grid, x.grid.comm.xp
        tg, loc = g.token_groups, x.local
        r, cols = loc.shape[:2]
        if cols % tg:
            raise ShardError(f"cols (heads) {cols} not divisible by {tg} token groups")
        # block j = my rows x head block j
        send = _swap_axes01(xp, loc.reshape((r, tg, cols // tg) + loc.shape[2:]))
        req = g.tokens.ialltoall(send, site)

        def finish(recv):  # block j = rows of token group j x my heads
            return x.with_local(recv.reshape((tg * r, cols // tg) + loc.shape[2:]),
                                ShardSpec("head", x.spec.limbs))

        return req, finish

    return step


def _head_to_token(site):
    def step(x: CipherTensor):
        g, xp = x.grid, x.grid.comm.xp
        tg, loc = g.token_groups, x.local
        rows, h = loc.shape[:2]
        if rows % tg:
            raise ShardError(f"rows {rows} not divisible by {tg} token groups")
        send = loc.reshape((tg, rows // tg, h) + loc.shape[2:])
        req = g.tokens.ialltoall(send, site)

        def finish(recv):  # block j = my rows x head block j
            out = _swap_axes01(xp, recv).reshape((rows // tg, tg * h) + loc.shape[2:])
            return x.with_local(out, ShardSpec("token", x.spec.limbs))

        return req, finish

    return step


def _items_gather(site):
    def step(x: CipherTensor):
        g, xp, loc = x.grid, x.grid.comm.xp, x.local
        axis = 0 if x.spec.items == "token" else 1
        req = g.tokens.iallgather(loc, site)

        def finish(parts):  # (tg, r, c, ...): concatenate along the sharded axis
            stacked = parts if axis == 0 else xp.moveaxis(parts, 0, 1)
            shape = list(loc.shape)
            shape[axis] *= g.token_groups
            out = xp.ascontiguousarray(stacked).reshape(shape)
            return x.with_local(out, ShardSpec("replicated", x.spec.limbs))

        return req, finish

    return step


def _item_steps(src: str, dst: str, site: str):
    if src == dst:
        return []
    if dst == "replicated":
        return [_items_gather(site)]
    if src == "replicated":
        return [_items_local(dst)]
    return [_token_to_head(site) if src == "token" else _head_to_token(site)]


def redistribute_async(x: CipherTensor, spec: ShardSpec, site: str) -> PendingTensor:
    steps = []
    if x.spec.limbs == "full" and spec.limbs == "split":
        steps.append(_limb_split_local)
    steps += _item_steps(x.spec.items, spec.items, site)
    if x.spec.limbs == "split" and spec.limbs == "full":
        steps.append(_limb_gather(site))
    return PendingTensor(x, steps)


def redistribute(x: CipherTensor, spec: ShardSpec, site: str) -> CipherTensor:
    return redistribute_async(x, spec, site).wait()


def gather_full(x: CipherTensor, site: str = "gather_full"):
    """The global array on every rank."""
    return redistribute(x, REPLICATED, site).local


# ---- ciphertext views -----------------------------------------------------------

def stack_ciphertexts(cts, cols: int = 1):
    """(global array, meta) of a row-major list of Ciphertexts at one level."""
    from ..backend import get_xp

    if len(cts) % cols:
        raise ShardError(f"{len(cts)} ciphertexts do not fill rows of {cols}")
    first = cts[0]
    for c in cts:
        if (c.level, c.fingerprint, c.data.shape) != (first.level, first.fingerprint, first.data.shape):
            raise ShardError("ciphertexts of one tensor must share level, parameters and shape")
    xp = get_xp()
    arr = xp.stack([c.data for c in cts]).reshape((len(cts) // cols, cols) + tuple(first.data.shape))
    meta = dict(level=first.level, scale=first.scale, slots=first.slots, fingerprint=first.fingerprint)
    return arr, meta


def ciphertext_at(x: CipherTensor, row: int, col: int):
    """One ciphertext of a tensor whose local shard holds all its limbs."""
    from ..ckks.ciphertext import Ciphertext

    if x.spec.limbs != "full":
        raise ShardError("gather limbs before viewing a ciphertext")
    return Ciphertext(data=x.local[row, col], level=x.level, scale=x.scale, slots=x.slots,
                      fingerprint=x.fingerprint)


def moduli_array(moduli):
    return np.asarray(moduli, dtype=np.uint64)
