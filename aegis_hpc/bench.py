"""``python -m aegis_hpc.bench``: operation benchmarks, placement plans, paper reproduction.

  ops        per-op times beside a peer library (desilofhe) at matched N and log2 Q
  comm       collectives on ciphertext tensors vs the raw collective (under mpirun)
  plan       placement planner (aegis_hpc.parallel.planner)
  lintrans   a weight transform under both rotation key sets (memory/time trade)
  reproduce  the paper's figures (issue 9)
  encoder    the whole encrypted encoder end to end, server-only: time per block, bootstraps,
             key switches, peak memory, checked against the mirror and the float model
"""

from __future__ import annotations

import argparse
import sys


def _ops_parser(sub):
    p = sub.add_parser("ops", help="per-operation times, optionally beside a peer library")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    p.add_argument("--peer", choices=("desilofhe", "none"), default=None,
                   help="time the peer in the same process at matched ring degree and log2 Q")
    p.add_argument("--logn", type=int, default=15)
    p.add_argument("--levels", type=int, default=8, help="peer max_level; our levels match its log2 Q")
    p.add_argument("--dnum", type=int, default=None,
                   help="our key-switching digits (default: the peer's digit count)")
    p.add_argument("--bootstrap", action="store_true", help="also time bootstrapping")
    p.add_argument("--boot-preset", default="n16-boot", help="parameter preset for --bootstrap")
    p.add_argument("--ops", default=None, help="comma list, default all: encrypt,mul_relin_rescale,"
                   "rotate,hoisted_8,hoisted_16,rescale,ntt,intt,keyswitch")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of repetitions per op (default 2 on numpy, 0.5 on cupy)")
    p.add_argument("--no-bandwidth", action="store_true", help="skip the copy-bandwidth reference")
    p.add_argument("--out", default=None, help="directory for JSON + markdown (default bench/results)")
    p.add_argument("--no-save", action="store_true")
    return p


def _comm_parser(sub):
    p = sub.add_parser("comm", help="ciphertext collectives vs raw NCCL/MPI on the same bytes (run under mpirun)")
    p.add_argument("--comm", choices=("auto", "nccl", "mpi-cuda", "mpi-host"), default="auto")
    p.add_argument("--preset", default="demo", help="parameter preset of the ciphertexts")
    p.add_argument("--sizes", default="1,4,16", help="ciphertexts per rank, comma list")
    p.add_argument("--budget", type=float, default=0.5, help="seconds of repetitions per point")
    p.add_argument("--out", default=None, help="directory for JSON + markdown (default bench/results)")
    p.add_argument("--no-save", action="store_true")
    return p


def _lintrans_parser(sub):
    p = sub.add_parser("lintrans", help="a dense S x S transform with the pow2 and the all-baby key sets")
    p.add_argument("--backend", choices=("numpy", "cupy"), default=None, help="default: AEGIS_BACKEND or auto")
    p.add_argument("--preset", default="demo")
    p.add_argument("--slots", type=int, default=1024, help="S (BERT-base and MiniLM: 1024)")
    p.add_argument("--level", type=int, default=None, help="ciphertext level (default: top)")
    p.add_argument("--budget", type=float, default=2.0, help="seconds of repetitions per key set")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--out", default=None, help="directory for JSON + markdown (default bench/results)")
    p.add_argument("--no-save", action="store_true")
    return p


def _reproduce_parser(sub):
    p = sub.add_parser("reproduce", help="the paper's claims beside ours: table, plots, JSON (issue 9)")
    p.add_argument("--gpus", default="1,2,4", help="GPU (rank) counts, comma list")
    p.add_argument("--model", default="bert-base", help="planner model (full-size bytes and memory)")
    p.add_argument("--tokens", type=int, default=2048, help="planner tokens")
    p.add_argument("--layers", type=int, default=None, help="planner layers (default: all)")
    p.add_argument("--preset", default="n16", help="planner parameter preset")
    p.add_argument("--run-model", default="minilm", help="model infer runs for the measured rows")
    p.add_argument("--run-tokens", type=int, default=16)
    p.add_argument("--run-layers", type=int, default=1)
    p.add_argument("--run-preset", default="demo")
    p.add_argument("--max-cpu-ranks", type=int, default=4, help="largest rank count run on the numpy backend")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per infer run")
    p.add_argument("--no-run", action="store_true", help="planner only, no infer runs")
    p.add_argument("--work", default="out/reproduce", help="keys, inputs and outputs of the infer runs")
    p.add_argument("--out", default=None, help="directory (default bench/results/reproduce-MACHINE-BACKEND)")
    p.add_argument("--quiet", action="store_true")
    return p


def _encoder_parser(sub):
    p = sub.add_parser("encoder", help="the encrypted encoder end to end, server-only (bootstrapping)")
    p.add_argument("--model", default="minilm")
    p.add_argument("--preset", default="n16-boot")
    p.add_argument("--layers", type=int, default=None, help="default: all of the model's")
    p.add_argument("--tokens", default=None, help="comma list: inputs of exactly these many tokens of real text")
    p.add_argument("--lines", default=None, help="comma list of lines of --passages as inputs")
    p.add_argument("--passages", default=None, help="default: inputs/validation/passages.txt")
    p.add_argument("--refresh", choices=("bootstrap", "none"), default="bootstrap")
    p.add_argument("--input-level", default="auto",
                   help="level the client encrypts at: auto (nn.refresh.input_level: least estimated cost "
                        "for the input's length), top, or a number")
    p.add_argument("--out", default=None, help="directory for JSON + markdown (default bench/results)")
    p.add_argument("--no-save", action="store_true")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m aegis_hpc.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    _ops_parser(sub)
    _comm_parser(sub)
    sub.add_parser("plan", help="placement planner; arguments go to aegis_hpc.parallel.planner",
                   add_help=False)
    _reproduce_parser(sub)
    _lintrans_parser(sub)
    _encoder_parser(sub)
    if argv and argv[0] == "plan":
        return _plan(argv[1:])
    args = parser.parse_args(argv)
    if args.cmd == "ops":
        from .benchmarks import ops

        args.argv = argv
        return ops.main(args)
    if args.cmd == "comm":
        from .benchmarks import comm

        return comm.main(args)
    if args.cmd == "lintrans":
        from .benchmarks import lintrans

        return lintrans.main(args)
    if args.cmd == "encoder":
        from .benchmarks import encoder

        args.argv = argv[1:]
        return encoder.main(args)
    if args.cmd == "reproduce":
        from .benchmarks import reproduce

        args.argv = argv[1:]
        return reproduce.main(args)
    parser.error(f"unknown command {args.cmd}")
    return 2


def _plan(rest) -> int:
    try:
        from .parallel import planner
    except ImportError as exc:
        print(f"the placement planner (aegis_hpc.parallel.planner) is not available: {exc}", file=sys.stderr)
        return 2
    rc = planner.main(rest)
    return 0 if rc is None else int(rc)


if __name__ == "__main__":
    sys.exit(main())
