"""Where an encoder run's time goes, by operation: every CipherOps call and the
bootstrap's stages timed with a device sync around it, exclusive of the calls
nested inside (a refresh inside a polynomial counts as refresh, not polynomial).

    AEGIS_BACKEND=cupy python scripts/profile_ops.py --model minilm --line 232 --layers 1

The syncs serialise the device queue, so the total runs a little above an
unprofiled run; use bench encoder for the wall time and this for the split.
"""
import argparse
import functools
import time
from collections import defaultdict

from aegis_hpc import backend
from aegis_hpc.benchmarks import encoder
from aegis_hpc.ckks.bootstrap import bootstrapper, mod1
from aegis_hpc.nn import ops

_stack = []
_excl = defaultdict(float)
_calls = defaultdict(int)


def timed(cls, name, label):
    fn = getattr(cls, name)

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        backend.sync()
        t0 = time.perf_counter()
        _stack.append(0.0)
        try:
            return fn(*a, **kw)
        finally:
            backend.sync()
            total = time.perf_counter() - t0
            nested = _stack.pop()
            _excl[label] += total - nested
            _calls[label] += 1
            if _stack:
                _stack[-1] += total

    setattr(cls, name, wrapper)


def main():
    ap = argparse.ArgumentParser()
    encoder.add_one_input_options(ap, line="232")
    a = ap.parse_args()
    for name in ("add", "sub", "add_const", "add_plain", "mul", "mul_plain", "mul_const", "mul_int",
                 "rotate", "rotate_many", "lintrans", "_evaluate", "_refresh", "_refresh_pair", "_encode"):
        # refresh: the rest of a bootstrap; encode: plaintexts (masks, biases) made on first use
        timed(ops.CipherOps, name, name.strip("_"))
    for name in ("mod_raise", "sub_sum", "coeff_to_slot", "slot_to_coeff", "_boost"):
        timed(bootstrapper.Bootstrapper, name, "bootstrap." + name.strip("_"))
    timed(mod1.EvalMod, "evaluate", "bootstrap.evalmod")
    t = time.perf_counter()
    encoder.run(encoder.one_input_args(a))
    wall = time.perf_counter() - t
    total = sum(_excl.values())
    print(f"\nwall {wall:.1f} s, inside timed calls {total:.1f} s")
    print("| operation | calls | exclusive s | share |\n|---|---|---|---|")
    for k, v in sorted(_excl.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {_calls[k]} | {v:.2f} | {100 * v / total:.1f} % |")


if __name__ == "__main__":
    main()
