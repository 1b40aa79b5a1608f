"""Calibration: the measured part of the encoder's domains (nn/domains.py).

    python -m aegis_hpc.nn.calibrate --model minilm [--passages inputs/calibration/passages.txt] [--show]

Runs the float model on the calibration corpus (inputs/calibration/, real
text disjoint from the validation corpus inputs/validation/) and records,
per layer, what nn/domains.py cannot bound from the weights: the spread of
the attention scores around their row mean, per head; the variance at each
LayerNorm; the largest |LayerNorm input|. Models longer than the corpus's
passages (bert-base: 2048 positions) are also run on passages joined up to
their full length, so every position is seen. Written to
aegis_hpc/nn/calibration/<model>.json; Domains adds the margins.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import models, reference

CORPUS_PASSAGES = 512   # the corpora's passages are at most this many tokens


def _inputs_dir():
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "inputs")


def default_sentences_path():
    """Two short sentences for the quick demo and examples (not a calibration set)."""
    return os.path.join(_inputs_dir(), "sentences.txt")


def calibration_corpus_path():
    return os.path.join(_inputs_dir(), "calibration", "passages.txt")


def validation_corpus_path():
    return os.path.join(_inputs_dir(), "validation", "passages.txt")


def read_sentences(path):
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]


def token_ids(name, passages):
    """Token ids per passage; a passage longer than the model allows is an error naming its line."""
    cfg = models.config(name)
    out = []
    for line, text in enumerate(passages, 1):
        try:
            out.extend(models.tokenize([text], cfg.max_positions))
        except models.ModelError as e:
            raise models.ModelError(f"line {line}: {e}") from None
    return out


def joined(ids_list, length):
    """Passages joined ([CLS] a [SEP] b [SEP] ...) into sequences of `length` tokens."""
    cls, sep = int(ids_list[0][0]), int(ids_list[0][-1])
    out, cur = [], [cls]
    for ids in ids_list:
        cur.extend(int(t) for t in ids[1:])
        while len(cur) >= length:
            out.append(np.array(cur[: length - 1] + [sep]))
            cur = [cls]
    return out


def layer_stats(name, i, x):
    """The float model's layer i on x (tokens x hidden), and what calibration records of it."""
    t = {}
    out = reference.encoder_layer(name, i, x, t)
    s, h1, h2, u = t["s"], t["h1"], t["h2"], t["u"]
    mean = s.mean(-1)
    stats = {
        "score_above_mean": (s.max(-1) - mean).max(-1), "score_below_mean": (mean - s.min(-1)).max(-1),
        "var1": (h1.var(-1).min(), h1.var(-1).max()), "var2": (h2.var(-1).min(), h2.var(-1).max()),
        "residual_abs": max(np.abs(h1).max(), np.abs(h2).max()), "gelu": (u.min(), u.max()),
        "score_abs": np.abs(s).max(),
    }
    return out, stats


def _merge(acc, st):
    if not acc:
        return {k: (np.array(v, dtype=np.float64) if k.startswith("score") else v) for k, v in st.items()}
    acc["score_above_mean"] = np.maximum(acc["score_above_mean"], st["score_above_mean"])
    acc["score_below_mean"] = np.maximum(acc["score_below_mean"], st["score_below_mean"])
    for key in ("var1", "var2", "gelu"):
        acc[key] = (min(acc[key][0], st[key][0]), max(acc[key][1], st[key][1]))
    acc["residual_abs"] = max(acc["residual_abs"], st["residual_abs"])
    acc["score_abs"] = max(acc["score_abs"], st["score_abs"])
    return acc


def windows(name, passages):
    """Token ids of every passage; one longer than the model allows is cut into
    consecutive windows of its maximum length (calibration wants every token seen)."""
    cfg = models.config(name)
    out = []
    for ids in models.tokenize(passages, 1 << 30):
        cls, sep, body = int(ids[0]), int(ids[-1]), [int(t) for t in ids[1:-1]]
        step = cfg.max_positions - 2
        for lo in range(0, max(1, len(body)), step):
            out.append(np.array([cls] + body[lo:lo + step] + [sep]))
    return out


def calibrate(name: str, passages) -> dict:
    cfg = models.config(name)
    ids = windows(name, passages)
    if cfg.max_positions > CORPUS_PASSAGES:
        ids = ids + joined(ids, cfg.max_positions) + joined(ids, cfg.max_positions // 2)
    acc = [dict() for _ in range(cfg.layers)]
    for seq in ids:
        x = models.embed_ids(name, seq)
        for i in range(cfg.layers):
            x, st = layer_stats(name, i, x)
            acc[i] = _merge(acc[i], st)
    layers = {}
    for i, a in enumerate(acc):
        layers[str(i)] = {
            "score_above_mean": [float(v) for v in a["score_above_mean"]],
            "score_below_mean": [float(v) for v in a["score_below_mean"]],
            "var1": [float(v) for v in a["var1"]], "var2": [float(v) for v in a["var2"]],
            "residual_abs": float(a["residual_abs"]), "gelu_seen": [float(v) for v in a["gelu"]],
            "score_abs": float(a["score_abs"]),
        }
    from .domains import CALIBRATION_FORMAT

    return {"format": CALIBRATION_FORMAT, "model": cfg.name, "config": cfg.to_dict(),
            "corpus": "inputs/calibration/passages.txt", "passages": len(passages),
            "sequences": len(ids), "longest": int(max(len(s) for s in ids)), "layers": layers}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m aegis_hpc.nn.calibrate", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--passages", default=calibration_corpus_path())
    ap.add_argument("--show", action="store_true", help="print the domains of the stored calibration and exit")
    a = ap.parse_args(argv)
    try:
        if a.show:
            from .domains import Domains, describe

            print("\n".join(describe(Domains(a.model))))
            return 0
        cal = calibrate(a.model, read_sentences(a.passages))
    except (OSError, models.ModelError) as e:
        print(f"calibrate: error: {e}", file=sys.stderr)
        return 2
    path = models.calibration_path(a.model)
    with open(path, "w") as f:
        json.dump(cal, f, indent=1)
    print(f"wrote {path} ({cal['sequences']} sequences, longest {cal['longest']} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
