"""Calibration: input ranges of every approximated function, from plaintext
runs of the float model on the sentences in inputs/, stored with the model
(aegis_hpc/nn/calibration/<model>.json).

    python -m aegis_hpc.nn.calibrate --model minilm [--sentences inputs/sentences.txt]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from . import models, reference


def default_sentences_path():
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "inputs", "sentences.txt")


def read_sentences(path):
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]


def calibrate(name: str, sentences) -> dict:
    cfg = models.config(name)
    rec = {}
    for x in models.embed_text(name, sentences):
        reference.encode(name, x, record=rec)
    out = {"model": cfg.name, "config": cfg.to_dict(), "sentences": len(sentences), "layers": {}}
    for i, r in rec.items():
        # per head: heads live in separate slot blocks, so each gets its own shift
        smax = np.max([s.max(axis=(1, 2)) for s in r["_s"]], axis=0)
        smin = np.min([s.min(axis=(1, 2)) for s in r["_s"]], axis=0)
        dens = [np.exp(s - smax[:, None, None]).sum(-1) for s in r["_s"]]
        out["layers"][str(i)] = {
            "scores": [float(smin.min()), float(smax.max())],
            "head_max": smax.tolist(), "head_min": smin.tolist(),
            "den": [float(min(d.min() for d in dens)), float(max(d.max() for d in dens))],
            "var1": [min(a for a, _ in r["var1"]), max(b for _, b in r["var1"])],
            "var2": [min(a for a, _ in r["var2"]), max(b for _, b in r["var2"])],
            "gelu": [min(a for a, _ in r["gelu"]), max(b for _, b in r["gelu"])],
            "max_abs": max(r["abs"]),
        }
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m aegis_hpc.nn.calibrate")
    ap.add_argument("--model", required=True)
    ap.add_argument("--sentences", default=default_sentences_path())
    a = ap.parse_args(argv)
    cal = calibrate(a.model, read_sentences(a.sentences))
    path = models.calibration_path(a.model)
    with open(path, "w") as f:
        json.dump(cal, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
