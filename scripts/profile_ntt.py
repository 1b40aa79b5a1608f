"""Where a key switch's time goes on the device, launch by launch, at one level of a preset:
the NTT passes (top stages in registers, the rest in shared memory) and ModUp/ModDown's
conversion kernels, each timed alone with CUDA events, with the bytes it must move and
the bandwidth that gives against a device-to-device copy measured in the same run.

    AEGIS_BACKEND=cupy python scripts/profile_ntt.py --preset n16-boot
"""
import argparse
from contextlib import contextmanager

import numpy as np

from aegis_hpc import backend
from aegis_hpc.backend import kernels
from aegis_hpc.ckks import params as P
from aegis_hpc.ckks.context import Context


REPS = 20


def timed(cp, fn, reps=None):
    reps = REPS if reps is None else reps
    fn()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(reps):
        fn()
    stop.record()
    stop.synchronize()
    return cp.cuda.get_elapsed_time(start, stop) / reps


@contextmanager
def without(prefix):
    """Launches of kernels whose name starts with `prefix` do nothing: the time of an
    operation less that kernel, so a difference gives one pass's time in its real setting."""
    real = kernels._fn

    def fn(name):
        return (lambda *a, **kw: None) if name.startswith(prefix) else real(name)

    kernels._fn = fn
    try:
        yield
    finally:
        kernels._fn = real


def main():
    global REPS
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="n16-boot")
    ap.add_argument("--level", type=int, default=None, help="default: the top level")
    ap.add_argument("--reps", type=int, default=REPS,
                    help="timed calls per launch (1 under ncu, which replays each launch itself)")
    a = ap.parse_args()
    REPS = a.reps
    backend.select("cupy")
    import cupy as cp

    prm = P.preset(a.preset)
    ctx = Context(prm)
    ring = ctx.ring
    ks = ctx.key_switcher(None)
    level = prm.max_level if a.level is None else a.level
    limbs = prm.limbs_at(level)
    n = ring.n
    idx = list(range(limbs))
    rng = np.random.default_rng(0)
    q = np.array(ring.primes[:limbs], dtype=np.uint64)[:, None]
    x64 = cp.asarray(rng.integers(0, 1 << 62, (2, limbs, n), dtype=np.uint64) % q)
    x32 = x64.astype(np.uint32)
    copy_src = cp.empty(1 << 28, dtype=np.uint8)
    copy_dst = cp.empty_like(copy_src)
    copy_ms = timed(cp, lambda: copy_dst.__setitem__(slice(None), copy_src))
    copy_bw = 2 * copy_src.nbytes / copy_ms / 1e6
    rows = []

    def row(name, ms, nbytes):
        rows.append((name, ms, nbytes / ms / 1e6))

    kernels.compile_all()
    for word, x in (("u64", x64), ("u32", x32)):
        b = x.nbytes
        row(f"NTT 2x{limbs} rows, {word}", timed(cp, lambda: kernels.ntt(ring, x, idx)), 4 * b)
        row(f"INTT 2x{limbs} rows, {word}", timed(cp, lambda: kernels.intt(ring, x, idx)), 4 * b)
        y = x.copy()
        row(f"NTT 2x{limbs} rows, {word}, in place", timed(cp, lambda: kernels.ntt(ring, y, idx, inplace=True)), 4 * b)
        for name, skip in (("register (top) pass", "ntt_fwd_smem"), ("shared-memory pass", "ntt_fwd_top")):
            with without(skip):
                row(f"  its {name} alone", timed(cp, lambda: kernels.ntt(ring, y, idx, inplace=True)), 2 * b)
    d = x64[0]
    ext = kernels.modup(ks, d, level)
    row(f"ModUp ({ext.shape[0]} digits x {ext.shape[1]} rows out, u32)", timed(cp, lambda: kernels.modup(ks, d, level)),
        d.nbytes + ext.nbytes)
    row("  its INTT", timed(cp, lambda: kernels.intt(ring, d, idx)), 2 * d.nbytes)
    consts = kernels._modup_consts(ks, level)
    sel = consts["converted"]
    row(f"  its NTT of {int(sel[0].size)} converted rows (in place)",
        timed(cp, lambda: kernels.ntt(ring, ext, None, inplace=True, rows_sel=sel)), 4 * 4 * int(sel[0].size) * n)
    acc = cp.asarray(rng.integers(0, 1 << 30, (2, ks.n_p + limbs, n), dtype=np.uint64)
                     % np.array([prm.qp[i] for i in ks.rows(level)], dtype=np.uint64)[:, None])
    with without("modup_"):     # modup_ntt_top (the conversion and the NTT's register pass) or modup_convert
        rest = timed(cp, lambda: kernels.modup(ks, d, level))
    row("  its conversion kernel (ModUp less the kernel)", max(1e-6, rows[-3][1] - rest), ext.nbytes + d.nbytes)
    row("ModDown (2 polys)", timed(cp, lambda: kernels.moddown(ks, acc, level)), acc.nbytes + 2 * limbs * n * 8)
    for name in ("moddown_convert", "ntt_fwd_smem_scale"):
        with without(name):
            rest = timed(cp, lambda: kernels.moddown(ks, acc, level))
        row(f"  its {name} (ModDown less the kernel)", max(1e-6, rows[-1 if name == 'moddown_convert' else -2][1] - rest),
            acc.nbytes)
    acc32 = acc.astype(np.uint32)    # the key inner product's words (older code: 64-bit only)
    if hasattr(kernels, "ntt_scale_down_add"):
        row("ModDown (2 polys) of 32-bit words", timed(cp, lambda: kernels.moddown(ks, acc32, level)),
            acc32.nbytes + 2 * limbs * n * 8)
    if hasattr(kernels, "moddown_rescale"):
        row("ModDown and rescale in one (2 polys, 32-bit words, + d0, d1)",
            timed(cp, lambda: kernels.moddown_rescale(ks, acc32, level, addend=(x64[0], x64[1]))),
            acc32.nbytes + x64.nbytes + 2 * (limbs - prm.primes_per_level) * n * 8)
    keep = limbs - prm.primes_per_level
    top_idx = list(range(keep, limbs))
    top_q = [prm.q[i] for i in top_idx]
    qkeep = ring.q_col(range(keep))
    row(f"rescale (2 polys, {limbs} -> {keep} limbs)",
        timed(cp, lambda: kernels.rescale(ring, x64, keep, top_idx, top_q, qkeep)), x64.nbytes + 2 * keep * n * 8)
    key = type("Key", (), {})()
    key.b = cp.asarray(rng.integers(0, 1 << 30, ext.shape, dtype=np.uint64).astype(np.uint32))
    key.a = key.b.copy()
    qcol = ring.q_col(ks.rows(level))
    perm = ring.automorphism_permutation(5)
    row("key inner product (gather by a rotation)", timed(cp, lambda: kernels.ks_inner(ext, key, qcol, ext.shape[1], perm)),
        ext.nbytes + 2 * key.b.nbytes + 2 * ext.shape[1] * n * 8)
    print(f"{a.preset} level {level}: {limbs} limbs, N = {n}; copy {copy_bw:.0f} GB/s (read + write)")
    print("| launch | ms | GB/s (bytes it must move) | % of copy |")
    print("|---|---|---|---|")
    for name, ms, bw in rows:
        print(f"| {name} | {ms:.4f} | {bw:.0f} | {100 * bw / copy_bw:.1f} |")


if __name__ == "__main__":
    main()
