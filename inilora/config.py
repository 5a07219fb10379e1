"""Reading the workflow config: checks that name the key, and the per-job specs.

The JSON schema (workflow/schemas/config.schema.yaml) checks types and fills defaults;
the checks here are the ones a schema cannot express (cross-references between keys).
Job specs are plain dicts passed to the CLI; Snakemake records them as ``params`` so a
changed setting reruns exactly the jobs it touches.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from inilora.inits import NEEDS_DATA, NEEDS_FACTORS, REGISTRY, InitError, check_options

SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    pass


def fmt_lr(lr: float) -> str:
    """The learning rate as it appears in artifact paths (``5e-04`` -> ``0.0005``)."""
    return f"{float(lr):g}"


def validate_schema(config: dict) -> dict:
    """jsonschema validation with defaults filled in (what snakemake.utils.validate does)."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)

    def set_defaults(validator, properties, instance, schema):
        for name, sub in properties.items():
            if isinstance(instance, dict) and "default" in sub:
                instance.setdefault(name, sub["default"])
        yield from validator_cls.VALIDATORS["properties"](validator, properties, instance, schema)

    extended = jsonschema.validators.extend(validator_cls, {"properties": set_defaults})
    errors = sorted(extended(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        key = ".".join(str(p) for p in e.path) or "(top level)"
        raise ConfigError(f"config key '{key}': {e.message}")
    return config


def check(config: dict) -> dict:
    """Cross-key checks; raises ConfigError naming the key, the value and what is allowed."""
    methods = config["methods"]
    for m in methods:
        if m not in REGISTRY:
            raise ConfigError(f"config key 'methods': unknown method '{m}'; valid: {sorted(REGISTRY)}")
    for m, opts in config.get("method_options", {}).items():
        if m not in REGISTRY:
            raise ConfigError(f"config key 'method_options.{m}': unknown method; valid: {sorted(REGISTRY)}")
        # factors_path is the workflow's to set; iterations / decompose_lr pick the decomposition
        extra = {"iterations", "decompose_lr"} if m in NEEDS_FACTORS else set()
        extra |= {"batch_size"} if m in NEEDS_DATA else set()
        try:
            check_options(m, dict(opts or {}), extra)
            reserved = {"factors_path", "check", "data"} & set(opts or {})
            if reserved:
                raise InitError(f"method '{m}': the workflow sets {sorted(reserved)} itself")
        except InitError as e:
            raise ConfigError(f"config key 'method_options.{m}': {e}") from None
    for m in config.get("method_train", {}):
        if m not in methods:
            raise ConfigError(f"config key 'method_train.{m}': '{m}' is not in 'methods' {methods}")
    from inilora.data import data_file_list, local_fields

    for where, spec in data_specs(config):
        for f in data_file_list(spec.get("data_files")):
            if not Path(f).expanduser().exists():
                raise ConfigError(f"config key '{where}.data_files': file '{f}' does not exist")
        fields = local_fields(spec)
        if fields and not fields[2] <= fields[1]:
            raise ConfigError(f"config key '{where}.data_files': '{fields[0]}' lacks field(s) "
                              f"{sorted(fields[2] - fields[1])}; it has {sorted(fields[1])}")
    if len(set(config["seeds"])) != len(config["seeds"]):
        raise ConfigError(f"config key 'seeds': duplicate seeds in {config['seeds']}")
    for name, task in config["tasks"].items():
        for b in task["benchmarks"]:
            if b not in config["benchmarks"]:
                raise ConfigError(
                    f"config key 'tasks.{name}.benchmarks': unknown benchmark '{b}'; "
                    f"defined: {sorted(config['benchmarks'])}"
                )
    from inilora.evaluate import KIND_LOADERS

    for b, bench in config["benchmarks"].items():
        kind, loader = bench["kind"], bench["data"]["loader"]
        if loader not in KIND_LOADERS[kind]:
            raise ConfigError(f"config key 'benchmarks.{b}.data.loader': '{loader}' cannot feed a '{kind}' benchmark; "
                              f"valid for {kind}: {list(KIND_LOADERS[kind])}")
        if kind == "humaneval" and bench["samples"] > 1 and bench["temperature"] == 0:
            raise ConfigError(f"config key 'benchmarks.{b}.temperature': 0 (greedy) with samples = "
                              f"{bench['samples']} repeats one output; set a temperature > 0 (the paper: 0.1)")
    for t in config["table2"]["tasks"]:
        if t not in config["tasks"]:
            raise ConfigError(f"config key 'table2.tasks': unknown task '{t}'; defined: {sorted(config['tasks'])}")
    for m in config["table2"].get("methods") or []:
        if m not in methods:
            raise ConfigError(f"config key 'table2.methods': '{m}' is not in 'methods' {methods}")
    g = config["glue"]
    if g["tasks"]:
        from inilora.glue import TASKS

        if g["model"] not in config["encoders"]:
            raise ConfigError(f"config key 'glue.model': '{g['model']}' is not under 'encoders' {sorted(config['encoders'])}")
        for t in g["tasks"]:
            if t not in TASKS:
                raise ConfigError(f"config key 'glue.tasks': unknown task '{t}'; valid: {sorted(TASKS)}")
        for m in g["methods"]:
            if m not in methods:
                raise ConfigError(f"config key 'glue.methods': '{m}' is not in 'methods' {methods}")
    clash = set(config["encoders"]) & set(config["models"])
    if clash:
        raise ConfigError(f"config key 'encoders': names {sorted(clash)} are also under 'models'; use distinct names")
    sw = config["lr_sweep"]
    for m in sw["methods"]:
        if m not in methods:
            raise ConfigError(f"config key 'lr_sweep.methods': '{m}' is not in 'methods' {methods}")
    if sw["task"] is not None and sw["task"] not in config["tasks"]:
        raise ConfigError(f"config key 'lr_sweep.task': unknown task '{sw['task']}'; defined: {sorted(config['tasks'])}")
    if sw["rank"] is not None and sw["rank"] not in config["ranks"]:
        raise ConfigError(f"config key 'lr_sweep.rank': {sw['rank']} is not one of 'ranks' {config['ranks']}")
    lrs = [fmt_lr(x) for x in config["decompose"]["lr"]]
    for m, opts in config.get("method_options", {}).items():
        if "decompose_lr" in opts and fmt_lr(opts["decompose_lr"]) not in lrs:
            raise ConfigError(
                f"config key 'method_options.{m}.decompose_lr': {opts['decompose_lr']} is not one of decompose.lr {lrs}"
            )
    top = config["decompose"]["iterations"]
    for c in iteration_counts(config):
        if c > top:
            raise ConfigError(f"an iteration count {c} is above config key 'decompose.iterations' = {top}")
    return config


def data_specs(config: dict):
    """(config key, data spec) for every training and benchmark data spec."""
    for t, task in config["tasks"].items():
        for i, spec in enumerate(task["train"]):
            yield f"tasks.{t}.train.{i}", spec
    for b, bench in config["benchmarks"].items():
        yield f"benchmarks.{b}.data", bench["data"]


def load(path: str | Path) -> dict:
    config = yaml.safe_load(Path(path).read_text())
    return check(validate_schema(config))


# ----------------------------------------------------------------------------- derived values


def alpha(config: dict, rank: int) -> float:
    a = config["lora"]["alpha"]
    return float(rank) if a == "rank" else float(a)


def method_options(config: dict, method: str) -> dict:
    return dict(config.get("method_options", {}).get(method, {}) or {})


def iteration_counts(config: dict) -> list[int]:
    """Every decomposition iteration count asked for anywhere; one run writes them all."""
    counts = {int(config["decompose"]["iterations"])} | {int(c) for c in config["decompose"]["checkpoints"]}
    for m in config["methods"]:
        if m in NEEDS_FACTORS and "iterations" in method_options(config, m):
            counts.add(int(method_options(config, m)["iterations"]))
    return sorted(counts)


def factors_wildcards(config: dict, model: str, method: str, rank: int | str) -> dict | None:
    """The decomposition a fine-tune of ``method`` reads, or None if it needs none."""
    if method not in NEEDS_FACTORS:
        return None
    opts = method_options(config, method)
    lr = fmt_lr(opts.get("decompose_lr", config["decompose"]["lr"][0]))
    iters = int(opts.get("iterations", config["decompose"]["iterations"]))
    return {"model": model, "rank": str(rank), "lr": lr, "iters": str(iters)}


def model_entry(config: dict, name: str) -> dict:
    """A causal LM (``models``) or an encoder for the GLUE runs (``encoders``), by name."""
    return {**config.get("encoders", {}), **config["models"]}[name]


def decompose_spec(config: dict, model: str, rank: int | str, lr: str) -> dict:
    d = config["decompose"]
    return {
        "model": model,
        "target_modules": model_entry(config, model)["target_modules"],
        "rank": int(rank),
        "lr": float(lr),
        "iterations": int(d["iterations"]),
        "checkpoints": iteration_counts(config),
        "seed": int(d["seed"]),
        "step_size": int(d["step_size"]),
        "gamma": float(d["gamma"]),
        "device": d["device"],
        "early_stop_tol": d["early_stop_tol"],
        "weight_dtype": d["weight_dtype"],
        "chunk_mb": d["chunk_mb"],
    }


def method_lr(config: dict, method: str) -> str:
    """The fine-tuning learning rate a method's table row uses (its ``method_train`` override, else ``train``)."""
    over = config.get("method_train", {}).get(method, {})
    return fmt_lr(over.get("learning_rate", config["train"]["learning_rate"]))


def init_options(config: dict, method: str) -> dict:
    """The options the init function gets: ``iterations`` and ``decompose_lr`` pick the
    decomposition (the workflow passes its path instead), so they are not passed on."""
    opts = method_options(config, method)
    if method in NEEDS_FACTORS:
        opts.pop("iterations", None)
        opts.pop("decompose_lr", None)
    return opts


def decomposed_models(config: dict) -> list[str]:
    """Models with a decomposition: every causal LM, and the GLUE encoder when there are GLUE tasks."""
    return [*config["models"], *([config["glue"]["model"]] if config["glue"]["tasks"] else [])]


def finetune_spec(config: dict, model: str, task: str, method: str, rank: int | str, lr: str,
                  seed: int | str) -> dict:
    """The spec of one fine-tune; ``lr`` comes from the run's path, so a sweep needs no other setting."""
    opts = init_options(config, method)
    return {
        "model": model,
        "target_modules": config["models"][model]["target_modules"],
        "task": task,
        "train_data": config["tasks"][task]["train"],
        "method": method,
        "method_options": opts,
        "rank": int(rank),
        "alpha": alpha(config, int(rank)),
        "train": {**config["train"], **config.get("method_train", {}).get(method, {}),
                  "learning_rate": float(lr), "seed": int(seed)},
    }


def evaluate_spec(config: dict, bench: str) -> dict:
    """Items that also occur in the training set of any task evaluated on ``bench`` are dropped,
    the same for every row of a table (the base model's too)."""
    b = config["benchmarks"][bench]
    exclude = [d for t in config["tasks"].values() if bench in t["benchmarks"] for d in t["train"]]
    if b["kind"] in ("humaneval", "mmlu"):  # not question/answer examples; nothing to match against
        exclude = []
    return {"benchmark": bench, **b, "max_length": config["train"]["max_length"], "exclude": exclude}


def table2_tasks(config: dict) -> list[str]:
    return config["table2"]["tasks"] or list(config["tasks"])


def table2_inputs(config: dict) -> list[str]:
    from inilora import paths

    methods = config["table2"]["methods"] or config["methods"]
    out = []
    for model in config["models"]:
        for task in table2_tasks(config):
            for bench in config["tasks"][task]["benchmarks"]:
                if config["table2"]["include_base"]:
                    out.append(paths.BASE_EVAL.format(model=model, bench=bench))
                for method in methods:
                    for rank in config["ranks"]:
                        for seed in config["seeds"]:
                            out.append(paths.EVAL.format(model=model, task=task, method=method, rank=rank,
                                                         lr=method_lr(config, method), seed=seed, bench=bench))
    return list(dict.fromkeys(out))


def table2_spec(config: dict) -> dict:
    """Column order and the notes that say what the numbers are."""
    tasks = table2_tasks(config)
    benches = list(dict.fromkeys(b for t in tasks for b in config["tasks"][t]["benchmarks"]))
    d, tr = config["decompose"], config["train"]
    notes = [f"models: " + ", ".join(f"{m} = {v['path']}" for m, v in config["models"].items())]
    for t in tasks:
        labels = "; ".join(s.get("label", f"{s['loader']}:{s.get('dataset', s.get('path', ''))}")
                           for s in config["tasks"][t]["train"])
        notes.append(f"task {t}: trained on {labels}")
    for b in benches:
        notes.append(f"benchmark {b}: {config['benchmarks'][b].get('label', b)}")
    for m in config["methods"]:
        wc = factors_wildcards(config, "-", m, "-")
        if wc:
            notes.append(f"{m}: decomposition of {wc['iters']} Adam iterations at lr {wc['lr']} "
                         f"(paper: 20000), seed {d['seed']}")
    for m, over in config.get("method_train", {}).items():
        notes.append(f"{m}: trained with " + ", ".join(f"{k} {v}" for k, v in over.items()) + " (per-method setting)")
    notes.append(f"fine-tuning: lr {tr['learning_rate']} (unless set per method), batch {tr['batch_size']} x accum {tr['grad_accum']}, "
                 + (f"{tr['max_steps']} steps" if tr["max_steps"] > 0 else f"{tr['epochs']} epochs")
                 + f", seeds {config['seeds']}, alpha {config['lora']['alpha']}")
    notes.append("columns: <benchmark>:<metric>: accuracy (greedy exact match, Hendrycks equivalence for math "
                 "kinds, next-token choice for mmlu), heldout_loss (mean token cross-entropy of the reference "
                 "answers), pass@k (humaneval, unbiased estimator); _std over seeds")
    return {"methods": config["table2"]["methods"] or config["methods"], "benchmarks": benches, "notes": notes}


def table5_inputs(config: dict) -> dict[str, list[str]]:
    """Metadata and Snakemake benchmark file of each model's decomposition (first rank and lr, full run)."""
    from inilora import paths

    wc = [{"model": m, "rank": config["ranks"][0], "lr": fmt_lr(config["decompose"]["lr"][0])}
          for m in decomposed_models(config)]
    return {"meta": [paths.FACTORS_META.format(**w, iters=max(iteration_counts(config))) for w in wc],
            "bench": [paths.DECOMP_BENCH.format(**w) for w in wc]}


def all_factors(config: dict) -> list[str]:
    from inilora import paths

    return [paths.FACTORS.format(model=m, rank=r, lr=fmt_lr(lr), iters=max(iteration_counts(config)))
            for m in decomposed_models(config) for r in config["ranks"] for lr in config["decompose"]["lr"]]


def require(key: str, what: str):
    """For input functions of targets the config leaves empty: fail naming the key."""
    raise ConfigError(f"config key '{key}' is empty; {what}")


def sweep_task(config: dict) -> str:
    return config["lr_sweep"]["task"] or table2_tasks(config)[0]


def lr_sweep_inputs(config: dict) -> list[str]:
    """Every method x sweep lr x seed evaluation on the sweep task's benchmarks (first rank)."""
    from inilora import paths

    sw = config["lr_sweep"]
    if not sw["values"]:
        raise ConfigError("config key 'lr_sweep.values' is empty; list the learning rates to sweep, e.g. [1e-4, 5e-4, 2e-3]")
    task = sweep_task(config)
    return [paths.EVAL.format(model=model, task=task, method=method, rank=sw["rank"] or config["ranks"][0],
                              lr=fmt_lr(lr), seed=seed, bench=bench)
            for model in config["models"] for method in (sw["methods"] or config["methods"])
            for lr in sw["values"] for seed in config["seeds"] for bench in config["tasks"][task]["benchmarks"]]


def lr_sweep_spec(config: dict) -> dict:
    sw = config["lr_sweep"]
    task = sweep_task(config)
    tr = config["train"]
    notes = [f"task {task}, rank {sw['rank'] or config['ranks'][0]}, seeds {config['seeds']}; every other training "
             f"setting as in 'train' (batch {tr['batch_size']} x accum {tr['grad_accum']}, "
             + (f"{tr['max_steps']} steps)" if tr["max_steps"] > 0 else f"{tr['epochs']} epochs)"),
             "best: the lr with the highest mean accuracy per method and benchmark (ties: the smaller lr)"]
    for b in config["tasks"][task]["benchmarks"]:
        notes.append(f"benchmark {b}: {config['benchmarks'][b].get('label', b)}")
    return {"methods": sw["methods"] or config["methods"], "notes": notes}


# ----------------------------------------------------------------------------- GLUE (Table 1)


def glue_inputs(config: dict) -> list[str]:
    from inilora import paths

    g = config["glue"]
    return [paths.GLUE_RUN.format(model=g["model"], task=t, method=m, rank=r, seed=s)
            for t in g["tasks"] for m in (g["methods"] or config["methods"]) for r in (g["ranks"] or config["ranks"])
            for s in g["seeds"]]


def glue_spec(config: dict, model: str, task: str, method: str, rank: int | str, seed: int | str) -> dict:
    g = config["glue"]
    opts = init_options(config, method)
    return {"model": model, "task": task, "method": method, "method_options": opts, "rank": int(rank),
            "alpha": alpha(config, int(rank)), "seed": int(seed),
            "target_modules": model_entry(config, model)["target_modules"],
            "data": g["data"].get(task), **{k: g[k] for k in ("epochs", "learning_rate", "batch_size", "max_length",
                                                             "warmup_ratio", "weight_decay")}}


def table1_spec(config: dict) -> dict:
    from inilora import glue

    g = config["glue"]
    notes = [f"encoder: {g['model']} = {model_entry(config, g['model'])['path']}; LoRA on "
             f"{model_entry(config, g['model'])['target_modules']} plus the classifier head",
             f"{g['epochs']} epochs, lr {g['learning_rate']}, batch {g['batch_size']}, max length {g['max_length']}, "
             f"linear warmup {g['warmup_ratio']}, AdamW weight decay {g['weight_decay']}, seeds {g['seeds']}",
             "<task>:<metric> is the paper's protocol, the best validation score over epochs; "
             "<task>:<metric>@last is the last epoch's"]
    notes += [f"task {t}: {glue.get_task(t).label}" for t in g["tasks"]]
    return {"methods": g["methods"] or config["methods"], "tasks": g["tasks"], "notes": notes}
