"""Machine and package description recorded beside every benchmark result."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_info() -> dict | None:
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        info = {
            "name": name,
            "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
            "sm_count": props["multiProcessorCount"],
            "compute_capability": f"{props['major']}.{props['minor']}",
            "cuda_driver_api": cupy.cuda.runtime.driverGetVersion(),
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        }
    except Exception:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,clocks.max.mem",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        if out.returncode == 0:
            drv, sm, mem = (x.strip() for x in out.stdout.splitlines()[0].split(","))
            info.update(driver=drv, max_sm_clock=sm, max_mem_clock=mem)
    except Exception:
        pass
    return info


def versions(names=("numpy", "cupy-cuda13x", "cupy-cuda12x", "cupy", "desilofhe", "desilofhe-cu130",
                    "desilofhe-cu129", "desilofhe-cu128", "h5py", "mpi4py")) -> dict:
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def describe(backend: str) -> dict:
    d = {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": _cpu_model(),
        "cores": _cores(),
        "backend": backend,
        "packages": versions(),
    }
    if backend == "cupy":
        d["gpu"] = gpu_info()
    return d


def slug(desc: dict) -> str:
    """Short file-name-safe machine name: the GPU model on cupy, the CPU model and core count on numpy."""
    if desc.get("gpu"):
        base = desc["gpu"]["name"]
    else:
        base = f"{desc['cpu']}-{desc['cores']}c"
    base = re.sub(r"\((R|TM)\)|CPU|Processor|\d+-Core", "", base, flags=re.I)
    return re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")


def report(result: dict, table: str, args, stem: str) -> None:
    """Print a benchmark's table and, unless --no-save, keep its JSON and the
    table as OUT/STEM.json and .md (default folder bench/results, the
    results kept with the code)."""
    import json
    from pathlib import Path

    print(table)
    if args.no_save:
        return
    out = Path(args.out or "bench/results")
    out.mkdir(parents=True, exist_ok=True)
    path = out / stem
    path.with_suffix(".json").write_text(json.dumps(result, indent=1))
    path.with_suffix(".md").write_text(table)
    print(f"wrote {path}.json and .md")
