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

Refresh tags name the site and the token, so the key holder's re-encryption
randomness, and hence the output, is the same whatever the rank count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ckks import LinearTransform
from . import models
from .approx import gelu_domain
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
        S, h = L.S, cfg.hidden
        self.layers = []
        cal = models.load_calibration(name)["layers"]
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
            lo, hi = gelu_domain(cal[str(i)])
            wu, bu = wu * (2.0 / (hi - lo)), (2.0 * bu - lo - hi) / (hi - lo)
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


def _mul(ops, a, b, tag):
    return ops.mul(ops.need(a, 1, tag + "/a"), ops.need(b, 1, tag + "/b"))


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


def _cheb(ops, x, series, tag):
    return ops.cheb(ops.need(x, series.depth(), tag), series)


class EncoderRunner:
    def __init__(self, ops, model: PreparedModel, approx: list, lengths: list):
        self.ops, self.m, self.approx = ops, model, approx
        self.L = model.layout
        self.cfg = model.cfg
        self.lengths = list(lengths)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(int).tolist()

    # ---- masks (plaintext, cached by key in CipherOps) -------------------
    def _block_mask(self, G, jj, scale):
        S = self.L.S
        m = np.zeros(S * G)
        m[jj * S: jj * S + self.cfg.hidden] = scale
        return m

    def _head_mask(self, G, nvalid):
        S, dh = self.L.S, self.cfg.head_dim
        m = np.zeros(S * G)
        for jj in range(nvalid):
            m[jj * S: jj * S + self.cfg.hidden: dh] = 1.0
        return m

    def _shift(self, i, G):
        c = np.zeros(self.L.S)
        c[: self.cfg.hidden] = np.repeat(self.approx[i].shift, self.cfg.head_dim)
        return np.tile(-c, G)

    def _den_correction(self, i, G, nvalid, ngroups):
        """What the invalid (padding) key blocks add to the denominator, so it can
        be taken off; padded feature slots are steered to x = 1/2 of the bound
        summed over the sentence's `ngroups` key groups. (Each group steering to
        1/2 put x = ngroups/2 there: x = 2 is where Goldschmidt's e = 1 - x sits
        at -1, and encryption noise made |e| > 1 and e^(2^k) overflow.)"""
        a = self.approx[i]
        S, h, dh = self.L.S, self.cfg.hidden, self.cfg.head_dim
        corr = np.zeros(S)
        corr[:h] = (G - nvalid) * np.repeat(a.exp_value(-a.shift), dh)
        corr[h:] = G * a.exp_value(0.0) - a.inv_bound / (2.0 * ngroups)
        return corr

    def _gs_range(self, i):
        return self.approx[i].inv_max

    # ---- blocks ---------------------------------------------------------
    def _pack(self, i, t, k, v, partials):
        """Add token t's k and v, masked to its block jj of its group, to this
        rank's partial group (sid, g0)."""
        ops, L = self.ops, self.L
        G = L.group_size(self.lengths[t.sid])
        g0 = t.pos // G * G
        jj = t.pos - g0
        k = ops.mul_plain(ops.view(ops.need(k, 1, f"L{i}/K/t{t.gid}"), L.S * G),
                          self._block_mask(G, jj, 1.0), ("blk", G, jj))
        # 1/B of the Goldschmidt normalisation rides on V for free
        v = ops.mul_plain(ops.view(ops.need(v, 1, f"L{i}/V/t{t.gid}"), L.S * G),
                          self._block_mask(G, jj, math.sqrt(self._gs_range(i)) / self.approx[i].inv_bound),
                          ("blkv", i, G, jj))
        key = (t.sid, g0)
        if key in partials:
            K, V = partials[key]
            k, v = ops.add(K, k), ops.add(V, v)
        partials[key] = (k, v)

    def attention(self, i, toks, gather):
        ops, W, a, L = self.ops, self.m.layers[i], self.approx[i], self.L
        qs, partials = {}, {}
        for t in toks:
            x = ops.need(t.x, 1, f"L{i}/qkv/t{t.gid}")
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
                    out = self._attend(i, t.gid, qs.pop(t.gid), groups, G)
                    o = ops.lintrans(ops.need(out, 1, f"L{i}/o/t{t.gid}"), W["o"])
                    o = ops.add_plain(o, W["bo"], ("bo", i))
                    t.x = self._layernorm(ops.add(t.x, o), W["g1"], W["b1"], a.invsqrt1, f"L{i}/ln1/t{t.gid}")
        return toks

    def _attend(self, i, gid, q, groups, G):
        ops, L, a = self.ops, self.L, self.approx[i]
        tag = f"L{i}/att/t{gid}"
        den = num = None
        for g0, nvalid, K, V in groups:
            tg = f"{tag}/g{g0}"
            p = _mul(ops, ops.view(q, L.S * G), K, tg + "/qk")
            p = _rotsum(ops, p, L.head_sum_steps())
            p = ops.mul_plain(ops.need(p, 1, tg + "/mask"), self._head_mask(G, nvalid), ("hm", G, nvalid))
            p = _rotsum(ops, p, [-s for s in L.head_sum_steps()])
            z = ops.add_plain(p, self._shift(i, G), ("shift", i, G))
            e = _cheb(ops, z, a.exp, tg + "/exp")
            for r in range(a.exp_squarings):
                e = ops.need(e, 1, f"{tg}/sq{r}")
                e = ops.mul(e, e)
            d = _rotsum(ops, e, L.block_sum_steps(G))
            d = ops.add_plain(d, -np.tile(self._den_correction(i, G, nvalid, len(groups)), G),
                              ("den", i, G, nvalid, len(groups)))
            n = _rotsum(ops, _mul(ops, e, V, tg + "/ev"), L.block_sum_steps(G))
            den = d if den is None else ops.add(den, d)
            num = n if num is None else ops.add(num, n)
        # Goldschmidt on x = den / B: 1/x = prod (1 + e^(2^k)), e = 1 - x
        e = ops.add_const(ops.mul_const(ops.need(den, 1, tag + "/gs0"), -1.0 / a.inv_bound), 1.0)
        acc = ops.add_const(e, 1.0)
        # 1/x reaches A = B/d_min; each factor carries A^(-1/2(n-1)) and V carries
        # sqrt(A), so neither side exceeds ~sqrt(A) (room under 2^62 / scale)
        c = self._gs_range(i) ** (-0.5 / max(1, a.inv_iterations - 1))
        for k in range(1, a.inv_iterations):
            # e keeps a level for the square, one for c(1 + e) and one for the
            # product with acc: f then never needs a refresh of its own
            e = ops.need(e, 3, f"{tag}/gs{k}e")
            e = ops.mul(e, e)
            f = ops.add_const(ops.mul_const(e, c), c)
            acc = _mul(ops, acc, f, f"{tag}/gs{k}a")
        res = _mul(ops, num, acc, tag + "/out")
        return ops.view(res, L.S)

    def ffn(self, i, toks):
        ops, W, a, L = self.ops, self.m.layers[i], self.approx[i], self.L
        for t in toks:
            x = ops.need(t.x, 1, f"L{i}/up/t{t.gid}")
            d = None
            for c in range(L.chunks):
                u = ops.add_plain(ops.lintrans(x, W["up"][c]), W["bup"][c], ("bup", i, c))
                g = _cheb(ops, u, a.gelu, f"L{i}/gelu{c}/t{t.gid}")
                y = ops.lintrans(ops.need(g, 1, f"L{i}/down{c}/t{t.gid}"), W["down"][c])
                d = y if d is None else ops.add(d, y)
            d = ops.add_plain(d, W["bd"], ("bd", i))
            t.x = self._layernorm(ops.add(x, d), W["g2"], W["b2"], a.invsqrt2, f"L{i}/ln2/t{t.gid}")
        return toks

    def _layernorm(self, h, gamma, beta, isq, tag):
        ops, L, n = self.ops, self.L, float(self.cfg.hidden)
        h = ops.need(h, 2, tag + "/in")
        s1 = _rotsum(ops, h, L.feature_sum_steps())
        s2 = _rotsum(ops, ops.mul(h, h), L.feature_sum_steps())
        m = ops.mul_const(s1, 1.0 / n)
        var = ops.sub(ops.mul_const(s2, 1.0 / n), _mul(ops, m, m, tag + "/m2"))
        var = ops.add_const(var, self.cfg.ln_eps)
        var = ops.need(var, isq.depth(), tag + "/isq")
        y = ops.cheb(var, isq)
        # vh comes from the refreshed var, so it lasts all the steps; y is
        # refreshed once per step at most (a step is two levels deep), never
        # per operand: 2-3 refreshes for three steps instead of a dozen
        vh = ops.mul_const(var, -0.5)
        for k in range(self.approx[0].invsqrt_newton):
            y = ops.need(y, 2, f"{tag}/n{k}")
            vh = ops.need(vh, 1, f"{tag}/n{k}v")
            t = ops.mul(ops.mul(vh, y), ops.mul(y, y))
            y = ops.add(ops.mul_const(y, 1.5), t)
        cg = ops.sub(ops.mul_plain(h, gamma, ("g", id(gamma))), ops.mul_plain(s1, gamma / n, ("gn", id(gamma))))
        return ops.add_plain(_mul(ops, cg, y, tag + "/y"), beta, ("b", id(beta)))
