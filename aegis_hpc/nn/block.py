"""Encoder blocks written once against nn.ops (mirror and encrypted runs).

Tokens are `Tok(gid, sid, pos, x)`; a rank holds any subset of them (the
token shard). The only cross-token step is attention, which needs k and v
of every token of the sentence, packed G tokens to a ciphertext. Each rank
packs its own tokens into partial groups first, so what crosses the wire is
the packed groups, G times fewer ciphertexts than the tokens' k and v:
`gather(partials) -> {(sid, g0): [(K, V) part of each rank holding tokens
of that group]}` is passed in (the distributed runtime's all-gather, or
`one_process_gather`); the parts add up exactly (mod each prime) to the
group one rank would have packed. Every other step touches one token and
needs no traffic.

The non-linear steps are nn/functions.py's; this file adds the layout: the
sums over keys (rotations by multiples of S within a group ciphertext, then
across groups) and over features (rotations within the S slots).

Refresh tags name the site and the token, so the key holder's re-encryption
randomness, and hence the output, is the same whatever the rank count; every
refresh carries the bound of its value (nn/domains.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ckks import LinearTransform
from . import approx as approx_mod
from . import functions as fn
from . import models
from .domains import Domains
from .functions import EDGE
from .packing import Layout


@dataclass
class Tok:
    gid: int
    sid: int
    pos: int
    x: object


class PreparedModel:
    """Weights as padded S x S transforms and slot vectors, built once per run."""

    def __init__(self, name: str, layout: Layout, layers: int):
        self.cfg = cfg = models.config(name)
        self.layout = L = layout
        w = models.weights(name)
        S = L.S
        self.layers = []
        approx = approx_mod.build(name, layers)
        scale_q = 1.0 / math.sqrt(cfg.head_dim)
        for i in range(layers):
            p = f"encoder.layer.{i}."

            def lt(m):
                full = np.zeros((S, S))
                full[: m.shape[0], : m.shape[1]] = m
                return LinearTransform(matrix=full, slots=S)

            d = {
                "q": lt(w[p + "attention.self.query.weight"] * scale_q),
                "bq": L.pad(w[p + "attention.self.query.bias"] * scale_q),
                "k": lt(w[p + "attention.self.key.weight"]), "bk": L.pad(w[p + "attention.self.key.bias"]),
                "v": lt(w[p + "attention.self.value.weight"]), "bv": L.pad(w[p + "attention.self.value.bias"]),
                "o": lt(w[p + "attention.output.dense.weight"]),
                "bo": L.pad(w[p + "attention.output.dense.bias"]),
                "g1": L.pad(w[p + "attention.output.LayerNorm.weight"]),
                "b1": L.pad(w[p + "attention.output.LayerNorm.bias"]),
                "g2": L.pad(w[p + "output.LayerNorm.weight"]),
                "b2": L.pad(w[p + "output.LayerNorm.bias"]),
                "bd": L.pad(w[p + "output.dense.bias"]),
                "up": [], "bup": [], "down": [],
            }
            wu, bu, wd = w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"], w[p + "output.dense.weight"]
            # GELU's series runs on [-1, 1]: its change of interval rides on W_up, b_up for free
            scale, offset = approx[i].gelu.input_map()
            wu, bu = wu * scale, bu * scale + offset
            for c in range(L.chunks):
                d["up"].append(lt(wu[c * S:(c + 1) * S]))
                d["bup"].append(L.pad(bu[c * S:(c + 1) * S]))
                d["down"].append(lt(wd[:, c * S:(c + 1) * S]))
            self.layers.append(d)

    def release(self, i: int):
        """Drop layer i's cached plaintext diagonals. At N=2^14 a 512 x 512
        transform's encoding is 512 plaintexts, ~0.6-0.9 GB of device memory:
        all 60 of MiniLM's stay ~40 GB, one layer's ~7 GB (several ranks on one GPU)."""
        W = self.layers[i]
        for lt in [W["q"], W["k"], W["v"], W["o"], *W["up"], *W["down"]]:
            lt._plaintexts = {}


def _rotsum(ops, x, steps):
    for s in steps:
        x = ops.add(x, ops.rotate(x, s))
    return x


def one_process_gather(partials, work=()):
    """The gather of a run in one process: every group has one part."""
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

    def __init__(self, cfg, d, gelu_approx):
        self.x = float(d.x.max())
        self.q, self.k, self.v = (float(d.qkv[n].max()) for n in ("q", "k", "v"))
        self.mid = float(d.mid.max())
        self.residual = d.residual
        self.score = d.score_abs
        self.gelu = fn.series_bound(gelu_approx.series)


class EncoderRunner:
    def __init__(self, ops, model: PreparedModel, approx: list, lengths: list, domains: Domains | None = None):
        self.ops, self.m, self.approx = ops, model, approx
        self.L = model.layout
        self.cfg = model.cfg
        self.lengths = list(lengths)
        dom = domains or Domains(self.cfg.name)
        self.bounds = [_Bounds(self.cfg, dom[i], approx[i].gelu) for i in range(len(approx))]

    # ---- masks (plaintext, cached by key in CipherOps) -------------------
    def _block_mask(self, G, jj):
        S = self.L.S
        m = np.zeros(S * G)
        m[jj * S: jj * S + self.cfg.hidden] = 1.0
        return m

    def _head_mask(self, G, nvalid, scale):
        """Keeps each head's sum (first slot of the head) of the valid key blocks,
        times the softmax's change of variable (scale)."""
        S, dh = self.L.S, self.cfg.head_dim
        m = np.zeros(S * G)
        for jj in range(nvalid):
            m[jj * S: jj * S + self.cfg.hidden: dh] = scale
        return m

    def _valid(self, G, nvalid):
        S = self.L.S
        m = np.zeros(S * G)
        for jj in range(nvalid):
            m[jj * S: jj * S + self.cfg.hidden] = 1.0
        return m

    # ---- blocks ---------------------------------------------------------
    def _pack(self, i, t, k, v, partials):
        """Add token t's k and v, masked to its block jj of its group, to this
        rank's partial group (sid, g0)."""
        ops, L, b = self.ops, self.L, self.bounds[i]
        G = L.group_size(self.lengths[t.sid])
        g0 = t.pos // G * G
        jj = t.pos - g0
        k = ops.mul_plain(ops.view(ops.need(k, 1, f"L{i}/K/t{t.gid}", b.k), L.S * G),
                          self._block_mask(G, jj), ("blk", G, jj))
        v = ops.mul_plain(ops.view(ops.need(v, 1, f"L{i}/V/t{t.gid}", b.v), L.S * G),
                          self._block_mask(G, jj), ("blk", G, jj))
        key = (t.sid, g0)
        if key in partials:
            K, V = partials[key]
            k, v = ops.add(K, k), ops.add(V, v)
        partials[key] = (k, v)

    def attention(self, i, toks, gather):
        ops, W, a, L, b = self.ops, self.m.layers[i], self.approx[i], self.L, self.bounds[i]
        qs, partials = {}, {}
        for t in toks:
            x = ops.need(t.x, 1, f"L{i}/qkv/t{t.gid}", b.x)
            t.x = x
            k = ops.add_plain(ops.lintrans(x, W["k"]), W["bk"], ("bk", i))
            v = ops.add_plain(ops.lintrans(x, W["v"]), W["bv"], ("bv", i))
            self._pack(i, t, k, v, partials)

        def q_of(t):
            def work():
                qs[t.gid] = ops.add_plain(ops.lintrans(t.x, W["q"]), W["bq"], ("bq", i))
            return work

        parts = _gather_during(gather, partials, [q_of(t) for t in toks])
        del partials
        for sid in sorted({t.sid for t in toks}):
            T = self.lengths[sid]
            G = L.group_size(T)
            groups = []
            for g0 in range(0, T, G):
                (K, V), *rest = parts[(sid, g0)]
                for K2, V2 in rest:
                    K, V = ops.add(K, K2), ops.add(V, V2)
                groups.append((g0, min(G, T - g0), K, V))
            # each token is finished before the next is attended: only x and q
            # of the local tokens stay alive, not their attention outputs too
            for t in toks:
                if t.sid == sid:
                    out = self._attend(i, t.gid, qs.pop(t.gid), groups, G, T)
                    o = ops.lintrans(ops.need(out, 1, f"L{i}/o/t{t.gid}", b.v * EDGE), W["o"])
                    o = ops.add_plain(o, W["bo"], ("bo", i))
                    t.x = self._layernorm(ops.add(t.x, o), W["g1"], W["b1"], a.ln1, f"L{i}/ln1/t{t.gid}",
                                          b.residual)
        return toks

    def _sum_features(self, x):
        return _rotsum(self.ops, x, self.L.feature_sum_steps())

    def _layernorm(self, h, gamma, beta, approx, tag, h_bound):
        return fn.layernorm(self.ops, h, gamma, beta, approx, self._sum_features, self.cfg.hidden,
                            self.cfg.ln_eps, tag, h_bound)

    def _attend(self, i, gid, q, groups, G, T):
        ops, L, b = self.ops, self.L, self.bounds[i]
        sm = self.approx[i].softmax(T)
        tag = f"L{i}/att/t{gid}"

        def sum_keys(parts):
            total = None
            for x in parts:
                x = _rotsum(ops, x, L.block_sum_steps(G))
                total = x if total is None else ops.add(total, x)
            return total

        q = ops.view(ops.need(q, 1, tag + "/q", b.q), L.S * G)
        scores, valid = [], []
        for g0, nvalid, K, V in groups:
            tg = f"{tag}/g{g0}"
            p = ops.mul(q, ops.need(K, 1, tg + "/k", b.k))
            p = _rotsum(ops, p, L.head_sum_steps())
            # the softmax's change of variable (exp_scale) rides on the head mask
            p = ops.mul_plain(ops.need(p, 1, tg + "/qk", b.score), self._head_mask(G, nvalid, sm.exp_scale),
                              ("hm", G, nvalid, sm.exp_scale))
            scores.append(_rotsum(ops, p, [-s for s in L.head_sum_steps()]))
            valid.append(self._valid(G, nvalid))
        # y = exp_scale (s - rowmean) + exp_offset, 0 on padding keys until the mask
        total = ops.need(sum_keys(scores), 1, tag + "/sum", b.score * sm.exp_scale * T)
        ys = []
        for j, (s, m) in enumerate(zip(scores, valid)):
            mean = ops.mul_plain(total, m / T, ("mean", id(m), T))
            ys.append(ops.add_const(ops.sub(s, mean), sm.exp_offset))
        p, inv, p_bound = fn.softmax(ops, ys, valid, T, sm, sum_keys, tag)
        num = sum_keys([ops.mul(ops.need(x, 1, f"{tag}/g{g0}/p", p_bound), ops.need(V, 1, f"{tag}/g{g0}/v", b.v))
                        for x, (g0, _, _, V) in zip(p, groups)])
        # p = final_scale P with sum P in the final domain: |num| <= final_scale D max|v|
        num_bound = sm.final_scale * sm.final_domain.hi * b.v * EDGE
        res = ops.mul(ops.need(num, 1, tag + "/num", num_bound), inv)
        return ops.view(res, L.S)

    def ffn(self, i, toks):
        ops, W, a, L, b = self.ops, self.m.layers[i], self.approx[i], self.L, self.bounds[i]
        for t in toks:
            x = ops.need(t.x, 1, f"L{i}/up/t{t.gid}", b.mid)
            d = None
            for c in range(L.chunks):
                u = ops.add_plain(ops.lintrans(x, W["up"][c]), W["bup"][c], ("bup", i, c))
                g = fn.gelu(ops, u, a.gelu, f"L{i}/gelu/t{t.gid}/c{c}")
                y = ops.lintrans(ops.need(g, 1, f"L{i}/down/t{t.gid}/c{c}", b.gelu), W["down"][c])
                d = y if d is None else ops.add(d, y)
            d = ops.add_plain(d, W["bd"], ("bd", i))
            t.x = self._layernorm(ops.add(x, d), W["g2"], W["b2"], a.ln2, f"L{i}/ln2/t{t.gid}", b.residual)
        return toks
