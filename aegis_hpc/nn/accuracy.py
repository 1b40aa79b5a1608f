"""Accuracy of the encrypted encoder against the plaintext float model.

    python -m aegis_hpc.nn.accuracy --model minilm --preset demo [--layers K] [--start 0] [--limit 20] [--out FILE.json]
    mpirun -n 8 python -m aegis_hpc.nn.accuracy ...     # sentences split over the ranks

Generates keys, encrypts each sentence of inputs/sentences.txt, runs the
encrypted encoder (refresh through an in-process key holder), decrypts, and
prints per sentence the cosine similarity of the mean-pooled embedding with
the float64 reference model and with the plaintext mirror (same
approximations, no encryption), so approximation error and encryption noise
can be told apart. Exit 1 if any cosine is below 0.99.

Under MPI every rank is a whole client + server + key holder with its own
keys and takes sentences rank, rank + size, ...; there is no traffic but the
final gather. The run is bound by one-ciphertext-per-token kernel launches
and the key holder's CPU-side re-encryption, so several ranks share one GPU
well (the backend picks device local_rank % device count). A rank runs its
sentences as one batch, layer by layer, holding one layer's encoded weights
at a time (~7 GB at N=2^14), so each rank encodes the weights once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from ..backend import name as backend_name
from ..ckks import Context
from . import encrypted, mirror, models, reference
from .calibrate import default_sentences_path, read_sentences
from .ops import KeyHolder


def _comm():
    if not any(v in os.environ for v in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")):
        return None
    from mpi4py import MPI

    return MPI.COMM_WORLD


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aegis_hpc.nn.accuracy")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--start", type=int, default=0, help="skip this many sentences (split a run in parts)")
    ap.add_argument("--sentences", default=default_sentences_path())
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    comm = _comm()
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm else (0, 1)

    try:
        texts = read_sentences(a.sentences)
        if not 0 <= a.start < len(texts) or a.limit < 1:
            raise ValueError(f"--start {a.start} --limit {a.limit}: {a.sentences} has {len(texts)} sentences")
        texts = texts[a.start: a.start + a.limit]
        layers = models.config(a.model).layers if a.layers is None else a.layers
    except (OSError, ValueError) as e:
        if rank == 0:
            print(f"accuracy: error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    ctx = Context.from_preset(a.preset)
    sk, keys = ctx.keygen(rotations=models.required_rotations(a.model, ctx.params))
    slots = mirror.prepared(a.model, ctx.params.slots, layers).layout.S
    hidden = models.config(a.model).hidden
    key_holder = KeyHolder(ctx, sk)
    if rank == 0:
        print(f"{ctx.params.describe()}; backend {backend_name()}; model {a.model}, {layers} layer(s); "
              f"{len(texts)} sentences over {size} rank(s); keys in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    mine = list(range(rank, len(texts), size))
    if mine:
        emb = models.embed_text(a.model, [texts[i] for i in mine])
        cts = encrypted.encrypt_rows(ctx, keys, emb, slots)
        model = mirror.prepared(a.model, ctx.params.slots, layers)
        t1 = time.perf_counter()
        # the rank's sentences go through together, so each layer's weights are
        # encoded once per rank and dropped after it (device memory, see release)
        toks, ops = encrypted.run(ctx, keys, cts, a.model, layers=layers, key_holder=key_holder,
                                  on_block=lambda i, what: what == "ffn" and model.release(i))
        seconds = time.perf_counter() - t1
        n_tok = sum(len(x) for x in emb)
        mirror_refreshes = 0
        for sid, idx in enumerate(mine):
            dec = np.stack([ctx.decrypt(t.x, sk)[:hidden] for t in toks if t.sid == sid])
            mir, mstats = mirror.run(a.model, emb[sid:sid + 1], layers, ctx.params.slots, ctx.params.max_level)
            mirror_refreshes += mstats.refreshes
            ref = reference.encode(a.model, emb[sid], layers)
            pe, pm, pr = models.mean_pool(dec), models.mean_pool(mir[0]), models.mean_pool(ref)
            row = {
                "index": a.start + idx, "text": texts[idx], "tokens": int(dec.shape[0]), "rank": rank,
                "cosine_vs_float": models.cosine(pe, pr),
                "cosine_mirror_vs_float": models.cosine(pm, pr),
                "cosine_vs_mirror": models.cosine(pe, pm),
                "max_abs_vs_mirror": float(np.abs(dec - mir[0]).max()),
                "max_abs_vs_float": float(np.abs(dec - ref).max()),
                # refresh points are per token, so the mirror's count is this sentence's
                "refreshes": int(mstats.refreshes),
                # the batch's time shared out by tokens (not timed on its own)
                "seconds_token_share": seconds * dec.shape[0] / n_tok,
                "rank_batch_seconds": seconds, "rank_batch_sentences": len(mine),
            }
            rows.append(row)
            print(f"[{a.start + idx:2d} r{rank}] cos={row['cosine_vs_float']:.6f} (mirror {row['cosine_mirror_vs_float']:.6f}, "
                  f"enc/mirror {row['cosine_vs_mirror']:.8f}) max|enc-mirror|={row['max_abs_vs_mirror']:.2e} "
                  f"{row['tokens']} tokens {row['refreshes']} refreshes  {texts[idx]!r}", flush=True)
        if key_holder.count != mirror_refreshes:
            print(f"accuracy: rank {rank}: {key_holder.count} key-holder round trips, the mirror predicts "
                  f"{mirror_refreshes}", file=sys.stderr)
        print(f"rank {rank}: {len(mine)} sentences, {n_tok} tokens, {key_holder.count} refreshes in {seconds:.1f} s",
              flush=True)
        if a.out:  # before the gather, so a run cut short still leaves its figures
            _write(_part(a.out, rank, size), a, layers, ctx, rows, size, time.perf_counter() - t0)
    if comm:
        gathered = comm.gather(rows, root=0)
        if rank != 0:
            return 0
        rows = [r for part in gathered for r in part]
    if not rows:
        print("accuracy: error: no sentences", file=sys.stderr)
        return 2
    rows.sort(key=lambda r: r["index"])
    wall = time.perf_counter() - t0
    if a.out:
        _write(a.out, a, layers, ctx, rows, size, wall)
        if size > 1:
            for r in range(size):
                if os.path.exists(_part(a.out, r, size)):
                    os.remove(_part(a.out, r, size))
    worst = min(r["cosine_vs_float"] for r in rows)
    print(f"{len(rows)} sentences: min cosine {worst:.6f}, mean {np.mean([r['cosine_vs_float'] for r in rows]):.6f} "
          f"(mirror min {min(r['cosine_mirror_vs_float'] for r in rows):.6f}); "
          f"{sum(r['refreshes'] for r in rows)} refreshes; {wall:.0f} s wall on {size} rank(s); "
          f"refresh mode: client (the key holder saw intermediate values)")
    return 0 if worst >= 0.99 else 1


def _part(path, rank, size):
    return path if size == 1 else f"{path}.rank{rank}"


def _write(path, a, layers, ctx, rows, ranks, wall):
    from ..benchmarks.machine import describe

    with open(path, "w") as f:
        json.dump({"model": a.model, "preset": a.preset, "layers": layers, "backend": backend_name(),
                   "params": ctx.params.describe(), "ranks": ranks, "wall_seconds": wall,
                   "refresh": "client (in-process key holder)", "machine": describe(backend_name()),
                   "min_cosine_vs_float": min(r["cosine_vs_float"] for r in rows),
                   "sentences": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
