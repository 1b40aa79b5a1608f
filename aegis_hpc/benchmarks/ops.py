"""Per-operation timings of aegis_hpc beside a peer library at matched ring degree and log2 Q.

Matching rule: desilofhe's chain at ``max_level=L`` is one 60-bit base prime
plus L+1 primes of 40 bits (log2 Q = 100 + 40 L, read off its serialised
ciphertexts by ``probe_desilofhe_modulus``). Our primes are below 2^31, so a
40-bit level is two primes; we keep the ring degree and pick the level count
and scale whose log2 Q lands nearest the peer's. Where the scale that would
keep L levels needs primes q = 1 mod 2N that do not exist in sufficient number
(N = 2^16 at L = 24 would need ~21-bit primes, and only 16 multiples of 2^17
lie below 2^21) we keep the 50-bit scale and use fewer, larger levels; the
report prints both chains so the reader sees what was compared.
"""

from __future__ import annotations

import gc
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np

OPS = ("encrypt", "mul_relin_rescale", "rotate", "hoisted_8", "hoisted_16", "rescale", "ntt",
       "intt", "keyswitch")

OP_TITLES = {
    "encrypt": "encrypt (public key)",
    "mul_relin_rescale": "mul + relin + rescale",
    "rotate": "rotate (1 key switch)",
    "hoisted_8": "8 hoisted rotations",
    "hoisted_16": "16 hoisted rotations",
    "rescale": "rescale",
    "ntt": "NTT (2 polys, all limbs)",
    "intt": "INTT (2 polys, all limbs)",
    "keyswitch": "key switch (relin)",
    "bootstrap": "bootstrap",
}

# Structure of desilofhe 1.17.0's chains, inferred from its key and ciphertext
# sizes: dnum per ring degree (|P| = primes per digit) -- used to give our
# hybrid key switching the same number of digits.
PEER_DNUM = {15: 5, 16: 7}


def peer_log2_q(levels: int) -> float:
    return 100.0 + 40.0 * levels


class DigitCountError(RuntimeError):
    """An explicit digit count above the number of primes of every matching Q."""


def match_params(log_n: int, levels: int, target_log_q: float, dnum: int | None = None):
    """Our parameter set nearest in log2 Q to `target_log_q` at ring degree 2^log_n, with `dnum`
    digits where given (else the peer's, or more where that breaks the security bound)."""
    from ..ckks import params as P

    base_bits = 62.0  # two base primes just below 2^31
    min_prime_bits = {15: 21.5, 16: 24.0, 17: 26.0}.get(log_n, 20.0)
    best = None
    for lv in range(levels, 0, -1):
        s = int(round((target_log_q - base_bits) / lv))
        if s / 2 > 30.5:
            break
        if s / 2 < min_prime_bits:
            continue
        n_q = 2 + 2 * lv
        prm = None
        # the peer's digit count first; more digits (smaller P) if that breaks the security bound
        for d in (dnum,) if dnum else (PEER_DNUM.get(log_n, -(-n_q // 4)), -(-n_q // 3), -(-n_q // 2), n_q):
            try:
                # the defaults are capped at the chain's primes; an explicit count is taken as given
                prm = P.build(log_n, lv, s, primes_per_level=2, base_primes=2, dnum=d if dnum else min(d, n_q),
                              name=f"bench-n{log_n}-l{lv}")
                break
            except (P.ParameterError, P.InsecureParametersError, ValueError):
                continue
        if prm is None:
            continue
        err = abs(sum(math.log2(q) for q in prm.q) - target_log_q)
        if best is None or err < best[0]:
            best = (err, prm)
        if err < 8:
            break
    if dnum and (best is None or best[0] >= 8):
        # more digits than the matching Q has primes, or a P the bound rules out (fewer digits)
        fit = match_params(log_n, levels, target_log_q)
        if dnum > len(fit.q):
            raise DigitCountError(f"dnum={dnum}: the Q nearest log2 Q = {target_log_q} at N = 2^{log_n} has "
                                  f"{len(fit.q)} primes, and a digit holds at least one")
    if best is None or (dnum and best[0] >= 8):
        digits = f" with dnum={dnum}" if dnum else ""
        raise RuntimeError(f"no parameter set{digits} matches log2 Q = {target_log_q} at N = 2^{log_n}")
    return best[1]


class Timer:
    def __init__(self, sync, budget_s: float, min_reps: int = 3, max_reps: int = 200):
        self.sync, self.budget, self.min_reps, self.max_reps = sync, budget_s, min_reps, max_reps

    def __call__(self, fn):
        fn()  # warm-up: kernel compilation, table construction, allocator growth
        self.sync()
        times = []
        # the cyclic collector off while timing, as timeit does: a full collection over the
        # process's other objects (both libraries' contexts and keys) landing in one rep of a
        # host-bound op is not that op's cost
        collecting = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            while len(times) < self.max_reps and (len(times) < self.min_reps
                                                  or time.perf_counter() - start < self.budget):
                t0 = time.perf_counter()
                fn()
                self.sync()
                times.append(time.perf_counter() - t0)
        finally:
            if collecting:
                gc.enable()
        return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
                "reps": len(times)}


WORD_BYTES = 4  # residues are below 2^31: the traffic floor counts 32-bit words


def switching_key_bytes(prm, level):
    """The rows of one switching key a key switch at `level` reads (uint32 keys)."""
    return 2 * len(prm.digits_at(level)) * (len(prm.p) + prm.limbs_at(level)) * prm.n * WORD_BYTES


def traffic_floor(op, prm, level):
    """Bytes an op must read plus write at least (32-bit words; switching keys, inputs,
    outputs once each), the yardstick for "% of the copy bandwidth": None where no
    simple floor exists (bootstrapping)."""
    n, limbs = prm.n, prm.limbs_at(level)
    poly = limbs * n * WORD_BYTES
    key = switching_key_bytes(prm, level)
    after_rescale = (limbs - prm.primes_per_level) * n * WORD_BYTES
    hoisted = {f"hoisted_{k}": k * key + 2 * poly + k * 2 * poly for k in (8, 16)}
    return {"encrypt": 2 * poly + 2 * poly, "mul_relin_rescale": 4 * poly + key + 2 * after_rescale,
            "rotate": key + 4 * poly, "rescale": 2 * poly + 2 * after_rescale,
            "ntt": 4 * poly, "intt": 4 * poly, "keyswitch": key + 3 * poly, **hoisted}.get(op)


def _copy_bandwidth(xp, sync, nbytes=1 << 30):
    """Device-to-device (or host memcpy) bandwidth, counting bytes read plus written."""
    src = xp.ones(nbytes // 8, dtype=np.uint64)
    dst = xp.empty_like(src)
    t = Timer(sync, 0.5, min_reps=5)(lambda: dst.__setitem__(Ellipsis, src))
    del src, dst
    return 2 * nbytes / (t["median_ms"] * 1e-3) / 1e9


def _aegis_bootstrap(preset_name, sync, budget_s, log):
    """Time one full-slot bootstrap of values in [-1, 1] from level 0; precision and levels left."""
    from .. import backend as be
    from ..ckks.context import Context

    t0 = time.perf_counter()
    ctx = Context.from_preset(preset_name)
    sk, keys = ctx.keygen(bootstrap=True)
    ev = ctx.evaluator(keys)
    log(f"aegis bootstrap: {ctx.params.describe()}; keygen {time.perf_counter() - t0:.1f} s")
    vals = np.random.default_rng(3).uniform(-1, 1, ctx.slots)
    ct = ctx.encrypt(vals, sk, level=0)
    t1 = time.perf_counter()
    fresh = ev.bootstrap(ct)  # first call also encodes the DFT plaintexts (cached)
    sync()
    first_s = time.perf_counter() - t1
    # the timer's warm-up is the second call: on a GPU it captures the CUDA graph the timed
    # calls replay (backend/graphs.py)
    timing = Timer(sync, budget_s, min_reps=1, max_reps=10)(lambda: ev.bootstrap(ct))
    last = ev.bootstrap(ct)
    err = float(np.max(np.abs(ctx.decrypt(last, sk) - vals)))
    boot = ev.__dict__["_bootstrapper"]
    graph = boot.replays(ct)
    if not np.array_equal(be.to_numpy(last.data), be.to_numpy(fresh.data)):
        raise RuntimeError("bootstrap: a repeated call gave a different ciphertext than the first")
    info = {"preset": preset_name, "levels_after": last.level, "max_abs_error": err,
            "precision_bits": -math.log2(err), "first_call_s": first_s, "cuda_graph": graph,
            "cuda_graph_bytes": boot._graphs.nbytes() if graph else 0}
    log(f"aegis bootstrap: {timing['median_ms']:.1f} ms{' (CUDA graph)' if graph else ''}, max error "
        f"{err:.2e} (2^{math.log2(err):.2f}), {last.level} levels left")
    return timing, info


def run_aegis(log_n, levels, backend, budget_s, ops, peer_target_log_q=None, bandwidth=True,
              log=print, boot_preset="n16-boot", bootstrap_result=None, dnum=None):
    """bootstrap_result: _aegis_bootstrap's, when main timed it before the peer started."""
    from .. import backend as be
    from ..ckks.context import Context

    be.select(backend)
    xp = be.get_xp()
    target = peer_target_log_q if peer_target_log_q is not None else peer_log2_q(levels)
    prm = match_params(log_n, levels, target, dnum)
    log(f"aegis: {prm.describe()}")
    t0 = time.perf_counter()
    ctx = Context(prm)
    hoist = [k for k in (8, 16) if f"hoisted_{k}" in ops]
    rot_steps = list(range(1, 1 + max(hoist + [1])))
    sk, keys = ctx.keygen(rotations=rot_steps)
    log(f"aegis: context + keygen ({len(rot_steps)} rotation keys) {time.perf_counter() - t0:.1f} s")
    ev = ctx.evaluator(keys)
    timer = Timer(be.sync, budget_s)
    rng = np.random.default_rng(1)
    vals = rng.uniform(-1, 1, prm.slots)
    ct = ctx.encrypt(vals, keys.public)
    vals2 = rng.uniform(-1, 1, prm.slots)
    ct2 = ctx.encrypt(vals2, keys.public)
    level, limbs = ct.level, ct.limbs
    idx = list(range(limbs))
    res = {}

    def want(op):
        return op in ops

    if want("encrypt"):
        res["encrypt"] = timer(lambda: ctx.encrypt(vals, keys.public))
    if want("mul_relin_rescale"):
        res["mul_relin_rescale"] = timer(lambda: ev.mul(ct, ct2, rescale=True))
    if want("rotate"):
        res["rotate"] = timer(lambda: ev.rotate(ct, 1))
    for k in hoist:
        res[f"hoisted_{k}"] = timer(lambda k=k: ev.rotate_hoisted(ct, range(1, k + 1)))
    if want("rescale"):
        prod = ev.mul(ct, ct2)
        res["rescale"] = timer(lambda: ev.rescale(prod))
    if want("ntt") or want("intt"):
        coeff = ctx.ring.intt(ct.data, idx)
        if want("ntt"):
            res["ntt"] = timer(lambda: ctx.ring.ntt(coeff, idx))
        if want("intt"):
            res["intt"] = timer(lambda: ctx.ring.intt(ct.data, idx))
    extra = {}
    if want("keyswitch"):
        d = ct.data[1]
        res["keyswitch"] = timer(lambda: ev.ks.switch(d, keys.relin, level))
        key_bytes = switching_key_bytes(prm, level)
        moved = traffic_floor("keyswitch", prm, level)
        extra["keyswitch_bytes"] = moved
        extra["keyswitch_bandwidth_GBps"] = moved / (res["keyswitch"]["median_ms"] * 1e-3) / 1e9
        ext = ev.ks.modup(d, level)
        acc = ev.ks.inner(ext, keys.relin, level)
        # modup and inner as a hoisted group runs them; a lone key switch runs modup_inner
        parts = {"modup": timer(lambda: ev.ks.modup(d, level)),
                 "inner": timer(lambda: ev.ks.inner(ext, keys.relin, level)),
                 "modup_inner": timer(lambda: ev.ks.modup_inner(d, keys.relin, level)),
                 "moddown": timer(lambda: ev.ks.moddown(acc, level))}
        extra["keyswitch_parts_ms"] = {k: v["median_ms"] for k, v in parts.items()}
        inner_bytes = key_bytes + ext.nbytes + acc.nbytes
        extra["inner_product_bandwidth_GBps"] = inner_bytes / (parts["inner"]["median_ms"] * 1e-3) / 1e9
        if bandwidth:
            extra["copy_bandwidth_GBps"] = _copy_bandwidth(xp, be.sync)
            extra["keyswitch_fraction_of_copy"] = (extra["keyswitch_bandwidth_GBps"]
                                                   / extra["copy_bandwidth_GBps"])
    if want("bootstrap"):
        res["bootstrap"], extra["bootstrap"] = (bootstrap_result
                                                or _aegis_bootstrap(boot_preset, be.sync, budget_s, log))
    if "copy_bandwidth_GBps" in extra:
        for op, r in res.items():
            floor = traffic_floor(op, prm, level)
            if floor and "median_ms" in r:
                r["traffic_floor_bytes"] = floor
                r["fraction_of_copy"] = floor / (r["median_ms"] * 1e-3) / 1e9 / extra["copy_bandwidth_GBps"]
    # a correctness spot check, so a fast-but-wrong kernel cannot produce a result file
    out = ctx.decrypt(ev.mul(ct, ct2, rescale=True), sk)
    extra["mul_max_abs_error"] = float(np.max(np.abs(out - vals * vals2)))
    chain = {
        "ring_degree": prm.n, "log_n": log_n, "levels": prm.max_level, "limbs": len(prm.q),
        "special_primes": len(prm.p), "dnum": prm.dnum, "scale_bits": prm.scale_bits,
        "primes_per_level": prm.primes_per_level, "word_bits": 31,
        "log2_q": sum(math.log2(q) for q in prm.q), "log2_qp": prm.log_qp,
        "describe": prm.describe(),
    }
    return {"params": chain, "ops": res, "extra": extra}


def probe_desilofhe_modulus(engine, sk):
    """log2 of each prime of the peer's top-level chain, from the largest residue of a fresh ciphertext.

    The c1 half is uniform mod each q_i, so the largest of N residues is q_i
    (1 - O(1/N)): log2 is exact to ~1e-4 bits. Layout (34-byte header, then
    uint64 words limb by limb) was read off desilofhe 1.17.0; if it changes
    the probe returns None and the caller falls back to the documented chain.
    """
    try:
        n = 2 * engine.slot_count
        ct = engine.encrypt([0.0], sk)
        b = bytes(engine.serialize_ciphertext(ct))
        words = (len(b) - 34) // 8
        if words % n or words // n % 2:
            return None
        raw = np.frombuffer(b[34:34 + 8 * words], dtype=np.uint64).reshape(-1, n)
        half = raw.shape[0] // 2
        bits = [math.log2(int(r.max()) + 1) for r in raw[half:]]
        if max(bits) > 62:
            return None
        return bits
    except Exception:
        return None


def run_desilofhe(log_n, levels, mode, budget_s, ops, log=print):
    import desilofhe

    t0 = time.perf_counter()
    eng = desilofhe.Engine(max_level=levels, mode=mode)
    n = 2 * eng.slot_count
    if n != 1 << log_n:
        # max_level picks the ring; ask for the ring explicitly when it differs
        eng = desilofhe.Engine(slot_count=1 << (log_n - 1), max_level=levels, mode=mode)
    sync = _peer_sync(mode)
    sk = eng.create_secret_key()
    pk = eng.create_public_key(sk)
    rk = eng.create_relinearization_key(sk)
    hoist = [k for k in (8, 16) if f"hoisted_{k}" in ops]
    steps = list(range(1, 1 + max(hoist + [1])))
    fkeys = {s: eng.create_fixed_rotation_key(sk, s) for s in steps}
    log(f"desilofhe: engine + keys {time.perf_counter() - t0:.1f} s")
    bits = probe_desilofhe_modulus(eng, sk)
    rng = np.random.default_rng(1)
    vals = rng.uniform(-1, 1, eng.slot_count)
    ct = eng.encrypt(vals, pk)
    ct2 = eng.encrypt(rng.uniform(-1, 1, eng.slot_count), pk)
    timer = Timer(sync, budget_s)
    res = {}
    if "encrypt" in ops:
        res["encrypt"] = timer(lambda: eng.encrypt(vals, pk))
    if "mul_relin_rescale" in ops:
        res["mul_relin_rescale"] = timer(lambda: eng.rescale(eng.multiply(ct, ct2, rk)))
    if "rotate" in ops:
        res["rotate"] = timer(lambda: eng.rotate(ct, fkeys[1]))
    for k in hoist:
        ks = [fkeys[s] for s in range(1, k + 1)]
        res[f"hoisted_{k}"] = timer(lambda ks=ks: eng.rotate_batch(ct, ks))
    if "rescale" in ops:
        prod = eng.multiply(ct, ct2, rk)
        res["rescale"] = timer(lambda: eng.rescale(prod))
    if "ntt" in ops or "intt" in ops:
        coeff = eng.intt(ct)
        if "ntt" in ops:
            res["ntt"] = timer(lambda: eng.ntt(coeff))
        if "intt" in ops:
            res["intt"] = timer(lambda: eng.intt(ct))
    if "keyswitch" in ops:
        three = eng.multiply(ct, ct2)  # unrelinearised: relinearize is one key switch + add
        res["keyswitch"] = timer(lambda: eng.relinearize(three, rk))
    if "bootstrap" in ops:
        try:
            beng = desilofhe.Engine(mode=mode, use_bootstrap=True)
            bsk = beng.create_secret_key()
            brk = beng.create_relinearization_key(bsk)
            bck = beng.create_conjugation_key(bsk)
            bbk = beng.create_bootstrap_key(bsk)
            bvals = np.random.default_rng(3).uniform(-1, 1, beng.slot_count)
            bct = beng.level_down(beng.encrypt(bvals, beng.create_public_key(bsk)), 3)
            res["bootstrap"] = Timer(sync, budget_s, min_reps=1, max_reps=5)(
                lambda: beng.bootstrap(bct, brk, bck, bbk))
            out = beng.bootstrap(bct, brk, bck, bbk)
            err = float(np.max(np.abs(np.asarray(beng.decrypt(out, bsk)) - bvals)))
            res["bootstrap"].update(max_abs_error=err, precision_bits=-math.log2(err),
                                    levels_after=int(out.level))
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            res["bootstrap"] = {"skipped": f"desilofhe bootstrap failed: {exc}"}
    chain = {
        "ring_degree": n, "levels": levels,
        "log2_q": sum(bits) if bits else peer_log2_q(levels),
        "log2_q_source": "probed from ciphertext residues" if bits else "documented 100 + 40 L",
        "prime_bits": [round(b, 2) for b in bits] if bits else None,
        "mode": mode,
    }
    return {"params": chain, "ops": res}


def _peer_sync(mode):
    if mode != "gpu":
        return lambda: None
    import cupy

    return cupy.cuda.runtime.deviceSynchronize


def format_table(result) -> str:
    a = result["aegis"]
    p = result.get("peer")
    peer_name = result.get("peer_name") or "peer"
    lines = []
    m = result["machine"]
    gpu = m.get("gpu")
    lines.append(f"machine: {m['cpu']} ({m['cores']} cores)" + (
        f"; GPU {gpu['name']} ({gpu.get('memory_gib')} GiB, driver {gpu.get('driver', '?')}, "
        f"CUDA runtime {gpu.get('cuda_runtime')})" if gpu else ""))
    lines.append("packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()))
    ap = a["params"]
    lines.append(f"aegis {result['backend']}: N = {ap['ring_degree']}, levels {ap['levels']}, "
                 f"{ap['limbs']} x 31-bit-word primes, log2 Q = {ap['log2_q']:.1f}, "
                 f"|P| = {ap['special_primes']}, dnum = {ap['dnum']}, log2 QP = {ap['log2_qp']:.1f}")
    if p:
        pp = p["params"]
        lines.append(f"{peer_name} ({pp['mode']}): N = {pp['ring_degree']}, max_level {pp['levels']}, "
                     f"log2 Q = {pp['log2_q']:.1f} ({pp['log2_q_source']})")
    lines.append("")
    share = any("fraction_of_copy" in r for r in a["ops"].values())
    head = (["op", "aegis ms"] + ([f"{peer_name} ms", "ratio aegis/peer"] if p else [])
            + (["aegis % of copy bandwidth"] if share else []))
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for op, r in a["ops"].items():
        row = [OP_TITLES.get(op, op)]
        if "skipped" in r:
            row.append("n/a")
        else:
            row.append(f"{r['median_ms']:.2f}")
        if p:
            pr = p["ops"].get(op)
            if pr is None or "skipped" in pr:
                row += ["n/a", "n/a"]
            else:
                row.append(f"{pr['median_ms']:.2f}")
                row.append(f"{r['median_ms'] / pr['median_ms']:.2f}" if "median_ms" in r else "n/a")
        if share:
            row.append(f"{100 * r['fraction_of_copy']:.1f}" if "fraction_of_copy" in r else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    if p:
        for op, pr in p["ops"].items():
            if op not in a["ops"] and "median_ms" in pr:
                lines.append(f"| {OP_TITLES.get(op, op)} | n/a | {pr['median_ms']:.2f} | n/a |"
                             + (" n/a |" if share else ""))
    ex = a.get("extra", {})
    if "keyswitch_bandwidth_GBps" in ex:
        lines.append("")
        s = (f"key switch moves >= {ex['keyswitch_bytes'] / 2**20:.1f} MiB (key + ciphertext): "
             f"{ex['keyswitch_bandwidth_GBps']:.1f} GB/s")
        if "copy_bandwidth_GBps" in ex:
            s += (f"; copy bandwidth {ex['copy_bandwidth_GBps']:.1f} GB/s (read+write) -> "
                  f"{100 * ex['keyswitch_fraction_of_copy']:.1f} % of the copy limit")
        lines.append(s)
    if "keyswitch_parts_ms" in ex:
        lines.append("key switch parts (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in ex["keyswitch_parts_ms"].items())
                     + f"; inner product alone {ex['inner_product_bandwidth_GBps']:.1f} GB/s")
    if "bootstrap" in ex:
        b, pb = ex["bootstrap"], (p or {}).get("ops", {}).get("bootstrap", {})
        graph = {True: ", replayed as one CUDA graph", False: ", eager launches"}.get(b.get("cuda_graph"), "")
        lines.append(f"bootstrap ({b['preset']}{graph}): aegis max error {b['max_abs_error']:.2e} "
                     f"({b['precision_bits']:.1f} bits), {b['levels_after']} levels left"
                     + (f"; peer max error {pb['max_abs_error']:.2e} ({pb['precision_bits']:.1f} bits), "
                        f"{pb['levels_after']} levels left" if "max_abs_error" in pb else ""))
    if share:
        lines.append("% of copy bandwidth: the op's traffic floor (switching keys, inputs and outputs "
                     "once each, 32-bit words) over its time, against the measured device copy")
    if "mul_max_abs_error" in ex:
        lines.append(f"spot check: mul+relin+rescale max abs error {ex['mul_max_abs_error']:.2e}")
    return "\n".join(lines)


def results_dir() -> Path:
    root = Path(__file__).resolve().parents[2]
    d = root / "bench" / "results" if (root / "bench").is_dir() else Path.cwd() / "bench" / "results"
    d.mkdir(parents=True, exist_ok=True)
    return d


def main(args) -> int:
    from . import machine

    ops = [o for o in (args.ops.split(",") if args.ops else OPS)]
    if args.bootstrap:
        ops.append("bootstrap")
    unknown = set(ops) - set(OPS) - {"bootstrap"}
    if unknown:
        print(f"unknown ops: {', '.join(sorted(unknown))}; choose from {', '.join(OPS)}")
        return 2
    if args.dnum is not None and args.dnum < 1:
        print(f"error: --dnum {args.dnum}: a key switch takes at least one digit")
        return 2
    backend = args.backend
    budget = args.budget if args.budget is not None else (0.5 if backend == "cupy" else 2.0)

    def log(msg):
        print(msg, flush=True)

    def check_params(target):
        try:
            match_params(args.logn, args.levels, target, args.dnum)
        except DigitCountError as exc:
            print(f"error: {exc}; try a smaller --dnum")
            return False
        except RuntimeError as exc:
            more = "a larger --dnum, " if args.dnum else ""
            print(f"error: {exc} (the 128-bit bound or the primes of that ring rule it out; "
                  f"try {more}fewer --levels or a larger --logn)")
            return False
        return True

    if not check_params(peer_log2_q(args.levels)):    # before minutes of timing
        return 2
    peer = None
    peer_target = None
    aegis_boot = None
    if "bootstrap" in ops:
        # before the peer's engine and worker threads exist: a bootstrap is ~1,500 launches
        # enqueued from Python, bound by the host as much as by the device
        from .. import backend as be

        be.select(backend)
        aegis_boot = _aegis_bootstrap(args.boot_preset, be.sync, budget, log)
    if args.peer == "desilofhe":
        mode = "gpu" if backend == "cupy" else "cpu"
        try:
            peer = run_desilofhe(args.logn, args.levels, mode, budget, ops, log=log)
            peer_target = peer["params"]["log2_q"]
        except Exception as exc:  # noqa: BLE001 - a broken peer must not cost our own numbers
            log(f"desilofhe failed ({type(exc).__name__}: {exc}); timing aegis alone")
    elif args.peer not in (None, "none"):
        print(f"unknown peer {args.peer!r}")
        return 2
    if peer_target is not None and not check_params(peer_target):
        return 2
    aeg = run_aegis(args.logn, args.levels, backend, budget, ops, peer_target_log_q=peer_target,
                    bandwidth=not args.no_bandwidth, log=log, boot_preset=args.boot_preset,
                    bootstrap_result=aegis_boot, dnum=args.dnum)
    desc = machine.describe(backend)
    result = {"backend": backend, "peer_name": args.peer if peer else None, "machine": desc,
              "aegis": aeg, "peer": peer, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    table = format_table(result)
    print(table)
    if not args.no_save:
        out = Path(args.out) if args.out else results_dir()
        out.mkdir(parents=True, exist_ok=True)
        stem = f"ops-{machine.slug(desc)}-{backend}-n{args.logn}-l{args.levels}" + (f"-d{args.dnum}" if args.dnum else "")
        (out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
        (out / f"{stem}.md").write_text(f"# ops benchmark: {stem}\n\n"
                                        f"command: `python -m aegis_hpc.bench {' '.join(args.argv)}`\n\n"
                                        f"{table}\n")
        print(f"wrote {out / stem}.json and .md")
    return 0
