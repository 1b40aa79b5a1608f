"""Encrypted encoder inference over MPI ranks.

    mpirun -n 2 python -m aegis_hpc.infer --model tiny --keys eval.h5 \
        --input s1.h5 [s2.h5 ...] --output o1.h5 [o2.h5 ...] \
        [--strategy aegis|replicate] [--layers K] [--refresh client|bootstrap|none] \
        [--key-holder secret.h5] [--seed HEX]

Each input file is one encrypted sequence (tokens x features, one ciphertext
per token, as `python -m aegis_hpc.client encrypt --text ... --model NAME`
writes it); each output is the encrypted final hidden state of that
sequence, written as one shard per rank plus an index file.

Strategy `aegis` shards tokens across ranks: linear layers, GELU, LayerNorm
and residuals are token-local (no traffic); attention all-gathers k and v.
`replicate` runs every token on every rank (no traffic, no speed-up), as a
baseline. `limb` needs a limb-sharded evaluator from aegis_hpc.dist and is
refused until one exists.

--refresh client: where levels run out, ciphertexts go to the KEY HOLDER
(the owner of the secret key, --key-holder) to be decrypted and re-encrypted.
THE KEY HOLDER SEES THOSE INTERMEDIATE VALUES; this is not a server-only
computation. The count of these round trips is printed and stored.
--refresh bootstrap uses Evaluator.bootstrap (refused while it does not exist).
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import sys
import time

import numpy as np


class UsageError(ValueError):
    pass


class Refused(RuntimeError):
    """Validation failed on some rank; every rank exits with the message."""


def _one_line(e):
    from .io import FormatError

    msg = str(e).splitlines()[0] if str(e) else ""
    known = isinstance(e, (UsageError, FormatError, FileNotFoundError, OSError, ValueError, KeyError))
    return msg if known and msg else f"{type(e).__name__}: {msg}"


def _parse(argv):
    ap = argparse.ArgumentParser(prog="python -m aegis_hpc.infer", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--keys", required=True, help="evaluation keys (eval.h5)")
    ap.add_argument("--input", required=True, nargs="+", help="one ciphertext file per sequence")
    ap.add_argument("--output", required=True, nargs="+", help="one output file per input")
    ap.add_argument("--strategy", default="aegis", choices=["aegis", "limb", "replicate"])
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--refresh", default="client", choices=["client", "bootstrap", "none"])
    ap.add_argument("--key-holder", help="secret key of the key holder (--refresh client only)")
    ap.add_argument("--seed", default=None, help="hex seed of the key holder's re-encryption stream "
                    "(reproducible runs); default random")
    ap.add_argument("--force", action="store_true", help="replace existing outputs")
    return ap.parse_args(argv)


class Comm:
    """The k/v all-gather of attention, over mpi4py. One function to swap for
    aegis_hpc.dist's nonblocking iallgather once token payloads go through it."""

    def __init__(self, mpi_comm):
        self.c = mpi_comm
        self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()
        self.bytes = 0

    def gather_tokens(self, items):
        if self.size == 1:
            return items
        payload = pickle.dumps([(g, _pack(k), _pack(v)) for g, k, v in items], protocol=5)
        self.bytes += len(payload) * (self.size - 1)
        parts = self.c.allgather(payload)
        out = []
        for r, p in enumerate(parts):
            if r == self.rank:
                out.extend(items)
            else:
                out.extend((g, _unpack(k), _unpack(v)) for g, k, v in pickle.loads(p))
        return sorted(out, key=lambda t: t[0])


def _pack(ct):
    return (np.asarray(ct.data), ct.level, ct.scale, ct.slots, ct.fingerprint, ct.is_complex)


def _unpack(t):
    from .ckks import Ciphertext

    return Ciphertext(data=t[0], level=t[1], scale=t[2], slots=t[3], fingerprint=t[4], is_complex=t[5])


def _peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(args, comm) -> int:
    from . import io
    from .ckks import Context
    from .nn import approx as approx_mod
    from .nn import encrypted, models
    from .nn.mirror import prepared
    from .nn.ops import KeyHolder

    rank, size = comm.rank, comm.size
    err = None
    run_seed = comm.c.bcast(os.urandom(32) if rank == 0 else None)
    try:
        say = (lambda *a: print(*a, flush=True)) if rank == 0 else (lambda *a: None)
        cfg = models.config(args.model)
        layers = cfg.layers if args.layers is None else args.layers
        if not 1 <= layers <= cfg.layers:
            raise UsageError(f"--layers {layers}: model {cfg.name} has {cfg.layers}")
        if len(args.input) != len(args.output):
            raise UsageError(f"{len(args.input)} inputs but {len(args.output)} outputs")
        if args.strategy == "limb":
            raise UsageError("strategy limb needs a limb-sharded evaluator from aegis_hpc.dist (not available yet)")
        for o in args.output:
            io.check_output(o, args.force)
        ctx, keys = io.read_eval_keys(args.keys)
        params = ctx.params
        layout = prepared(args.model, params.slots, layers).layout
        missing = [r for r in models.required_rotations(args.model, params) if r not in _rotations_of(keys, params)]
        if missing:
            raise UsageError(f"{args.keys}: no rotation keys for steps {missing[:6]}{'...' if len(missing) > 6 else ''} "
                             f"(make keys with keygen --for-model {cfg.name})")
        key_holder = None
        if args.refresh == "client":
            if not args.key_holder:
                raise UsageError("--refresh client needs --key-holder SECRET.h5 (the key holder sees intermediate values)")
            hctx, sk = io.read_secret_key(args.key_holder)
            if hctx.params.fingerprint != params.fingerprint:
                raise UsageError(f"key holder's key is for parameters {hctx.params.fingerprint[:16]}…, "
                                 f"evaluation keys for {params.fingerprint[:16]}…")
            import h5py

            with h5py.File(args.keys, "r") as f:
                eval_id = f.attrs.get("key_id")
            eval_id = eval_id.decode() if isinstance(eval_id, bytes) else eval_id
            if eval_id and eval_id != io.secret_key_id(sk):
                raise UsageError(f"{args.keys} belongs to secret key {eval_id}, the key holder's is "
                                 f"{io.secret_key_id(sk)}: keys do not match")
            seed = bytes.fromhex(args.seed) if args.seed else run_seed
            key_holder = KeyHolder(ctx, sk, seed=seed)
        elif args.refresh == "bootstrap":
            try:
                ctx.evaluator(keys).bootstrap(None)
            except NotImplementedError as e:
                raise UsageError(f"--refresh bootstrap: {e}") from None
            except Exception:
                pass

        tensors = []
        for path in args.input:
            t = io.read_ciphertexts(path, params)
            T, F = int(t.shape[0]), int(t.shape[1])
            if F != cfg.hidden or t.packing != io.ROW_PER_CIPHERTEXT:
                raise UsageError(f"{path}: {T} x {F} ({t.packing}); model {cfg.name} needs rows of {cfg.hidden} features")
            if T > cfg.max_positions:
                raise UsageError(f"{path}: sequence of {T} tokens is longer than the {cfg.max_positions} model {cfg.name} allows")
            ct0 = t.ciphertexts[0]
            if ct0.slots != layout.S:
                raise UsageError(f"{path}: {ct0.slots} slots per token, the {layout.name} layout needs {layout.S}")
            need = MIN_INPUT_LEVEL if args.refresh != "none" else params.max_level
            if ct0.level < need:
                raise UsageError(f"{path}: ciphertexts at level {ct0.level}, model {cfg.name} needs at least {need} "
                                 f"(encrypt at the top level, {params.max_level})")
            tensors.append(t)
        approx_mod.build(models.load_calibration(args.model), layers, params.max_level)
    except Exception as e:
        err = _one_line(e)
    # all ranks learn whether any rank failed to validate, so none waits in a collective
    errs = comm.c.allgather(err)
    if any(errs):
        r = next(i for i, x in enumerate(errs) if x)
        raise Refused(errs[rank] or f"rank {r}: {errs[r]}")
    # every rank has validated everything: from here a failure is a bug or a peer dying -> abort
    lengths = [len(t.ciphertexts) for t in tensors]
    total = sum(lengths)
    if args.strategy == "aegis":
        from .io import rank_range

        sl = rank_range(total, rank, size)
        mine = set(range(sl.start, sl.stop))
    else:
        mine = set(range(total))
    cts = [t.ciphertexts for t in tensors]
    say(f"aegis_hpc.infer: model {cfg.name}, {layers} layer(s), {len(cts)} sequence(s), {total} tokens, "
        f"{size} rank(s), strategy {args.strategy}, {params.describe()}")
    say(f"  {layout.describe()}")
    if args.refresh == "client":
        say("  REFRESH MODE: client -- ciphertexts that run out of levels are decrypted and re-encrypted "
            "by the key holder, WHICH SEES THOSE INTERMEDIATE VALUES")
    blocks = []
    t_start = time.time()
    state = {"t": time.time(), "b": 0}

    def on_block(i, name):
        comm.c.Barrier()
        now = time.time()
        bytes_blk = comm.bytes - state["b"]
        tot = comm.c.reduce(bytes_blk, root=0)
        blocks.append((f"layer {i} {name}", now - state["t"], tot or 0))
        say(f"  layer {i} {name:9s} {now - state['t']:8.1f} s  {(tot or 0) / 2**20:9.2f} MiB sent  "
            f"refreshes through the key holder so far: {comm.c.reduce(key_holder.count if key_holder else 0, root=0)}")
        state["t"], state["b"] = now, comm.bytes

    gather = comm.gather_tokens if args.strategy == "aegis" else (lambda items: items)
    toks, ops = encrypted.run(ctx, keys, cts, args.model, layers, args.refresh, key_holder,
                              gather=gather, tokens=mine, on_block=on_block)
    wall = time.time() - t_start
    # outputs: one shard per rank holding tokens of the sequence, then an index
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    write_rank = {s: [] for s in range(len(cts))}
    for s in range(len(cts)):
        for r in range(size):
            if args.strategy == "aegis":
                sl = io.rank_range(total, r, size)
                if max(sl.start, offsets[s]) < min(sl.stop, offsets[s + 1]):
                    write_rank[s].append(r)
            elif r == 0:
                write_rank[s].append(0)
    for s, out in enumerate(args.output):
        if rank in write_rank[s]:
            mine_s = sorted((t for t in toks if t.sid == s), key=lambda t: t.pos)
            shard = io.Shard(index=write_rank[s].index(rank), count=len(write_rank[s]),
                             start=mine_s[0].pos, total=lengths[s])
            io.write_ciphertexts(io.shard_path(out, rank), [t.x for t in mine_s],
                                 shape=(lengths[s], cfg.hidden), force=args.force, shard=shard)
    comm.c.Barrier()
    if rank == 0:
        for s, out in enumerate(args.output):
            io.write_index(out, [io.shard_path(out, r) for r in write_rank[s]], force=args.force)
    refreshes = comm.c.reduce(key_holder.count if key_holder else ops.stats.refreshes, root=0)
    peaks = comm.c.gather(_peak_mib(), root=0)
    if rank == 0:
        print("summary", flush=True)
        print(f"  {'block':20s} {'wall s':>8s} {'MiB sent':>10s}")
        for name, sec, b in blocks:
            print(f"  {name:20s} {sec:8.1f} {b / 2**20:10.2f}")
        print(f"  total wall time {wall:.1f} s, {comm.bytes and sum(b for _, _, b in blocks) / 2**20:.2f} MiB "
              f"communicated, time hidden by overlap 0.0 s (collectives are blocking in this version)")
        print("  peak memory per rank (MiB): " + ", ".join(f"r{r} {m:.0f}" for r, m in enumerate(peaks)))
        mode = {"client": "client (key holder sees intermediate values)", "bootstrap": "bootstrap",
                "none": "none"}[args.refresh]
        print(f"  refresh mode: {mode}; refreshes through the key holder: "
              f"{refreshes if args.refresh == 'client' else 0}")
        print(f"  outputs: {', '.join(args.output)}", flush=True)
    return 0


MIN_INPUT_LEVEL = 4   # q/k/v, key mask, q.k product, head mask before the first possible refresh


def _rotations_of(keys, params):
    from .ckks.keys import galois_element_for_rotation

    have = set(keys.galois)
    return {r for r in range(-params.slots + 1, params.slots)
            if galois_element_for_rotation(r, params.n) in have} if len(have) else set()


def main(argv=None) -> int:
    from mpi4py import MPI

    comm = Comm(MPI.COMM_WORLD)
    try:
        args = _parse(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        return run(args, comm)
    except Refused as e:
        print(f"aegis_hpc.infer: error: {e}", file=sys.stderr, flush=True)
        return 2
    except Exception as e:  # mid-run: one line, then make sure no peer waits forever
        print(f"aegis_hpc.infer: error{'' if comm.size == 1 else f' (rank {comm.rank})'}: {_one_line(e)}",
              file=sys.stderr, flush=True)
        if comm.size > 1:
            MPI.COMM_WORLD.Abort(2)
        return 2


if __name__ == "__main__":
    sys.exit(main())
