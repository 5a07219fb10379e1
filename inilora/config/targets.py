"""The DAG from the config: which result files each target needs (Snakemake input functions call these)."""

from __future__ import annotations

import json
from pathlib import Path

from inilora import paths
from inilora.config.methods import factors_wildcards, figure2_iterations, fmt_lr, iteration_counts, method_lr, variant
from inilora.config.precheck import check_models
from inilora.config.schema import ConfigError
from inilora.config.specs import decomposed_models, glue_models


def table2_tasks(config: dict) -> list[str]:
    """Table 2's training tasks: ``table2.tasks``, else every task."""
    return config["table2"]["tasks"] or list(config["tasks"])


def table2_methods(config: dict) -> list[str]:
    """Table 2's rows: ``table2.methods``, else every method."""
    return config["table2"]["methods"] or config["methods"]


def table2_inputs(config: dict, rates: dict | None = None) -> list[str]:
    """Table 2's evaluations: every model x task x benchmark x method x rank x seed (and the base's),
    each method at its rate: the one ``rates`` (:func:`selected_rates`) chose when tuning is on,
    else its ``method_train`` or ``train`` rate."""
    methods = table2_methods(config)
    out = []
    for model in config["models"]:
        for task in table2_tasks(config):
            for bench in config["tasks"][task]["benchmarks"]:
                if config["table2"]["include_base"]:
                    out.append(paths.BASE_EVAL.format(model=model, bench=bench))
                for method in methods:
                    for rank in config["ranks"]:
                        for seed in config["seeds"]:
                            lr = rates[(model, task, method, int(rank))] if rates else method_lr(config, method)
                            out.append(paths.EVAL.format(model=model, task=task, method=method, rank=rank,
                                                         lr=lr, seed=seed, bench=bench))
    return list(dict.fromkeys(out))


def tuning_on(config: dict) -> bool:
    """Whether Table 2's rates are chosen by the workflow (``tuning.rates`` set)."""
    return bool(config["tuning"]["rates"])


def tuning_seeds(config: dict) -> list[int]:
    """The tuning runs' seeds: ``tuning.seeds``, else the first of ``seeds``."""
    return config["tuning"]["seeds"] or config["seeds"][:1]


def tuning_inputs(config: dict) -> list[str]:
    """The tuning evaluations: every Table 2 model x task x method x rank at each rate of
    ``tuning.rates`` and each tuning seed, scored on the task's tuning benchmark."""
    tu = config["tuning"]
    if not tu["rates"]:
        raise ConfigError("config key 'tuning.rates' is empty; list the learning rates to choose from, "
                          "e.g. [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]")
    return [paths.EVAL.format(model=model, task=task, method=method, rank=rank, lr=fmt_lr(lr), seed=seed,
                              bench=tu["benchmarks"][task])
            for model in config["models"] for task in table2_tasks(config) for method in table2_methods(config)
            for rank in config["ranks"] for lr in tu["rates"] for seed in tuning_seeds(config)]


def selected_rates(path) -> dict[tuple, str]:
    """{(model, task, method, rank): learning rate as in run paths} from a selection JSON
    (inilora.report.selection writes it; its ``selections`` list is the contract)."""
    data = json.loads(Path(path).read_text())
    return {(s["model"], s["task"], s["method"], int(s["rank"])): fmt_lr(s["chosen_lr"]) for s in data["selections"]}


def table5_inputs(config: dict) -> dict[str, list[str]]:
    """Metadata and timing file of each model's decomposition (first rank and lr, full run)."""
    wc = [{"model": m, "rank": config["ranks"][0], "dlr": fmt_lr(config["decompose"]["lr"][0])}
          for m in decomposed_models(config)]
    return {"meta": [paths.FACTORS_META.format(**w, iters=max(iteration_counts(config))) for w in wc],
            "timing": [paths.DECOMP_TIMING.format(**w) for w in wc]}


def all_factors(config: dict) -> list[str]:
    """The factors file of every model x rank x decomposition lr, at its largest iteration count."""
    return [paths.FACTORS.format(model=m, rank=r, dlr=fmt_lr(dlr), iters=max(iteration_counts(config)))
            for m in decomposed_models(config) for r in config["ranks"] for dlr in config["decompose"]["lr"]]


def require(key: str, what: str):
    """For input functions of targets the config leaves empty: fail naming the key."""
    raise ConfigError(f"config key '{key}' is empty; {what}")


def sweep_task(config: dict) -> str:
    """The training task the lr sweep uses: ``lr_sweep.task``, else Table 2's first."""
    return config["lr_sweep"]["task"] or table2_tasks(config)[0]


def lr_sweep_inputs(config: dict) -> list[str]:
    """Every method x sweep lr x seed evaluation on the sweep task's benchmarks (first rank)."""

    sw = config["lr_sweep"]
    if not sw["values"]:
        raise ConfigError("config key 'lr_sweep.values' is empty; list the learning rates to sweep, e.g. [1e-4, 5e-4, 2e-3]")
    task = sweep_task(config)
    return [paths.EVAL.format(model=model, task=task, method=method, rank=sw["rank"] or config["ranks"][0],
                              lr=fmt_lr(lr), seed=seed, bench=bench)
            for model in study_models(config) for method in (sw["methods"] or config["methods"])
            for lr in sw["values"] for seed in (sw["seeds"] or config["seeds"]) for bench in sweep_benchmarks(config)]


def sweep_benchmarks(config: dict) -> list[str]:
    """The benchmarks the lr sweep scores: ``lr_sweep.benchmarks``, else the sweep task's."""
    return config["lr_sweep"]["benchmarks"] or config["tasks"][sweep_task(config)]["benchmarks"]


def glue_methods(config: dict) -> list[str]:
    """Table 1's rows: ``glue.methods``, else every method."""
    return config["glue"]["methods"] or config["methods"]


def glue_tuning_on(config: dict) -> bool:
    """Whether Table 1's rates are chosen by the workflow (``glue.tuning.rates`` set)."""
    return bool(config["glue"]["tuning"]["rates"])


def glue_inputs(config: dict, rates: dict | None = None) -> list[str]:
    """Every GLUE run of Table 1: encoder x task x method x rank x seed of the ``glue`` section, each
    at the rate ``rates`` (:func:`selected_rates`) chose when tuning is on, else ``glue.learning_rate``."""
    g = config["glue"]
    return [paths.GLUE_RUN.format(model=e, task=t, method=m, rank=r, seed=s,
                                  lr=rates[(e, t, m, int(r))] if rates else fmt_lr(g["learning_rate"]))
            for e in glue_models(config) for t in g["tasks"] for m in glue_methods(config)
            for r in (g["ranks"] or config["ranks"]) for s in g["seeds"]]


def glue_tuning_inputs(config: dict) -> list[str]:
    """Table 1's tuning runs: every encoder x task x method x rank x seed at each rate of
    ``glue.tuning.rates``. They are the comparison's runs too: the one at the chosen rate is reused."""
    g = config["glue"]
    if not g["tuning"]["rates"]:
        raise ConfigError("config key 'glue.tuning.rates' is empty; list the learning rates to choose from, "
                          "e.g. [1e-4, 3e-4, 1e-3, 3e-3]")
    return [paths.GLUE_RUN.format(model=e, task=t, method=m, rank=r, lr=fmt_lr(lr), seed=s)
            for e in glue_models(config) for t in g["tasks"] for m in glue_methods(config)
            for r in (g["ranks"] or config["ranks"]) for lr in g["tuning"]["rates"] for s in g["seeds"]]


def study_models(config: dict) -> list[str]:
    """The models the analyses run on: ``study.models``, else every model."""
    return config["study"]["models"] or list(config["models"])


def study_task(config: dict) -> str:
    """The training task the analyses use: ``study.task``, else Table 2's first."""
    return config["study"]["task"] or table2_tasks(config)[0]


def study_benchmark(config: dict) -> str:
    """The benchmark the analyses score: ``study.benchmark``, else the study task's first."""
    return config["study"]["benchmark"] or config["tasks"][study_task(config)]["benchmarks"][0]


def table4_tasks(config: dict) -> list[str]:
    """Table 4's sized tasks, ``<study task>-n<size>``."""
    return [f"{study_task(config)}-n{size}" for size in config["table4"]["sizes"]]


def study_rank(config: dict, key: str) -> int:
    """The rank of the analysis ``key`` (``figure3`` ...): its own ``rank``, else the first of ``ranks``."""
    return config[key]["rank"] or config["ranks"][0]


def study_evals(config: dict, key: str, methods: list[str], ranks: list[int], tasks: list[str] | None = None) -> list[str]:
    """Evaluations of methods x ranks x seeds on the study benchmark, for every model; the ranks are
    checked against the models' shapes here, when the target is asked for (error names ``key``)."""

    return study_runs(config, key, paths.EVAL, methods, ranks, tasks, bench=study_benchmark(config))


def study_runs(config: dict, key: str, pattern: str, methods: list[str], ranks: list[int],
               tasks: list[str] | None = None, **fixed) -> list[str]:
    """``pattern`` (a run path) for every study model x task x method x rank x seed, each method at its lr;
    the ranks are checked against the models' shapes first (error names ``key``)."""
    check_models(config, {key: list(ranks)})
    return [pattern.format(model=model, task=task, method=m, rank=r, lr=method_lr(config, m), seed=s, **fixed)
            for model in study_models(config) for task in (tasks or [study_task(config)]) for m in methods
            for r in ranks for s in config["seeds"]]


def table_inputs(config: dict, table: str) -> list[str]:
    """The evaluations of study table ``table`` (3, 4, 6 or 7): its methods x ranks (Table 4: per size)."""
    t = config[table]
    return study_evals(config, f"{table}.ranks", t["methods"], t["ranks"],
                       table4_tasks(config) if table == "table4" else None)


def figure2_inputs(config: dict) -> dict[str, list[str]]:
    """Figure 2: a fine-tune from every checkpoint of one decomposition run, and the checkpoints' metadata."""

    f2, rank = config["figure2"], study_rank(config, "figure2")
    names = [variant(config, f2["method"], "iterations", n) for n in figure2_iterations(config)]
    meta = []
    for model in study_models(config):
        for name in names:
            meta.append(paths.FACTORS_META.format(**factors_wildcards(config, model, name, rank)))
    return {"evals": study_evals(config, "figure2.rank", names, [rank]), "meta": meta}


def figure3_inputs(config: dict) -> list[str]:
    """Figure 3's evaluations: the method at each std of ``figure3.stds``, at the figure's rank."""
    f3 = config["figure3"]
    names = [variant(config, f3["method"], "std", float(s)) for s in f3["stds"]]
    return study_evals(config, "figure3.rank", names, [study_rank(config, "figure3")])


def figure4_inputs(config: dict) -> dict[str, list[str]]:
    """Figure 4: accuracy per distribution, and each run's initial adapter (the drawn factors)."""

    f4, rank = config["figure4"], study_rank(config, "figure4")
    task, seed = study_task(config), config["seeds"][0]
    initial = [paths.INITIAL_ADAPTER.format(model=model, task=task, method=m, rank=rank, lr=method_lr(config, m), seed=seed)
               for model in study_models(config) for m in f4["methods"]]
    return {"evals": study_evals(config, "figure4.rank", f4["methods"], [rank]), "initial": initial}


def figure5_inputs(config: dict) -> list[str]:
    """Figure 5: the training logs (loss curves) of methods x ranks x seeds."""

    f5 = config["figure5"]
    return study_runs(config, "figure5.ranks", paths.TRAIN_LOG, f5["methods"], f5["ranks"])


def figure_inputs(config: dict, figure: str) -> dict[str, list[str]]:
    """The named inputs of one figure (each becomes a flag of the ``figure`` command)."""
    if figure == "figure2":
        return figure2_inputs(config)
    if figure == "figure3":
        return {"evals": figure3_inputs(config)}
    if figure == "figure4":
        return figure4_inputs(config)
    if figure == "figure5":
        return {"logs": figure5_inputs(config)}
    if figure == "figure6":
        return {"sweep": [paths.LR_SWEEP]}
    raise ConfigError(f"unknown figure '{figure}'; the paper's are figure2 ... figure6")
