"""Encrypted encoder in one process (tests, demo helpers); infer.py distributes it."""

from __future__ import annotations

from . import models
from . import refresh as refresh_mod
from .block import Blk, EncoderRunner, one_process_gather
from .mirror import prepared
from .ops import CipherOps


def encrypt_blocks(ctx, key, embedded, layout, level=None):
    """Each sequence (tokens x hidden) as its packed blocks (nn/packing.py), at `level`
    (default the top; nn.refresh.input_level picks a cheaper one for bootstrapping)."""
    return [[ctx.encrypt(v, key, level=level, slots=v.size) for v in layout.pack(rows)] for rows in embedded]


def run(ctx, keys, cts, name, layers=None, refresh="client", key_holder=None, gather=None,
        blocks=None, on_block=None, ops_class=CipherOps, lengths=None, on_layer=None):
    """cts: list (sequences) of lists of block ciphertexts; lengths: tokens per sequence.
    on_block(layer, "attention" | "ffn") after each block; on_layer(layer, blocks) after each layer.
    Returns the blocks (Blk, this process's: `blocks` = their gids, default all) and the ops.
    ops_class: CipherOps or a distributed variant (aegis_hpc.parallel.encoder)."""
    cfg = models.config(name)
    layers = cfg.layers if layers is None else layers
    model = prepared(name, ctx.params.slots, layers)
    ops = ops_class(ctx, ctx.evaluator(keys), refresh, key_holder)
    approx = refresh_mod.prepare(ops, name, layers, ctx.params.slots)
    L = model.layout
    if lengths is None:
        raise ValueError("lengths (tokens per sequence) are required")
    runner = EncoderRunner(ops, model, approx, lengths)
    mine, gid = [], 0
    for sid, row in enumerate(cts):
        for j, ct in enumerate(row):
            if blocks is None or gid in blocks:
                mine.append(Blk(gid, sid, j, L.block_tokens(lengths[sid], j), ct))
            gid += 1
    gather = gather or one_process_gather
    for i in range(layers):
        runner.attention(i, mine, gather)
        if on_block:
            on_block(i, "attention")
        runner.ffn(i, mine)
        if on_block:
            on_block(i, "ffn")
        if on_layer:
            on_layer(i, mine)
    return mine, ops
