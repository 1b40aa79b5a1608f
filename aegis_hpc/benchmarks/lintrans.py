"""The weight transform's memory/time trade: rotation key sets and compact plaintexts.

One dense S x S transform (a BERT linear layer's shape), one ciphertext,
both key sets of ckks.LinearTransform in the same run: "pow2" (the default:
the power-of-two keys, babies by a hoisting tree) against "all" (one key per
baby step, every baby hoisted from x). Reports per key set: rotation keys
held (count and bytes at the transform's level), key switches and ModUps
per evaluation, median time, and |decrypted - numpy|; and the encoded
diagonals' bytes compact (what the transform caches) against full NTT form.
"""

from __future__ import annotations

import numpy as np

from .ops import Timer


def run(preset_name: str, slots: int, budget: float, level: int | None, log=print) -> dict:
    from .. import backend
    from ..ckks import Context, LinearTransform
    from . import machine

    ctx = Context.from_preset(preset_name)
    prm = ctx.params
    if slots > prm.slots:
        raise ValueError(f"--slots {slots} exceeds the {prm.slots} slots of preset {preset_name}")
    level = prm.max_level if level is None else level
    rng = np.random.default_rng(7)
    m = rng.uniform(-1, 1, (slots, slots)) / np.sqrt(slots)
    x = rng.uniform(-1, 1, slots)
    want = m @ x
    out = {"preset": preset_name, "params": prm.describe(), "slots": slots, "level": level,
           "key_sets": {}}
    for keys in ("pow2", "all"):
        lt = LinearTransform(m, slots=slots, keys=keys)
        sk, ek = ctx.keygen(rotations=lt.rotations())
        ev = ctx.evaluator(ek)
        ct = ctx.encrypt(x, sk, level=level, slots=slots)
        timer = Timer(backend.sync, budget, min_reps=2)
        t = timer(lambda: lt.evaluate(ev, ct))      # the warm-up call also encodes the diagonals
        err = float(np.abs(ctx.decrypt(lt.evaluate(ev, ct), sk).real - want).max())
        key_bytes = sum(int(k.a.nbytes + k.b.nbytes) for k in ek.galois.values())
        out["key_sets"][keys] = {"rotation_keys": len(lt.rotations()), "rotation_key_bytes": key_bytes,
                                 "key_switches": lt.key_switches(), "modups": lt.modups(),
                                 "median_ms": t["median_ms"], "reps": t["reps"], "max_abs_error": err}
        log(f"{keys}: {out['key_sets'][keys]}")
    pts = next(iter(lt._plaintexts.values()))
    compact = sum(int(p.data.nbytes) for p in pts.values())
    out["encoded_bytes"] = {"compact": compact, "full": len(pts) * prm.limbs_at(level) * prm.n * 8}
    out["machine"] = machine.describe(backend.name())
    return out


def format_table(r: dict) -> str:
    from . import machine

    p2, al = r["key_sets"]["pow2"], r["key_sets"]["all"]
    gib = 2 ** 30
    lines = [f"# Linear transform {r['slots']}x{r['slots']}: rotation key sets and compact weights",
             "",
             f"machine: {machine.slug(r['machine'])} ({r['machine']['backend']}); preset {r['preset']} "
             f"({r['params']}); ciphertext level {r['level']}",
             "",
             "| key set | rotation keys | key GiB | key switches | ModUps | median ms | max abs error |",
             "|---|---|---|---|---|---|---|"]
    for name, k in r["key_sets"].items():
        lines.append(f"| {name} | {k['rotation_keys']} | {k['rotation_key_bytes'] / gib:.3f} | {k['key_switches']} "
                     f"| {k['modups']} | {k['median_ms']:.1f} | {k['max_abs_error']:.2e} |")
    e = r["encoded_bytes"]
    lines += ["",
              f"pow2 / all: time {p2['median_ms'] / al['median_ms']:.2f}x, rotation key bytes "
              f"{p2['rotation_key_bytes'] / al['rotation_key_bytes']:.2f}x",
              f"encoded diagonals: compact {e['compact'] / gib:.4f} GiB vs full NTT form {e['full'] / gib:.4f} GiB "
              f"({e['full'] / e['compact']:.0f}x less)", ""]
    return "\n".join(lines)


def main(args) -> int:
    from .. import backend
    from . import machine

    backend.select(args.backend or None)
    try:
        r = run(args.preset, args.slots, args.budget, args.level, log=print if args.verbose else lambda *_: None)
    except (KeyError, ValueError) as e:
        print(f"error: {e}")
        return 2
    machine.report(r, format_table(r), args,
                   f"lintrans-{machine.slug(r['machine'])}-{backend.name()}-{args.preset}-s{args.slots}")
    return 0
