"""Placement planner: predicted inter-GPU bytes, an alpha-beta time and memory
per GPU for the encrypted encoder *as `aegis_hpc.infer` runs it*, under each
strategy.

    python -m aegis_hpc.parallel.planner --model bert-base --tokens 2048 --gpus 4 [--preset n16]

Nothing here runs FHE. The primitives are not modelled by hand: `trace` runs
the encoder's own code (nn.block.EncoderRunner over nn.ops.CipherOps, the
real BlockTransform.evaluate and evaluate_chebyshev) on a counting
evaluator whose ciphertexts carry only a level, and records every key switch
(ModUp, ModDown) and rescale with the level it runs at, by block. So the
packing (nn.packing "token-blocks": B tokens of S slots per ciphertext, a
token's features in one or more feature chunks as the client packs them,
attention over token shifts with compact scores), the
polynomial degrees and the refresh points are those of infer. Two traces
(one and two query blocks) separate per-block work from per-sequence work.
The same transfers, run through the real collectives on dummy
ciphertext-shaped arrays (`aegis_hpc.parallel.skeleton`), count exactly the
predicted bytes.

Weights are dense, so every transform uses all 2S - 1 block diagonals
(BSGS, hoisted baby steps). The approximations are the model's own
(nn/approx.py on its calibration): their degrees and step counts decide the
levels and refreshes.

What each strategy exchanges (bytes per `comm.wire_bytes`, uint32 residues):
- aegis (what infer does; token blocks split over ranks): every linear
  layer, GELU, LayerNorm and residual is block-local; attention all-gathers
  each rank's k and v blocks once per layer.
- limb (the limb-parallel design of Cinnamon, ASPLOS 2025, same packing and
  attention algorithm; every rank holds every block, limbs split over
  ranks): one collective per key switch, the all-gather of c1 over Q_l for
  ModUp (input broadcast; a hoisted group of rotations shares one); each rank
  computes the special-prime rows itself, so ModDown sends nothing; each
  rescale all-gathers the dropped prime group of both polynomials.
- replicate (tensor parallelism, infer's baseline): every rank holds every
  block; each linear layer's runs of giant-step groups are split over the
  ranks and the unrescaled partial outputs all-reduced (one ciphertext per
  transform per block); everything else is replicated, as is memory.

Memory per GPU (uint64 words in memory, as the core stores ciphertexts): the
local blocks' x and q at the top level, every k and v block of the sequence
at the k/v level (the all-gather's result), the attention working set of one
query block (dh shifted copies of q, B shifted copies of one key block, or
2 B of every key block where the encoder keeps them (block.keeps_shifts), the
compact scores and probabilities of every key block, dh accumulators) +
Galois and relinearization keys (uint32, dnum digits over P and Q) +
weights: the float64 block diagonals of every transform (what PreparedModel
holds) and one transform's compact encoding at the top level (the BSGS
working set; caching every transform's is `cached_encodings_bytes`).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field, replace

from ..ckks.evaluator import LevelMatch
from ..nn.block import keeps_shifts
from .comm import wire_bytes
from .sharding import ShardSpec, limb_block

CT_WORD = 4    # device bytes per residue of ciphertexts (uint32 on a GPU: backend.residue_dtype)
PT_WORD = 4    # a transform's encoded diagonals are compact uint32 (core: encode_many(compact=True))
KEY_WORD = 4   # switching keys are stored as uint32 (core: keys.SwitchingKey)
BLOCKS = ("QKV", "attention", "out_proj", "layernorm", "FFN")
STRATEGIES = ("aegis", "limb", "replicate")


@dataclass(frozen=True)
class LinkModel:
    alpha_s: float = 10e-6        # per message step
    bandwidth: float = 100e9      # bytes/s per GPU, one direction (NVLink-class)


# ---- trace: the encoder's primitives, counted ----------------------------------

class _Ct:
    """A ciphertext reduced to what costs depend on."""
    __slots__ = ("level", "slots", "scale", "data")

    def __init__(self, level, slots, scale=1.0):
        self.level, self.slots, self.scale, self.data = level, slots, scale, None

    def with_data(self, data, **kw):
        return _Ct(kw.get("level", self.level), kw.get("slots", self.slots))


_PLAINTEXT = object()   # not None, so CipherOps caches it and skips re-encoding


class _Ctx:
    def __init__(self, params):
        self.params = params

    def encode(self, *a, **kw):
        return _PLAINTEXT

    def encode_many(self, rows, *a, **kw):
        return [_PLAINTEXT] * len(rows)


class TraceEvaluator(LevelMatch):
    """The Evaluator interface the encoder uses, counting primitives per
    (block, kind, level); kind is modup, moddown, rescale or lintrans (a
    whole transform, counted beside its own primitives). Levels follow
    ckks.Evaluator: products and sums first match levels (adjust = one rescale
    of the higher operand)."""

    def __init__(self, params):
        self.params, self.ctx = params, _Ctx(params)
        self.block = "QKV"
        self.counts: dict = {}
        self.refreshes = 0

    def _rec(self, kind, level, n=1):
        key = (self.block, kind, level)
        self.counts[key] = self.counts.get(key, 0) + n

    def rescale(self, ct):
        self._rec("rescale", ct.level)
        return _Ct(ct.level - 1, ct.slots)

    def adjust(self, ct, level):
        if ct.level == level:
            return ct
        self._rec("rescale", ct.level)
        return _Ct(level, ct.slots)

    def rescale_target_scale(self, scale, level):
        return 1.0

    def add(self, a, b):
        if not isinstance(b, _Ct):      # plaintext or scalar: no cost, a's level
            return _Ct(a.level, a.slots)
        a, b = self.match(a, b)
        return _Ct(a.level, a.slots)

    sub = add

    def add_const(self, a, c):
        return _Ct(a.level, a.slots)

    def mul_int(self, a, k):
        return _Ct(a.level, a.slots)

    def mul_const(self, a, c, rescale=False):
        out = _Ct(a.level, a.slots)
        return self.rescale(out) if rescale else out

    mul_plain = mul_const

    def mul_plain_sum(self, cts, pts):
        return _Ct(cts[0].level, cts[0].slots)

    def mul(self, a, b, rescale=False):
        a, b = self.match(a, b)
        self._rec("modup", a.level)       # relinearization: one key switch
        self._rec("moddown", a.level)
        out = _Ct(a.level, a.slots)
        return self.rescale(out) if rescale else out

    def square(self, a, rescale=False):
        return self.mul(a, a, rescale)

    def rotate_hoisted(self, ct, steps):
        todo = [s for s in steps if s % ct.slots]
        if todo:
            self._rec("modup", ct.level)
            self._rec("moddown", ct.level, len(todo))
        return {s: _Ct(ct.level, ct.slots) for s in steps}

    def rotate(self, ct, k):
        return self.rotate_hoisted(ct, [k])[k]

    def evaluate_chebyshev(self, ct, series):
        from ..ckks.polynomial import evaluate_chebyshev

        return evaluate_chebyshev(self, ct, series)


class _KeyHolder:
    def __init__(self, ev, top):
        self.ev, self.top, self.count = ev, top, 0

    def refresh(self, ct, tag, bound=None):
        self.count += 1
        return _Ct(self.top, ct.slots)


class _RoleTransform:
    """A dense block transform that tells the evaluator which block it is."""

    def __init__(self, lt, block):
        self.lt, self.block, self.slots = lt, block, lt.slots

    def rotations(self):
        return self.lt.rotations()

    def key_switches(self):
        return self.lt.key_switches()

    def evaluate(self, ev, cts, rescale=True):
        ev.block = self.block
        for _ in range(self.lt.outputs):   # replicate all-reduces each output chunk
            ev._rec("lintrans", min(ct.level for ct in cts))
        return self.lt.evaluate(ev, cts, rescale)


class _Model:
    """PreparedModel's shape with dense all-ones S x S blocks (no weights loaded)."""

    def __init__(self, cfg, layout, layers):
        import numpy as np

        hidden, ffn = layout.hidden_chunks * layout.S, layout.chunks * layout.S

        def dense(outs, ins):
            return layout.transform(np.ones((outs, ins)))
        square, up, down = dense(hidden, hidden), dense(ffn, hidden), dense(hidden, ffn)
        vec, ffn_vec = layout.pad(np.zeros(hidden)), layout.pad(np.zeros(ffn))
        self.cfg, self.layout = cfg, layout
        self.layers = []
        for _ in range(layers):
            d = {n: _RoleTransform(square, b) for n, b in
                 (("q", "QKV"), ("k", "QKV"), ("v", "QKV"), ("o", "out_proj"))}
            d.update({n: vec for n in ("bq", "bk", "bv", "bo", "g1", "b1", "g2", "b2", "bd")})
            d["up"], d["down"], d["bup"] = _RoleTransform(up, "FFN"), _RoleTransform(down, "FFN"), ffn_vec
            self.layers.append(d)


@dataclass
class Trace:
    per_block: dict          # (block, kind, level) -> count for one query block, all layers
    shared: dict             # the same, once per sentence per replica
    kv_levels: list          # level of the gathered k and v, per layer
    refreshes_per_block: int
    refreshes_shared: int
    S: int
    B: int                   # tokens per ciphertext
    blocks: int              # token blocks of the sequences
    chunks: int              # feature chunks (ciphertexts) of a token block
    dh: int
    keys: int                # Galois keys + relinearization
    calibration: str


def _approx(name, layers):
    from ..nn import approx as approx_mod

    return approx_mod.build(name, layers), name


def _layout(cfg, params, tokens, row_width):
    from ..nn.packing import Layout

    return Layout(cfg, params.slots, row_width) if row_width else Layout.for_tokens(cfg, params.slots, tokens)


def _trace_once(name, params, tokens, layers, queries, row_width=None):
    from ..nn import models
    from ..nn.block import Blk, EncoderRunner
    from ..nn.ops import CipherOps, Chunks

    cfg = models.config(name)
    layout = _layout(cfg, params, tokens, row_width)
    model = _Model(cfg, layout, layers)
    approx, src = _approx(cfg.name, layers)
    ev = TraceEvaluator(params)
    holder = _KeyHolder(ev, params.max_level)
    ops = CipherOps(ev.ctx, ev, "client", holder)
    kv_levels = []
    slots = layout.slots(tokens)

    class Runner(EncoderRunner):
        # attention's own steps (the shifts, scores, softmax, A V), which run
        # between the QKV and out_proj transforms of other blocks
        def _attend(self, *a, **kw):
            ev.block = "attention"
            return super()._attend(*a, **kw)

        def _layernorm(self, *a, **kw):
            before, ev.block = ev.block, "layernorm"
            try:
                return super()._layernorm(*a, **kw)
            finally:
                ev.block = before

    def gather(partials):
        ev.block = "attention"
        k, v = next(iter(partials.values()))
        kv_levels.append(min(c.level for c in (*k, *v)))
        return {(0, j): [(Chunks(_Ct(c.level, c.slots) for c in k), Chunks(_Ct(c.level, c.slots) for c in v))]
                for j in range(layout.blocks(tokens))}

    runner = Runner(ops, model, approx, [tokens])
    blocks = [Blk(j, 0, j, layout.block_tokens(tokens, j),
                  Chunks(_Ct(params.max_level, slots) for _ in range(layout.hidden_chunks))) for j in range(queries)]
    for i in range(layers):
        runner.attention(i, blocks, gather)
        runner.ffn(i, blocks)
    return ev.counts, holder.count, kv_levels, layout, src


def trace(name, params, tokens, layers=None, sequences: int = 1, row_width: int | None = None) -> Trace:
    """The encoder on `sequences` sequences of `tokens` tokens each, packed as the client
    packs them (row_width: rows of that many slots instead, client encrypt --row-slots)."""
    from ..nn import models

    cfg = models.config(name)
    layers = cfg.layers if layers is None else layers
    nb = _layout(cfg, params, tokens, row_width).blocks(tokens)
    one, r1, kv, layout, src = _trace_once(name, params, tokens, layers, 1, row_width)
    if nb > 1:
        two, r2, _, _, _ = _trace_once(name, params, tokens, layers, 2, row_width)
        per = {k: two.get(k, 0) - one.get(k, 0) for k in set(one) | set(two)}
        shared = {k: one.get(k, 0) - per.get(k, 0) for k in one}
        r_per, r_shared = r2 - r1, r1 - (r2 - r1)
    else:
        per, shared, r_per, r_shared = dict(one), {}, r1, 0
    per = {k: v for k, v in per.items() if v}
    shared = {k: sequences * v for k, v in shared.items() if v}
    return Trace(per, shared, kv, r_per, sequences * r_shared, layout.S, layout.tokens_per_ct(tokens),
                 sequences * nb, layout.hidden_chunks, cfg.head_dim, len(layout.rotations()) + 1, src)


# ---- transfers -------------------------------------------------------------------

@dataclass(frozen=True)
class Transfer:
    """`count` identical collectives on a ciphertext-shaped tensor of
    rows x cols ciphertexts. kind "redistribute": src -> dst spec on `grid`
    (limb split -> full: an all-gather within each limb group); "allgather":
    token rows split evenly over all ranks, gathered on every rank;
    "allreduce": over all ranks. basis q: the first `limbs` primes of Q; p:
    the special primes; qtop: the top `limbs` primes of Q at `level`."""
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
    per_ct = t.polys * t.limbs * n
    if t.kind == "allreduce":
        return t.count * world * wire_bytes("allreduce", t.rows * t.cols * per_ct, world)
    if t.kind == "allgather":
        if t.rows % world:
            raise ValueError(f"{t.rows} token rows do not split evenly over {world} ranks")
        return t.count * world * wire_bytes("allgather", t.rows // world * t.cols * per_ct, world)
    if t.src.items != t.dst.items or not (t.src.limbs == "split" and t.dst.limbs == "full"):
        raise ValueError("the planner only gathers split limbs")
    return t.count * world * wire_bytes("allgather", t.rows * t.cols * t.polys * n * limb_block(t.limbs, lg), lg)


def _gathers(kind, params, level):
    """(polys, limbs, basis) of the limb gather one primitive needs."""
    return {"modup": (1, params.limbs_at(level), "q"), "rescale": (2, params.primes_per_level, "qtop")}[kind]


def _merge(transfers):
    """Sum counts of identical transfers (same site, shape, level)."""
    merged: dict = {}
    for t in transfers:
        key = replace(t, count=0)
        merged[key] = merged.get(key, 0) + t.count
    return [replace(k, count=c) for k, c in merged.items() if c]


def limb_transfers(tr: Trace, params, world) -> list[Transfer]:
    out = []
    split, full = ShardSpec("replicated", "split"), ShardSpec("replicated", "full")
    for rows, counts in ((tr.blocks, tr.per_block), (1, tr.shared)):
        for (block, kind, level), c in sorted(counts.items()):
            if kind in ("lintrans", "moddown"):      # moddown: limb-local (input broadcast)
                continue
            polys, limbs, basis = _gathers(kind, params, level)
            out.append(Transfer(block, f"{kind}.{basis}", "redistribute", rows, 1, polys, limbs, basis,
                                level, split, full, (1, world), c))
    return _merge(out)


def blocks_per_rank(blocks, world) -> int:
    """Most token blocks any rank holds, split as io.rank_range splits them: the
    all-gather's width (every rank sends that many, padding included)."""
    from ..io import rank_range

    return max(len(range(*rank_range(blocks, r, world).indices(blocks))) for r in range(world))


def aegis_transfers(tr: Trace, params, world) -> list[Transfer]:
    width = blocks_per_rank(tr.blocks, world)
    # a token block's k and v: 2 x chunks ciphertexts
    out = [Transfer("attention", "kv.allgather", "allgather", width * world, 2 * tr.chunks, 2, params.limbs_at(lv),
                    "q", lv,
                    ShardSpec("token", "full"), ShardSpec("replicated", "full"), (world, 1), 1)
           for lv in tr.kv_levels]
    return _merge(out)


def replicate_transfers(tr: Trace, params, world) -> list[Transfer]:
    """One all-reduce of the unrescaled output per transform per block (each
    rank computes a share of the runs of giant-step groups)."""
    rep = ShardSpec("replicated", "full")
    out = [Transfer(block, "lintrans.allreduce", "allreduce", 1, 1, 2, params.limbs_at(level), "q", level,
                    rep, rep, (world, 1), rows * c)
           for rows, counts in ((tr.blocks, tr.per_block), (1, tr.shared))
           for (block, kind, level), c in sorted(counts.items()) if kind == "lintrans"]
    return _merge(out)


# ---- memory ------------------------------------------------------------------------

@dataclass
class Memory:
    ciphertexts: int
    keys: int
    weights: int

    @property
    def total(self):
        return self.ciphertexts + self.keys + self.weights


def _ct_bytes(params, level, limb_groups=1):
    return 2 * limb_block(params.limbs_at(level), limb_groups) * params.n * CT_WORD


def memory(tr: Trace, cfg, params, strategy, world, layers) -> Memory:
    lg = world if strategy == "limb" else 1
    local = blocks_per_rank(tr.blocks, world) if strategy == "aegis" else tr.blocks
    kv = min(tr.kv_levels)
    top = params.max_level
    groups = -(-tr.B // tr.dh)
    # x and q of the local blocks; every k and v block (the all-gather's result,
    # with its padding for aegis); one query block's attention working set
    gathered = blocks_per_rank(tr.blocks, world) * world if strategy == "aegis" else tr.blocks
    # B shifted copies of one key block, or of K and V of every key block where the
    # encoder keeps them for the other query blocks (block.keeps_shifts)
    shifted = 2 * tr.B * tr.blocks if keeps_shifts(tr.blocks) else tr.B
    working = 2 * min(tr.dh, tr.B) + shifted + 2 * tr.blocks * groups   # (one sequence: an upper bound)
    # every value of a token block is its feature chunks, which the encoder steps in lockstep
    cts = tr.chunks * (2 * local * _ct_bytes(params, top, lg) + (2 * gathered + working) * _ct_bytes(params, kv, lg))
    digits = len(params.digits_at(top))
    # limb: its share of Q's rows and every special prime's (ModDown is local)
    key_rows = limb_block(params.limbs_at(top), lg) + len(params.p)
    keys = tr.keys * 2 * digits * key_rows * params.n * KEY_WORD
    diagonals = 2 * tr.S - 1
    raw = layers * _weight_blocks(tr, cfg) * diagonals * tr.S * 8
    return Memory(cts, keys, raw + _encoded_transform_bytes(tr.S, limb_block(params.limbs_at(top), lg), params))


def _encoded_transform_bytes(S, limbs, params) -> int:
    """2S - 1 block diagonals, S-periodic, compact: 2S values per limb (one per run
    of N/(2S) equal NTT values)."""
    return (2 * S - 1) * limbs * min(params.n, 2 * S) * PT_WORD


def cached_encodings_bytes(tr: Trace, cfg, params, layers) -> int:
    """What LinearTransform's per-transform encoding cache holds once every
    transform has run (one level each, top level as a bound)."""
    return layers * _weight_blocks(tr, cfg) * _encoded_transform_bytes(tr.S, params.limbs_at(params.max_level), params)


def _weight_blocks(tr: Trace, cfg) -> int:
    """S x S blocks of a layer's transforms: Q, K, V, O between the hidden chunks,
    FFN up and down between them and the FFN chunks."""
    ffn = math.ceil(cfg.intermediate / tr.S)
    return 4 * tr.chunks ** 2 + 2 * tr.chunks * ffn


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
            group = self.world if t.kind in ("allreduce", "allgather") else t.grid[1]
            steps = 2 * (group - 1) if t.kind == "allreduce" else group - 1
            total += t.count * steps * self.link.alpha_s
            total += predicted_bytes(t, self.n) / self.world / self.link.bandwidth
        return total


@dataclass
class Planner:
    model_name: str
    params: object
    world: int
    tokens: int
    layers: int | None = None
    link: LinkModel = field(default_factory=LinkModel)
    trace: Trace | None = None     # the trace does not depend on the GPU count: share it
    sequences: int = 1

    def __post_init__(self):
        from ..nn import models

        self.cfg = models.config(self.model_name)
        self.layers = self.cfg.layers if self.layers is None else self.layers
        if self.trace is None:
            self.trace = trace(self.model_name, self.params, self.tokens, self.layers, self.sequences)

    def _plan(self, strategy, grid, transfers):
        mem = memory(self.trace, self.cfg, self.params, strategy, self.world, self.layers)
        return Plan(strategy, grid, transfers, mem, self.params.n, self.link)

    def single_gpu_memory(self) -> Memory:
        return memory(self.trace, self.cfg, self.params, "replicate", 1, self.layers)

    def aegis(self) -> Plan:
        return self._plan("aegis", (self.world, 1),
                          aegis_transfers(self.trace, self.params, self.world))

    def limb(self) -> Plan:
        return self._plan("limb", (1, self.world),
                          limb_transfers(self.trace, self.params, self.world))

    def replicate(self) -> Plan:
        return self._plan("replicate", (self.world, 1),
                          replicate_transfers(self.trace, self.params, self.world))

    def plans(self) -> dict:
        return {"aegis": self.aegis(), "limb": self.limb(), "replicate": self.replicate()}

    def primitive_counts(self) -> dict:
        """Whole-encoder key switches (ModDowns) and rescales per block, all tokens."""
        out = {b: {"keyswitch": 0, "rescale": 0} for b in BLOCKS}
        for rows, counts in ((self.trace.blocks, self.trace.per_block), (1, self.trace.shared)):
            for (block, kind, _), c in counts.items():
                if kind == "moddown":
                    out[block]["keyswitch"] += rows * c
                elif kind == "rescale":
                    out[block]["rescale"] += rows * c
        return out


# ---- report ----------------------------------------------------------------------------

def _gib(x):
    return x / 2 ** 30


def reduction(ours: int, base: int) -> float:
    return 100.0 * (1 - ours / base) if base else 0.0


def summary(pl: Planner) -> dict:
    """The numbers of the report, as JSON-able data."""
    from ..io import slot_use

    plans = pl.plans()
    single = pl.single_gpu_memory()
    tr = pl.trace
    out = {"model": pl.cfg.name, "layers": pl.layers, "tokens": pl.tokens, "gpus": pl.world,
           "params": pl.params.describe(), "slots_per_token": tr.S, "feature_chunks": tr.chunks, "tokens_per_ciphertext": tr.B,
           "token_blocks": tr.blocks, "ciphertexts": tr.blocks * tr.chunks,
           "slot_use": slot_use(pl.sequences * pl.tokens * pl.cfg.hidden, tr.blocks * tr.chunks, pl.params.slots),
           "switching_keys": tr.keys, "refreshes": tr.blocks * tr.refreshes_per_block + tr.refreshes_shared,
           "calibration": tr.calibration, "primitives": pl.primitive_counts(),
           "single_gpu_memory": single.total,
           "cached_encodings_bytes": cached_encodings_bytes(tr, pl.cfg, pl.params, pl.layers),
           "strategies": {}}
    for name, p in plans.items():
        out["strategies"][name] = {
            "grid": list(p.grid), "bytes_by_block": p.bytes_by_block(), "total_bytes": p.total_bytes(),
            "comm_seconds": p.time_s(),
            "memory": {"ciphertexts": p.memory.ciphertexts, "keys": p.memory.keys,
                       "weights": p.memory.weights, "total": p.memory.total},
            "memory_fraction_of_one_gpu": p.memory.total / single.total}
    a, lb = plans["aegis"].bytes_by_block(), plans["limb"].bytes_by_block()
    out["aegis_vs_limb"] = {b: reduction(a[b], lb[b]) for b in BLOCKS}
    out["aegis_vs_limb"]["total"] = reduction(plans["aegis"].total_bytes(), plans["limb"].total_bytes())
    return out


def report(pl: Planner) -> str:
    s = summary(pl)
    w, p = pl.world, pl.params
    lines = [
        f"model {s['model']}: {pl.layers} layer(s), hidden {pl.cfg.hidden}, {pl.cfg.heads} heads, "
        f"FFN {pl.cfg.intermediate}; {pl.tokens} tokens; {w} GPUs",
        f"CKKS {p.describe()}",
        f"packing (infer's token-blocks): {s['tokens_per_ciphertext']} tokens of {s['slots_per_token']} slots "
        f"per ciphertext, {s['feature_chunks']} feature chunk(s), {s['ciphertexts']} ciphertexts "
        f"(slot use {100 * s['slot_use']:.1f} %); "
        f"{s['switching_keys']} switching keys; {s['refreshes']} refreshes (not priced); approximations of "
        f"'{s['calibration']}'",
        "key switches / rescales per block, whole encoder: " + ", ".join(
            f"{b} {c['keyswitch']:,}/{c['rescale']:,}" for b, c in s["primitives"].items()),
        "",
        "predicted bytes sent per GPU, whole encoder (GiB; uint32 residues on the wire)",
        f"{'strategy':<10} {'grid':>5} " + " ".join(f"{b:>11}" for b in BLOCKS)
        + f" {'total':>11} {'comm s':>9} {'mem GiB':>8} {'% 1-GPU':>8}",
    ]
    for name, st in s["strategies"].items():
        by = st["bytes_by_block"]
        lines.append(
            f"{name:<10} {st['grid'][0]}x{st['grid'][1]:<3} " + " ".join(f"{_gib(by[b] / w):>11.3f}" for b in BLOCKS)
            + f" {_gib(st['total_bytes'] / w):>11.3f} {st['comm_seconds']:>9.2f} {_gib(st['memory']['total']):>8.1f}"
            + f" {100 * st['memory_fraction_of_one_gpu']:>7.1f}%")
    lines.append(f"{'1 GPU':<10} {'':>5} " + " ".join(f"{0:>11.3f}" for _ in BLOCKS)
                 + f" {0:>11.3f} {0:>9.2f} {_gib(s['single_gpu_memory']):>8.1f} {100.0:>7.1f}%")
    lines.append("")
    lines.append("memory per GPU (GiB): ciphertexts + keys + weights")
    for name, st in s["strategies"].items():
        m = st["memory"]
        lines.append(f"  {name:<10} {_gib(m['ciphertexts']):8.2f} + {_gib(m['keys']):6.2f} + "
                     f"{_gib(m['weights']):6.2f} = {_gib(m['total']):8.2f}")
    lines.append(f"  (LinearTransform's encoding cache would add {_gib(s['cached_encodings_bytes']):,.0f} GiB "
                 "per replica if every transform kept its encoded diagonals)")
    r = s["aegis_vs_limb"]
    lines.append("")
    lines.append("aegis vs limb: " + ", ".join(f"{b} {r[b]:.1f} % less" for b in BLOCKS)
                 + f"; total {r['total']:.1f} % less; memory per GPU "
                 + f"{100 * s['strategies']['aegis']['memory_fraction_of_one_gpu']:.1f} % of one GPU")
    return "\n".join(lines)


def build_planner(args) -> Planner:
    from ..ckks.params import preset

    return Planner(args.model, preset(args.preset), args.gpus, args.tokens, args.layers,
                   link=LinkModel(args.alpha_us * 1e-6, args.link_gbps * 1e9))


def parser() -> argparse.ArgumentParser:
    from ..nn import models

    ap = argparse.ArgumentParser(prog="python -m aegis_hpc.parallel.planner",
                                 description="Predict inter-GPU bytes and memory per strategy (no FHE run).")
    ap.add_argument("--model", default="bert-base", choices=sorted(models.CONFIGS))
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--layers", type=int, default=None, help="default: all of the model's layers")
    ap.add_argument("--preset", default="n16")
    ap.add_argument("--alpha-us", type=float, default=10.0)
    ap.add_argument("--link-gbps", type=float, default=100.0, help="GB/s per GPU")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        pl = build_planner(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report(pl))
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(summary(pl), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
