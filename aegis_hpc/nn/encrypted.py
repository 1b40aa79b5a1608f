"""Encrypted encoder in one process (tests, demo helpers); infer.py distributes it."""

from __future__ import annotations

import numpy as np

from . import models
from . import refresh as refresh_mod
from .block import EncoderRunner, Tok, one_process_gather
from .mirror import prepared
from .ops import CipherOps, KeyHolder


def encrypt_rows(ctx, key, embedded, slots):
    out = []
    for rows in embedded:
        out.append([ctx.encrypt(np.pad(r, (0, slots - r.size)), key, slots=slots) for r in rows])
    return out


def run(ctx, keys, cts, name, layers=None, refresh="client", key_holder=None, gather=None,
        tokens=None, on_block=None, ops_class=CipherOps):
    """cts: list (sentences) of lists of token ciphertexts. Returns the same shape.
    ops_class: CipherOps or a distributed variant (aegis_hpc.parallel.encoder)."""
    cfg = models.config(name)
    layers = cfg.layers if layers is None else layers
    model = prepared(name, ctx.params.slots, layers)
    ops = ops_class(ctx, ctx.evaluator(keys), refresh, key_holder)
    approx = refresh_mod.prepare(ops, name, layers, ctx.params.slots)
    lengths = [len(s) for s in cts]
    runner = EncoderRunner(ops, model, approx, lengths)
    toks, gid = [], 0
    for sid, row in enumerate(cts):
        for pos, ct in enumerate(row):
            if tokens is None or gid in tokens:
                toks.append(Tok(gid, sid, pos, ct))
            gid += 1
    gather = gather or one_process_gather
    for i in range(layers):
        runner.attention(i, toks, gather)
        if on_block:
            on_block(i, "attention")
        runner.ffn(i, toks)
        if on_block:
            on_block(i, "ffn")
    return toks, ops
