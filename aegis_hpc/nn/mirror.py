"""Plaintext mirror: the encrypted circuit, run on float64 slot vectors."""

from __future__ import annotations

import numpy as np

from . import models
from . import refresh as refresh_mod
from .block import EncoderRunner, PreparedModel, Tok, one_process_gather
from .ops import PlainOps
from .packing import Layout

_PREPARED = {}


def prepared(name, slots, layers):
    key = (models.canonical_name(name), slots, layers)
    if key not in _PREPARED:
        _PREPARED.clear()  # one model at a time: transforms are large
        _PREPARED[key] = PreparedModel(name, Layout(models.config(name), slots), layers)
    return _PREPARED[key]


def run(name: str, embedded: list, layers: int | None = None, slots: int = 1 << 13,
        max_level: int = 10, refresh: str = "client", refresh_level: int | None = None,
        record: dict | None = None):
    """Final hidden states (tokens x hidden) per sentence, and the PlainOps stats.
    refresh_level: level after a refresh (bootstrap: ops.bootstrap_level(params))."""
    cfg = models.config(name)
    layers = cfg.layers if layers is None else layers
    model = prepared(name, slots, layers)
    ops = PlainOps(max_level, refresh, refresh_level, record=record)
    approx = refresh_mod.prepare(ops, name, layers, slots)
    lengths = [len(x) for x in embedded]
    runner = EncoderRunner(ops, model, approx, lengths)
    toks, gid = [], 0
    for sid, rows in enumerate(embedded):
        for pos, r in enumerate(rows):
            toks.append(Tok(gid, sid, pos, ops.encrypt(r, model.layout.S)))
            gid += 1
    for i in range(layers):
        runner.attention(i, toks, one_process_gather)
        runner.ffn(i, toks)
    out = []
    for sid in range(len(embedded)):
        out.append(np.stack([ops.decrypt(t.x)[: cfg.hidden] for t in toks if t.sid == sid]))
    return out, ops.stats
