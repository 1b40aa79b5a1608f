"""Plaintext float64 BERT encoder, written independently of the encrypted path.

Exact operations (erf GELU, softmax with max subtraction, exact LayerNorm):
this is "the plaintext model" every accuracy figure is measured against. Its
intermediate values can be tapped (calibration measures what the
approximations' domains need from them).
"""

from __future__ import annotations

import math

import numpy as np

from .models import config, embed_text, layer_norm, mean_pool, weights

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def encoder_layer(name: str, i: int, x: np.ndarray, taps: dict | None = None) -> np.ndarray:
    """Layer i on x (tokens x hidden). `taps`, if given, receives the attention
    scores s (heads x tokens x tokens), the LayerNorm inputs h1, h2 and the
    GELU input u."""
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
    if taps is not None:
        taps.update(s=s, h1=h1, h2=h2, u=u)
    return x2


def encode(name: str, x: np.ndarray, layers: int | None = None) -> np.ndarray:
    cfg = config(name)
    for i in range(cfg.layers if layers is None else layers):
        x = encoder_layer(name, i, x)
    return x


def sentence_embeddings(name: str, texts, layers: int | None = None) -> np.ndarray:
    return np.stack([mean_pool(encode(name, x, layers)) for x in embed_text(name, texts)])
