"""Where a bootstrap's time goes on the host: one full-slot bootstrap at a preset
(default n16-boot) after a warm-up, timed back to back and between CUDA events, the
host time to enqueue one, the kernel launches it makes, then cProfile's hot spots.

    AEGIS_BACKEND=cupy python scripts/profile_bootstrap.py [--preset n16-boot] [--reps 5]
"""
import argparse
import cProfile
import pstats
import time

import numpy as np

from aegis_hpc import backend as be


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
    t0 = time.perf_counter()
    for _ in range(a.reps):
        ev.bootstrap(ct)
    t1 = time.perf_counter()
    sync()
    t2 = time.perf_counter()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    ev.bootstrap(ct)
    stop.record()
    stop.synchronize()
    print(f"bootstrap: host returns after {1e3 * (t1 - t0) / a.reps:.1f} ms/op, back to back "
          f"{1e3 * (t2 - t0) / a.reps:.1f} ms/op, one between events {cp.cuda.get_elapsed_time(start, stop):.1f} ms")
    launches = {"n": 0}
    for cls in (cp.RawKernel, cp.ElementwiseKernel, cp.ReductionKernel):
        orig = cls.__call__

        def counted(self, *args, _orig=orig, **kw):
            launches["n"] += 1
            return _orig(self, *args, **kw)
        try:
            cls.__call__ = counted
        except TypeError:
            pass
    ev.bootstrap(ct)
    sync()
    print(f"kernel launches through RawKernel/ElementwiseKernel/ReductionKernel: {launches['n']} per bootstrap")
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
