"""``python -m aegis_hpc.bench``: operation benchmarks, placement plans, paper reproduction.

  ops        per-op times beside a peer library (desilofhe) at matched N and log2 Q
  plan       placement planner (aegis_hpc.dist.planner)
  reproduce  the paper's figures (issue 9)
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


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m aegis_hpc.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    _ops_parser(sub)
    sub.add_parser("plan", help="placement planner; arguments go to aegis_hpc.dist.planner",
                   add_help=False)
    sub.add_parser("reproduce", help="reproduce the paper's tables (issue 9)")
    if argv and argv[0] == "plan":
        return _plan(argv[1:])
    args = parser.parse_args(argv)
    if args.cmd == "ops":
        from .benchmarks import ops

        args.argv = argv
        return ops.main(args)
    if args.cmd == "reproduce":
        print("not implemented yet (issue 9)")
        return 2
    parser.error(f"unknown command {args.cmd}")
    return 2


def _plan(rest) -> int:
    try:
        from .dist import planner
    except ImportError as exc:
        print(f"the placement planner (aegis_hpc.dist.planner) is not available: {exc}", file=sys.stderr)
        return 2
    rc = planner.main(rest)
    return 0 if rc is None else int(rc)


if __name__ == "__main__":
    sys.exit(main())
