"""One rotation and one relinearisation key switch at `bench ops`' parameters, between
cudaProfilerStart and cudaProfilerStop after warm-up calls: the span Nsight Compute profiles with
--profile-from-start off (bench/results/profile-keyswitch-n16-nvidia-h200-ncu-9c98226.md).

    ncu --profile-from-start off --clock-control none --section SpeedOfLight ... \
        python scripts/ncu_keyswitch.py [--logn 16 --levels 24]
"""
import argparse

import numpy as np

from profile_host import bench_ops_setup


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logn", type=int, default=16)
    ap.add_argument("--levels", type=int, default=24, help="bench ops' --levels (the peer's max_level)")
    a = ap.parse_args()
    cp, prm, ctx, keys, ev = bench_ops_setup(a.logn, a.levels)
    ct = ctx.encrypt(np.random.default_rng(1).uniform(-1, 1, prm.slots), keys.public)

    def ops():
        ev.rotate(ct, 1)
        ev.ks.switch(ct.data[1], keys.relin, ct.level)

    for _ in range(3):      # compilation, tables, the allocator's pool
        ops()
    cp.cuda.Device().synchronize()
    cp.cuda.runtime.profilerStart()
    ops()
    cp.cuda.Device().synchronize()
    cp.cuda.runtime.profilerStop()


if __name__ == "__main__":
    main()
