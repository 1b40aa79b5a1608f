"""Accuracy of the encoder's approximations against the plaintext float model.

    python -m aegis_hpc.nn.accuracy --mirror-only --sentences FILE [--model minilm] [--layers K] [--out acc.json]
    python -m aegis_hpc.nn.accuracy --model minilm --preset demo [--layers K] [--start 0] [--limit 20] [--out FILE.json]
    mpirun -n 8 python -m aegis_hpc.nn.accuracy ...     # sentences split over the ranks

--mirror-only: no encryption, CPU only. Every line of FILE is a passage; for
each, the float mirror (nn.mirror.encode: the approximations without
encryption) against the float model: token count, cosine of the mean-pooled
outputs, and how much of its domain each site used (largest |value| over its
bound, or a polynomial input's |y| on [-1, 1]). Exit 1 if any cosine is below
0.99 or any value left its domain; a passage longer than the model allows is
a one-line error naming its line (exit 2). --out also writes a table per
length bucket next to the JSON (FILE.md).

Without --mirror-only:

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
from ..backend import to_numpy
from ..ckks import Context
from . import encrypted, mirror, models, reference
from .calibrate import read_sentences, validation_corpus_path
from .ops import KeyHolder


def _comm():
    if not any(v in os.environ for v in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")):
        return None
    from mpi4py import MPI

    return MPI.COMM_WORLD


BUCKETS = ((8, 32), (33, 128), (129, 256), (257, 512), (513, 2048))


def read_passages(path):
    """Every non-blank line is a passage (nothing is a comment): (line number, text)."""
    with open(path) as f:
        return [(n, ln.strip()) for n, ln in enumerate(f, 1) if ln.strip()]


def join_passages(name, passages, length):
    """Consecutive passages joined (with spaces) into texts of at most `length` tokens,
    each as long as the next passage allows: long inputs made of real text."""
    out, cur, first = [], [], None
    for line, text in passages:
        trial = " ".join(cur + [text])
        if cur and len(models.tokenize([trial], 1 << 30)[0]) > length:
            out.append((first, " ".join(cur)))
            cur, first = [], None
        if len(models.tokenize([text], 1 << 30)[0]) <= length:
            first = line if first is None else first
            cur.append(text)
    if cur:
        out.append((first, " ".join(cur)))
    return out


def mirror_only(a) -> int:
    """The float mirror against the float model on every passage of a file."""
    try:
        passages = read_passages(a.sentences)
        if not passages:
            raise ValueError(f"{a.sentences} holds no passage")
        if a.join:
            passages = join_passages(a.model, passages, a.join)
        cfg = models.config(a.model)
        layers = cfg.layers if a.layers is None else a.layers
        if not 1 <= layers <= cfg.layers:
            raise ValueError(f"--layers {layers}: model {cfg.name} has {cfg.layers}")
        ids = []
        for line, text in passages:
            try:
                ids.append(models.tokenize([text], cfg.max_positions)[0])
            except models.ModelError as e:
                raise ValueError(f"{a.sentences}, line {line}: {e}") from None
    except (OSError, ValueError) as e:
        print(f"accuracy: error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    rows, site_max = [], {}
    for (line, text), seq in zip(passages, ids):
        x = models.embed_ids(a.model, seq)
        out, stats = mirror.encode(a.model, x, layers)
        ref = reference.encode(a.model, x, layers)
        site, use = stats.worst()
        for key, u in stats.domain_use.items():
            site_max[key] = max(site_max.get(key, 0.0), u)
        rows.append({"line": line, "tokens": int(len(seq)),
                     "cosine": models.cosine(models.mean_pool(out), models.mean_pool(ref)),
                     "max_abs_vs_float": float(np.abs(out - ref).max()), "finite": bool(np.all(np.isfinite(out))),
                     "worst_site": site, "worst_use": use})
        r = rows[-1]
        print(f"line {line:4d}: {r['tokens']:4d} tokens  cos={r['cosine']:.6f}  max|diff|={r['max_abs_vs_float']:.2e}  "
              f"largest domain use {use:.4f} ({site})", flush=True)
    table = bucket_table(rows)
    bad = [r for r in rows if not (r["cosine"] >= 0.99 and r["worst_use"] < 1.0 and r["finite"])]
    print("\n".join(table))
    print(f"{len(rows)} passages, {a.model}, {layers} layer(s): min cosine {min(r['cosine'] for r in rows):.10f}, "
          f"largest domain use {max(r['worst_use'] for r in rows):.7f}; {time.perf_counter() - t0:.0f} s; "
          f"{'FAILED: ' + str(len(bad)) + ' passage(s)' if bad else 'all within bounds'}")
    if a.out:
        from ..benchmarks.machine import describe

        with open(a.out, "w") as f:
            json.dump({"model": a.model, "layers": layers, "passages_file": a.sentences, "mode": "mirror-only",
                       "machine": describe("numpy"), "min_cosine": min(r["cosine"] for r in rows),
                       "max_domain_use": max(r["worst_use"] for r in rows), "buckets": table,
                       "site_max_use": dict(sorted(site_max.items())), "passages": rows}, f, indent=1)
        with open(os.path.splitext(a.out)[0] + ".md", "w") as f:
            f.write(f"# Mirror vs float model: {a.model}, {layers} layer(s), `{a.sentences}`\n\n"
                    + "\n".join(table) + "\n")
    return 1 if bad else 0


def bucket_table(rows):
    out = ["| tokens | passages | worst cosine | mean cosine | largest domain use | at site |",
           "|---|---|---|---|---|---|"]
    for lo, hi in BUCKETS:
        rs = [r for r in rows if lo <= r["tokens"] <= hi]
        if not rs:
            continue
        worst = max(rs, key=lambda r: r["worst_use"])
        # "1.000000" would hide both the cosine's distance from 1 and a use of 0.99999 vs 1
        out.append(f"| {lo}-{hi} | {len(rs)} | {min(r['cosine'] for r in rs):.10f} | "
                   f"{np.mean([r['cosine'] for r in rs]):.10f} | {worst['worst_use']:.7f} | {worst['worst_site']} |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aegis_hpc.nn.accuracy")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--mirror-only", action="store_true",
                    help="float mirror vs float model on every line of --sentences, no encryption")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--start", type=int, default=0, help="skip this many sentences (split a run in parts)")
    ap.add_argument("--sentences", default=None,
                    help="passages, one a line (default: inputs/validation/passages.txt)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--join", type=int, default=0, metavar="TOKENS",
                    help="--mirror-only: join consecutive passages into inputs of up to TOKENS tokens "
                         "(long sequences of real text, e.g. 2048 for bert-base); lines are then the first joined")
    a = ap.parse_args(argv)
    if a.sentences is None:
        a.sentences = validation_corpus_path()
    if a.mirror_only:
        return mirror_only(a)
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
    hidden = models.config(a.model).hidden
    key_holder = KeyHolder(ctx, sk)
    if rank == 0:
        print(f"{ctx.params.describe()}; backend {backend_name()}; model {a.model}, {layers} layer(s); "
              f"{len(texts)} sentences over {size} rank(s); keys in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    mine = list(range(rank, len(texts), size))
    if mine:
        emb = models.embed_text(a.model, [texts[i] for i in mine])
        lengths = [len(x) for x in emb]
        layout = encrypted.layout_for(ctx, a.model, lengths, layers)
        cts = encrypted.encrypt_blocks(ctx, sk, emb, layout)
        model = mirror.prepared(a.model, ctx.params.slots, layers, layout.S)
        t1 = time.perf_counter()
        # the rank's sentences go through together, so each layer's weights are
        # encoded once per rank and dropped after it (device memory, see release)
        blks, ops = encrypted.run(ctx, keys, cts, a.model, layers=layers, key_holder=key_holder, lengths=lengths,
                                  row_width=layout.S, on_block=lambda i, what: what == "ffn" and model.release(i))
        seconds = time.perf_counter() - t1
        n_tok = sum(len(x) for x in emb)
        mirror_refreshes = 0
        for sid, idx in enumerate(mine):
            mine_s = sorted((b for b in blks if b.sid == sid), key=lambda b: b.idx)
            dec = layout.unpack([[to_numpy(ctx.decrypt(c, sk)) for c in b.x] for b in mine_s], lengths[sid], hidden)
            mir, mstats = mirror.run(a.model, emb[sid:sid + 1], layers, ctx.params.slots, ctx.params.max_level,
                                     row_width=layout.S)
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
