"""Placement planner: predicted inter-GPU bytes, an alpha-beta time and memory
per GPU for an encrypted Transformer encoder under each strategy.

    python -m aegis_hpc.dist.planner --model bert-base --tokens 2048 --gpus 4 [--preset n16]

Nothing here runs FHE; every number follows from the model below, and the
same transfers, run through the real collectives on dummy ciphertext-shaped
arrays (`aegis_hpc.dist.skeleton`), count exactly the predicted bytes.

Packing (one layout for every activation, chosen so attention heads are whole
ciphertexts): f = hidden / heads features (one head) by tb = slots / f tokens
per ciphertext, slot = token * f + feature. A T x d activation is a grid of
nt = ceil(T / tb) token blocks x d / f feature blocks; for Q, K, V and the
attention output the feature blocks are the heads. Attention scores of one
head (T x T) use the same layout with key positions as features: nt x T / f
ciphertexts per head, kept in diagonal order (column r of a row block holds
the pairs (i, i + r mod tb)), which softmax (row sums) does not care about and
the AV product consumes as is.

Algorithms (identical for every strategy; only placement differs):
- Linear d_in -> d_out on each token block: f x f blocks by BSGS diagonals,
  bs = gs = ceil(sqrt f). A rotation inside f-slot segments is two slot
  rotations (k and k - f, masked). Baby steps are hoisted: one ModUp per input
  ciphertext, 2 (bs - 1) rotations that each end in a ModDown; giant steps are
  2 (gs - 1) full key switches per output ciphertext; one rescale each.
- Q K^T: for r = 0..tb-1, rotate K by one token (chained), multiply with Q
  (relinearize, rescale), sum the f features (2 log2 f rotations), mask the
  result into column r (rescale).
- softmax: exp(x) ~ (1 + x / 2^s)^(2^s) (s squarings), row sums by adding the
  column ciphertexts and 2 log2 f rotations, 1 / sum by `inv_iters` Newton
  steps (2 products each) from a linear start, one product to normalize. No
  max subtraction: scores of LayerNormed inputs are bounded (as in NEXUS/THOR).
- A V: per r, rotate V by one token (chained), take column r of the
  probabilities (mask + 2 log2 f rotations to fill the segment), multiply.
- LayerNorm: sums by 2 log2 f rotations, square, variance, 1/sqrt by
  `inv_iters` Newton steps (3 products each), normalize, gamma/beta.
- GELU: Chebyshev degree `gelu_degree` by Paterson-Stockmeyer:
  2 sqrt(deg) + log2(deg) products.
Every op's work uses the limb count of its input level. Levels are walked
through the layer; when an op needs more levels than are left, a refresh
(client round trip; bootstrapping once it exists) restores max_level. It is
not inter-GPU traffic and is counted, not priced.

What each strategy exchanges (bytes per `comm.wire_bytes`, uint32 residues):
- limb (prior multi-GPU designs; grid 1 x P, limbs split): every key switch
  gathers c1 over Q_l for ModUp and the 2 x |P| special-prime limbs for
  ModDown (a hoisted rotation only the latter), every rescale gathers the
  dropped prime group of both polynomials.
- aegis (grid tg x lg, tg token groups): token shard for token-wise ops, head
  shard inside attention, Ulysses all-to-all of Q, K, V in and of the output
  back; with lg > 1 the limb exchanges above within each limb group. The
  planner takes the grid with the least traffic whose memory fits the GPU.
- replicate (Megatron tensor parallel): activations replicated, QKV and FFN-up
  column-parallel, attention by head, output projection and FFN-down
  row-parallel, each followed by an all-reduce of its (unrescaled) output.

Memory per GPU: the peak over ops of live ciphertexts (uint64 words, as the
core stores them; all ciphertexts of a block live at once, the batch that
keeps a GPU busy) + Galois and relinearization keys (uint32, dnum digits over
P and Q) + weights (fp32 raw, all layers; encoded on the fly, one BSGS group
of 2 bs diagonal plaintexts at a time - the full diagonal set of one layer at
N = 2^16 would be ~10^2 GB).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field, replace

from .comm import WIRE_ITEMSIZE, wire_bytes
from .sharding import ShardSpec, limb_block, limb_range

CT_WORD = 8    # in-memory bytes per residue of ciphertexts and plaintexts (core: uint64)
KEY_WORD = 4   # switching keys are stored as uint32 (core: keys.SwitchingKey)
BLOCKS = ("QKV", "attention", "out_proj", "layernorm", "FFN")
STRATEGIES = ("aegis", "limb", "replicate")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    layers: int
    hidden: int
    heads: int
    ffn: int
    tokens: int

    @property
    def head_dim(self):
        return self.hidden // self.heads


MODELS = {
    "bert-base": dict(layers=12, hidden=768, heads=12, ffn=3072),
    "bert-large": dict(layers=24, hidden=1024, heads=16, ffn=4096),
    "tiny": dict(layers=1, hidden=512, heads=4, ffn=1024),   # the skeleton test's model
}


def model(name: str, tokens: int) -> ModelConfig:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return ModelConfig(name=name, tokens=tokens, **MODELS[name])


@dataclass(frozen=True)
class Algorithm:
    exp_squarings: int = 6
    inv_iters: int = 3
    gelu_degree: int = 63


@dataclass(frozen=True)
class LinkModel:
    alpha_s: float = 10e-6        # per message step
    bandwidth: float = 100e9      # bytes/s per GPU, one direction (NVLink-class)


# ---- packing and the dataflow graph --------------------------------------------

@dataclass(frozen=True)
class Packing:
    slots: int
    f: int
    tokens: int

    @property
    def tb(self):
        return self.slots // self.f

    @property
    def nt(self):
        return math.ceil(self.tokens / self.tb)

    @property
    def score_cols(self):  # ciphertexts per head per token block of the T x T scores
        return self.nt * self.tb // self.f

    @property
    def bsgs(self):
        bs = math.isqrt(self.f - 1) + 1 if self.f > 1 else 1
        return bs, math.ceil(self.f / bs)

    @property
    def sum_rots(self):  # segment-cyclic rotate-and-sum over f slots
        return 2 * int(math.log2(self.f))


@dataclass(frozen=True)
class Phase:
    """`count` sequential steps of one FHE primitive, each on a batch of
    rows x cols ciphertexts. kind: ks (full key switch or relinearization),
    modup (shared ModUp of hoisted rotations), moddown (one hoisted rotation),
    rescale."""
    kind: str
    rows: int
    cols: int
    count: int


@dataclass(frozen=True)
class Op:
    block: str
    name: str
    axis: str          # token | head: how the aegis plan shards its batches
    depth: int
    phases: tuple
    live: tuple        # (ciphertexts, kind) alive during the op; kind act | head | ffn


def _linear(block, name, pk: Packing, d_in, d_out, live):
    bs, gs = pk.bsgs
    nin, nout, nt = d_in // pk.f, d_out // pk.f, pk.nt
    phases = (Phase("modup", nt, nin, 1), Phase("moddown", nt, nin, 2 * (bs - 1)),
              Phase("ks", nt, nout, 2 * (gs - 1)), Phase("rescale", nt, nout, 1))
    return Op(block, name, "token", 1, phases, live)


def _products(rows, cols, n):
    return (Phase("ks", rows, cols, n), Phase("rescale", rows, cols, n))


def _layernorm(name, m: ModelConfig, pk: Packing, alg: Algorithm):
    nt, nd = pk.nt, m.hidden // pk.f
    phases = (Phase("ks", nt, 1, pk.sum_rots),                 # mean
              *_products(nt, nd, 1),                           # (x - mean)^2
              Phase("ks", nt, 1, pk.sum_rots),                 # variance
              Phase("rescale", nt, 1, 1),                      # linear start of 1/sqrt
              *_products(nt, 1, 3 * alg.inv_iters),            # Newton for 1/sqrt
              *_products(nt, nd, 1),                           # normalize
              Phase("rescale", nt, nd, 1))                     # gamma, beta
    depth = 1 + 1 + 2 * alg.inv_iters + 1 + 1
    return Op("layernorm", name, "token", depth, phases, ((3 * nt * nd, "act"),))


def encoder_layer(m: ModelConfig, pk: Packing, alg: Algorithm) -> list[Op]:
    nt, h, tb, nd, nf = pk.nt, m.heads, pk.tb, m.hidden // pk.f, m.ffn // pk.f
    act, heads_ct, scores = nt * nd, nt * h, nt * pk.score_cols * h
    pairs = nt * nt
    ps_powers = math.isqrt(alg.gelu_degree) + 1
    gelu_mults = 2 * math.isqrt(alg.gelu_degree) + math.ceil(math.log2(alg.gelu_degree + 1))
    ops = [
        _linear("QKV", "qkv", pk, m.hidden, 3 * m.hidden, ((act, "act"), (3 * heads_ct, "head"))),
        Op("attention", "scores", "head", 2,
           (Phase("ks", nt, h, tb - 1),                        # K rotated one token, chained
            *_products(pairs, h, tb),                          # Q * rot(K)
            Phase("ks", pairs, h, tb * pk.sum_rots),           # sum over features
            Phase("rescale", pairs, h, tb)),                   # mask into column r
           ((act, "act"), (3 * heads_ct, "head"), (scores, "head"))),
        Op("attention", "softmax", "head", alg.exp_squarings + 1 + 1 + 2 * alg.inv_iters + 1,
           (Phase("rescale", nt * pk.score_cols, h, 1),       # x / 2^s + 1
            *_products(nt * pk.score_cols, h, alg.exp_squarings),
            Phase("ks", nt, h, pk.sum_rots),                   # row sums
            Phase("rescale", nt, h, 1),
            *_products(nt, h, 2 * alg.inv_iters),
            *_products(nt * pk.score_cols, h, 1)),
           ((act, "act"), (heads_ct, "head"), (2 * scores, "head"))),
        Op("attention", "av", "head", 2,
           (Phase("ks", nt, h, tb - 1),                        # V rotated one token, chained
            Phase("rescale", pairs, h, tb),                    # take column r
            Phase("ks", pairs, h, tb * pk.sum_rots),           # fill the segment
            *_products(pairs, h, tb)),
           ((act, "act"), (2 * heads_ct, "head"), (scores, "head"))),
        _linear("out_proj", "out_proj", pk, m.hidden, m.hidden,
                ((2 * act, "act"), (heads_ct, "head"))),
        _layernorm("ln1", m, pk, alg),
        _linear("FFN", "ffn_up", pk, m.hidden, m.ffn, ((act, "act"), (nt * nf, "ffn"))),
        Op("FFN", "gelu", "token", math.ceil(math.log2(alg.gelu_degree + 1)) + 1,
           _products(nt, nf, gelu_mults), ((act, "act"), (nt * nf * (1 + ps_powers), "ffn"))),
        _linear("FFN", "ffn_down", pk, m.ffn, m.hidden, ((2 * act, "act"), (nt * nf, "ffn"))),
        _layernorm("ln2", m, pk, alg),
    ]
    return ops


@dataclass
class Walk:
    ops: list          # (Op, input level)
    refreshes: int
    token_blocks: int
    heads: int


def walk(m: ModelConfig, params, alg: Algorithm, pk: Packing, refresh_level: int | None = None) -> Walk:
    """Ops with their input levels. The walk starts at, and a refresh returns
    to, `refresh_level` (default max_level; bootstrapping lands lower)."""
    top = params.max_level if refresh_level is None else refresh_level
    level, out, refreshes = top, [], 0
    for _ in range(m.layers):
        for op in encoder_layer(m, pk, alg):
            if op.depth > top:
                raise ValueError(f"{op.name} needs depth {op.depth} > refresh level {top}")
            if op.depth > level:
                level, refreshes = top, refreshes + 1
            out.append((op, level))
            level -= op.depth
    return Walk(out, refreshes, pk.nt, m.heads)


# ---- transfers -------------------------------------------------------------------

@dataclass(frozen=True)
class Transfer:
    """`count` identical collectives on a ciphertext-shaped tensor.
    kind "redistribute": src -> dst spec on `grid`; kind "allreduce": over all
    ranks. basis q: the first `limbs` primes of Q; p: the special primes; qtop:
    the top `limbs` primes of Q at `level`."""
    block: str
    site: str
    kind: str
    rows: int
    cols: int
    polys: int
    limbs: int
    basis: str
    level: int
    src: ShardSpec
    dst: ShardSpec
    grid: tuple
    count: int

    def moduli(self, params):
        if self.basis == "p":
            return tuple(params.p[: self.limbs])
        top = params.limbs_at(self.level)
        if self.basis == "qtop":
            return tuple(params.q[top - self.limbs: top])
        return tuple(params.q[: self.limbs])


def predicted_bytes(t: Transfer, n: int) -> int:
    """Bytes put on the wire by all ranks together, for all `count` calls."""
    tg, lg = t.grid
    world = tg * lg
    if t.kind == "allreduce":
        return t.count * world * wire_bytes("allreduce", t.rows * t.cols * t.polys * t.limbs * n, world)
    rows = t.rows // tg if t.src.items == "token" else t.rows
    cols = t.cols // tg if t.src.items == "head" else t.cols
    per_ct = t.polys * n
    total = 0
    if t.src.items != t.dst.items:  # token <-> head all-to-all within each limb group
        if {t.src.items, t.dst.items} != {"token", "head"}:
            raise ValueError("the planner only moves items between token and head shards")
        for li in range(lg):
            local_limbs = len(limb_range(t.limbs, lg, li)) if t.src.limbs == "split" else t.limbs
            block = (rows * cols // tg) * per_ct * local_limbs
            total += tg * wire_bytes("alltoall", block, tg)
    if t.src.limbs == "split" and t.dst.limbs == "full":
        total += world * wire_bytes("allgather", rows * cols * per_ct * limb_block(t.limbs, lg), lg)
    return t.count * total


def _gathers(kind, params, level):
    """(polys, limbs, basis) of the limb gathers one primitive needs."""
    modup, moddown = (1, params.limbs_at(level), "q"), (2, len(params.p), "p")
    return {"ks": (modup, moddown), "modup": (modup,), "moddown": (moddown,),
            "rescale": ((2, params.primes_per_level, "qtop"),)}[kind]


def _limb_transfers(op, level, params, items, grid):
    out = []
    split = ShardSpec(items, "split")
    for ph in op.phases:
        for polys, limbs, basis in _gathers(ph.kind, params, level):
            out.append(Transfer(op.block, f"{op.name}.{ph.kind}.{basis}", "redistribute", ph.rows,
                                ph.cols, polys, limbs, basis, level, split,
                                ShardSpec(items, "full"), grid, ph.count))
    return out


def _merge(transfers):
    """Sum counts of identical transfers (same site, shape, level)."""
    merged: dict = {}
    for t in transfers:
        key = replace(t, count=0)
        merged[key] = merged.get(key, 0) + t.count
    return [replace(k, count=c) for k, c in merged.items()]


def aegis_transfers(w: Walk, params, grid) -> list[Transfer]:
    tg, lg = grid
    limbs_kind = "split" if lg > 1 else "full"
    out, prev = [], None
    for op, level in w.ops:
        items = "token" if op.axis == "token" else "head"
        if op.axis != prev and prev is not None and tg > 1:
            # Ulysses: Q, K, V in (3 tensors), the attention output back (1)
            n_in = 3 if items == "head" else 1
            out.append(Transfer("attention", f"attn.{prev}->{items}", "redistribute", w.token_blocks, w.heads,
                                2, params.limbs_at(level), "q", level, ShardSpec(prev, limbs_kind),
                                ShardSpec(items, limbs_kind), grid, n_in))
        prev = items
        if lg > 1:
            out += _limb_transfers(op, level, params, items, grid)
    return _merge(out)


def limb_transfers(w: Walk, params, world) -> list[Transfer]:
    out = []
    for op, level in w.ops:
        out += _limb_transfers(op, level, params, "replicated", (1, world))
    return _merge(out)


def replicate_transfers(w: Walk, params, world) -> list[Transfer]:
    out = []
    for op, level in w.ops:
        if op.name in ("out_proj", "ffn_down"):
            rows, cols = op.phases[-1].rows, op.phases[-1].cols
            out.append(Transfer(op.block, f"{op.name}.allreduce", "allreduce", rows, cols, 2,
                                params.limbs_at(level), "q", level, ShardSpec("replicated"),
                                ShardSpec("replicated"), (world, 1), 1))
    return _merge(out)


# ---- memory ------------------------------------------------------------------------

def rotation_keys(pk: Packing) -> int:
    """Distinct Galois keys of the algorithms above, plus relinearization."""
    bs, gs = pk.bsgs
    f, slots = pk.f, pk.slots
    amounts = list(range(1, bs)) + [g * bs for g in range(1, gs)] + [1 << i for i in range(int(math.log2(f)))]
    steps = {a % slots for k in amounts for a in (k, k - f)} | {f % slots}
    steps.discard(0)
    return len(steps) + 1


@dataclass
class Memory:
    ciphertexts: int
    keys: int
    weights: int
    peak_op: str

    @property
    def total(self):
        return self.ciphertexts + self.keys + self.weights


def memory(w: Walk, m: ModelConfig, params, pk: Packing, strategy: str, grid) -> Memory:
    tg, lg = grid
    world = tg * lg
    n, lmax = params.n, params.limbs_at(params.max_level)
    ext = lmax + len(params.p)
    limb_groups = {"aegis": lg, "limb": world, "replicate": 1, "single": 1}[strategy]
    item_div = {"aegis": {"act": tg, "head": tg, "ffn": tg},
                "limb": {"act": 1, "head": 1, "ffn": 1},
                "replicate": {"act": 1, "head": world, "ffn": world},
                "single": {"act": 1, "head": 1, "ffn": 1}}[strategy]
    peak, peak_op = 0, ""
    for op, level in w.ops:
        per_ct = 2 * limb_block(params.limbs_at(level), limb_groups) * n * CT_WORD
        live = sum(math.ceil(cnt / item_div[kind]) * per_ct for cnt, kind in op.live)
        if live > peak:
            peak, peak_op = live, op.name
    digits = len(params.digits_at(params.max_level))
    keys = rotation_keys(pk) * 2 * digits * limb_block(ext, limb_groups) * n * KEY_WORD
    raw = 4 * m.layers * (4 * m.hidden ** 2 + 2 * m.hidden * m.ffn)
    raw = math.ceil(raw / world) if strategy == "replicate" else raw
    workspace = 2 * pk.bsgs[0] * limb_block(lmax, limb_groups) * n * CT_WORD
    return Memory(peak, keys, raw + workspace, peak_op)


# ---- plans ---------------------------------------------------------------------------

@dataclass
class Plan:
    strategy: str
    grid: tuple
    transfers: list
    memory: Memory
    n: int
    link: LinkModel = field(default_factory=LinkModel)

    @property
    def world(self):
        return self.grid[0] * self.grid[1]

    def bytes_by_block(self) -> dict:
        """Bytes summed over all ranks (divide by world for per GPU)."""
        out = {b: 0 for b in BLOCKS}
        for t in self.transfers:
            out[t.block] += predicted_bytes(t, self.n)
        return out

    def total_bytes(self) -> int:
        return sum(self.bytes_by_block().values())

    def time_s(self) -> float:
        """Alpha-beta estimate of communication time per GPU (no overlap)."""
        total = 0.0
        for t in self.transfers:
            group = self.world if t.kind == "allreduce" else (
                t.grid[1] if t.src.items == t.dst.items else t.grid[0])
            steps = 2 * (group - 1) if t.kind == "allreduce" else group - 1
            total += t.count * steps * self.link.alpha_s
            total += predicted_bytes(t, self.n) / self.world / self.link.bandwidth
        return total


@dataclass
class Planner:
    model: ModelConfig
    params: object
    world: int
    algorithm: Algorithm = field(default_factory=Algorithm)
    gpu_memory: int = 80 * 2 ** 30
    refresh_level: int | None = None
    link: LinkModel = field(default_factory=LinkModel)

    def __post_init__(self):
        if self.model.hidden % self.model.heads:
            raise ValueError("hidden size must be a multiple of the heads")
        self.packing = Packing(self.params.slots, self.model.head_dim, self.model.tokens)
        if self.params.slots % self.packing.f:
            raise ValueError(f"head dim {self.packing.f} does not divide {self.params.slots} slots")
        self.walk = walk(self.model, self.params, self.algorithm, self.packing, self.refresh_level)

    def _plan(self, strategy, grid, transfers):
        mem = memory(self.walk, self.model, self.params, self.packing, strategy, grid)
        return Plan(strategy, grid, transfers, mem, self.params.n, self.link)

    def single_gpu_memory(self) -> Memory:
        return memory(self.walk, self.model, self.params, self.packing, "single", (1, 1))

    def aegis_grids(self):
        pk, m = self.packing, self.model
        return [(tg, self.world // tg) for tg in range(self.world, 0, -1)
                if self.world % tg == 0 and pk.nt % tg == 0 and m.heads % tg == 0]

    def aegis_at(self, grid) -> Plan:
        return self._plan("aegis", grid, aegis_transfers(self.walk, self.params, grid))

    def aegis(self) -> Plan:
        """Least traffic among grids that fit the GPU; if none fits, least memory."""
        plans = [self.aegis_at(g) for g in self.aegis_grids()]
        if not plans:
            raise ValueError("no token grid divides the token blocks and heads")
        fits = [p for p in plans if p.memory.total <= self.gpu_memory]
        if fits:
            return min(fits, key=lambda p: (p.total_bytes(), p.memory.total))
        return min(plans, key=lambda p: p.memory.total)

    def limb(self) -> Plan:
        return self._plan("limb", (1, self.world), limb_transfers(self.walk, self.params, self.world))

    def replicate(self) -> Plan:
        m = self.model
        if m.heads % self.world or m.ffn % (self.packing.f * self.world):
            raise ValueError("replicate needs heads and FFN blocks divisible by the GPUs")
        return self._plan("replicate", (self.world, 1),
                          replicate_transfers(self.walk, self.params, self.world))

    def plans(self) -> dict:
        return {"aegis": self.aegis(), "limb": self.limb(), "replicate": self.replicate()}


# ---- report ----------------------------------------------------------------------------

def _gib(x):
    return x / 2 ** 30


def reduction(ours: int, base: int) -> float:
    return 100.0 * (1 - ours / base) if base else 0.0


def report(pl: Planner) -> str:
    m, p, pk = pl.model, pl.params, pl.packing
    plans = pl.plans()
    single = pl.single_gpu_memory()
    w = pl.world
    lines = [
        f"model {m.name}: {m.layers} layers, hidden {m.hidden}, {m.heads} heads, FFN {m.ffn}; "
        f"{m.tokens} tokens; {w} GPUs",
        f"CKKS {p.describe()}",
        f"packing: {pk.tb} tokens x {pk.f} features per ciphertext; {pk.nt} token blocks; "
        f"{rotation_keys(pk)} switching keys; {pl.walk.refreshes} refreshes (client round trips, not priced)",
        "",
        "predicted bytes sent per GPU, whole encoder (GiB; uint32 residues on the wire)",
        f"{'strategy':<10} {'grid':>5} " + " ".join(f"{b:>11}" for b in BLOCKS)
        + f" {'total':>11} {'comm s':>9} {'mem GiB':>8} {'% 1-GPU':>8}",
    ]
    for name, plan in plans.items():
        by = plan.bytes_by_block()
        lines.append(
            f"{name:<10} {plan.grid[0]}x{plan.grid[1]:<3} " + " ".join(f"{_gib(by[b] / w):>11.3f}" for b in BLOCKS)
            + f" {_gib(plan.total_bytes() / w):>11.3f} {plan.time_s():>9.2f} {_gib(plan.memory.total):>8.1f}"
            + f" {100 * plan.memory.total / single.total:>7.1f}%")
    lines.append(f"{'1 GPU':<10} {'':>5} " + " ".join(f"{0:>11.3f}" for _ in BLOCKS)
                 + f" {0:>11.3f} {0:>9.2f} {_gib(single.total):>8.1f} {100.0:>7.1f}%")
    lines.append("")
    lines.append("memory per GPU (GiB): ciphertexts + keys + weights, peak op")
    for name, mem in [*((k, v.memory) for k, v in plans.items()), ("1 GPU", single)]:
        lines.append(f"  {name:<10} {_gib(mem.ciphertexts):8.2f} + {_gib(mem.keys):6.2f} + "
                     f"{_gib(mem.weights):5.2f} = {_gib(mem.total):8.2f}  ({mem.peak_op})")
    a, lb = plans["aegis"].bytes_by_block(), plans["limb"].bytes_by_block()
    lines.append("")
    lines.append("aegis vs limb: " + ", ".join(f"{b} {reduction(a[b], lb[b]):.3f} % less" for b in BLOCKS)
                 + f"; total {reduction(plans['aegis'].total_bytes(), plans['limb'].total_bytes()):.2f} % less; "
                 + f"memory per GPU {100 * plans['aegis'].memory.total / single.total:.1f} % of one GPU")
    return "\n".join(lines)


def build_planner(args) -> Planner:
    from ..ckks.params import preset

    alg = Algorithm(args.exp_squarings, args.inv_iters, args.gelu_degree)
    return Planner(model(args.model, args.tokens), preset(args.preset), args.gpus, alg,
                   gpu_memory=int(args.gpu_mem_gib * 2 ** 30),
                   link=LinkModel(args.alpha_us * 1e-6, args.link_gbps * 1e9))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m aegis_hpc.dist.planner",
                                 description="Predict inter-GPU bytes and memory per strategy (no FHE run).")
    ap.add_argument("--model", default="bert-base", choices=sorted(MODELS))
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--preset", default="n16")
    ap.add_argument("--gpu-mem-gib", type=float, default=80.0)
    ap.add_argument("--alpha-us", type=float, default=10.0)
    ap.add_argument("--link-gbps", type=float, default=100.0, help="GB/s per GPU")
    ap.add_argument("--exp-squarings", type=int, default=Algorithm.exp_squarings)
    ap.add_argument("--inv-iters", type=int, default=Algorithm.inv_iters)
    ap.add_argument("--gelu-degree", type=int, default=Algorithm.gelu_degree)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    print(report(build_planner(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
