"""Encrypted encoder in one process (tests, demo helpers); infer.py distributes it."""

from __future__ import annotations

from . import models
from . import refresh as refresh_mod
from .block import Blk, EncoderRunner, one_process_gather
from .mirror import prepared, row_slots
from .ops import CipherOps, Chunks


def layout_for(ctx, name, lengths, layers=None):
    """The layout a client packs these sequences in (the rule of io.token_block_slots)."""
    cfg = models.config(name)
    return prepared(name, ctx.params.slots, cfg.layers if layers is None else layers,
                    row_slots(name, ctx.params.slots, lengths)).layout


def encrypt_blocks(ctx, key, embedded, layout, level=None):
    """Each sequence (tokens x hidden) as its packed blocks (nn/packing.py), at `level`
    (default the top; nn.refresh.input_level picks a cheaper one for bootstrapping):
    per sequence, its ciphertexts in file order (block by block, chunks within)."""
    return [[ctx.encrypt(v, key, level=level, slots=v.size) for blk in layout.pack(rows) for v in blk]
            for rows in embedded]


def run(ctx, keys, cts, name, layers=None, refresh="client", key_holder=None, gather=None,
        blocks=None, on_block=None, ops_class=CipherOps, lengths=None, on_layer=None, row_width=None):
    """cts: list (sequences) of lists of ciphertexts in file order (encrypt_blocks);
    lengths: tokens per sequence; row_width: the layout's S (default the client's rule).
    on_block(layer, "attention" | "ffn") after each block; on_layer(layer, blocks) after each layer.
    Returns the blocks (Blk, this process's: `blocks` = their gids, default all; Blk.x the
    block's Chunks) and the ops.
    ops_class: CipherOps or a distributed variant (aegis_hpc.parallel.encoder)."""
    cfg = models.config(name)
    layers = cfg.layers if layers is None else layers
    if lengths is None:
        raise ValueError("lengths (tokens per sequence) are required")
    model = prepared(name, ctx.params.slots, layers, row_width or row_slots(name, ctx.params.slots, lengths))
    ops = ops_class(ctx, ctx.evaluator(keys), refresh, key_holder)
    approx = refresh_mod.prepare(ops, name, layers, ctx.params.slots)
    L = model.layout
    runner = EncoderRunner(ops, model, approx, lengths)
    mine, gid, c = [], 0, L.hidden_chunks
    for sid, row in enumerate(cts):
        if len(row) != L.ciphertexts(lengths[sid]):
            raise ValueError(f"sequence {sid}: {len(row)} ciphertexts, its layout has {L.ciphertexts(lengths[sid])}")
        for j in range(len(row) // c):
            if blocks is None or gid in blocks:
                mine.append(Blk(gid, sid, j, L.block_tokens(lengths[sid], j), Chunks(row[j * c:(j + 1) * c])))
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
