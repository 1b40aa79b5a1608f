"""Encrypted example job: token-sharded matrix product + polynomial on CKKS ciphertexts.

    mpirun -n 2 python -m aegis_hpc.demo [--preset demo] [--tokens 8] [--features 64]

Rank 0 plays the client (keys, encryption, decryption); every rank then
applies y_t = GELU~(W x_t) to its own contiguous range of tokens (a token
shard: no communication until the results are gathered), and rank 0 prints
the error against numpy. It exercises the whole CKKS core on a secure
parameter set in well under a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _gelu(v):
    from math import erf, sqrt

    return np.vectorize(lambda t: 0.5 * t * (1 + erf(t / sqrt(2))))(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aegis_hpc.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--degree", type=int, default=15)
    args = ap.parse_args(argv)

    from mpi4py import MPI

    from .ckks import ChebyshevSeries, Context, LinearTransform

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    t0 = time.perf_counter()
    ctx = Context.from_preset(args.preset)
    rng = np.random.default_rng(7)  # example data only; keys use the cryptographic stream
    w = rng.normal(0, 1 / np.sqrt(args.features), (args.features, args.features))
    x = rng.uniform(-1, 1, (args.tokens, args.features))
    transform = LinearTransform(w)
    gelu = ChebyshevSeries.interpolate(_gelu, -4.0, 4.0, args.degree)

    if rank == 0:
        print(ctx.params.describe(), flush=True)
        sk, keys = ctx.keygen(rotations=transform.rotations())
        cts = [ctx.encrypt(row, keys) for row in x]  # public-key encryption, as a client would
        print(f"[client] keys + {len(cts)} ciphertexts in {time.perf_counter() - t0:.1f} s", flush=True)
    else:
        keys, cts = None, None
    keys = comm.bcast(keys, root=0)  # evaluation keys only: the secret key stays on rank 0
    cts = comm.bcast(cts, root=0)

    lo, hi = rank * args.tokens // size, (rank + 1) * args.tokens // size
    ev = ctx.evaluator(keys)
    t1 = time.perf_counter()
    mine = [ev.evaluate_chebyshev(ev.linear_transform(ct, transform), gelu) for ct in cts[lo:hi]]
    elapsed = time.perf_counter() - t1
    gathered = comm.gather((lo, mine, elapsed), root=0)
    if rank == 0:
        results = [ct for _, part, _ in sorted(gathered, key=lambda g: g[0]) for ct in part]
        got = np.array([ctx.decrypt(ct, sk) for ct in results])
        want = _gelu(x @ w.T)
        mirror = gelu(x @ w.T)
        print(f"[server] {size} rank(s), tokens per rank {[len(g[1]) for g in gathered]}, "
              f"slowest rank {max(g[2] for g in gathered):.1f} s")
        print(f"max |encrypted - numpy GELU(Wx)|      = {np.abs(got - want).max():.3e}")
        print(f"max |encrypted - same approximation|  = {np.abs(got - mirror).max():.3e} (encryption noise)")
        ok = np.abs(got - mirror).max() < 1e-4
        print("OK" if ok else "FAILED: error above 1e-4")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
