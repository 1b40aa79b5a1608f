"""Plaintext mirrors: the encoder's approximations without encryption.

- `run`: the encrypted circuit itself (nn.block on nn.ops.PlainOps): the same
  layout, masks, rotations, polynomials and refresh points on float64 slot
  vectors. What separates an encrypted run from it is encryption noise.
- `encode`: the same approximations (nn.functions on nn.ops.MatrixOps) on
  whole tokens x features matrices, with exact linear algebra: fast enough
  for a corpus and for 2048 tokens, no layout. It agrees with `run` to
  rounding (tests/unit/test_nn.py).

Both record, per site, how much of its domain a value used (Stats.domain_use).
"""

from __future__ import annotations

import math

import numpy as np

from . import approx as approx_mod
from . import functions as fn
from . import models
from .block import Blk, EncoderRunner, PreparedModel, one_process_gather
from .domains import Domains
from .ops import Chunks, MatrixOps, PlainOps
from .packing import Layout, row_slots_for
from .refresh import prepare

_PREPARED = {}


def prepared(name, slots, layers, row_slots: int | None = None):
    """The model's weights for a layout of `row_slots` per token row (default: one chunk)."""
    layout = Layout(models.config(name), slots, row_slots)
    key = (models.canonical_name(name), slots, layers, layout.S)
    if key not in _PREPARED:
        _PREPARED.clear()  # one model at a time: transforms are large
        _PREPARED[key] = PreparedModel(name, layout, layers)
    return _PREPARED[key]


def row_slots(name, slots, lengths) -> int:
    """The row width the client packs a batch of these lengths with (its longest decides)."""
    return row_slots_for(models.config(name), max(lengths), slots)


def run(name: str, embedded: list, layers: int | None = None, slots: int = 1 << 13,
        max_level: int = 10, refresh: str = "client", refresh_level: int | None = None, on_layer=None,
        keyswitch_cost=None, row_width: int | None = None):
    """Final hidden states (tokens x hidden) per sentence, and the PlainOps stats.
    refresh_level: level after a refresh (bootstrap: ops.bootstrap_level(params));
    on_layer(layer, hidden states per sentence) after each layer; keyswitch_cost: see PlainOps;
    row_width: the layout's S (default the client's rule for the longest sequence)."""
    cfg = models.config(name)
    layers = cfg.layers if layers is None else layers
    model = prepared(name, slots, layers, row_width or row_slots(name, slots, [len(x) for x in embedded]))
    ops = PlainOps(max_level, refresh, refresh_level, keyswitch_cost)
    approx = prepare(ops, name, layers, slots)
    lengths = [len(x) for x in embedded]
    runner = EncoderRunner(ops, model, approx, lengths)
    L = model.layout
    blocks = []
    for sid, rows in enumerate(embedded):
        for j, vecs in enumerate(L.pack(rows)):
            blocks.append(Blk(len(blocks), sid, j, L.block_tokens(len(rows), j),
                              Chunks(ops.encrypt(v, v.size) for v in vecs)))

    def unpack():
        return [L.unpack([[ops.decrypt(c) for c in b.x] for b in blocks if b.sid == sid], len(rows), cfg.hidden)
                for sid, rows in enumerate(embedded)]

    for i in range(layers):
        runner.attention(i, blocks, one_process_gather)
        runner.ffn(i, blocks)
        if on_layer:
            on_layer(i, unpack())
    return unpack(), ops.stats


def encode(name: str, x: np.ndarray, layers: int | None = None, ops: MatrixOps | None = None):
    """The encoder's approximations on one sequence x (tokens x hidden): (output, stats)."""
    cfg, w = models.config(name), models.weights(name)
    layers = cfg.layers if layers is None else layers
    approx = approx_mod.build(name, layers)
    dom = Domains(name)
    ops = ops or MatrixOps()
    T, H, dh, d = x.shape[0], cfg.heads, cfg.head_dim, cfg.hidden

    def sum_keys(parts, tag, bound):
        return sum(p.sum(-1, keepdims=True) for p in parts)

    def sum_features(v, tag, bound):
        return v.sum(-1, keepdims=True)

    for i in range(layers):
        p, a = f"encoder.layer.{i}.", approx[i]

        def lin(v, key, scale=1.0, offset=0.0):
            return v @ (w[p + key + ".weight"].T * scale) + (w[p + key + ".bias"] * scale + offset)

        q, k, v = (lin(x, f"attention.self.{m}").reshape(T, H, dh).transpose(1, 0, 2)
                   for m in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        sm = a.softmax(T)
        y = sm.exp_scale * (s - s.mean(-1, keepdims=True)) + sm.exp_offset
        probs, inv, *_ = fn.softmax(ops, [y], [np.ones(T)], T, sm, sum_keys, f"L{i}/att")
        ctx = ((probs[0] @ v) * inv).transpose(1, 0, 2).reshape(T, d)
        h1 = x + lin(ctx, "attention.output.dense")
        x1 = fn.layernorm(ops, h1, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"],
                          a.ln1, sum_features, d, cfg.ln_eps, f"L{i}/ln1", dom[i].residual)
        scale, offset = a.gelu.input_map()
        (g,) = fn.gelu(ops, [lin(x1, "intermediate.dense", scale, offset)], a.gelu, [f"L{i}/gelu"])
        h2 = x1 + lin(g, "output.dense")
        x = fn.layernorm(ops, h2, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
                         a.ln2, sum_features, d, cfg.ln_eps, f"L{i}/ln2", dom[i].residual)
    return x, ops.stats
