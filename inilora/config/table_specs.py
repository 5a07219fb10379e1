"""What each table and figure says about itself: row order, labels, the paper's names and the notes
under it (data, settings, stand-ins), built from the config."""

from __future__ import annotations

from inilora.config.methods import factors_wildcards, method_options
from inilora.config.specs import glue_models, model_entry
from inilora.config.targets import (glue_methods, glue_tuning_on, study_benchmark, study_models, study_rank, study_task,
                                    sweep_benchmarks, sweep_task, table2_methods, table2_tasks, tuning_on, tuning_seeds)
from inilora.data import glue
from inilora.inits import option_defaults


def training_budget(train: dict) -> str:
    """``batch B x accum G, N steps`` (or ``E epochs``): the fine-tuning budget as every note states it."""
    return (f"batch {train['batch_size']} x accum {train['grad_accum']}, "
            + (f"{train['max_steps']} steps" if train["max_steps"] > 0 else f"{train['epochs']} epochs"))


def fine_tuning_note(config: dict) -> str:
    tr = config["train"]
    lr = "tuned per method" if tuning_on(config) else f"{tr['learning_rate']} (unless set per method)"
    return (f"fine-tuning: lr {lr}, {training_budget(tr)}, "
            f"seeds {config['seeds']}, alpha {config['lora']['alpha']}")


def table2_spec(config: dict) -> dict:
    """Column order and the notes that say what the numbers are."""
    tasks = table2_tasks(config)
    benches = list(dict.fromkeys(b for t in tasks for b in config["tasks"][t]["benchmarks"]))
    d = config["decompose"]
    notes = ["models: " + ", ".join(f"{m} = {v['path']}" for m, v in config["models"].items())]
    for t in tasks:
        labels = "; ".join(s.get("label", f"{s['loader']}:{s.get('dataset', s.get('path', ''))}")
                           for s in config["tasks"][t]["train"])
        notes.append(f"task {t}: trained on {labels}")
    for b in benches:
        notes.append(f"benchmark {b}: {config['benchmarks'][b].get('label', b)}")
    for m in config["methods"]:
        wc = factors_wildcards(config, "-", m, "-")
        if wc:
            notes.append(f"{m}: decomposition of {wc['iters']} Adam iterations at lr {wc['dlr']} "
                         f"(paper: 20000), seed {d['seed']}")
    for m, over in config.get("method_train", {}).items():
        notes.append(f"{m}: trained with " + ", ".join(f"{k} {v}" for k, v in over.items()) + " (per-method setting)")
    notes.append(fine_tuning_note(config))
    if tuning_on(config):
        notes.append(tuning_note(config))
    notes.append("columns: <benchmark>:<metric>: accuracy (greedy exact match, Hendrycks equivalence for math "
                 "kinds, next-token choice for mmlu), heldout_loss (mean token cross-entropy of the reference "
                 "answers), pass@k (humaneval, unbiased estimator); _std over seeds")
    models = {m: e["paper_name"] for m, e in config["models"].items() if e.get("paper_name")}
    named = {b: config["benchmarks"][b]["paper_name"] for b in benches if config["benchmarks"][b].get("paper_name")}
    return {"methods": table2_methods(config), "benchmarks": benches, "notes": notes,
            "paper": {"models": models, "benchmarks": named} if models and named else {}}


RULES = {"heldout_loss": "the lowest mean held-out loss of the tuning items' reference answers",
         "headline": "the highest headline metric (accuracy, pass@1) on the tuning items"}


def tuning_note(config: dict) -> str:
    tu = config["tuning"]
    benches = "; ".join(f"task {t}: {b} ({config['benchmarks'][b].get('label', b)})" for t, b in tu["benchmarks"].items())
    return (f"rates tuned per method (results/selection.json): of {[float(r) for r in tu['rates']]}, "
            f"{RULES[tu['rule']]} (ties: the smaller rate), fine-tuned on seed(s) {tuning_seeds(config)}, "
            f"scored on the tuning benchmark, drawn apart from the test items ({benches}); 'train.learning_rate' "
            "plays no part")


def selection_spec(config: dict) -> dict:
    """What the rate selection needs besides the tuning evaluations: the rule, its bootstrap and the
    notes of its table and figure."""
    tu = config["tuning"]
    notes = [tuning_note(config),
             f"stability: the share of {tu['resamples']} bootstrap resamples of the tuning items (the same items "
             f"for every rate, each item's score averaged over the tuning seeds) that pick each rate; a choice "
             f"picked in fewer than {tu['stable_at']:.0%} of them is marked unstable",
             f"{training_budget(config['train'])}, alpha {config['lora']['alpha']}"]
    return {"rule": tu["rule"], "rates": [float(r) for r in tu["rates"]], "resamples": tu["resamples"],
            "stable_at": tu["stable_at"], "methods": table2_methods(config), "notes": notes}


def lr_sweep_spec(config: dict) -> dict:
    sw = config["lr_sweep"]
    task = sweep_task(config)
    notes = [f"task {task}, rank {sw['rank'] or config['ranks'][0]}, seeds {sw['seeds'] or config['seeds']}; every other training "
             f"setting as in 'train' ({training_budget(config['train'])})",
             "best: the lr with the highest mean accuracy per method and benchmark (ties: the smaller lr)"]
    for b in sweep_benchmarks(config):
        notes.append(f"benchmark {b}: {config['benchmarks'][b].get('label', b)}")
    return {"methods": sw["methods"] or config["methods"], "notes": notes}


def glue_tuning_note(config: dict) -> str:
    g, tu = config["glue"], config["tuning"]
    return (f"rates tuned per method (results/selection_table1.json): of {[float(r) for r in g['tuning']['rates']]}, "
            f"{GLUE_RULES[tu['rule']]} after the last epoch (ties: the smaller rate), seeds {g['seeds']}; the tuning "
            f"split is {g['tuning']['fraction']:.0%} of each task's training split (draw seed {g['tuning']['seed']}), "
            "left out of training at every rate; the validation split plays no part in the choice, and "
            "'glue.learning_rate' none")


GLUE_RULES = {"heldout_loss": "the lowest mean loss on the tuning split (cross-entropy, or squared error for "
                              "regression)",
              "headline": "the highest accuracy on the tuning split"}


def glue_selection_spec(config: dict) -> dict:
    """The rate selection of Table 1's runs: as :func:`selection_spec`, read from the GLUE runs."""
    g, tu = config["glue"], config["tuning"]
    notes = [glue_tuning_note(config),
             f"stability: the share of {tu['resamples']} bootstrap resamples of the tuning split's examples (the "
             f"same examples for every rate, each averaged over the seeds) that pick each rate; a choice picked in "
             f"fewer than {tu['stable_at']:.0%} of them is marked unstable",
             f"{g['epochs']} epochs, batch {g['batch_size']}, alpha {config['lora']['alpha']}"]
    return {"source": "glue", "rule": tu["rule"], "rates": [float(r) for r in g["tuning"]["rates"]],
            "resamples": tu["resamples"], "stable_at": tu["stable_at"], "methods": glue_methods(config),
            "notes": notes}


def table1_spec(config: dict) -> dict:
    g = config["glue"]
    notes = [f"encoder: {e} = {model_entry(config, e)['path']}; LoRA on "
             f"{model_entry(config, e)['target_modules']} plus the classifier head" for e in glue_models(config)]
    lr = "tuned per method" if glue_tuning_on(config) else g["learning_rate"]
    notes += [f"{g['epochs']} epochs, lr {lr}, batch {g['batch_size']}, max length {g['max_length']}, "
              f"linear warmup {g['warmup_ratio']}, AdamW weight decay {g['weight_decay']}, seeds {g['seeds']}",
              "<task>:<metric> is the paper's protocol, the best validation score over epochs; "
              "<task>:<metric>@last is the last epoch's"]
    if glue_tuning_on(config):
        notes.append(glue_tuning_note(config))
    notes += [f"task {t}: {glue.get_task(t).label}" for t in g["tasks"]]
    paper = {e: config["encoders"][e]["paper_name"] for e in glue_models(config) if config["encoders"][e].get("paper_name")}
    return {"methods": glue_methods(config), "tasks": g["tasks"], "notes": notes, "paper": paper}


def study_notes(config: dict) -> list[str]:
    """What every analysis was trained and measured on (stand-ins say so in their labels)."""
    task, bench = study_task(config), study_benchmark(config)
    labels = "; ".join(s.get("label", s["loader"]) for s in config["tasks"][task]["train"])
    return ["models: " + ", ".join(f"{m} = {config['models'][m]['path']}" for m in study_models(config)),
            f"trained on task {task}: {labels}",
            f"benchmark {bench}: {config['benchmarks'][bench].get('label', bench)}",
            f"{fine_tuning_note(config)}; decomposition {config['decompose']['iterations']} Adam iterations "
            "(paper: 20000)"]


def study_spec(config: dict, table: str) -> dict:
    """Row order, the benchmark and what the paper reports for the same model and benchmark."""
    bench = study_benchmark(config)
    spec = {"table": table, "methods": config[table]["methods"], "ranks": config[table]["ranks"],
            "benchmark": bench, "notes": study_notes(config), "paper": paper_names(config, bench)}
    labels = {m: config["variants"][m]["label"] for m in config[table]["methods"]
              if m in config["variants"] and "label" in config["variants"][m]}
    if table == "table4":
        spec["sizes"] = config["table4"]["sizes"]
        spec["notes"].append(f"data sizes: the first n examples of each training spec, trained with "
                             f"{config['table4']['train']} over 'train' (the paper: one epoch)")
    return {**spec, "labels": labels}


def paper_names(config: dict, bench: str) -> dict:
    """{our model name: the paper's} when the benchmark is a paper benchmark (its ``paper_name``)."""
    b = config["benchmarks"][bench].get("paper_name")
    models = {m: config["models"][m]["paper_name"] for m in study_models(config) if config["models"][m].get("paper_name")}
    return {"benchmark": b, "models": models} if b and models else {}


def figure_spec(config: dict, figure: str) -> dict:
    spec = {"figure": figure, "notes": study_notes(config), "benchmark": study_benchmark(config),
            "labels": {m: v.get("label", m) for m, v in config["variants"].items()}}
    if figure == "figure3":
        m = config["figure3"]["method"]
        spec["default_std"] = method_options(config, m).get("std", option_defaults(m).get("std"))
    if figure in ("figure2", "figure3", "figure4"):
        spec["rank"] = study_rank(config, figure)
    if figure == "figure6":
        spec["notes"] = lr_sweep_spec(config)["notes"]
    return spec
