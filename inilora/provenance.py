"""Where a result came from: package versions, the project's commit, the machine.

Every job's JSON carries this record (``runtime.provenance``, through :class:`inilora.devices.JobStats`),
as PEFT's method comparison records its runs: the versions of the packages that change numbers, the
git commit of the project and whether its tracked files differed from it, the CPU model and the cores
the job could use, and, on a GPU, its model and driver. The tables' notes say what differs between
the runs they combine (:func:`differences`), so a one-item difference between two machines has its
explanation beside it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGES = ("inilora", "torch", "transformers", "peft", "snakemake", "datasets", "safetensors", "numpy", "scipy")
REPO = Path(__file__).resolve().parent.parent


def versions() -> dict[str, str]:
    """Installed versions of ``PACKAGES`` and Python (a package not installed is left out)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


@functools.lru_cache(maxsize=None)
def git_state(repo: Path = REPO) -> dict:
    """{"commit", "dirty"} of the project's checkout (dirty: a tracked file differs from the commit), or
    {"commit": None, "why": ...} where the package does not run from a git checkout."""
    git = shutil.which("git")
    if git is None or not (repo / ".git").exists():
        return {"commit": None, "why": "not run from a git checkout" if git else "git is not installed"}
    try:
        commit = subprocess.run([git, "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
        status = subprocess.run([git, "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return {"commit": None, "why": f"git failed: {err}"}
    return {"commit": commit, "dirty": bool(status.strip())}


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("model name", "Model name")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict:
    """CPU model, logical cores on the machine and those this job may run on; GPU model and driver on cuda."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = {"cpu": cpu_model(), "cores": os.cpu_count(), "cores_usable": usable, "platform": sys.platform}
    if device == "cuda":
        import torch

        out["gpu"] = torch.cuda.get_device_name()
        out["cuda"] = torch.version.cuda
        out["gpu_driver"] = gpu_driver()
    return out


@functools.lru_cache(maxsize=None)
def gpu_driver() -> str | None:
    """The NVIDIA driver version (nvidia-smi), None where it cannot be read."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def record(device: str) -> dict:
    """The provenance of a job that ran on ``device``: {"versions", "git", "machine"}."""
    return {"versions": versions(), "git": git_state(), "machine": machine(device)}


def differences(records: list[dict | None]) -> list[str]:
    """One sentence per provenance field on which ``records`` (one per run; None for a run from before
    provenance was recorded) differ, with how many runs had each value; [] when they all agree."""
    known = [r for r in records if r]
    notes = []
    if len(known) < len(records):
        notes.append(f"{len(records) - len(known)} of {len(records)} runs record no provenance")
    fields = {}
    for r in known:
        flat = {**{f"version of {k}": v for k, v in r.get("versions", {}).items()},
                "commit": (r.get("git") or {}).get("commit"),
                "tracked files changed": (r.get("git") or {}).get("dirty"),
                **{k: v for k, v in (r.get("machine") or {}).items() if k in ("cpu", "cores_usable", "gpu", "gpu_driver")}}
        for key, value in flat.items():
            fields.setdefault(key, []).append(value)
    for key, values in fields.items():
        counts = {"absent": len(known) - len(values)} if len(values) < len(known) else {}
        for v in values:
            counts[str(v)] = counts.get(str(v), 0) + 1
        if len(counts) > 1:
            spread = "; ".join(f"{v}: {n} run(s)" for v, n in sorted(counts.items()))
            notes.append(f"the runs differ in {key} ({spread})")
    return notes
