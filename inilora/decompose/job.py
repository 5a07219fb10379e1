"""The workflow's decompose stage: one model x rank x decomposition lr, every checkpoint asked for."""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from inilora import devices, models
from inilora.decompose.artifact import fingerprint, save_artifact
from inilora.decompose.solver import SolverSettings, decompose_weights
from inilora.io import atomic_write_text, writer_lock

log = logging.getLogger(__name__)


def settings_from_spec(spec: dict) -> SolverSettings:
    return SolverSettings(
        rank=spec["rank"], lr=spec["lr"], iterations=spec["iterations"], step_size=spec["step_size"],
        gamma=spec["gamma"], seed=spec["seed"], early_stop_tol=spec.get("early_stop_tol"),
        weight_dtype=spec.get("weight_dtype", "float32"), chunk_mb=spec.get("chunk_mb"),
    )


def artifact_meta(spec: dict, source: dict, count: int, result: dict, seconds: float, device: str) -> dict:
    """What a factors file's JSON records besides its per-module errors (save_artifact adds those)."""
    return {"model": source, "rank": spec["rank"], "lr": spec["lr"], "iterations": count,
            "run_iterations": spec["iterations"], "seed": spec["seed"], "step_size": spec["step_size"],
            "gamma": spec["gamma"], "target_modules": spec["target_modules"], "solve_seconds": seconds,
            "early_stop_tol": spec.get("early_stop_tol"), "weight_dtype": spec.get("weight_dtype", "float32"),
            "stopped_at": result.get("stopped_at", {}), "device": device}


def write_timing(path: Path, seconds: float) -> None:
    """This process's wall time and peak RSS in the columns of Snakemake's benchmark TSV (s, max_rss
    in MB). The decompose job writes it itself: Snakemake's output cache refuses a rule with
    ``benchmark:``, and as an output the file is cached with the factors it measured."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    max_rss_mb = devices.peak_rss_mb()
    cpu = ru.ru_utime + ru.ru_stime
    row = [f"{seconds:.4f}", str(timedelta(seconds=int(seconds))), f"{max_rss_mb:.2f}", f"{cpu:.2f}"]
    atomic_write_text(path, "\t".join(["s", "h:m:s", "max_rss", "cpu_time"]) + "\n" + "\t".join(row) + "\n")


def run(spec: dict, manifest: Path, out_dir: Path, timing: Path | None = None) -> None:
    """The decompose rule's job: 1) resolve the device (a missing GPU stops it before anything is
    read), 2) read the target weights, 3) solve once for every checkpoint on the device, 4) write
    factors + JSON per checkpoint, 5) the job's own timing file (it counts the model load, as
    Snakemake's would). Steps 2-5 hold ``out_dir``'s writer lock: a second writer stops at once."""
    job_start = time.time()

    devices.resolve(spec.get("device", "auto"))
    with writer_lock(out_dir, "decompose"):
        run_on(models.read_manifest(manifest), spec, out_dir, timing, job_start)


def spec_for(rank: int, iterations: int = 20000, lr: float = 5e-4, target_modules: list[str] | None = None,
             device: str = "auto", seed: int = 0) -> dict:
    """A decompose spec with the paper's settings, for ``inilora decompose --model`` outside the workflow."""
    return {"target_modules": target_modules or ["q_proj", "v_proj"], "rank": rank, "lr": lr,
            "iterations": iterations, "checkpoints": [iterations], "seed": seed, "step_size": 5000, "gamma": 0.9,
            "device": device, "early_stop_tol": None, "weight_dtype": "float32", "chunk_mb": None}


def _target_weights(path: str, targets: list[str]) -> dict:
    weights = models.read_target_weights(path, targets)
    if weights is None:  # a hub id, or a checkpoint whose names do not map: load the whole model once
        model = models.load_for_targets(path)
        weights = {n: m.weight.detach().clone() for n, m in models.target_linears(model, targets).items()}
    log.info("read %d target weights (%.0f MB in fp32)", len(weights), sum(w.numel() for w in weights.values()) * 4 / 2**20)
    return weights


def run_on(info: dict, spec: dict, out_dir: Path, timing: Path | None = None, job_start: float | None = None) -> None:
    """:func:`run` for the model ``info`` describes (name, path, source), with or without a manifest."""
    job_start = job_start or time.time()
    device = devices.resolve(spec.get("device", "auto"))
    weights = _target_weights(info["path"], spec["target_modules"])
    source = {"name": info["name"], "path": info["path"], "source": info["source"], "note": info.get("note", ""),
              "fingerprint": fingerprint(weights)}
    matrices = len(weights)
    with devices.JobStats(device, spec.get("weight_dtype", "float32")) as stats:
        results = decompose_weights(weights, settings_from_spec(spec), spec["checkpoints"], device=device, consume=True)
    runtime = stats.record(iterations=spec["iterations"] * matrices)  # matrix-iterations per second
    for count, res in results.items():
        save_artifact(out_dir / f"it{count}.safetensors", out_dir / f"it{count}.json", res,
                      {**artifact_meta(spec, source, count, res, stats.seconds, device), "runtime": runtime})
        log.info("it%d: mean MSE / Eckart-Young optimum = %.4f", count,
                 sum(res["mse"][n] / res["optimum"][n] for n in res["mse"]) / len(res["mse"]))
    if timing:
        write_timing(timing, time.time() - job_start)


@dataclass(frozen=True)
class DecomposedFactors:
    """What :func:`decompose_model` returns: ``tensors[module] = {"A": r x in, "B": out x r}``, the
    rank, the fingerprint of the weights they approximate, the per-module MSE and its Eckart-Young
    optimum, and the device that solved them."""

    tensors: dict
    rank: int
    fingerprint: str
    mse: dict
    optimum: dict
    device: str


def decompose_model(model_or_path, rank: int = 8, iterations: int = 20000, lr: float = 5e-4,
                    target_modules: list[str] | None = None, device: str = "auto", seed: int = 0) -> DecomposedFactors:
    """IniLoRA's factors for a model in hand, a model folder or a hub id, without the workflow.

    ``apply_init(model, "inilora", rank, alpha, targets, factors=decompose_model(model, rank=rank))``
    uses them without any file. The paper's settings are the defaults (Adam lr 5e-4,
    StepLR(5000, 0.9), 20000 iterations); ``device``: auto, cpu or cuda (inilora.devices).
    """
    where = devices.resolve(device)
    if isinstance(model_or_path, (str, Path)):
        weights = _target_weights(str(model_or_path), target_modules or ["q_proj", "v_proj"])
    else:
        targets = target_modules or models.default_targets(model_or_path)
        weights = {n: m.weight.detach().float().clone() for n, m in models.target_linears(model_or_path, targets).items()}
    source = fingerprint(weights)
    settings = SolverSettings(rank=rank, lr=lr, iterations=iterations, seed=seed)
    res = decompose_weights(weights, settings, [iterations], device=where, consume=True)[iterations]
    return DecomposedFactors({n: {"A": res["A"][n], "B": res["B"][n]} for n in res["A"]}, rank, source,
                             res["mse"], res["optimum"], where)
