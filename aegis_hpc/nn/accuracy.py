"""Accuracy of the encrypted encoder against the plaintext float model, in one process.

    python -m aegis_hpc.nn.accuracy --model minilm --preset demo [--layers K] [--limit 20] [--out FILE.json]

Generates keys, encrypts each sentence of inputs/sentences.txt, runs the
encrypted encoder (refresh through an in-process key holder), decrypts, and
prints per sentence the cosine similarity of the mean-pooled embedding with
the float64 reference model and with the plaintext mirror (same
approximations, no encryption), so approximation error and encryption noise
can be told apart. Exit 1 if any cosine is below 0.99.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from ..backend import name as backend_name
from ..ckks import Context
from . import encrypted, mirror, models, reference
from .calibrate import default_sentences_path, read_sentences
from .ops import KeyHolder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aegis_hpc.nn.accuracy")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--sentences", default=default_sentences_path())
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    ctx = Context.from_preset(a.preset)
    sk, keys = ctx.keygen(rotations=models.required_rotations(a.model, ctx.params))
    layers = models.config(a.model).layers if a.layers is None else a.layers
    slots = mirror.prepared(a.model, ctx.params.slots, layers).layout.S
    hidden = models.config(a.model).hidden
    key_holder = KeyHolder(ctx, sk)
    print(f"{ctx.params.describe()}; backend {backend_name()}; model {a.model}, {layers} layer(s); "
          f"keys in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    for text in read_sentences(a.sentences)[: a.limit]:
        t1 = time.perf_counter()
        emb = models.embed_text(a.model, [text])
        cts = encrypted.encrypt_rows(ctx, keys, emb, slots)
        toks, ops = encrypted.run(ctx, keys, cts, a.model, layers=layers, key_holder=key_holder)
        dec = np.stack([ctx.decrypt(t.x, sk)[:hidden] for t in toks])
        mir, _ = mirror.run(a.model, emb, layers, ctx.params.slots, ctx.params.max_level)
        ref = reference.encode(a.model, emb[0], layers)
        row = {
            "text": text, "tokens": int(dec.shape[0]), "seconds": time.perf_counter() - t1,
            "cosine_vs_float": models.cosine(models.mean_pool(dec), models.mean_pool(ref)),
            "cosine_mirror_vs_float": models.cosine(models.mean_pool(mir[0]), models.mean_pool(ref)),
            "max_abs_vs_mirror": float(np.abs(dec - mir[0]).max()),
            "max_abs_vs_float": float(np.abs(dec - ref).max()),
            "refreshes": int(ops.stats.refreshes),
        }
        rows.append(row)
        print(f"cos={row['cosine_vs_float']:.6f} (mirror {row['cosine_mirror_vs_float']:.6f}) "
              f"max|enc-mirror|={row['max_abs_vs_mirror']:.2e} {row['tokens']} tokens "
              f"{row['seconds']:.1f} s {row['refreshes']} refreshes  {text!r}", flush=True)
        if a.out:  # after every sentence, so a run cut short still leaves its figures
            _write(a.out, a, layers, ctx, rows)
    worst = min(r["cosine_vs_float"] for r in rows)
    print(f"{len(rows)} sentences: min cosine {worst:.6f}, mean {np.mean([r['cosine_vs_float'] for r in rows]):.6f}; "
          f"refresh mode: client (the key holder saw intermediate values)")
    return 0 if worst >= 0.99 else 1


def _write(path, a, layers, ctx, rows):
    with open(path, "w") as f:
        json.dump({"model": a.model, "preset": a.preset, "layers": layers, "backend": backend_name(),
                   "params": ctx.params.describe(), "sentences": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
