"""Cross-key checks a schema cannot express, one function per config section.

Each raises ConfigError naming the key, the bad value and what is allowed, before any job runs.
:func:`check` runs them all in a fixed order, so the first problem of a config is always the one
reported.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from inilora.config.methods import figure2_iterations, fmt_lr, iteration_counts, method_lists, resolve, workflow_options
from inilora.config.schema import ConfigError, validate_schema
from inilora.config.specs import glue_models
from inilora.config.targets import table2_tasks
from inilora.data import data_file_list, local_fields
from inilora.data.glue import TASKS
from inilora.evaluate.kinds import KINDS
from inilora.inits import REGISTRY, InitError, check_options, needing, option_names


def check(config: dict) -> dict:
    """Every cross-key check; returns ``config`` when it passes."""
    for section in (check_methods, check_data, check_seeds, check_benchmarks, check_table2, check_glue,
                    check_lr_sweep, check_tuning, check_decompose, check_study, check_figures):
        section(config)
    return config


def load(path: str | Path) -> dict:
    config = yaml.safe_load(Path(path).read_text())
    return check(validate_schema(config))


def check_methods(config: dict) -> None:
    """``method_options``, ``variants``, every list of method names, ``method_train``."""
    methods = config["methods"]
    for m, opts in config.get("method_options", {}).items():
        if m not in REGISTRY:
            raise ConfigError(f"config key 'method_options.{m}': unknown method; valid: {sorted(REGISTRY)}")
        try:
            check_options(m, dict(opts or {}), workflow_options(m))
            reserved = {"factors_path", "factors", "check", "data"} & set(opts or {})
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
    listed = {resolve(config, m, key)[0] for key, names in method_lists(config).items() for m in names}
    odd = sorted(r for r in config["ranks"] if int(r) % 2)
    if "orthogonal" in listed and odd:  # PEFT's orthogonal init splits an r x r orthogonal matrix in halves
        raise ConfigError(f"config key 'ranks': method 'orthogonal' needs even ranks; got {odd} in {config['ranks']}")
    for m in config.get("method_train", {}):
        if m not in methods:
            raise ConfigError(f"config key 'method_train.{m}': '{m}' is not in 'methods' {methods}")


def data_specs(config: dict):
    """(config key, data spec) for every training and benchmark data spec."""
    for t, task in config["tasks"].items():
        for i, spec in enumerate(task["train"]):
            yield f"tasks.{t}.train.{i}", spec
    for b, bench in config["benchmarks"].items():
        yield f"benchmarks.{b}.data", bench["data"]


def check_data(config: dict) -> None:
    """Local data files exist and have the fields their loader reads."""
    for where, spec in data_specs(config):
        for f in data_file_list(spec.get("data_files")):
            if not Path(f).expanduser().exists():
                raise ConfigError(f"config key '{where}.data_files': file '{f}' does not exist")
        fields = local_fields(spec)
        if fields and not fields[2] <= fields[1]:
            raise ConfigError(f"config key '{where}.data_files': '{fields[0]}' lacks field(s) "
                              f"{sorted(fields[2] - fields[1])}; it has {sorted(fields[1])}")


def check_seeds(config: dict) -> None:
    if len(set(config["seeds"])) != len(config["seeds"]):
        raise ConfigError(f"config key 'seeds': duplicate seeds in {config['seeds']}")


def check_benchmarks(config: dict) -> None:
    """Tasks name defined benchmarks; each benchmark's loader can feed its kind."""
    for name, task in config["tasks"].items():
        for b in task["benchmarks"]:
            if b not in config["benchmarks"]:
                raise ConfigError(
                    f"config key 'tasks.{name}.benchmarks': unknown benchmark '{b}'; "
                    f"defined: {sorted(config['benchmarks'])}"
                )

    owner = {}
    for name in table2_tasks(config):  # a table row is model x method x rank x lr: one task per benchmark
        for b in config["tasks"].get(name, {}).get("benchmarks", []):  # an unknown task: check_tables names it
            if b in owner:
                raise ConfigError(f"config key 'tasks.{name}.benchmarks': '{b}' is also a benchmark of task "
                                  f"'{owner[b]}', and Table 2 has one column per benchmark; give each task its own "
                                  "benchmark entries (a copy under another name) or list one task in 'table2.tasks'")
            owner[b] = name

    for b, bench in config["benchmarks"].items():
        kind, loader = KINDS[bench["kind"]], bench["data"]["loader"]
        if loader not in kind.loaders:
            raise ConfigError(f"config key 'benchmarks.{b}.data.loader': '{loader}' cannot feed a '{kind.name}' "
                              f"benchmark; valid for {kind.name}: {list(kind.loaders)}")
        if kind.sampled and bench["samples"] > 1 and bench["temperature"] == 0:
            raise ConfigError(f"config key 'benchmarks.{b}.temperature': 0 (greedy) with samples = "
                              f"{bench['samples']} repeats one output; set a temperature > 0 (the paper: 0.1)")


def check_table2(config: dict) -> None:
    for t in config["table2"]["tasks"]:
        if t not in config["tasks"]:
            raise ConfigError(f"config key 'table2.tasks': unknown task '{t}'; defined: {sorted(config['tasks'])}")
    for m in config["table2"].get("methods") or []:
        if m not in config["methods"]:
            raise ConfigError(f"config key 'table2.methods': '{m}' is not in 'methods' {config['methods']}")


def check_glue(config: dict) -> None:
    """``glue`` (Table 1) names encoders, tasks and methods that exist; encoder and model names differ."""
    g, methods = config["glue"], config["methods"]
    if g["tasks"]:
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
    check_glue_tuning(config)


def check_glue_tuning(config: dict) -> None:
    """``glue.tuning``: at least two rates, and a rule the tasks can be scored by (``headline`` reads
    per-example correctness, so it needs a task whose main metric is accuracy)."""
    g = config["glue"]
    rates = g["tuning"]["rates"]
    if not rates:
        return
    if len(rates) < 2:
        raise ConfigError(f"config key 'glue.tuning.rates': {rates} leaves nothing to choose; list at least 2 rates")
    if config["tuning"]["rule"] == "headline":
        other = [t for t in g["tasks"] if TASKS[t].main_metric != "accuracy"]
        if other:
            raise ConfigError(
                f"config key 'tuning.rule': headline, but Table 1's task(s) {other} report "
                f"{sorted({TASKS[t].main_metric for t in other})}, not an item mean that the rule can resample; "
                "use rule 'heldout_loss' (every task scores a per-example loss)")


def check_lr_sweep(config: dict) -> None:
    sw = config["lr_sweep"]
    if sw["task"] is not None and sw["task"] not in config["tasks"]:
        raise ConfigError(f"config key 'lr_sweep.task': unknown task '{sw['task']}'; defined: {sorted(config['tasks'])}")
    for b in sw["benchmarks"]:  # any benchmark: a tuning set apart from the table's test items is the point
        if b not in config["benchmarks"]:
            raise ConfigError(f"config key 'lr_sweep.benchmarks': unknown benchmark '{b}'; defined: "
                              f"{sorted(config['benchmarks'])}")
    if sw["rank"] is not None and sw["rank"] not in config["ranks"]:
        raise ConfigError(f"config key 'lr_sweep.rank': {sw['rank']} is not one of 'ranks' {config['ranks']}")
    if sw["seeds"] and not set(sw["seeds"]) <= set(config["seeds"]):
        raise ConfigError(f"config key 'lr_sweep.seeds': {sw['seeds']} are not all among 'seeds' {config['seeds']}; "
                          "a sweep tunes on seeds that the table then compares")


def check_tuning(config: dict) -> None:
    """``tuning``: at least two rates, a tuning benchmark for every Table 2 task that is not one of
    its test benchmarks and can be scored by the rule, and no per-method rate set by hand."""
    tu = config["tuning"]
    if not tu["rates"]:
        if tu["benchmarks"]:
            raise ConfigError("config key 'tuning.rates' is empty, but 'tuning.benchmarks' is set; list the rates "
                              "to choose from (at least 2), or remove 'tuning'")
        return
    if len(tu["rates"]) < 2:
        raise ConfigError(f"config key 'tuning.rates': {tu['rates']} leaves nothing to choose; list at least 2 rates")
    tasks = table2_tasks(config)
    for task, bench in tu["benchmarks"].items():
        if task not in tasks:
            raise ConfigError(f"config key 'tuning.benchmarks.{task}': '{task}' is not a Table 2 task {tasks}")
        if bench not in config["benchmarks"]:
            raise ConfigError(f"config key 'tuning.benchmarks.{task}': unknown benchmark '{bench}'; defined: "
                              f"{sorted(config['benchmarks'])}")
        if bench in config["tasks"][task]["benchmarks"]:
            raise ConfigError(f"config key 'tuning.benchmarks.{task}': '{bench}' is one of the task's test benchmarks "
                              f"{config['tasks'][task]['benchmarks']}; tune on items drawn apart from them")
        kind = config["benchmarks"][bench]["kind"]
        if tu["rule"] == "heldout_loss" and not KINDS[kind].heldout_loss:
            raise ConfigError(f"config key 'tuning.rule': heldout_loss, but the tuning benchmark '{bench}' of task "
                              f"'{task}' is of kind '{kind}', which scores no held-out loss; use rule 'headline' or "
                              f"a benchmark of kind {sorted(k for k, v in KINDS.items() if v.heldout_loss)}")
    missing = [t for t in tasks if t not in tu["benchmarks"]]
    if missing:
        raise ConfigError(f"config key 'tuning.benchmarks': no tuning benchmark for Table 2 task(s) {missing}; "
                          "name one per task, e.g. {" + f"{missing[0]}: <benchmark>" + "}")
    for m, over in config.get("method_train", {}).items():
        if "learning_rate" in over:
            raise ConfigError(f"config key 'method_train.{m}.learning_rate': {over['learning_rate']} is set by hand, "
                              "but 'tuning.rates' chooses every method's rate; remove one of them")


def check_decompose(config: dict) -> None:
    """A method's ``decompose_lr`` is one of ``decompose.lr``; no iteration count above the run's."""
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


def check_study(config: dict) -> None:
    st = config["study"]
    for m in st["models"]:
        if m not in config["models"]:
            raise ConfigError(f"config key 'study.models': '{m}' is not under 'models' {sorted(config['models'])}")
    if st["task"] is not None and st["task"] not in config["tasks"]:
        raise ConfigError(f"config key 'study.task': unknown task '{st['task']}'; defined: {sorted(config['tasks'])}")
    if st["benchmark"] is not None and st["benchmark"] not in config["benchmarks"]:
        raise ConfigError(f"config key 'study.benchmark': unknown benchmark '{st['benchmark']}'; "
                          f"defined: {sorted(config['benchmarks'])}")


def check_figures(config: dict) -> None:
    """Figure 2's method reads a decomposition; Figure 3's has a ``std`` option."""
    for key, option in (("figure2.method", "iterations"), ("figure3.method", "std")):
        m = config[key.split(".")[0]]["method"]
        if m not in REGISTRY or (option == "iterations" and m not in needing("factors")) or \
                (option != "iterations" and option not in option_names(m)):
            valid = needing("factors") if option == "iterations" else \
                sorted(k for k in REGISTRY if option in option_names(k))
            raise ConfigError(f"config key '{key}': '{m}' has no '{option}' option; valid: {valid}")
