"""Reading the workflow config: checks that name the key, and the per-job specs.

The JSON schema (workflow/schemas/config.schema.yaml) checks types and fills defaults;
the checks here are the ones a schema cannot express (cross-references between keys).
Job specs are plain dicts passed to the CLI; Snakemake records them as ``params`` so a
changed setting reruns exactly the jobs it touches.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from inilora.inits import DISTRIBUTIONS, NEEDS_DATA, NEEDS_FACTORS, REGISTRY, InitError, check_options
from inilora.inits import method_options as registry_options
from inilora.inits import option_defaults

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


def workflow_options(method: str) -> set[str]:
    """Config options the workflow reads besides the init's own: iterations / decompose_lr pick the
    decomposition (the workflow sets factors_path itself), batch_size the batches a data init sees."""
    return ({"iterations", "decompose_lr"} if method in NEEDS_FACTORS else set()) | \
        ({"batch_size"} if method in NEEDS_DATA else set())


def check(config: dict) -> dict:
    """Cross-key checks; raises ConfigError naming the key, the value and what is allowed."""
    methods = config["methods"]
    for m, opts in config.get("method_options", {}).items():
        if m not in REGISTRY:
            raise ConfigError(f"config key 'method_options.{m}': unknown method; valid: {sorted(REGISTRY)}")
        try:
            check_options(m, dict(opts or {}), workflow_options(m))
            reserved = {"factors_path", "check", "data"} & set(opts or {})
            if reserved:
                raise InitError(f"method '{m}': the workflow sets {sorted(reserved)} itself")
        except InitError as e:
            raise ConfigError(f"config key 'method_options.{m}': {e}") from None
    for name, v in config["variants"].items():
        if v["method"] not in REGISTRY:
            raise ConfigError(f"config key 'variants.{name}.method': unknown method '{v['method']}'; valid: {sorted(REGISTRY)}")
        if name in REGISTRY:
            raise ConfigError(f"config key 'variants.{name}': '{name}' is a registry method; give the variant another name")
    for key, names in method_lists(config).items():
        for m in names:
            base, opts = resolve(config, m, key)
            try:
                check_options(base, opts, workflow_options(base))
            except InitError as e:
                raise ConfigError(f"config key '{key}': {m}: {e}") from None
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

        encoders = glue_models(config)
        if not encoders:
            raise ConfigError("config key 'glue.model': null, but 'glue.tasks' lists tasks; name an encoder under 'encoders'")
        if len(set(encoders)) != len(encoders):
            raise ConfigError(f"config key 'glue.model': duplicate encoders in {encoders}")
        for m in encoders:
            if m not in config["encoders"]:
                raise ConfigError(f"config key 'glue.model': '{m}' is not under 'encoders' {sorted(config['encoders'])}")
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
    if sw["task"] is not None and sw["task"] not in config["tasks"]:
        raise ConfigError(f"config key 'lr_sweep.task': unknown task '{sw['task']}'; defined: {sorted(config['tasks'])}")
    for b in sw["benchmarks"]:
        task = sw["task"] or table2_tasks(config)[0]
        if b not in config["tasks"][task]["benchmarks"]:
            raise ConfigError(f"config key 'lr_sweep.benchmarks': '{b}' is not a benchmark of task '{task}' "
                              f"{config['tasks'][task]['benchmarks']}")
    if sw["rank"] is not None and sw["rank"] not in config["ranks"]:
        raise ConfigError(f"config key 'lr_sweep.rank': {sw['rank']} is not one of 'ranks' {config['ranks']}")
    lrs = [fmt_lr(x) for x in config["decompose"]["lr"]]
    for m, opts in config.get("method_options", {}).items():
        if "decompose_lr" in opts and fmt_lr(opts["decompose_lr"]) not in lrs:
            raise ConfigError(
                f"config key 'method_options.{m}.decompose_lr': {opts['decompose_lr']} is not one of decompose.lr {lrs}"
            )
    top = config["decompose"]["iterations"]
    for c in figure2_iterations(config):
        if c > top:
            raise ConfigError(f"config key 'figure2.iterations': {c} is above config key 'decompose.iterations' = {top}; "
                              f"allowed: 0..{top}")
    for c in iteration_counts(config):
        if c > top:
            raise ConfigError(f"an iteration count {c} is above config key 'decompose.iterations' = {top}")
    st = config["study"]
    for m in st["models"]:
        if m not in config["models"]:
            raise ConfigError(f"config key 'study.models': '{m}' is not under 'models' {sorted(config['models'])}")
    if st["task"] is not None and st["task"] not in config["tasks"]:
        raise ConfigError(f"config key 'study.task': unknown task '{st['task']}'; defined: {sorted(config['tasks'])}")
    if st["benchmark"] is not None and st["benchmark"] not in config["benchmarks"]:
        raise ConfigError(f"config key 'study.benchmark': unknown benchmark '{st['benchmark']}'; "
                          f"defined: {sorted(config['benchmarks'])}")
    for key, option in (("figure2.method", "iterations"), ("figure3.method", "std")):
        m = config[key.split(".")[0]]["method"]
        if m not in REGISTRY or (option == "iterations" and m not in NEEDS_FACTORS) or \
                (option != "iterations" and option not in registry_options(m)):
            valid = sorted(NEEDS_FACTORS) if option == "iterations" else \
                sorted(k for k in REGISTRY if option in registry_options(k))
            raise ConfigError(f"config key '{key}': '{m}' has no '{option}' option; valid: {valid}")
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
    """Every decomposition iteration count asked for anywhere (Figure 2's checkpoints, Table 7's
    zero, a variant's count); one run writes them all."""
    counts = {int(config["decompose"]["iterations"])} | {int(c) for c in config["decompose"]["checkpoints"]}
    for names in method_lists(config).values():
        for m in names:
            base, opts = resolve(config, m)
            if base in NEEDS_FACTORS and "iterations" in opts:
                counts.add(int(opts["iterations"]))
    return sorted(counts)


# ----------------------------------------------------------------------------- methods and variants


def resolve(config: dict, name: str, key: str = "methods") -> tuple[str, dict]:
    """(registry method, options) of a method name: a registry key, a name under ``variants``, or
    a generated variant, ``<method>-it<N>``, ``<method>-std<s>`` or ``<method>-<distribution>``."""
    if name in REGISTRY:
        return name, method_options(config, name)
    variants = config.get("variants", {})
    if name in variants:
        v = variants[name]
        return v["method"], {**method_options(config, v["method"]), **(v.get("options") or {})}
    base, _, tail = name.partition("-")
    if base in REGISTRY and tail:
        opts, own = method_options(config, base), registry_options(base)
        if (m := re.fullmatch(r"it(\d+)", tail)) and base in NEEDS_FACTORS:
            return base, {**opts, "iterations": int(m[1])}
        if (m := re.fullmatch(r"std([0-9.]+(?:e[+-]?\d+)?)", tail)) and "std" in own:
            return base, {**opts, "std": float(m[1])}
        if tail in DISTRIBUTIONS and "distribution" in own:
            return base, {**opts, "distribution": tail}
    raise ConfigError(f"config key '{key}': unknown method '{name}'; valid: {sorted(REGISTRY)}, a name under "
                      f"'variants' {sorted(variants)}, or <method>-it<N>, <method>-std<s>, <method>-<distribution>")


def variant(config: dict, base: str, option: str, value) -> str:
    """The name of ``base`` with one option set: ``base`` itself when that is already its setting,
    so a figure's point and a table's row are the same run."""
    opts = method_options(config, base)
    current = opts.get(option, config["decompose"]["iterations"] if option == "iterations"
                       else option_defaults(base).get(option))
    if current == value:
        return base
    return f"{base}-" + {"iterations": f"it{value}", "std": f"std{value:g}", "distribution": str(value)}[option]


def method_lists(config: dict) -> dict[str, list[str]]:
    """Every list of method names by its config key, the figures' generated variants included."""
    lists = {"methods": config["methods"], "table2.methods": config["table2"]["methods"],
             "lr_sweep.methods": config["lr_sweep"]["methods"], "glue.methods": config["glue"]["methods"]}
    for t in ("table3", "table4", "table6", "table7", "figure4", "figure5"):
        lists[f"{t}.methods"] = config[t]["methods"]
    f2, f3 = config["figure2"], config["figure3"]
    if f2["method"] in NEEDS_FACTORS:
        lists["figure2.iterations"] = [variant(config, f2["method"], "iterations", n) for n in figure2_iterations(config)]
    if f3["method"] in REGISTRY and "std" in registry_options(f3["method"]):
        lists["figure3.stds"] = [variant(config, f3["method"], "std", float(s)) for s in f3["stds"]]
    return lists


def figure2_iterations(config: dict) -> list[int]:
    """Figure 2's checkpoints: as listed, or spread over the run (the paper: 100 ... 20000)."""
    given = config["figure2"]["iterations"]
    if given is not None:
        return sorted(set(given))
    top = int(config["decompose"]["iterations"])
    return sorted({round(top * f) for f in (0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1)})


def factors_wildcards(config: dict, model: str, method: str, rank: int | str) -> dict | None:
    """The decomposition a fine-tune of ``method`` (a name or variant) reads, or None if it needs none."""
    base, opts = resolve(config, method)
    if base not in NEEDS_FACTORS:
        return None
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


def method_train(config: dict, method: str) -> dict:
    """A method's ``method_train`` settings; a variant without its own takes its base method's."""
    over = config.get("method_train", {})
    return over.get(method) or over.get(resolve(config, method)[0]) or {}


def method_lr(config: dict, method: str) -> str:
    """The fine-tuning learning rate a method's table row uses (its ``method_train`` override, else ``train``)."""
    return fmt_lr(method_train(config, method).get("learning_rate", config["train"]["learning_rate"]))


def init_options(config: dict, method: str) -> dict:
    """The options the init function gets: ``iterations`` and ``decompose_lr`` pick the
    decomposition (the workflow passes its path instead), so they are not passed on."""
    method, opts = resolve(config, method)
    if method in NEEDS_FACTORS:
        opts.pop("iterations", None)
        opts.pop("decompose_lr", None)
    return opts


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
        "method_options": init_options(config, method),
        "rank": int(rank),
        "alpha": alpha(config, int(rank)),
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
    the same for every row of a table (the base model's too); a Table 4 run (``task`` =
    ``<task>-n<size>``) also drops the items of its own, possibly larger, training set."""
    b = config["benchmarks"][bench]
    exclude = [d for t in config["tasks"].values() if bench in t["benchmarks"] for d in t["train"]]
    if task is not None and task not in config["tasks"]:
        exclude += [d for d in task_entry(config, task)["train"] if d not in exclude]
    if b["kind"] in ("humaneval", "mmlu"):  # not question/answer examples; nothing to match against
        exclude = []
    b = {k: v for k, v in b.items() if k != "paper_name"}  # naming the paper's benchmark changes no result
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
    models = {m: e["paper_name"] for m, e in config["models"].items() if e.get("paper_name")}
    named = {b: config["benchmarks"][b]["paper_name"] for b in benches if config["benchmarks"][b].get("paper_name")}
    return {"methods": config["table2"]["methods"] or config["methods"], "benchmarks": benches, "notes": notes,
            "paper": {"models": models, "benchmarks": named} if models and named else {}}


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
            for model in study_models(config) for method in (sw["methods"] or config["methods"])
            for lr in sw["values"] for seed in config["seeds"] for bench in sweep_benchmarks(config)]


def sweep_benchmarks(config: dict) -> list[str]:
    return config["lr_sweep"]["benchmarks"] or config["tasks"][sweep_task(config)]["benchmarks"]


def lr_sweep_spec(config: dict) -> dict:
    sw = config["lr_sweep"]
    task = sweep_task(config)
    tr = config["train"]
    notes = [f"task {task}, rank {sw['rank'] or config['ranks'][0]}, seeds {config['seeds']}; every other training "
             f"setting as in 'train' (batch {tr['batch_size']} x accum {tr['grad_accum']}, "
             + (f"{tr['max_steps']} steps)" if tr["max_steps"] > 0 else f"{tr['epochs']} epochs)"),
             "best: the lr with the highest mean accuracy per method and benchmark (ties: the smaller lr)"]
    for b in sweep_benchmarks(config):
        notes.append(f"benchmark {b}: {config['benchmarks'][b].get('label', b)}")
    return {"methods": sw["methods"] or config["methods"], "notes": notes}


# ----------------------------------------------------------------------------- GLUE (Table 1)


def glue_inputs(config: dict) -> list[str]:
    from inilora import paths

    g = config["glue"]
    return [paths.GLUE_RUN.format(model=e, task=t, method=m, rank=r, seed=s)
            for e in glue_models(config) for t in g["tasks"] for m in (g["methods"] or config["methods"]) for r in (g["ranks"] or config["ranks"])
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
    notes = [f"encoder: {e} = {model_entry(config, e)['path']}; LoRA on "
             f"{model_entry(config, e)['target_modules']} plus the classifier head" for e in glue_models(config)]
    notes += [f"{g['epochs']} epochs, lr {g['learning_rate']}, batch {g['batch_size']}, max length {g['max_length']}, "
              f"linear warmup {g['warmup_ratio']}, AdamW weight decay {g['weight_decay']}, seeds {g['seeds']}",
              "<task>:<metric> is the paper's protocol, the best validation score over epochs; "
              "<task>:<metric>@last is the last epoch's"]
    notes += [f"task {t}: {glue.get_task(t).label}" for t in g["tasks"]]
    paper = {e: config["encoders"][e]["paper_name"] for e in glue_models(config) if config["encoders"][e].get("paper_name")}
    return {"methods": g["methods"] or config["methods"], "tasks": g["tasks"], "notes": notes, "paper": paper}


# ----------------------------------------------------------------------------- the paper's analyses (Tables 3, 4, 6, 7; Figures 2-5)


def study_models(config: dict) -> list[str]:
    return config["study"]["models"] or list(config["models"])


def study_task(config: dict) -> str:
    return config["study"]["task"] or table2_tasks(config)[0]


def study_benchmark(config: dict) -> str:
    return config["study"]["benchmark"] or config["tasks"][study_task(config)]["benchmarks"][0]


def table4_tasks(config: dict) -> list[str]:
    """Table 4's sized tasks, ``<study task>-n<size>``."""
    return [f"{study_task(config)}-n{size}" for size in config["table4"]["sizes"]]


def study_rank(config: dict, key: str) -> int:
    return config[key]["rank"] or config["ranks"][0]


def study_evals(config: dict, key: str, methods: list[str], ranks: list[int], tasks: list[str] | None = None) -> list[str]:
    """Evaluations of methods x ranks x seeds on the study benchmark, for every model; the ranks are
    checked against the models' shapes here, when the target is asked for (error names ``key``)."""
    from inilora import paths

    return study_runs(config, key, paths.EVAL, methods, ranks, tasks, bench=study_benchmark(config))


def study_runs(config: dict, key: str, pattern: str, methods: list[str], ranks: list[int],
               tasks: list[str] | None = None, **fixed) -> list[str]:
    """``pattern`` (a run path) for every study model x task x method x rank x seed, each method at its lr;
    the ranks are checked against the models' shapes first (error names ``key``)."""
    from inilora.precheck import check_models

    check_models(config, {key: list(ranks)})
    return [pattern.format(model=model, task=task, method=m, rank=r, lr=method_lr(config, m), seed=s, **fixed)
            for model in study_models(config) for task in (tasks or [study_task(config)]) for m in methods
            for r in ranks for s in config["seeds"]]


def table_inputs(config: dict, table: str) -> list[str]:
    t = config[table]
    return study_evals(config, f"{table}.ranks", t["methods"], t["ranks"],
                       table4_tasks(config) if table == "table4" else None)


def study_notes(config: dict) -> list[str]:
    """What every analysis was trained and measured on (stand-ins say so in their labels)."""
    task, bench = study_task(config), study_benchmark(config)
    tr = config["train"]
    labels = "; ".join(s.get("label", s["loader"]) for s in config["tasks"][task]["train"])
    return [f"models: " + ", ".join(f"{m} = {config['models'][m]['path']}" for m in study_models(config)),
            f"trained on task {task}: {labels}",
            f"benchmark {bench}: {config['benchmarks'][bench].get('label', bench)}",
            f"fine-tuning: lr {tr['learning_rate']} (unless set per method), batch {tr['batch_size']} x accum "
            f"{tr['grad_accum']}, " + (f"{tr['max_steps']} steps" if tr["max_steps"] > 0 else f"{tr['epochs']} epochs")
            + f", seeds {config['seeds']}, alpha {config['lora']['alpha']}; decomposition "
            f"{config['decompose']['iterations']} Adam iterations (paper: 20000)"]


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


def figure2_inputs(config: dict) -> dict[str, list[str]]:
    """Figure 2: a fine-tune from every checkpoint of one decomposition run, and the checkpoints' metadata."""
    from inilora import paths

    f2, rank = config["figure2"], study_rank(config, "figure2")
    names = [variant(config, f2["method"], "iterations", n) for n in figure2_iterations(config)]
    meta = []
    for model in study_models(config):
        for name in names:
            meta.append(paths.FACTORS_META.format(**factors_wildcards(config, model, name, rank)))
    return {"evals": study_evals(config, "figure2.rank", names, [rank]), "meta": meta}


def figure3_inputs(config: dict) -> list[str]:
    f3 = config["figure3"]
    names = [variant(config, f3["method"], "std", float(s)) for s in f3["stds"]]
    return study_evals(config, "figure3.rank", names, [study_rank(config, "figure3")])


def figure4_inputs(config: dict) -> dict[str, list[str]]:
    """Figure 4: accuracy per distribution, and each run's initial adapter (the drawn factors)."""
    from inilora import paths

    f4, rank = config["figure4"], study_rank(config, "figure4")
    task, seed = study_task(config), config["seeds"][0]
    initial = [paths.INITIAL_ADAPTER.format(model=model, task=task, method=m, rank=rank, lr=method_lr(config, m), seed=seed)
               for model in study_models(config) for m in f4["methods"]]
    return {"evals": study_evals(config, "figure4.rank", f4["methods"], [rank]), "initial": initial}


def figure5_inputs(config: dict) -> list[str]:
    """Figure 5: the training logs (loss curves) of methods x ranks x seeds."""
    from inilora import paths

    f5 = config["figure5"]
    return study_runs(config, "figure5.ranks", paths.TRAIN_LOG, f5["methods"], f5["ranks"])


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
