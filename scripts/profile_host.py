"""Is a single operation bound by the host or by the device? For a rotation and a
product+relinearisation+rescale at the ring `bench ops` matches to the peer: the host
time to enqueue one (200 back to back, no sync), the time per op back to back (the
device's when it exceeds the enqueue time), and one op between CUDA events, then the
host's hot spots under cProfile.

    AEGIS_BACKEND=cupy python scripts/profile_host.py [--logn 16 --levels 24]

To compare two commits in one session on one machine, put a copy of the other
commit's package first on the path (git archive OTHER aegis_hpc | tar -x -C old;
PYTHONPATH=old python scripts/profile_host.py): a script's imports follow PYTHONPATH,
while `python -m` looks in the working directory first.
"""
import argparse
import cProfile
import pstats
import time

import numpy as np

from aegis_hpc import backend as be


def bench_ops_setup(logn, levels, dnum=None, rotations=(1,)):
    """The device, and `bench ops`' parameters at a ring degree (its --levels, --dnum) with a
    context, keys for `rotations` and their evaluator: (cupy, params, context, keys, evaluator).
    The profiling scripts share it, so each profiles what `bench ops` times."""
    be.select("cupy")
    import cupy as cp

    from aegis_hpc.benchmarks.ops import match_params, peer_log2_q
    from aegis_hpc.ckks.context import Context

    prm = match_params(logn, levels, peer_log2_q(levels), dnum)
    ctx = Context(prm)
    _, keys = ctx.keygen(rotations=list(rotations))
    return cp, prm, ctx, keys, ctx.evaluator(keys)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logn", type=int, default=16)
    ap.add_argument("--levels", type=int, default=24)
    ap.add_argument("--reps", type=int, default=200)
    a = ap.parse_args()
    cp, prm, ctx, keys, ev = bench_ops_setup(a.logn, a.levels)
    x = np.random.default_rng(1).uniform(-1, 1, prm.slots)
    ct, ct2 = ctx.encrypt(x, keys.public), ctx.encrypt(x, keys.public)
    sync = cp.cuda.Device().synchronize
    print(prm.describe())
    for name, op in (("rotate", lambda: ev.rotate(ct, 1)), ("mul+relin+rescale", lambda: ev.mul(ct, ct2, rescale=True))):
        for _ in range(5):
            op()
        sync()
        t0 = time.perf_counter()
        for _ in range(a.reps):
            op()
        t1 = time.perf_counter()
        sync()
        t2 = time.perf_counter()
        start, stop, one = cp.cuda.Event(), cp.cuda.Event(), []
        for _ in range(20):
            sync()
            start.record()
            op()
            stop.record()
            stop.synchronize()
            one.append(cp.cuda.get_elapsed_time(start, stop))
        print(f"{name}: host enqueue {1e3 * (t1 - t0) / a.reps:.3f} ms/op, back to back "
              f"{1e3 * (t2 - t0) / a.reps:.3f} ms/op, one op between events {np.median(one):.3f} ms")
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(50):
            op()
        prof.disable()
        sync()
        pstats.Stats(prof).sort_stats("tottime").print_stats(8)


if __name__ == "__main__":
    main()
