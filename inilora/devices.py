"""One device and dtype policy for every job that computes, and what each job records about its run.

``device`` (config key ``device``): ``auto`` puts the model on the GPU when one is present, else the
CPU; ``cpu`` and ``cuda`` force one; ``cuda`` on a machine without a GPU stops the job before it
reads anything, naming the key. Evaluation runs in ``evaluation_dtype``: ``auto`` is bf16 on a GPU
and fp32 on the CPU. Every job's JSON gets a ``runtime`` record: device, dtype, wall time, peak RSS,
peak GPU memory, its throughput and its provenance (:mod:`inilora.provenance`).
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import sys
import time

import torch

from inilora import provenance

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class DeviceError(ValueError):
    pass


def granted_gpus() -> str | None:
    """The GPUs a scheduler granted this job, as it names them (``CUDA_VISIBLE_DEVICES``, which SLURM
    sets from the job's gres, else ``SLURM_STEP_GPUS`` / ``SLURM_JOB_GPUS``), or None."""
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        value = os.environ.get(var, "").strip()
        if value and value not in ("-1", "NoDevFiles"):
            return value
    return None


@functools.cache  # once per job, however often it resolves its device
def _say_unusable(gpus: str, key: str) -> None:
    log.warning("the scheduler granted GPU(s) %s, but torch sees no CUDA device (torch %s, CUDA build: %s): "
                "running on the CPU (config key '%s': auto)", gpus, torch.__version__, torch.version.cuda or "none", key)


def resolve(choice: str, key: str = "device") -> str:
    """``cpu`` or ``cuda`` for the config value ``choice`` of ``key``; refuses what this machine lacks.

    ``auto`` where a scheduler granted GPUs that torch cannot use (a CPU build of torch, no driver)
    runs on the CPU, says so in the log, and the job's JSON records it (``JobStats``)."""
    if choice not in DEVICES:
        raise DeviceError(f"config key '{key}': '{choice}' is not one of {list(DEVICES)}")
    if choice == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if granted_gpus():
            _say_unusable(granted_gpus(), key)
        return "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"config key '{key}': 'cuda' asked for, but this machine has no CUDA GPU "
                          "(torch.cuda.is_available() is False); use 'auto' or 'cpu'")
    return choice


def dtype(choice: str, device: str, key: str = "evaluation_dtype") -> torch.dtype:
    """The weights' dtype: ``auto`` is bf16 on a GPU and fp32 on the CPU (where bf16 matmuls are slow)."""
    if choice == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    if choice not in DTYPES:
        raise DeviceError(f"config key '{key}': '{choice}' is not one of {['auto', *DTYPES]}")
    return DTYPES[choice]


def dtype_name(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 1024)


class JobStats:
    """Wall time, peak memory and throughput of one job: ``with JobStats(device, dtype) as stats: ...``,
    then ``stats.record(tokens=..., unit="generated tokens")`` for the JSON."""

    def __init__(self, device: str, dt: torch.dtype | str):
        self.device, self.dtype = device, dt if isinstance(dt, str) else dtype_name(dt)
        self.start = self.seconds = None

    def __enter__(self) -> "JobStats":
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self.start = time.time()
        return self

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.time() - self.start

    def record(self, **throughput) -> dict:
        """``throughput``: counts of work done (``train_tokens``, ``generated_tokens``, ``steps``...);
        each also appears per second of wall time."""
        seconds = self.seconds if self.seconds is not None else time.time() - self.start
        out = {"device": self.device, "dtype": self.dtype, "wall_seconds": round(seconds, 3),
               "peak_rss_mb": round(peak_rss_mb(), 1),
               "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if self.device == "cuda" else None}
        if self.device == "cuda":
            out["gpu"] = torch.cuda.get_device_name()
        out["gpus_granted"] = granted_gpus()  # by the scheduler; with device "cpu", granted but unusable here
        out["provenance"] = provenance.record(self.device)
        for name, count in throughput.items():
            if count is None:
                continue
            out[name] = count
            out[f"{name}_per_second"] = round(count / seconds, 2) if seconds > 0 else None
        return out
