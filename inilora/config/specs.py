"""The job spec of each rule: a plain dict the CLI gets as JSON. As a rule's ``params`` it is part of
the job's identity, so a changed setting reruns exactly the jobs it touches."""

from __future__ import annotations

from inilora.config.methods import iteration_counts, method_train, resolve, run_options
from inilora.config.schema import ConfigError
from inilora.evaluate.kinds import KINDS


def alpha(config: dict, rank: int) -> float:
    a = config["lora"]["alpha"]
    return float(rank) if a == "rank" else float(a)


def model_entry(config: dict, name: str) -> dict:
    """A causal LM (``models``) or an encoder for the GLUE runs (``encoders``), by name."""
    return {**config.get("encoders", {}), **config["models"]}[name]


def decompose_spec(config: dict, model: str, rank: int | str, dlr: str) -> dict:
    d = config["decompose"]
    return {
        "model": model,
        "target_modules": model_entry(config, model)["target_modules"],
        "rank": int(rank),
        "lr": float(dlr),
        "iterations": int(d["iterations"]),
        "checkpoints": iteration_counts(config),
        "seed": int(d["seed"]),
        "step_size": int(d["step_size"]),
        "gamma": float(d["gamma"]),
        "device": config["device"],
        "early_stop_tol": d["early_stop_tol"],
        "weight_dtype": d["weight_dtype"],
        "chunk_mb": d["chunk_mb"],
    }


def decomposed_models(config: dict) -> list[str]:
    """Models with a decomposition: every causal LM, and the GLUE encoder when there are GLUE tasks."""
    return [*config["models"], *(glue_models(config) if config["glue"]["tasks"] else [])]


def glue_models(config: dict) -> list[str]:
    """The GLUE encoders: ``glue.model`` is one name or a list (the paper: RoBERTa base and large)."""
    m = config["glue"].get("model")
    return [] if m is None else [m] if isinstance(m, str) else list(m)


def finetune_spec(config: dict, model: str, task: str, method: str, rank: int | str, lr: str,
                  seed: int | str) -> dict:
    """The spec of one fine-tune; ``lr`` comes from the run's path, so a sweep needs no other setting."""
    sized = task not in config["tasks"]  # '<task>-n<size>': Table 4's runs, with its training settings
    return {
        "model": model,
        "target_modules": config["models"][model]["target_modules"],
        "task": task,
        "train_data": task_entry(config, task)["train"],
        "method": resolve(config, method)[0],
        "variant": method,
        "method_options": run_options(config, method, seed),
        "rank": int(rank),
        "alpha": alpha(config, int(rank)),
        "device": config["device"],
        "train": {**config["train"], **(config["table4"]["train"] if sized else {}), **method_train(config, method),
                  "learning_rate": float(lr), "seed": int(seed)},
    }


def task_entry(config: dict, name: str) -> dict:
    """A task by name; ``<task>-n<size>`` is ``<task>`` trained on its first ``size`` examples (Table 4)."""
    if name in config["tasks"]:
        return config["tasks"][name]
    base, sep, size = name.rpartition("-n")
    if sep and base in config["tasks"] and size.isdigit():
        task = config["tasks"][base]
        return {**task, "train": [{**spec, "n": int(size)} for spec in task["train"]]}
    raise ConfigError(f"unknown task '{name}'; defined: {sorted(config['tasks'])} (or <task>-n<size>)")


def evaluate_spec(config: dict, bench: str, task: str | None = None) -> dict:
    """Items that also occur in the training set of any task evaluated on ``bench`` are dropped,
    the same for every row of a table (the base model's too). A run's own task's training items
    are always dropped: a Table 4 run (``task`` = ``<task>-n<size>``) has a larger training set, and
    an lr sweep may score on a tuning benchmark that its task does not list."""
    b = config["benchmarks"][bench]
    exclude = [d for t in config["tasks"].values() if bench in t["benchmarks"] for d in t["train"]]
    if task is not None:
        exclude += [d for d in task_entry(config, task)["train"] if d not in exclude]
    if not KINDS[b["kind"]].matches_training:  # not question/answer examples; nothing to match against
        exclude = []
    b = {k: v for k, v in b.items() if k != "paper_name"}  # naming the paper's benchmark changes no result
    return {"benchmark": bench, **b, "max_length": config["train"]["max_length"], "exclude": exclude,
            "device": config["device"], "dtype": config["evaluation_dtype"]}


def glue_spec(config: dict, model: str, task: str, method: str, rank: int | str, lr: str, seed: int | str) -> dict:
    """One GLUE run at rate ``lr`` (as in its path). While Table 1's rates are tuned, ``tuning``
    names the held-out tuning split, which every run at every rate leaves out of training."""
    g = config["glue"]
    opts = run_options(config, method, seed)
    tuning = {k: g["tuning"][k] for k in ("fraction", "seed")} if g["tuning"]["rates"] else None
    return {"model": model, "task": task, "method": method, "method_options": opts, "rank": int(rank),
            "alpha": alpha(config, int(rank)), "seed": int(seed), "device": config["device"],
            "target_modules": model_entry(config, model)["target_modules"],
            "data": g["data"].get(task),
            # what the run records per validation example; a run from before it recorded them is rerun
            "per_example": ["labels", "best", "last"],
            "learning_rate": float(lr),
            **({"tuning": tuning} if tuning else {}),
            **{k: g[k] for k in ("epochs", "batch_size", "max_length", "warmup_ratio", "weight_decay")}}
