"""Plaintext float64 BERT encoder, written independently of the encrypted path.

Exact operations (erf GELU, softmax with max subtraction, exact LayerNorm):
this is "the plaintext model" every accuracy figure is measured against. It
can record the ranges the encrypted path needs (calibration).
"""

from __future__ import annotations

import math

import numpy as np

from .models import config, embed_text, layer_norm, mean_pool, weights

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def encoder_layer(name: str, i: int, x: np.ndarray, record: dict | None = None) -> np.ndarray:
    cfg, w = config(name), weights(name)
    p = f"encoder.layer.{i}."
    T, h, H, dh = x.shape[0], cfg.hidden, cfg.heads, cfg.head_dim

    def lin(v, key):
        return v @ w[p + key + ".weight"].T + w[p + key + ".bias"]

    q = lin(x, "attention.self.query").reshape(T, H, dh).transpose(1, 0, 2)
    k = lin(x, "attention.self.key").reshape(T, H, dh).transpose(1, 0, 2)
    v = lin(x, "attention.self.value").reshape(T, H, dh).transpose(1, 0, 2)
    s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)           # (H, T, T)
    m = s.max(-1, keepdims=True)
    e = np.exp(s - m)
    a = e / e.sum(-1, keepdims=True)
    ctx = (a @ v).transpose(1, 0, 2).reshape(T, h)
    h1 = x + lin(ctx, "attention.output.dense")
    x1 = layer_norm(h1, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], cfg.ln_eps)
    u = lin(x1, "intermediate.dense")
    h2 = x1 + lin(gelu(u), "output.dense")
    x2 = layer_norm(h2, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], cfg.ln_eps)
    if record is not None:
        r = record.setdefault(i, {"scores": [], "den_shift": [], "var1": [], "var2": [], "gelu": [], "abs": []})
        r["scores"].append((float(s.min()), float(s.max())))
        r["var1"].append((float(h1.var(-1).min()), float(h1.var(-1).max())))
        r["var2"].append((float(h2.var(-1).min()), float(h2.var(-1).max())))
        r["gelu"].append((float(u.min()), float(u.max())))
        r["abs"].append(float(max(np.abs(h1).max(), np.abs(h2).max(), np.abs(u).max())))
        r.setdefault("_s", []).append(s)
    return x2


def encode(name: str, x: np.ndarray, layers: int | None = None, record: dict | None = None) -> np.ndarray:
    cfg = config(name)
    for i in range(cfg.layers if layers is None else layers):
        x = encoder_layer(name, i, x, record)
    return x


def sentence_embeddings(name: str, texts, layers: int | None = None) -> np.ndarray:
    return np.stack([mean_pool(encode(name, x, layers)) for x in embed_text(name, texts)])
