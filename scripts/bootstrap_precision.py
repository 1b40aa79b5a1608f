"""A bootstrap's precision over fresh key draws: -log2 of the largest slot error of one
full-slot bootstrap, each draw with a new secret key, keys and encryption, so the spread
shows what one run can land on. The default input is what `bench ops` uses (uniform in
[-1, 1], seed 3); --inputs names others of the domain |z| <= 1, so a chain chosen on that
one input is checked on inputs it was not chosen on (INPUTS). Optionally with some levels'
scales changed (a chain experiment; the secure bound is still checked), alternating the
variants so a drift of the machine hits both.

    AEGIS_BACKEND=cupy python scripts/bootstrap_precision.py [--preset n16-boot] [--draws 3] \
        [--level-scale 17-17:57,18-23:59 --level-scale 18-23:60] [--rounds 2] \
        [--inputs uniform:3,complex:5,signs:7,sparse:9,constant:1] [--slots 1024]
"""
import argparse
import math
import statistics
import time

import numpy as np

from aegis_hpc import backend as be


def _uniform(rng, n):
    return rng.uniform(-1, 1, n)


def _complex(rng, n):
    """uniform in the unit disk: complex slots, as the encoder packs two real rows"""
    return np.sqrt(rng.uniform(0, 1, n)) * np.exp(2j * np.pi * rng.uniform(0, 1, n))


def _signs(rng, n):
    """every slot at the domain's edge"""
    return rng.choice([-1.0, 1.0], n)


def _sparse(rng, n):
    """1 % of the slots at 0.5..1 in magnitude, the rest 0"""
    z = np.zeros(n)
    at = rng.choice(n, max(1, n // 100), replace=False)
    z[at] = rng.choice([-1.0, 1.0], at.size) * rng.uniform(0.5, 1, at.size)
    return z


def _constant(rng, n):
    """all slots 1: the whole message in one coefficient, the largest a slot bound of 1 allows"""
    return np.ones(n)


INPUTS = {"uniform": _uniform, "complex": _complex, "signs": _signs, "sparse": _sparse,
          "constant": _constant}


def inputs(spec, n):
    """(label, values) for each "name:seed" of the comma-separated spec"""
    out = []
    for item in spec.split(","):
        name, _, seed = item.partition(":")
        if name not in INPUTS:
            raise SystemExit(f"unknown input {name!r}; choose from {', '.join(INPUTS)}")
        out.append((item, INPUTS[name](np.random.default_rng(int(seed or 0)), n)))
    return out


def variant(preset, spec):
    """The preset's chain with levels lo..hi at 2^bits for each "lo-hi:bits" of the comma-
    separated spec (the preset's other levels as they are), or the preset itself."""
    from aegis_hpc.ckks import params as P

    if spec is None:
        return P.preset(preset)
    d = dict(P.PRESETS[preset])
    scales = dict(d.get("level_scale_bits", {}))
    for item in spec.split(","):
        levels, bits = item.split(":")
        lo, hi = (int(x) for x in levels.split("-"))
        scales.update({lvl: int(bits) for lvl in range(lo, hi + 1)})
    d["level_scale_bits"] = scales
    return P.build(name=f"{preset} {spec}", **d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="n16-boot")
    ap.add_argument("--draws", type=int, default=3, help="key draws per variant and round")
    ap.add_argument("--rounds", type=int, default=1, help="passes over the variants, alternated")
    ap.add_argument("--level-scale", action="append", default=None, metavar="LO-HI:BITS[,...]",
                    help="a variant with levels LO..HI at 2^BITS, the preset's other levels kept "
                         "(repeatable, one variant each; default: the preset)")
    ap.add_argument("--inputs", default="uniform:3", metavar="NAME:SEED[,...]",
                    help=f"inputs, each bootstrapped once a draw ({', '.join(INPUTS)}; default uniform:3)")
    ap.add_argument("--slots", type=int, default=None,
                    help="sparse slots (a power of two below N/2; default: full), with their rotation keys")
    ap.add_argument("--backend", default=None, help="numpy or cupy (default: AEGIS_BACKEND)")
    a = ap.parse_args()
    if a.backend:
        be.select(a.backend)
    from aegis_hpc.ckks.bootstrap import bootstrap_rotations
    from aegis_hpc.ckks.context import Context

    bits = {}
    for _ in range(a.rounds):
        for spec in a.level_scale or [None]:
            prm = variant(a.preset, spec)
            ctx = Context(prm)
            for _ in range(a.draws):
                t = time.perf_counter()
                sk, keys = ctx.keygen(bootstrap=True)
                if a.slots:
                    ctx.add_rotation_keys(sk, keys, bootstrap_rotations(prm, slots=a.slots))
                ev = ctx.evaluator(keys)
                for label, vals in inputs(a.inputs, a.slots or ctx.slots):
                    out = ev.bootstrap(ctx.encrypt(vals, sk, level=0, slots=a.slots))
                    err = float(np.max(np.abs(ctx.decrypt(out, sk) - vals)))
                    bits.setdefault((spec, label), (prm, []))[1].append(-math.log2(err))
                    print(f"{prm.name}, {label}: {-math.log2(err):.2f} bits, {out.level} levels left "
                          f"({time.perf_counter() - t:.1f} s)", flush=True)
    for (spec, label), (prm, b) in bits.items():
        print(f"{prm.name} (log2 QP {prm.log_qp:.1f}), {label}: {len(b)} draws, bits "
              f"{' '.join(f'{x:.2f}' for x in b)}; min {min(b):.2f}, median {statistics.median(b):.2f}")


if __name__ == "__main__":
    main()
