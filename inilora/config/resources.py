"""Cluster resources of each job, from its model's size and its work (docs/paper-scale.md derives them).

Every rule that computes asks for ``mem_mb`` (host RAM) and ``runtime`` (minutes) through these
functions. The model's size comes from the safetensors headers of a local folder, else from its
meta-device skeleton (no weights read); a model whose config is not readable offline counts as 7B. Memory grows with Snakemake's ``attempt``, so a job
killed for memory is retried with more (the SLURM profile retries once). Constants are stated
where they are used; the throughput ones are H100 figures (bf16 989 TFLOPS dense, HBM 3.35 TB/s).
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

from inilora.config.precheck import model_config
from inilora.config.specs import model_entry, task_entry
from inilora.evaluate.kinds import KINDS
from inilora.models import skeleton, target_linears

TRAIN_FLOPS = 989e12 * 0.35  # what a fine-tune sustains
ENCODER_FLOPS = 989e12 * 0.15  # small encoders use a GPU less well
DECODE_BYTES = 3.35e12 * 0.4  # generation, bandwidth bound
HUB_BYTES = 50e6  # a download from the hub, bytes per second
SAFETY = 2.0  # runtime asked for = estimate x SAFETY + a fixed start-up allowance
FALLBACK_PARAMS = 7e9


def _header_sizes(folder: Path, targets: tuple[str, ...]) -> tuple[float, float] | None:
    """The sizes from the safetensors headers of a local model folder (no torch, no transformers:
    Snakemake evaluates the resources again inside every cluster job), or None without such files."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    params = linears = 0
    for file in files:
        with safe_open(str(file), framework="numpy") as f:
            for name in f.keys():
                shape = f.get_slice(name).get_shape()
                params += math.prod(shape)
                if len(shape) == 2 and name.endswith(".weight") and name.rsplit(".", 2)[-2] in targets:
                    linears += math.prod(shape)
    return (float(params), float(linears)) if files else None


@functools.lru_cache(maxsize=None)
def _sizes(path: str, section: str, targets: tuple[str, ...]) -> tuple[float, float]:
    """(all parameters, parameters of the ``targets`` linears) of the model at ``path``: from the
    safetensors headers of a local folder, else from the model's skeleton."""
    headers = _header_sizes(Path(path).expanduser(), targets)
    if headers:
        return headers

    cfg = model_config("resources", path, section)
    if cfg is None:
        return FALLBACK_PARAMS, FALLBACK_PARAMS / 6.3  # Llama-2-7B's share of q/v weights
    model = skeleton(cfg)
    params = sum(p.numel() for p in model.parameters())
    return float(params), float(sum(m.weight.numel() for m in target_linears(model, list(targets)).values()))


def sizes(config: dict, model: str) -> tuple[float, float]:
    section = "encoders" if model in config.get("encoders", {}) and model not in config["models"] else "models"
    entry = model_entry(config, model)
    return _sizes(entry["path"], section, tuple(entry["target_modules"]))


def _examples(train_specs: list[dict], default: int = 10000) -> int:
    return sum(int(s.get("n") or default) for s in train_specs)


def mem_mb(config: dict, rule: str, model: str, attempt: int = 1) -> int:
    """Host RAM in MB: the fp32 weights the job holds (the decomposition: only its q/v; prepare_model
    and merge one and two copies of the model), 25% for the allocator and the data, 4 GB for the
    interpreter and libraries; times ``attempt``. ``test_first_attempt_mem_mb`` replaces attempt 1's
    amount for a rule it names (a cluster test's job that must be killed for memory)."""
    if attempt == 1 and rule in config.get("test_first_attempt_mem_mb", {}):
        return int(config["test_first_attempt_mem_mb"][rule])
    params, targets = sizes(config, model)
    held = targets * 4 * 1.3 if rule == "decompose" else params * 4 * (2 if rule == "merge" else 1)
    return int(math.ceil((held * 1.25 / 2**20 + 4096) * attempt))


def runtime_min(config: dict, rule: str, model: str, attempt: int = 1, task: str | None = None,
                bench: str | None = None) -> int:
    """Minutes: the FLOP or byte count of the job's work at the rates above, x SAFETY, plus 15 min."""
    params, targets = sizes(config, model)
    if rule == "decompose":
        d = config["decompose"]
        seconds = d["iterations"] * targets * 3.9e-12 + 60  # 84 s for 7B's 64 x 4096^2 x 20000 (measured)
    elif rule == "finetune":
        tr = {**config["train"], **(config["table4"]["train"] if task and task not in config["tasks"] else {})}
        examples = _examples(task_entry(config, task)["train"]) if task else 10000
        epochs = tr["epochs"] if tr["max_steps"] <= 0 else tr["max_steps"] * tr["batch_size"] * tr["grad_accum"] / examples
        tokens = examples * epochs * tr["max_length"]
        seconds = tokens * 6 * params / TRAIN_FLOPS
    elif rule in ("evaluate", "evaluate_base"):
        b = config["benchmarks"][bench]
        work = KINDS[b.get("kind", "numeric")].cost(b, int(b["data"].get("n") or 5000))
        seconds = (work["decode_steps"] * 2 * params / DECODE_BYTES) + (work["forward_tokens"] * 2 * params / TRAIN_FLOPS)
    elif rule == "prepare_model":
        seconds = params * 2 / HUB_BYTES + 60  # a hub download of the bf16 weights, or a GGUF conversion
    elif rule == "glue":
        g = config["glue"]
        seconds = g["epochs"] * 100000 * 64 * 6 * params / ENCODER_FLOPS  # QNLI's 105k examples bound it
    else:
        seconds = 600
    return int(math.ceil((seconds * SAFETY / 60 + 15) * attempt))


def gpu_visible() -> bool:
    """Whether a job started on this machine could see a GPU, decided without importing torch (the
    Snakefile asks once per run): NVIDIA's driver lists its devices in /proc/driver/nvidia/gpus and
    ROCm's exposes /dev/kfd; ``CUDA_VISIBLE_DEVICES`` set empty or to -1 hides them from a job."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return False
    nvidia = Path("/proc/driver/nvidia/gpus")
    return (nvidia.is_dir() and any(nvidia.iterdir())) or Path("/dev/kfd").exists()


def local_gpu_cap(config: dict, cores: int, gpu_here: bool) -> int | None:
    """The cap on the ``gpu`` resource for a run on this machine, or None to keep the profile's.

    profiles/default caps it at 1, so that jobs which may take this machine's GPU run one at a
    time. Where no job can have one (``device: cpu``, or ``auto`` with no GPU here) the cap would
    only queue CPU jobs behind each other; it becomes the cores, and ``--cores`` with each rule's
    threads decides how many jobs run at once. ``device: cuda`` keeps it whatever the detection
    says: a GPU it missed must not take two jobs at once."""
    if config["device"] == "cpu" or (config["device"] == "auto" and not gpu_here):
        return max(1, cores)
    return None
