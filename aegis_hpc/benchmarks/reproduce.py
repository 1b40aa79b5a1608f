"""``python -m aegis_hpc.bench reproduce``: the AEGIS paper's claims beside ours.

Two sources, both named in every output:

- the planner (`aegis_hpc.parallel.planner`, a trace of infer's own encoder code)
  at the full size (default bert-base, 2048 tokens, 12 layers, preset n16):
  bytes per block and memory per GPU for aegis, limb and replicate at each
  GPU count. Infer cannot run that size here (and bert-base has no
  calibration), so these are predictions;
- measured runs of `python -m aegis_hpc.infer` through mpirun on a workload
  that fits the time (default minilm, 1 layer, 16 tokens, preset demo): wall
  time, bytes on the wire, peak memory per rank, time hidden by overlap. The
  planner's prediction for that same small run is shown beside the measured
  bytes, which checks the planner that produced the full-size numbers.

A GPU count that cannot run here (fewer GPUs than ranks on the cupy backend,
more than --max-cpu-ranks on numpy) is a row marked "not run", never a number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PAPER = {  # the AEGIS paper's figures (4 GPUs, BERT-base)
    "ffn_traffic_reduction_pct": 57.9,
    "attention_traffic_reduction_pct": 81.3,
    "scaling_efficiency_pct": 96.62,
    "speedup": 3.86,
    "memory_reduction_pct": 69.1,
}
STRATEGIES = ("aegis", "limb", "replicate")


class UsageError(ValueError):
    pass


def _ints(text, what):
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{what} wants integers separated by commas, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise UsageError(f"{what} wants positive integers, got {text!r}")
    return sorted(set(vals))


# ---- planner: the full size ------------------------------------------------------

def planned(model, preset_name, tokens, layers, gpus) -> dict:
    from ..ckks.params import preset
    from ..parallel import planner

    from ..nn import models

    params = preset(preset_name)
    layers = models.config(model).layers if layers is None else layers
    tr = planner.trace(model, params, tokens, layers)
    out = {"model": model, "preset": preset_name, "params": params.describe(), "tokens": tokens,
           "layers": layers, "by_gpus": {}}
    for p in gpus:
        if p == 1:
            continue
        pl = planner.Planner(model, params, p, tokens, layers, trace=tr)
        out["by_gpus"][str(p)] = planner.summary(pl)
    single = planner.Planner(model, params, 1, tokens, layers, trace=tr).single_gpu_memory()
    out["single_gpu_memory"] = single.total
    return out


def predicted_total(model, preset_name, tokens, layers, world, strategy) -> int:
    from ..ckks.params import preset
    from ..parallel import planner

    params = preset(preset_name)
    tr = planner.trace(model, params, tokens, layers)
    transfers = getattr(planner, f"{strategy}_transfers")(tr, params, world)
    return sum(planner.predicted_bytes(t, params.n) for t in transfers)


# ---- measured: infer through mpirun --------------------------------------------------

def _failure_line(r):
    """The line that says why: infer's `error:` line, else the last line that is
    not part of mpirun's dashed banner."""
    lines = [x.strip() for x in (r.stderr + "\n" + r.stdout).splitlines()]
    errors = [x for x in lines if "error" in x.lower()]
    rest = [x for x in lines if x and set(x) != {"-"}]
    return (errors or rest or ["?"])[-1]


def _sh(cmd, timeout, env):
    t0 = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise RuntimeError(f"{cmd[0]} not found on PATH (install openmpi, e.g. `make install`, "
                           "and put the environment's bin/ on PATH)") from None
    return r, time.time() - t0


def _gpu_count():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return 0


def _text_token_ids(tokens: int) -> np.ndarray:
    """[CLS] + word pieces of the calibration sentences, repeated to length + [SEP].
    Real text, not random ids: random ids drive the activations outside the
    calibrated ranges the approximations (and the refresh bounds) were built for."""
    from ..nn import calibrate, models

    text = " ".join(calibrate.read_sentences(calibrate.default_sentences_path()))
    body = [i for i in models.tokenizer().encode(text).ids if i not in (101, 102)]
    body = (body * (1 + (tokens - 2) // len(body)))[: tokens - 2]
    return np.array([101] + body + [102])


def why_not(world, strategy, tokens, backend_name, max_cpu_ranks, gpus_here):
    if backend_name == "cupy" and world > gpus_here:
        return f"not run: {gpus_here} GPU(s) here"
    if backend_name != "cupy" and world > max_cpu_ranks:
        return f"not run: more than --max-cpu-ranks {max_cpu_ranks}"
    if strategy == "aegis" and tokens % world:
        return f"not run: {tokens} tokens do not split over {world} ranks"
    return None


def measure(args, work: Path, gpus, backend_name, log) -> dict:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONWARNINGS="ignore")
    py = [sys.executable, "-m"]
    work.mkdir(parents=True, exist_ok=True)
    keys = work / "keys"
    if not (keys / "eval.h5").exists():
        r, _ = _sh(py + ["aegis_hpc.client", "keygen", "--preset", args.run_preset, "--for-model",
                         args.run_model, "--out", str(keys), "--force"], args.timeout, env)
        if r.returncode:
            raise RuntimeError(f"keygen failed: {r.stderr.strip().splitlines()[-1:]}")
    from ..nn import models

    cfg = models.config(args.run_model)
    ids = _text_token_ids(args.run_tokens)
    np.save(work / "x.npy", models.embed_ids(args.run_model, ids))
    r, _ = _sh(py + ["aegis_hpc.client", "encrypt", "--public-key", str(keys / "eval.h5"), "--input",
                     str(work / "x.npy"), "--out", str(work / "x.h5"), "--force"], args.timeout, env)
    if r.returncode:
        raise RuntimeError(f"encrypt failed: {r.stderr.strip().splitlines()[-1:]}")
    gpus_here = _gpu_count() if backend_name == "cupy" else 0
    runs = []
    for world in gpus:
        for strategy in STRATEGIES:
            row = {"world": world, "strategy": strategy}
            reason = why_not(world, strategy, args.run_tokens, backend_name, args.max_cpu_ranks, gpus_here)
            if world == 1 and strategy != "aegis":
                reason = "same run as aegis at 1 rank (no exchange)"
            if reason:
                row["status"] = reason
                runs.append(row)
                continue
            def infer(*extra):
                """(summary, process wall s) of one infer run, or (status line, None)."""
                summ = work / f"run-{strategy}-{world}{''.join(extra)}.json"
                summ.unlink(missing_ok=True)
                cmd = (["mpirun", "--oversubscribe", "-n", str(world)] + py
                       + ["aegis_hpc.infer", "--model", args.run_model, "--layers", str(args.run_layers),
                          "--keys", str(keys / "eval.h5"), "--input", str(work / "x.h5"),
                          "--output", str(work / f"o-{strategy}-{world}.h5"), "--key-holder",
                          str(keys / "secret.h5"), "--seed", "00ff", "--refresh", "client",
                          "--strategy", strategy, "--summary", str(summ), "--force", *extra])
                log(f"  mpirun -n {world} python -m aegis_hpc.infer --strategy {strategy} {' '.join(extra)}...")
                try:
                    r, wall = _sh(cmd, args.timeout, env)
                except subprocess.TimeoutExpired:
                    return f"not finished in {args.timeout} s", None
                if r.returncode or not summ.exists():
                    return f"failed: {_failure_line(r)[:160]}", None
                return json.loads(summ.read_text()), wall

            s, wall = infer()
            if wall is None:
                row["status"] = s
                runs.append(row)
                continue
            if strategy == "aegis" and world > 1:
                # the same run with the k/v gather waited for at once: what the overlap hides
                off, off_wall = infer("--no-overlap")
                row["overlap_off"] = off if off_wall is None else {
                    "seconds": sum(b["seconds"] for b in off["blocks"].values()),
                    "comm_wait_seconds": off["comm_wait_seconds"]}
            row.update(status="ok", summary=s, process_wall_s=wall,
                       seconds=sum(b["seconds"] for b in s["blocks"].values()),
                       bytes=sum(b["bytes"] for b in s["blocks"].values()),
                       predicted_bytes=predicted_total(args.run_model, args.run_preset, args.run_tokens,
                                                       args.run_layers, world, strategy) if world > 1 else 0,
                       peak_memory_max=max(s["peak_memory_bytes"]))
            runs.append(row)
    base = next((r for r in runs if r["world"] == 1 and r.get("status") == "ok"), None)
    for r in runs:
        if r.get("status") == "ok" and base:
            r["speedup"] = base["seconds"] / r["seconds"]
            r["efficiency"] = r["speedup"] / r["world"]
        if r.get("status") == "ok":
            s = r["summary"]
            comm_s = s["hidden_seconds"] + s["comm_wait_seconds"]
            r["hidden_fraction"] = s["hidden_seconds"] / comm_s if comm_s > 0 else None
    return {"model": args.run_model, "layers": args.run_layers, "tokens": args.run_tokens,
            "preset": args.run_preset, "refresh": "client", "runs": runs}


# ---- report -------------------------------------------------------------------------

def _gib(x):
    return x / 2 ** 30


def _fmt(x, spec, none="not run"):
    return none if x is None else format(x, spec)


def table(res) -> str:
    m, plan, meas = res["machine"], res["planner"], res.get("measured")
    dev = (m.get("gpu") or {}).get("name") or f"{m['cpu']} ({m['cores']} cores)"
    big = max((int(p) for p in plan["by_gpus"]), default=None)
    L = [f"# AEGIS reproduction: paper vs aegis_hpc", "",
         f"Machine: {dev}, backend {m['backend']}, GPUs lent to this run: {res['gpus_here']}; "
         f"packages {', '.join(f'{k} {v}' for k, v in m['packages'].items())}; {res['date']}.", "",
         f"**Planner** (predicted from a trace of infer's encoder): {plan['model']}, {plan['layers']} layers, "
         f"{plan['tokens']} tokens, {plan['params']}.  ",
         (f"**Measured** (infer under mpirun): {meas['model']}, {meas['layers']} layer(s), {meas['tokens']} tokens, "
          f"preset {meas['preset']}, refresh {meas['refresh']}." if meas else "**Measured**: not run (--no-run)."),
         ""]
    # claims
    L += ["## Claims", "", "| claim | paper (4 GPUs) | ours | source |", "|---|---:|---:|---|"]
    if big:
        s = plan["by_gpus"][str(big)]
        a = s["aegis_vs_limb"]
        L.append(f"| FFN traffic vs limb-parallel | -{PAPER['ffn_traffic_reduction_pct']} % | "
                 f"-{a['FFN']:.1f} % | planner, {big} GPUs |")
        L.append(f"| attention traffic vs limb-parallel | -{PAPER['attention_traffic_reduction_pct']} % | "
                 f"-{a['attention']:.1f} % | planner, {big} GPUs |")
        mem = s["strategies"]["aegis"]["memory_fraction_of_one_gpu"]
        per_gpu = {k: _gib(v["memory"]["total"]) for k, v in s["strategies"].items()}
        L.append(f"| memory per device vs 1 GPU | -{PAPER['memory_reduction_pct']} % | -{100 * (1 - mem):.1f} % | "
                 f"planner, {big} GPUs ({per_gpu['aegis']:,.0f} GiB per GPU) |")
        L.append(f"| memory per GPU, full size (aegis / limb / replicate) | | {per_gpu['aegis']:,.0f} / "
                 f"{per_gpu['limb']:,.0f} / {per_gpu['replicate']:,.0f} GiB | planner; an H100 holds 80 GiB |")
    runs = meas["runs"] if meas else []
    ok = [r for r in runs if r.get("status") == "ok" and r["strategy"] == "aegis" and r["world"] > 1]
    best = max(ok, key=lambda r: r["world"]) if ok else None
    four = next((r for r in ok if r["world"] == 4), None)
    L.append(f"| scaling efficiency | {PAPER['scaling_efficiency_pct']} % | "
             + (f"{100 * best['efficiency']:.1f} % at {best['world']} ranks" if best else "not run")
             + f" | measured, {res['backend']} |")
    L.append(f"| end-to-end speedup | {PAPER['speedup']}x | "
             + (f"{four['speedup']:.2f}x" if four else "not run at 4" + (f" ({best['speedup']:.2f}x at {best['world']})" if best else ""))
             + f" | measured, {res['backend']} |")
    # bytes per block, full size
    L += ["", "## Bytes per block (planner, whole encoder, GiB sent per GPU)", "",
          "| GPUs | strategy | QKV | attention | out_proj | layernorm | FFN | total | memory/GPU GiB | % of 1 GPU |",
          "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p, s in sorted(plan["by_gpus"].items(), key=lambda kv: int(kv[0])):
        for name, st in s["strategies"].items():
            by = st["bytes_by_block"]
            L.append(f"| {p} | {name} | " + " | ".join(f"{_gib(by[b] / int(p)):,.2f}" for b in
                                                      ("QKV", "attention", "out_proj", "layernorm", "FFN"))
                     + f" | {_gib(st['total_bytes'] / int(p)):,.2f} | {_gib(st['memory']['total']):,.1f} | "
                     f"{100 * st['memory_fraction_of_one_gpu']:.1f} % |")
    L.append(f"| 1 | (single GPU) | 0 | 0 | 0 | 0 | 0 | 0 | {_gib(plan['single_gpu_memory']):,.1f} | 100 % |")
    # measured
    if meas:
        L += ["", "## Measured runs (infer)", "",
              "| ranks | strategy | status | wall s | speedup | efficiency | MiB sent (measured) | MiB (planner) "
              "| peak MiB/rank | comm hidden by overlap |",
              "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in runs:
            if r.get("status") != "ok":
                L.append(f"| {r['world']} | {r['strategy']} | {r['status']} | | | | | | | |")
                continue
            hf = r.get("hidden_fraction")
            L.append(f"| {r['world']} | {r['strategy']} | ok | {r['seconds']:.1f} | {_fmt(r.get('speedup'), '.2f')} | "
                     f"{_fmt(r.get('efficiency') and 100 * r['efficiency'], '.1f')} % | {r['bytes'] / 2**20:.2f} | "
                     f"{r['predicted_bytes'] / 2**20:.2f} | {r['peak_memory_max'] / 2**20:.0f} | "
                     f"{'-' if hf is None else f'{100 * hf:.0f} %'} |")
        for r in runs:
            off = r.get("overlap_off")
            if off is None:
                continue
            on = r["summary"]
            if isinstance(off, str):
                L.append(f"\naegis at {r['world']} ranks, overlap off: {off}")
                continue
            L.append(f"\naegis at {r['world']} ranks, overlap on: {r['seconds']:.1f} s, blocked in the k/v gather "
                     f"{on['comm_wait_seconds']:.2f} s, hidden {on['hidden_seconds']:.2f} s; overlap off "
                     f"(`--no-overlap`): {off['seconds']:.1f} s, blocked {off['comm_wait_seconds']:.2f} s.")
        L += ["", "Speedup and efficiency are against the 1-rank run of the same workload"
              + (f" on {m['cores']} CPU cores shared with other jobs: on the numpy backend they measure "
                 "contention, not the scaling of GPUs." if res["backend"] != "cupy" else ".")]
    L += ["", "Plots: scaling.png, bytes_per_block.png, memory_per_gpu.png, timeline.png; raw numbers: reproduce.json."]
    return "\n".join(L) + "\n"


def plots(res, out: Path) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    plan, meas = res["planner"], res.get("measured")
    runs = meas["runs"] if meas else []
    # scaling
    fig, ax = plt.subplots(figsize=(5, 4))
    ws = sorted({r["world"] for r in runs} | {1})
    ax.plot(ws, ws, "k--", label="ideal")
    for strat in STRATEGIES:
        pts = sorted((r["world"], r["speedup"]) for r in runs if r.get("status") == "ok"
                     and "speedup" in r and (r["strategy"] == strat or r["world"] == 1))
        if len(pts) > 1:
            ax.plot(*zip(*pts), "o-", label=strat)
    for r in runs:
        if r.get("status", "").startswith("not run") and r["strategy"] == "aegis":
            ax.annotate("not run", (r["world"], 1), fontsize=8, ha="center")
    ax.set_xticks(ws)
    ax.set_xlabel("ranks (GPUs)"), ax.set_ylabel("speedup vs 1 rank"), ax.legend()
    ax.set_title(f"measured: {meas['model'] if meas else '-'} ({res['backend']})", fontsize=9)
    files.append(_save(fig, out / "scaling.png"))
    # bytes per block per strategy (largest GPU count)
    if plan["by_gpus"]:
        p = max(plan["by_gpus"], key=int)
        s = plan["by_gpus"][p]
        blocks = ("QKV", "attention", "out_proj", "layernorm", "FFN")
        fig, ax = plt.subplots(figsize=(7, 4))
        x = np.arange(len(blocks))
        for j, strat in enumerate(STRATEGIES):
            by = s["strategies"][strat]["bytes_by_block"]
            ax.bar(x + (j - 1) * 0.27, [max(_gib(by[b] / int(p)), 1e-6) for b in blocks], 0.27, label=strat)
        ax.set_yscale("log"), ax.set_xticks(x, blocks), ax.set_ylabel("GiB sent per GPU (log)")
        ax.set_title(f"planner: {plan['model']}, {plan['tokens']} tokens, {p} GPUs", fontsize=9)
        ax.legend()
        files.append(_save(fig, out / "bytes_per_block.png"))
        # memory per GPU
        fig, ax = plt.subplots(figsize=(6, 4))
        gp = sorted(plan["by_gpus"], key=int)
        for strat in STRATEGIES:
            ax.plot([1] + [int(g) for g in gp], [_gib(plan["single_gpu_memory"])]
                    + [_gib(plan["by_gpus"][g]["strategies"][strat]["memory"]["total"]) for g in gp], "o-", label=strat)
        ax.set_xlabel("GPUs"), ax.set_ylabel("GiB per GPU (planner)"), ax.legend()
        ax.set_title(f"memory per GPU: {plan['model']}, {plan['tokens']} tokens", fontsize=9)
        files.append(_save(fig, out / "memory_per_gpu.png"))
    # timeline of rank 0 in the largest measured aegis run
    ok = [r for r in runs if r.get("status") == "ok" and r["strategy"] == "aegis"]
    if ok:
        r = max(ok, key=lambda r: r["world"])
        s = r["summary"]
        fig, ax = plt.subplots(figsize=(8, 2.6))
        t = 0.0
        for name, b in s["blocks"].items():
            ax.barh(1, b["seconds"], left=t, color="tab:blue" if "attention" in name else "tab:green")
            ax.text(t + b["seconds"] / 2, 1, name.replace("layer ", "L"), ha="center", va="center", fontsize=7)
            t += b["seconds"]
        ax.barh(0, s["comm_wait_seconds"], left=0, color="tab:red", label="blocked in waits")
        ax.barh(0, s["hidden_seconds"], left=s["comm_wait_seconds"], color="tab:orange", label="hidden by overlap")
        ax.set_yticks([0, 1], ["communication", "compute blocks"]), ax.set_xlabel("seconds")
        ax.set_title(f"aegis, {r['world']} rank(s): per-block wall time (rank 0) and communication totals", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        files.append(_save(fig, out / "timeline.png"))
    return files


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def main(args) -> int:
    from .. import backend
    from . import machine

    try:
        gpus = _ints(args.gpus, "--gpus")
        if args.run_tokens < 2:
            raise UsageError("--run-tokens must be at least 2 ([CLS] and [SEP])")
        from ..nn import models

        for name in (args.model, args.run_model):
            models.config(name)
    except (UsageError, ValueError) as e:
        print(f"error: {e}")
        return 2
    be = backend.name()
    desc = machine.describe(be)
    out = Path(args.out or f"bench/results/reproduce-{machine.slug(desc)}-{be}")
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    log(f"planner: {args.model}, {args.tokens} tokens, preset {args.preset}, GPUs {gpus}")
    try:
        plan = planned(args.model, args.preset, args.tokens, args.layers, gpus)
    except ValueError as e:
        print(f"error: {e}")
        return 2
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "backend": be, "machine": desc,
           "gpus_here": _gpu_count() if be == "cupy" else 0, "gpus": gpus, "paper": PAPER, "planner": plan,
           "command": "python -m aegis_hpc.bench reproduce " + " ".join(args.argv)}
    if not args.no_run:
        log(f"measured: infer {args.run_model}, {args.run_layers} layer(s), {args.run_tokens} tokens, "
            f"preset {args.run_preset}")
        try:
            # keys (the secret one too) and ciphertexts stay out of the results folder
            res["measured"] = measure(args, Path(args.work), gpus, be, log)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
            print(f"error: {e}")
            return 2
    (out / "reproduce.json").write_text(json.dumps(res, indent=1, default=str))
    md = table(res)
    (out / "reproduce.md").write_text(md)
    res["plots"] = plots(res, out)
    (out / "reproduce.json").write_text(json.dumps(res, indent=1, default=str))
    print(md)
    print(f"wrote {out}/reproduce.md, reproduce.json, {', '.join(res['plots'])}")
    return 0
