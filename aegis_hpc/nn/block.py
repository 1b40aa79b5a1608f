"""Encoder blocks on packed token blocks, written once against nn.ops (mirror and encrypted runs).

A `Blk` is one token block: B consecutive tokens of one sequence, its value the
Chunks of its feature chunks (nn/packing.py, layout "token-blocks"; ChunkOps
runs each step chunk by chunk). A rank holds any subset of the blocks (the token
shard). The only cross-block step is attention, which needs k and v of every
block of the sequence: `gather(partials) -> {(sid, block): [(K, V)]}` is
passed in (the distributed runtime's all-gather, or `one_process_gather`).
Every other step touches one block and needs no traffic.

The non-linear steps are nn/functions.py's; this file adds the layout: the
sums over a token's features (its chunks added, then within its row: sum to
the row's first slot, mask, broadcast back), the attention's shifts and compact scores, and the
sums over keys (add the key blocks' and groups' ciphertexts, then the dh
slots of each head). Padding tokens of a sequence's last block are zero and
stay zero: biases, LayerNorm weights and masks are zero on them.

Refresh tags name the site and the block, so the key holder's re-encryption
randomness, and hence the output, is the same whatever the rank count; every
refresh carries the bound of its value (nn/domains.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import approx as approx_mod
from . import functions as fn
from . import models
from .domains import Domains
from .functions import EDGE
from .ops import ChunkOps, Chunks
from .packing import Layout


@dataclass
class Blk:
    gid: int          # block id, unique over the run (tags, ranks)
    sid: int          # sequence
    idx: int          # block of the sequence
    valid: int        # real tokens in this block
    x: object         # Chunks: the block's feature chunks (one where the hidden size fits a row)


class PreparedModel:
    """Weights as block transforms (S x S blocks per token row, between feature chunks)
    and per-chunk S-slot rows (Layout.pad)."""

    def __init__(self, name: str, layout: Layout, layers: int):
        self.cfg = cfg = models.config(name)
        self.layout = L = layout
        w = models.weights(name)
        self.layers = []
        approx = approx_mod.build(name, layers)
        scale_q = 1.0 / math.sqrt(cfg.head_dim)
        for i in range(layers):
            p = f"encoder.layer.{i}."
            d = {
                "q": L.transform(w[p + "attention.self.query.weight"] * scale_q),
                "bq": L.pad(w[p + "attention.self.query.bias"] * scale_q),
                "k": L.transform(w[p + "attention.self.key.weight"]), "bk": L.pad(w[p + "attention.self.key.bias"]),
                "v": L.transform(w[p + "attention.self.value.weight"]),
                "bv": L.pad(w[p + "attention.self.value.bias"]),
                "o": L.transform(w[p + "attention.output.dense.weight"]),
                "bo": L.pad(w[p + "attention.output.dense.bias"]),
                "g1": L.pad(w[p + "attention.output.LayerNorm.weight"]),
                "b1": L.pad(w[p + "attention.output.LayerNorm.bias"]),
                "g2": L.pad(w[p + "output.LayerNorm.weight"]),
                "b2": L.pad(w[p + "output.LayerNorm.bias"]),
                "bd": L.pad(w[p + "output.dense.bias"]),
            }
            wu, bu = w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]
            # GELU's series runs on [-1, 1]: its change of interval rides on W_up, b_up for free
            scale, offset = approx[i].gelu.input_map()
            d["up"], d["bup"] = L.transform(wu * scale), L.pad(bu * scale + offset)
            d["down"] = L.transform(w[p + "output.dense.weight"])
            self.layers.append(d)

    def release(self, i: int):
        """Drop layer i's cached plaintext diagonals (device memory between layers)."""
        W = self.layers[i]
        for name in ("q", "k", "v", "o", "up", "down"):
            W[name].release()


def _add_all(ops, parts):
    total = parts[0]
    for x in parts[1:]:
        total = ops.add(total, x)
    return total


def _rotsum(ops, x, steps):
    for s in steps:
        x = ops.add(x, ops.rotate(x, s))
    return x


def shift_tree(ops, x, count, unit):
    """{u: rot(x, u * unit)} for u < count: u is its parent (u minus its lowest
    bit) rotated by that bit, one key switch each, the children of a parent
    hoisted together; only keys for unit * 2^j are needed."""
    out = {0: x}
    for parent in range(count):
        low = parent & -parent if parent else 1 << count.bit_length()
        kids = [parent + (1 << i) for i in range(low.bit_length() - 1) if parent + (1 << i) < count]
        if kids:
            got = ops.rotate_many(out[parent], [(u - parent) * unit for u in kids])
            for u in kids:
                out[u] = got[(u - parent) * unit]
    return out


def one_process_gather(partials, work=()):
    """The gather of a run in one process: every block has one part."""
    for w in work:
        w()
    return {key: [kv] for key, kv in partials.items()}


def _gather_during(gather, items, work):
    """k/v are ready before q: a gather that can overlap (`gather.overlaps`)
    runs the q projections while its exchange is in flight."""
    if getattr(gather, "overlaps", False):
        return gather(items, work)
    for w in work:
        w()
    return gather(items)


class _Bounds:
    """Refresh bounds of one layer's values, from its domains (nn/domains.py)."""

    def __init__(self, d, gelu_approx):
        self.x = float(d.x.max())
        self.q, self.k, self.v = (float(d.qkv[n].max()) for n in ("q", "k", "v"))
        self.mid = float(d.mid.max())
        self.residual = d.residual
        self.score = d.score_abs
        self.gelu = fn.series_bound(gelu_approx.series)


# the most blocks a sequence may have for a layer to keep every key block's rotated K and
# V for its other query blocks: 2 B ciphertexts per key block at K's and V's level
# (MiniLM up to 256 tokens, bert-base up to 128); longer sequences, where that would
# grow with the length, rotate them again for each query block
SHIFT_CACHE_BLOCKS = 4


def keeps_shifts(blocks: int) -> bool:
    """Whether a layer keeps the rotated K and V of a `blocks`-block sequence: only where
    another query block reuses them and their number stays bounded (the planner's
    memory counts them the same way)."""
    return 1 < blocks <= SHIFT_CACHE_BLOCKS


class EncoderRunner:
    def __init__(self, ops, model: PreparedModel, approx: list, lengths: list, domains: Domains | None = None):
        # values are Chunks (a block's feature chunks): ChunkOps runs each step chunk by chunk
        self.ops, self.m, self.approx = ChunkOps(ops), model, approx
        self.L = model.layout
        self.cfg = model.cfg
        self.lengths = list(lengths)
        dom = domains or Domains(self.cfg.name)
        self.bounds = [_Bounds(dom[i], approx[i].gelu) for i in range(len(approx))]
        self._masks = {}

    # ---- per-block plaintexts (cached; CipherOps caches their encodings by key) ----
    def _B(self, sid):
        return self.L.tokens_per_ct(self.lengths[sid])

    def _rows(self, vec, B, valid):
        """Per chunk, its S-slot row of `vec` (Layout.pad) on each of the first `valid`
        token rows of a block: (chunks, B S)."""
        key = ("rows", id(vec), B, valid)
        if key not in self._masks:
            m = np.zeros((vec.shape[0], B, self.L.S))
            m[:, :valid] = vec[:, None, :]
            self._masks[key] = m.reshape(vec.shape[0], -1)
        return self._masks[key]

    def _mask(self, kind, *args):
        key = (kind,) + args
        if key not in self._masks:
            self._masks[key] = getattr(self.L, kind)(*args)
        return self._masks[key]

    def _bias(self, ops, x, vec, blk, name):
        B = self._B(blk.sid)
        return ops.add_plain(x, self._rows(vec, B, blk.valid), (name, id(vec), B, blk.valid))

    # ---- layout reductions --------------------------------------------------------
    def _window_sum(self, x, steps, start, key, tag, bound, levels=1):
        """Sum over each window of 2^len(steps) slots to the window's first slot (where
        `start` is 1), then broadcast back over the window. Before the mask a slot
        holds the sum of a window across two windows: twice the bound. levels: the
        mask's, and those the caller takes before its next refresh."""
        ops = self.ops
        x = ops.need(_rotsum(ops, x, steps), levels, tag, 2 * bound)
        x = ops.mul_plain(x, start, key)
        return _rotsum(ops, x, [-s for s in steps])

    def _sum_features(self, blk):
        """A token's sum over its features (its chunks added, then over the row), in
        every slot of the row (0 on padding rows): one ciphertext for all chunks."""
        B = self._B(blk.sid)
        start = self._mask("row_start_mask", B, blk.valid)

        def sum_features(x, tag, bound):
            return self._window_sum(_add_all(self.ops, x), self.L.row_sum_steps(), start, ("rowstart", B, blk.valid), tag, bound)
        return sum_features

    def _sum_keys(self, blk):
        """Over every key (the key blocks' and groups' ciphertexts, then the dh offsets
        of each head block), in every slot of the head block (0 on padding queries)."""
        ops = self.ops
        B = self._B(blk.sid)
        start = self._mask("head_start_mask", B, blk.valid)

        def sum_keys(parts, tag, bound, levels=1):
            return self._window_sum(_add_all(ops, parts), self.L.head_sum_steps(), start, ("headstart", B, blk.valid), tag, bound,
                                    levels)
        return sum_keys

    def _layernorm(self, blk, h, gamma, beta, approx, tag, h_bound):
        B = self._B(blk.sid)
        return fn.layernorm(self.ops, h, self._rows(gamma, B, blk.valid), self._rows(beta, B, blk.valid), approx,
                            self._sum_features(blk), self.cfg.hidden, self.cfg.ln_eps, tag, h_bound, sum_levels=1,
                            active=self._mask("token_mask", B, blk.valid, self.L.S))

    # ---- blocks -------------------------------------------------------------------
    def attention(self, i, blocks, gather):
        ops, W, a, b = self.ops, self.m.layers[i], self.approx[i], self.bounds[i]
        qs, partials = {}, {}
        for blk in blocks:
            # q and k leave the projection with the levels their products take (q k,
            # then the score masks): one refresh of x here, not one per key shift
            masks = self._score_masks(self._B(blk.sid))
            x = blk.x = ops.need(blk.x, 2 + masks, f"L{i}/qkv/t{blk.gid}", b.x)
            k = self._bias(ops, ops.lintrans(x, W["k"]), W["bk"], blk, ("bk", i))
            v = self._bias(ops, ops.lintrans(x, W["v"]), W["bv"], blk, ("bv", i))
            partials[(blk.sid, blk.idx)] = (ops.need(k, 1 + masks, f"L{i}/K/t{blk.gid}", b.k),
                                            ops.need(v, 1, f"L{i}/V/t{blk.gid}", b.v))

        def q_of(blk):
            def work():
                qs[blk.gid] = self._bias(ops, ops.lintrans(blk.x, W["q"]), W["bq"], blk, ("bq", i))
            return work

        parts = _gather_during(gather, partials, [q_of(blk) for blk in blocks])
        del partials
        # a key block's B rotated copies of K and of V are the same for every query
        # block of its sequence: made once per layer where keeps_shifts(blocks), again
        # per query block otherwise
        shifts = {}
        for blk in blocks:
            T = self.lengths[blk.sid]
            keys = []
            for j in range(self.L.blocks(T)):
                (K, V), *rest = parts[(blk.sid, j)]
                keys.append((j, self.L.block_tokens(T, j), K, V))
            out = self._attend(i, blk, qs.pop(blk.gid), keys, shifts)
            o = ops.lintrans(ops.need(out, 1, f"L{i}/o/t{blk.gid}", b.v * EDGE), W["o"])
            o = self._bias(ops, o, W["bo"], blk, ("bo", i))
            blk.x = self._layernorm(blk, ops.add(blk.x, o), W["g1"], W["b1"], a.ln1, f"L{i}/ln1/t{blk.gid}",
                                    b.residual)
        return blocks

    def _shifts(self, x, B, cache=None, key=None):
        """{(g, u): x rotated so key token (b + g dh + u) mod B sits under query b, moved
        right by u slots}: giants by a tree over dh S 2^j, babies by one over (S - 1) 2^j.
        cache/key: looked up in and kept in cache[key] (None: made afresh)."""
        if cache is not None and key in cache:
            return cache[key]
        L, dh = self.L, self.L.dh
        out = {}
        for g, xg in shift_tree(self.ops, x, L.groups(B), dh * L.S).items():
            for u, xu in shift_tree(self.ops, xg, min(dh, B - g * dh), L.S - 1).items():
                out[(g, u)] = xu
        if cache is not None:
            cache[key] = out
        return out

    def _head_sum(self, count):
        """(w, steps w .. dh/2, steps 1 .. w/2) of the two-stage head sum of `count`
        offsets (Layout.head_window). A head's dh terms of offset u sit in slots
        [h dh + u, h dh + u + dh): the first steps leave dh/w partial sums in the w
        slots from h dh + u on, which a mask keeps; offsets equal mod w then share one
        ciphertext (their windows are disjoint), whose last steps finish every sum at
        once, and a second mask keeps the sums. dh log2(dh) rotations become
        count log2(dh/w) + w log2(w) (MiniLM, dh = 32: 160 -> 88; bert-base: 384 -> 192)."""
        w = self.L.head_window(count)
        steps = self.L.head_sum_steps()
        return w, [s for s in steps if s >= w], [s for s in steps if s < w]

    def _score_masks(self, B):
        """Masks (levels) between a score product and its compact score: 2 where a group
        uses the two-stage head sum."""
        L = self.L
        return 2 if any(L.head_window(min(L.dh, B - g * L.dh)) > 1 for g in range(L.groups(B))) else 1

    def _attend(self, i, blk, q, keys, shifts=None):
        ops, L, b = self.ops, self.L, self.bounds[i]
        T, B, dh = self.lengths[blk.sid], self._B(blk.sid), L.dh
        sm = self.approx[i].softmax(T)
        tag = f"L{i}/att/t{blk.gid}"
        masks = self._score_masks(B)
        shifts = shifts if keeps_shifts(len(keys)) else None
        # Q moved right by u (u < dh): the head sum of row b's product lands in slot h dh + u
        qs = shift_tree(ops, ops.need(q, 1 + masks, tag + "/q", b.q), min(dh, B), -1)
        scores, valid = [], []
        for j, k_valid, K, V in keys:
            ks = self._shifts(K, B, shifts, ("K", blk.sid, j))   # B rotated copies
            for g in range(L.groups(B)):
                count = min(dh, B - g * dh)
                w, big, small = self._head_sum(count)
                # the first stage's partial sums (a head's dh / w terms) bound its slots;
                # the one-stage sum's slots hold scores (or are masked away)
                bound = b.score if w == 1 else dh // w * b.q * b.k
                shared = {}
                for u in range(count):
                    p = ops.mul(qs[u], ks[(g, u)])
                    p = ops.need(_rotsum(ops, p, big), masks, f"{tag}/g{j}/c{g}/u{u}", bound)
                    # the softmax's change of variable (exp_scale) rides on the mask
                    m = self._mask("score_window_mask", B, blk.valid, k_valid, g, u, w)
                    p = ops.mul_plain(p, m * sm.exp_scale, ("score", B, blk.valid, k_valid, g, u, w, sm.exp_scale))
                    shared[u % w] = p if u % w not in shared else ops.add(shared[u % w], p)
                z = None
                for rho, y in shared.items():
                    if w > 1:
                        m = self._mask("score_residue_mask", B, blk.valid, k_valid, g, rho, w)
                        y = ops.mul_plain(_rotsum(ops, y, small), m, ("sres", B, blk.valid, k_valid, g, rho, w))
                    z = y if z is None else ops.add(z, y)
                scores.append(z)
                valid.append(self._mask("score_mask", B, blk.valid, k_valid, g))
            del ks
        del qs
        sum_keys = self._sum_keys(blk)
        # y = exp_scale (s - rowmean) + exp_offset; 0 + offset where a part has no key
        # the mean's product takes a level and the exp's refresh below needs one for its 1/B
        total = sum_keys(scores, tag + "/sum", b.score * sm.exp_scale * T, levels=2)
        ys = []
        for s, m in zip(scores, valid):
            mean = ops.mul_plain(total, m / T, ("mean", B, id(m), T))
            ys.append(ops.add_const(ops.sub(s, mean), sm.exp_offset))
        p, inv, p_bound, inv_bound = fn.softmax(ops, ys, valid, T, sm, sum_keys, tag,
                                     active=self._mask("token_mask", B, blk.valid, L.width))
        # A V: each score broadcast over its head's dh slots from slot h dh + u onwards
        # (the head sum's two stages backwards: residue classes spread over w slots,
        # then each offset's window over dh), times V moved the same way; acc[u] holds
        # offset u, undone by rot(., u)
        acc = {}
        # refreshed together: two of them share a bootstrap (ops.need_many)
        it = iter(ops.need_many(p, 1 + masks, [f"{tag}/g{j}/c{g}/p" for j, *_ in keys for g in range(L.groups(B))],
                                p_bound))
        for j, k_valid, _, V in keys:
            vs = self._shifts(V, B, shifts, ("V", blk.sid, j))
            for g in range(L.groups(B)):
                pg = next(it)
                count = min(dh, B - g * dh)
                w, big, small = self._head_sum(count)
                spread = {0: pg}
                if w > 1:
                    for rho in range(min(w, count)):
                        m = self._mask("score_residue_mask", B, blk.valid, k_valid, g, rho, w)
                        spread[rho] = _rotsum(ops, ops.mul_plain(pg, m, ("sres", B, blk.valid, k_valid, g, rho, w)),
                                              [-s for s in small])
                for u in range(count):
                    m = self._mask("score_window_mask", B, blk.valid, k_valid, g, u, w)
                    x = ops.mul_plain(spread[u % w], m, ("sel", B, blk.valid, k_valid, g, u, w))
                    x = _rotsum(ops, x, [-s for s in big])
                    x = ops.mul(ops.need(x, 1, f"{tag}/g{j}/c{g}/a{u}", p_bound), vs[(g, u)])
                    acc[u] = x if u not in acc else ops.add(acc[u], x)
        # Horner: acc_0 + rot(acc_1 + rot(acc_2 + ..., 1), 1) = sum_u rot(acc_u, u)
        num_bound = sm.final_scale * sm.final_domain.hi * b.v * EDGE
        out = None
        for u in sorted(acc, reverse=True):
            out = acc[u] if out is None else ops.add(acc[u], ops.rotate(out, 1))
        # the product keeps a level for the output's refresh (its 1/B): numerator and
        # inverse both bring two, refreshed together where both are short
        num, inv = ops.need_many([out, inv], 2, [tag + "/num", tag + "/inv_out"], [num_bound, inv_bound])
        return ops.mul(num, inv)

    def ffn(self, i, blocks):
        ops, W, a, L, b = self.ops, self.m.layers[i], self.approx[i], self.L, self.bounds[i]
        for blk in blocks:
            x = ops.need(blk.x, 1, f"L{i}/up/t{blk.gid}", b.mid)
            # the FFN chunks side by side, so their refreshes before and after GELU pair up
            chunks = range(L.chunks)
            us = list(self._bias(ops, ops.lintrans(x, W["up"]), W["bup"], blk, ("bup", i)))
            gs = fn.gelu(ops, us, a.gelu, [f"L{i}/gelu/t{blk.gid}/c{c}" for c in chunks])
            gs = ops.need_many(gs, 1, [f"L{i}/down/t{blk.gid}/c{c}" for c in chunks], b.gelu)
            d = self._bias(ops, ops.lintrans(gs, W["down"]), W["bd"], blk, ("bd", i))
            blk.x = self._layernorm(blk, ops.add(x, d), W["g2"], W["b2"], a.ln2, f"L{i}/ln2/t{blk.gid}", b.residual)
        return blocks
