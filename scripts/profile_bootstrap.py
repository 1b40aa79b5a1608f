"""Where a bootstrap's time goes: one full-slot bootstrap at a preset (default n16-boot)
after a warm-up, timed back to back and between CUDA events, the host time to enqueue
one, device time by kernel (an event pair per launch), then cProfile's hot spots.

    AEGIS_BACKEND=cupy python scripts/profile_bootstrap.py [--preset n16-boot] [--reps 5]
"""
import argparse
import cProfile
import pstats
import time
from contextlib import contextmanager

import numpy as np

from aegis_hpc import backend as be


def by_kernel(cp, ev, ct):
    """Device time of one bootstrap by kernel (kernel_events), as a table."""
    events, total = kernel_events(cp, lambda: ev.bootstrap(ct))
    rows = sorted(((sum(cp.cuda.get_elapsed_time(s, e) for s, e in ev_), len(ev_), name)
                   for name, ev_ in events.items()), reverse=True)
    print(f"device time by kernel, one bootstrap with an event pair per launch ({total:.1f} ms between the outer events)")
    print("| kernel | launches | ms | % |")
    print("|---|---|---|---|")
    for ms, count, name in rows:
        print(f"| {name} | {count} | {ms:.2f} | {100 * ms / total:.1f} |")
    rest = total - sum(r[0] for r in rows)
    print(f"| other (cupy copies and arithmetic, gaps) | | {rest:.2f} | {100 * rest / total:.1f} |")


def timings(cp, fn, reps):
    """ms per call of fn: until the host returns from `reps` calls, until the device has
    run them too, and one more call between two events."""
    sync = cp.cuda.Device().synchronize
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    t1 = time.perf_counter()
    sync()
    t2 = time.perf_counter()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    return 1e3 * (t1 - t0) / reps, 1e3 * (t2 - t0) / reps, cp.cuda.get_elapsed_time(start, stop)


@contextmanager
def wrapped_launches(wrap):
    """Inside: every launch through kernels._fn / _ew goes through wrap(kernel name, launch)."""
    from aegis_hpc.backend import kernels

    real_fn, real_ew = kernels._fn, kernels._ew
    kernels._fn = lambda name: wrap(name.split("<")[0], real_fn(name))
    kernels._ew = lambda name: wrap(name, real_ew(name))
    try:
        yield
    finally:
        kernels._fn, kernels._ew = real_fn, real_ew


def kernel_events(cp, fn):
    """fn() with every launch through kernels._fn / _ew between its own pair of events
    (cupy's own copies and arithmetic are not counted): ({kernel: [(start, stop)]}, ms
    between events around the whole call)."""
    from collections import defaultdict

    events = defaultdict(list)

    def timed(name, launch):
        def call(*args, **kw):
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            out = launch(*args, **kw)
            stop.record()
            events[name].append((start, stop))
            return out
        return call

    start, stop = cp.cuda.Event(), cp.cuda.Event()
    with wrapped_launches(timed):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
    return events, cp.cuda.get_elapsed_time(start, stop)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="n16-boot")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    be.select("cupy")
    import cupy as cp

    from aegis_hpc.ckks.context import Context

    ctx = Context.from_preset(a.preset)
    sk, keys = ctx.keygen(bootstrap=True)
    ev = ctx.evaluator(keys)
    x = np.random.default_rng(1).uniform(-1, 1, ctx.params.slots)
    ct = ctx.encrypt(x, keys.public, level=0)
    sync = cp.cuda.Device().synchronize
    print(ctx.params.describe())
    ev.bootstrap(ct)
    sync()
    # the CUDA graph (backend/graphs.py): the second call captures it, the rest replay it
    boot = ev.__dict__["_bootstrapper"]
    ev.bootstrap(ct)
    sync()
    if getattr(boot, "replays", lambda c: False)(ct):   # (older trees, for A/Bs: no graphs)
        _, back, one = timings(cp, lambda: ev.bootstrap(ct), a.reps)
        print(f"bootstrap replayed as a CUDA graph: back to back {back:.1f} ms/op, one between events {one:.1f} ms; "
              f"the graph holds {boot._graphs.nbytes() / 2**30:.2f} GiB, cupy's default pool "
              f"{cp.get_default_memory_pool().total_bytes() / 2**30:.2f} GiB")
    else:
        print("bootstrap: no CUDA graph (see the warning above)")
    # the rest times the eager launches
    boot._graphs = None
    host, back, one = timings(cp, lambda: ev.bootstrap(ct), a.reps)
    print(f"bootstrap: host returns after {host:.1f} ms/op, back to back {back:.1f} ms/op, "
          f"one between events {one:.1f} ms")
    by_kernel(cp, ev, ct)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(a.reps):
        ev.bootstrap(ct)
    prof.disable()
    sync()
    st = pstats.Stats(prof)
    st.sort_stats("tottime").print_stats(30)
    st.sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
