"""Client-side check: cosine similarity of decrypted outputs with the plaintext float model.

    python -m aegis_hpc.nn.check --model tiny --layers 1 --text "..." --decrypted o1.npy [--text ... --decrypted ...]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import models, reference


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m aegis_hpc.nn.check")
    ap.add_argument("--model", required=True)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--text", action="append", required=True)
    ap.add_argument("--decrypted", action="append", required=True, help=".npy from client decrypt")
    a = ap.parse_args(argv)
    if len(a.text) != len(a.decrypted):
        print("check: error: give one --decrypted per --text", file=sys.stderr)
        return 2
    worst = 1.0
    for text, path in zip(a.text, a.decrypted):
        dec = np.load(path)
        ref = reference.encode(a.model, models.embed_text(a.model, [text])[0], a.layers)
        if dec.shape != ref.shape:
            print(f"check: error: {path} is {dec.shape}, the model gives {ref.shape} for this text", file=sys.stderr)
            return 2
        c = models.cosine(models.mean_pool(dec), models.mean_pool(ref))
        worst = min(worst, c)
        print(f"cosine(encrypted, plaintext {a.model}) = {c:.6f}  max|diff| = {np.abs(dec - ref).max():.2e}  {text!r}")
    return 0 if worst >= 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())
