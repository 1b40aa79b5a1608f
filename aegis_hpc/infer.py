"""Encrypted encoder inference over MPI ranks.

    mpirun -n 2 python -m aegis_hpc.infer --model tiny --keys eval.h5 \
        --input s1.h5 [s2.h5 ...] --output o1.h5 [o2.h5 ...] \
        [--strategy aegis|replicate] [--layers K] [--refresh client|bootstrap|none] \
        [--key-holder secret.h5] [--seed HEX] [--summary run.json] [--no-overlap]

Each input file is one encrypted sequence (tokens x features packed in token
blocks, B consecutive tokens per ciphertext, as `python -m aegis_hpc.client
encrypt --text ... --model NAME` writes it); each output is the encrypted
final hidden state of that sequence, in the same packing, written as one
shard per rank plus an index file.

Strategy `aegis` shards token blocks across ranks: linear layers, GELU,
LayerNorm and residuals are block-local (no traffic); attention all-gathers
each rank's k and v blocks (one nonblocking all-gather per layer, in flight
while the q projections run).
`replicate` is tensor parallelism: every rank holds every token; each linear
layer's runs of giant-step groups are split across ranks and the partial products
all-reduced (exact, mod each prime); everything else is replicated.
`limb` is the prior multi-GPU design: every rank holds every token but only
some RNS limbs of each ciphertext (aegis_hpc.parallel.limb); key switches and
rescales exchange limbs. All collectives go through aegis_hpc.parallel (NCCL on GPUs,
else MPI), which counts the bytes per call site. The output is the same bit
for bit whatever the rank count.

--summary PATH writes the run's summary as JSON: {"strategy", "world",
"model", "layers", "tokens", "ciphertexts", "slot_use" (of the ring's slots),
"blocks": {name: {"seconds", "bytes"}},
"hidden_seconds", "comm_wait_seconds", "peak_memory_bytes": [per rank],
"overlap", "device", "data_plane", "refresh", "refreshes", "bootstraps"}; bytes are summed over ranks, the two
times are the largest over ranks.

--refresh client: where levels run out, ciphertexts go to the KEY HOLDER
(the owner of the secret key, --key-holder) to be decrypted and re-encrypted.
THE KEY HOLDER SEES THOSE INTERMEDIATE VALUES; this is not a server-only
computation. The count of these round trips is printed and stored.
--refresh bootstrap: the server refreshes by bootstrapping (Evaluator.bootstrap)
with the bootstrapping keys of eval.h5 (client keygen --bootstrap on a -boot
preset): server-only, no key holder. Each refresh divides by the site's bound
B and multiplies back (nn/refresh.py). It is the default when eval.h5 holds
bootstrapping keys, else client.
"""

from __future__ import annotations

import argparse
import os
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
    ap.add_argument("--refresh", default=None, choices=["client", "bootstrap", "none"],
                    help="default: bootstrap if the evaluation keys hold bootstrapping keys, else client")
    ap.add_argument("--key-holder", help="secret key of the key holder (--refresh client only)")
    ap.add_argument("--seed", default=None, help="hex seed of the key holder's re-encryption stream "
                    "(reproducible runs); default random")
    ap.add_argument("--force", action="store_true", help="replace existing outputs")
    ap.add_argument("--summary", help="write the run summary as JSON (rank 0)")
    ap.add_argument("--no-overlap", action="store_true",
                    help="aegis: wait for the k/v all-gather instead of running the q projections "
                         "while it is in flight (the baseline for the time overlap hides)")
    return ap.parse_args(argv)


class Comm:
    """MPI (control plane: validation, barriers, summary) and, once `run`
    has made it, the aegis_hpc.parallel data plane (`plane`) for ciphertexts."""

    def __init__(self, mpi_comm):
        self.c = mpi_comm
        self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()
        self.plane = None

    @property
    def bytes(self):
        """Inter-GPU bytes of the strategy (this rank's, so far)."""
        return self.plane.stats.total_bytes() - self.off_design_bytes if self.plane is not None else 0

    @property
    def off_design_bytes(self):
        from .parallel.limb import OFF_DESIGN_SITES

        return sum(self.plane.stats.total_bytes(p) for p in OFF_DESIGN_SITES) if self.plane is not None else 0


def _peak_bytes():
    """GPU: bytes the memory pool holds (it keeps freed blocks, so this is its
    high-water mark); CPU: peak resident set size."""
    from . import backend

    if backend.is_gpu():
        import cupy

        return int(cupy.get_default_memory_pool().total_bytes())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(args, comm) -> int:
    from mpi4py import MPI

    from . import backend, io
    from .ckks import Context
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
        from .parallel.comm import make_comm

        comm.plane = make_comm("auto", comm.c)
        for o in args.output:
            io.check_output(o, args.force)
        ctx, keys = io.read_eval_keys(args.keys)
        eval_id = io.eval_key_id(args.keys)
        params = ctx.params
        if args.refresh is None:
            args.refresh = "bootstrap" if io.has_bootstrap_keys(keys) else "client"
        if args.strategy == "limb" and args.refresh == "bootstrap":
            raise UsageError("--strategy limb: bootstrapping is not limb-parallel yet (use --refresh client)")
        key_holder = None
        if args.refresh == "client":
            if not args.key_holder:
                raise UsageError("--refresh client needs --key-holder SECRET.h5 (the key holder sees intermediate values)")
            hctx, sk = io.read_secret_key(args.key_holder)
            if hctx.params.fingerprint != params.fingerprint:
                raise UsageError(f"key holder's key is for parameters {hctx.params.fingerprint[:16]}…, "
                                 f"evaluation keys for {params.fingerprint[:16]}…")
            if eval_id and eval_id != io.secret_key_id(sk):
                raise UsageError(f"{args.keys} belongs to secret key {eval_id}, the key holder's is "
                                 f"{io.secret_key_id(sk)}: keys do not match")
            seed = bytes.fromhex(args.seed) if args.seed else run_seed
            key_holder = KeyHolder(ctx, sk, seed=seed)
        elif args.refresh == "bootstrap":
            _check_bootstrap_keys(args, keys, params, cfg)

        tensors = []
        for path in args.input:
            t = io.read_ciphertexts(path, params)
            if t.key_id and eval_id and t.key_id != eval_id:
                raise UsageError(f"{path} is encrypted under key {t.key_id}, {args.keys} belongs to key "
                                 f"{eval_id}: keys do not match the ciphertexts")
            T, F = int(t.shape[0]), int(t.shape[1])
            if F != cfg.hidden or t.packing != io.TOKEN_BLOCKS:
                raise UsageError(f"{path}: {T} x {F} ({t.packing}); model {cfg.name} needs {io.TOKEN_BLOCKS} "
                                 f"of {cfg.hidden} features (client encrypt --model {cfg.name})")
            if T > cfg.max_positions:
                raise UsageError(f"{path}: sequence of {T} tokens is longer than the {cfg.max_positions} model {cfg.name} allows")
            ct0 = t.ciphertexts[0]
            need = MIN_INPUT_LEVEL if args.refresh != "none" else params.max_level
            if ct0.level < need:
                raise UsageError(f"{path}: ciphertexts at level {ct0.level}, model {cfg.name} needs at least {need} "
                                 f"(encrypt at the top level, {params.max_level})")
            tensors.append(t)
        widths = sorted({t.row_slots for t in tensors})
        if len(widths) != 1:
            raise UsageError(f"inputs packed with different row widths {widths} (client encrypt picks one per "
                             f"length): encrypt them with the same --row-slots, e.g. {widths[-1]}, or run them "
                             "separately")
        try:
            layout = prepared(args.model, params.slots, layers, widths[0]).layout
        except ValueError as e:
            raise UsageError(f"{args.input[0]}: {e} (model {cfg.name})") from None
        missing = [r for r in layout.rotations() if r not in _rotations_of(keys, params)]
        if missing:
            raise UsageError(f"{args.keys}: no rotation keys for steps {missing[:6]}{'...' if len(missing) > 6 else ''} "
                             f"(make keys with keygen --for-model {cfg.name})")
        _check_approx(args, params, layers)
    except Exception as e:
        err = _one_line(e)
    # all ranks learn whether any rank failed to validate, so none waits in a collective
    errs = comm.c.allgather(err)
    if any(errs):
        r = next(i for i, x in enumerate(errs) if x)
        raise Refused(errs[rank] or f"rank {r}: {errs[r]}")
    # every rank has validated everything: from here a failure is a bug or a peer dying -> abort
    lengths = [int(t.shape[0]) for t in tensors]
    counts = [len(t.ciphertexts) for t in tensors]
    total = sum(counts)
    # a rank holds whole token blocks: all feature chunks of its tokens
    chunks = layout.hidden_chunks
    n_blocks = total // chunks
    if args.strategy == "aegis":
        from .io import rank_range

        sl = rank_range(n_blocks, rank, size)
        mine = set(range(sl.start, sl.stop))
    else:
        mine = set(range(n_blocks))
    cts = [t.ciphertexts for t in tensors]
    slot_use = io.slot_use(sum(lengths) * cfg.hidden, total, params.slots)
    say(f"aegis_hpc.infer: model {cfg.name}, {layers} layer(s), {len(cts)} sequence(s), {sum(lengths)} tokens in "
        f"{total} ciphertexts (slot use {100 * slot_use:.1f} %), {size} rank(s), strategy {args.strategy}, "
        f"{params.describe()}")
    say(f"  {layout.describe(max(lengths))}")
    if args.refresh == "client":
        say("  REFRESH MODE: client -- ciphertexts that run out of levels are decrypted and re-encrypted "
            "by the key holder, WHICH SEES THOSE INTERMEDIATE VALUES")
    blocks = []
    # aegis ranks refresh disjoint blocks (sum); replicate/limb ranks all refresh every block (count once)
    count_op = MPI.SUM if args.strategy == "aegis" else MPI.MAX
    t_start = time.time()
    state = {"t": time.time(), "b": 0}

    def close_block(name):
        comm.c.Barrier()
        now = time.time()
        sec, tot = now - state["t"], comm.c.reduce(comm.bytes - state["b"], root=0) or 0
        blocks.append((name, sec, tot))
        state["t"], state["b"] = now, comm.bytes
        return sec, tot

    def refreshes_so_far():
        """Key-holder round trips or bootstraps of all ranks (collective: rank 0 gets the count)."""
        mine = key_holder.count if key_holder else ops_box[0].stats.refreshes if ops_box else 0
        return comm.c.reduce(mine, op=count_op, root=0)

    def on_block(i, name):
        sec, tot = close_block(f"layer {i} {name}")
        say(f"  layer {i} {name:9s} {sec:8.1f} s  {tot / 2**20:9.2f} MiB sent  "
            f"{_REFRESH_COUNT[args.refresh]} so far: "
            f"{refreshes_so_far()}")

    from .parallel import encoder as parallel_encoder
    from .nn.ops import CipherOps

    gather, ops_class = None, CipherOps
    if args.strategy == "aegis":
        gather = parallel_encoder.BlockGather(comm.plane, overlap=not args.no_overlap)
    elif args.strategy == "replicate":
        def ops_class(*a):
            return parallel_encoder.TensorParallelOps(comm.plane, *a)
    elif args.strategy == "limb":
        from .parallel.limb import LimbCipherOps, LimbEvaluator

        limb_ev = LimbEvaluator(ctx, keys, comm.plane)
        cts = [[limb_ev.scatter(c) for c in row] for row in cts]

        def ops_class(ctx_, _ev, *a):
            return LimbCipherOps(limb_ev, ctx_, *a)
    ops_box = []   # the ops encrypted.run makes: on_block reports its bootstrap count

    def counted_ops(*a, _cls=ops_class):
        ops_box.append(_cls(*a))
        return ops_box[-1]

    blks, ops = encrypted.run(ctx, keys, cts, args.model, layers, args.refresh, key_holder,
                              gather=gather, blocks=mine, on_block=on_block, ops_class=counted_ops,
                              lengths=lengths, row_width=layout.S)
    if args.strategy == "limb":   # whole ciphertexts for the output files
        for b in blks:
            b.x = [limb_ev.gather(c, "output") for c in b.x]
    wall = time.time() - t_start
    # outputs: one shard per rank holding blocks of the sequence, then an index
    offsets = np.concatenate([[0], np.cumsum(counts) // chunks]).astype(int)
    write_rank = {s: [] for s in range(len(cts))}
    for s in range(len(cts)):
        for r in range(size):
            if args.strategy == "aegis":
                sl = io.rank_range(n_blocks, r, size)
                if max(sl.start, offsets[s]) < min(sl.stop, offsets[s + 1]):
                    write_rank[s].append(r)
            elif r == 0:
                write_rank[s].append(0)
    for s, out in enumerate(args.output):
        if rank in write_rank[s]:
            mine_s = sorted((b for b in blks if b.sid == s), key=lambda b: b.idx)
            shard = io.Shard(index=write_rank[s].index(rank), count=len(write_rank[s]),
                             start=mine_s[0].idx * chunks, total=counts[s])
            io.write_ciphertexts(io.shard_path(out, rank), [c for b in mine_s for c in b.x],
                                 shape=(lengths[s], cfg.hidden), packing=io.TOKEN_BLOCKS, force=args.force,
                                 shard=shard, key_id=eval_id, encoder=(cfg.name, layers), row_width=layout.S)
    comm.c.Barrier()
    if rank == 0:
        for s, out in enumerate(args.output):
            io.write_index(out, [io.shard_path(out, r) for r in write_rank[s]], force=args.force)
    refreshes = refreshes_so_far()
    peaks = comm.c.gather(_peak_bytes(), root=0)
    off_design = comm.c.reduce(comm.off_design_bytes, root=0)
    hidden = comm.c.reduce(gather.overlap.hidden_s if gather is not None else 0.0, op=MPI.MAX, root=0)
    waited = comm.c.reduce(sum(w for *_, w in comm.plane.stats.rows()), op=MPI.MAX, root=0)
    if rank == 0:
        print("summary", flush=True)
        print(f"  {'block':20s} {'wall s':>8s} {'MiB sent':>10s}")
        for name, sec, b in blocks:
            print(f"  {name:20s} {sec:8.1f} {b / 2**20:10.2f}")
        print(f"  total wall time {wall:.1f} s, {sum(b for _, _, b in blocks) / 2**20:.2f} MiB communicated "
              f"({comm.plane.kind}), time hidden by overlap {hidden:.2f} s, blocked in waits {waited:.2f} s "
              "(largest over ranks)")
        if comm.plane.stats.sites:
            print("  rank 0 by call site:\n    " + comm.plane.stats.table().replace("\n", "\n    "))
        if off_design:
            print(f"  not counted above: {off_design / 2**20:.2f} MiB of limbs gathered for the key holder and "
                  "the output files (a deployment sends each rank's limbs there directly)")
        print(f"  peak memory per rank (MiB, {'GPU pool' if backend.is_gpu() else 'RSS'}): "
              + ", ".join(f"r{r} {m / 2**20:.0f}" for r, m in enumerate(peaks)))
        mode = {"client": "client (key holder sees intermediate values)",
                "bootstrap": "bootstrap (server-only, no key holder)", "none": "none"}[args.refresh]
        print(f"  refresh: {mode}; {_REFRESH_COUNT[args.refresh]}: "
              f"{refreshes if args.refresh != 'none' else 0}")
        print(f"  outputs: {', '.join(args.output)}", flush=True)
        if args.summary:
            import json

            doc = {"strategy": args.strategy, "world": size, "model": cfg.name, "layers": layers,
                   "tokens": sum(lengths), "ciphertexts": total, "slot_use": slot_use,
                   "blocks": {n: {"seconds": sec, "bytes": int(b)} for n, sec, b in blocks},
                   "hidden_seconds": hidden, "comm_wait_seconds": waited, "peak_memory_bytes": peaks,
                   "overlap": not args.no_overlap,
                   "device": backend.name(), "data_plane": comm.plane.kind, "refresh": args.refresh,
                   "refreshes": int(refreshes if args.refresh != "none" else 0),
                   "bootstraps": int(refreshes if args.refresh == "bootstrap" else 0)}
            with open(args.summary, "w") as f:
                json.dump(doc, f, indent=1)
    return 0



MIN_INPUT_LEVEL = 2   # a refresh's 1/B and one product: every later step refreshes as it needs
_REFRESH_COUNT = {"client": "refreshes through the key holder", "bootstrap": "bootstraps",
                  "none": "refreshes"}


def _check_bootstrap_keys(args, keys, params, cfg):
    from . import io
    from .nn import refresh

    if args.key_holder:
        raise UsageError("--key-holder is only for --refresh client (--refresh bootstrap needs no key holder; "
                         "it is the default when the evaluation keys hold bootstrapping keys)")
    if not io.has_bootstrap_keys(keys):
        raise UsageError(f"--refresh bootstrap: {args.keys} holds no bootstrapping keys (make them with "
                         f"client keygen --preset ...-boot --for-model {cfg.name} --bootstrap)")
    missing = [r for r in refresh.required_rotations(args.model, params) if r not in _rotations_of(keys, params)]
    if missing:
        raise UsageError(f"--refresh bootstrap: {args.keys} lacks bootstrapping rotation keys for steps "
                         f"{missing[:6]}{'...' if len(missing) > 6 else ''} (make keys with keygen "
                         f"--for-model {cfg.name} --bootstrap)")


def _check_approx(args, params, layers):
    """The approximations fit the refresh period (with bootstrapping: the levels it leaves);
    run here so a short chain is refused on every rank before any work."""
    from .nn import refresh
    from .nn.ops import DepthError, PlainOps, bootstrap_level

    level = bootstrap_level(params) if args.refresh == "bootstrap" else None
    try:
        refresh.prepare(PlainOps(params.max_level, args.refresh, level), args.model, layers, params.slots)
    except DepthError as e:
        raise UsageError(f"--refresh {args.refresh} with {params.name}: {e}") from None


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
