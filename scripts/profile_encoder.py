"""Profile one encoder layer (bench encoder's path) under cProfile: where the time goes.

    AEGIS_BACKEND=cupy python scripts/profile_encoder.py --model minilm --preset n16-boot --line 1 --out prof.txt
"""
import argparse
import cProfile
import io
import pstats
import sys
import time

from aegis_hpc import backend
from aegis_hpc.benchmarks import encoder


def main():
    ap = argparse.ArgumentParser()
    encoder.add_one_input_options(ap, line="1")
    ap.add_argument("--out", default="prof.txt")
    a = ap.parse_args()
    args = encoder.one_input_args(a)
    pr = cProfile.Profile()
    t = time.time()
    pr.enable()
    encoder.run(args)
    backend.sync()
    pr.disable()
    s = io.StringIO()
    st = pstats.Stats(pr, stream=s)
    st.sort_stats("cumulative").print_stats(60)
    st.sort_stats("tottime").print_stats(40)
    with open(a.out, "w") as f:
        f.write(f"wall {time.time() - t:.1f} s\n" + s.getvalue())
    print(f"wall {time.time() - t:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
