"""Device time by kernel of the key-switching operations `bench ops` times (16 hoisted
rotations, a rotation, mul + relin + rescale) at its parameters for a ring degree, with an
event pair per launch, then 50 calls of each back to back (until the device has run them) and
the host's time to enqueue one, and the host's time to an op's first launch and one call with
its wait (medians of 200): which part of an op's wall time is the device's.

    AEGIS_BACKEND=cupy python scripts/profile_switch_ops.py [--logn 16 --levels 24] [--no-hoisted]
"""
import argparse
import statistics
import time

import numpy as np

from profile_bootstrap import kernel_events, timings, wrapped_launches
from profile_host import bench_ops_setup

REPS = 5


def first_launch(cp, fn, reps=200):
    """Medians over `reps` calls, in ms: the host's time from calling fn to its first kernel
    launch, and one call with its wait. A lone op's wall time is about the first plus the
    device's time (what `bench ops` times)."""
    marks = []

    def marking(name, launch):
        def call(*args, **kw):
            if not marks:
                marks.append(time.perf_counter())
            return launch(*args, **kw)
        return call

    firsts, walls = [], []
    with wrapped_launches(marking):
        for _ in range(reps):
            marks.clear()
            t0 = time.perf_counter()
            fn()
            cp.cuda.get_current_stream().synchronize()
            walls.append(time.perf_counter() - t0)
            firsts.append(marks[0] - t0)
    return 1e3 * statistics.median(firsts), 1e3 * statistics.median(walls)


def report(cp, label, fn):
    fn()
    cp.cuda.Device().synchronize()
    per_call = {}
    for _ in range(REPS):
        events, _ = kernel_events(cp, fn)
        for name, pairs in events.items():
            ms = sum(cp.cuda.get_elapsed_time(s, e) for s, e in pairs)
            per_call.setdefault(name, [0.0, len(pairs)])[0] += ms / REPS
    rows = sorted(((ms, n, k) for k, (ms, n) in per_call.items()), reverse=True)
    print(f"{label}: kernels {sum(r[0] for r in rows):.3f} ms/call: "
          + ", ".join(f"{k} {ms:.3f} x{n}" for ms, n, k in rows))
    host, back, _ = timings(cp, fn, 50)
    print(f"{label}: back to back {back:.3f} ms/call, the host enqueues one in {host:.3f} ms")
    first, wall = first_launch(cp, fn)
    print(f"{label}: the host's first launch after {first:.3f} ms, one call with its wait {wall:.3f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logn", type=int, default=16)
    ap.add_argument("--levels", type=int, default=24, help="bench ops' --levels (the peer's max_level)")
    ap.add_argument("--dnum", type=int, default=None, help="bench ops' --dnum (default: the peer's)")
    ap.add_argument("--no-hoisted", action="store_true", help="skip the 16 hoisted rotations")
    a = ap.parse_args()
    cp, prm, ctx, keys, ev = bench_ops_setup(a.logn, a.levels, a.dnum,
                                             [1] if a.no_hoisted else range(1, 17))
    print(prm.describe())
    rng = np.random.default_rng(1)
    ct, ct2 = (ctx.encrypt(rng.uniform(-1, 1, prm.slots), keys.public) for _ in range(2))
    if not a.no_hoisted:
        report(cp, "16 hoisted rotations", lambda: ev.rotate_hoisted(ct, range(1, 17)))
    report(cp, "rotate", lambda: ev.rotate(ct, 1))
    report(cp, "mul + relin + rescale", lambda: ev.mul(ct, ct2, rescale=True))


if __name__ == "__main__":
    main()
