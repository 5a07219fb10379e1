"""Method names as the config spells them: registry keys, named ``variants`` and generated variants.

The variant grammar, in one place: ``<method>-it<N>`` (a decomposition read at N iterations),
``<method>-std<s>`` (a method with a ``std`` option) and ``<method>-<distribution>`` (a method
with a ``distribution`` option). A variant is an ordinary run, so a figure's point and a table's
row that name the same settings are the same run.
"""

from __future__ import annotations

import re

from inilora.config.schema import ConfigError
from inilora.inits import DISTRIBUTIONS, REGISTRY, needing, option_defaults, option_names

# option -> (name suffix pattern, parse, format) of a generated variant
VARIANT_FORMS = {
    "iterations": (r"it(\d+)", int, lambda v: f"it{v}"),
    "std": (r"std([0-9.]+(?:e[+-]?\d+)?)", float, lambda v: f"std{v:g}"),
    "distribution": (r"(" + "|".join(DISTRIBUTIONS) + r")", str, str),
}


def parse_variant(name: str) -> tuple[str, str, object] | None:
    """(base method, option, value) of a generated variant name, or None. Pure: no config needed."""
    base, _, tail = name.partition("-")
    if base not in REGISTRY or not tail:
        return None
    for option, (pattern, parse, _) in VARIANT_FORMS.items():
        if (m := re.fullmatch(pattern, tail)) and _takes(base, option):
            return base, option, parse(m[1])
    return None


def _takes(method: str, option: str) -> bool:
    """Whether ``method`` has ``option``; ``iterations`` belongs to methods that read a decomposition."""
    return method in needing("factors") if option == "iterations" else option in option_names(method)


def fmt_lr(lr: float) -> str:
    """The learning rate as it appears in artifact paths (``5e-04`` -> ``0.0005``)."""
    return f"{float(lr):g}"


def workflow_options(method: str) -> set[str]:
    """Config options the workflow reads besides the init's own: iterations / decompose_lr pick the
    decomposition (the workflow sets factors_path itself), batch_size the batches a data init sees."""
    needs = REGISTRY[method].needs
    return ({"iterations", "decompose_lr"} if "factors" in needs else set()) | \
        ({"batch_size"} if "data" in needs else set())


def method_options(config: dict, method: str) -> dict:
    """The config's ``method_options`` of ``method``: keyword options for its init (and the workflow)."""
    return dict(config.get("method_options", {}).get(method, {}) or {})


def iteration_counts(config: dict) -> list[int]:
    """Every decomposition iteration count asked for anywhere (Figure 2's checkpoints, Table 7's
    zero, a variant's count); one run writes them all."""
    counts = {int(config["decompose"]["iterations"])} | {int(c) for c in config["decompose"]["checkpoints"]}
    for names in method_lists(config).values():
        for m in names:
            base, opts = resolve(config, m)
            if _takes(base, "iterations") and "iterations" in opts:
                counts.add(int(opts["iterations"]))
    return sorted(counts)


def resolve(config: dict, name: str, key: str = "methods") -> tuple[str, dict]:
    """(registry method, options) of a method name: a registry key, a name under ``variants``, or
    a generated variant, ``<method>-it<N>``, ``<method>-std<s>`` or ``<method>-<distribution>``."""
    if name in REGISTRY:
        return name, method_options(config, name)
    variants = config.get("variants", {})
    if name in variants:
        v = variants[name]
        return v["method"], {**method_options(config, v["method"]), **(v.get("options") or {})}
    parsed = parse_variant(name)
    if parsed:
        base, option, value = parsed
        return base, {**method_options(config, base), option: value}
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
    return f"{base}-" + VARIANT_FORMS[option][2](value)


def method_lists(config: dict) -> dict[str, list[str]]:
    """Every list of method names by its config key, the figures' generated variants included."""
    lists = {"methods": config["methods"], "table2.methods": config["table2"]["methods"],
             "lr_sweep.methods": config["lr_sweep"]["methods"], "glue.methods": config["glue"]["methods"]}
    for t in ("table3", "table4", "table6", "table7", "figure4", "figure5"):
        lists[f"{t}.methods"] = config[t]["methods"]
    f2, f3 = config["figure2"], config["figure3"]
    if f2["method"] in REGISTRY and _takes(f2["method"], "iterations"):
        lists["figure2.iterations"] = [variant(config, f2["method"], "iterations", n) for n in figure2_iterations(config)]
    if f3["method"] in REGISTRY and _takes(f3["method"], "std"):
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
    if not _takes(base, "iterations"):
        return None
    dlr = fmt_lr(opts.get("decompose_lr", config["decompose"]["lr"][0]))
    iters = int(opts.get("iterations", config["decompose"]["iterations"]))
    return {"model": model, "rank": str(rank), "dlr": dlr, "iters": str(iters)}


def method_train(config: dict, method: str) -> dict:
    """A method's ``method_train`` settings; a variant without its own takes its base method's."""
    over = config.get("method_train", {})
    return over.get(method) or over.get(resolve(config, method)[0]) or {}


def method_lr(config: dict, method: str) -> str:
    """The fine-tuning learning rate a method's table row uses (its ``method_train`` override, else ``train``)."""
    return fmt_lr(method_train(config, method).get("learning_rate", config["train"]["learning_rate"]))


def run_options(config: dict, method: str, seed: int | str) -> dict:
    """The init options of one run: :func:`init_options`, and the run's seed as ``seed`` where the
    init draws random numbers the run should seed (PiSSA's randomised SVD) and the config sets none."""
    opts = init_options(config, method)
    if REGISTRY[resolve(config, method)[0]].takes_run_seed(opts) and "seed" not in opts:
        opts["seed"] = int(seed)
    return opts


def init_options(config: dict, method: str) -> dict:
    """The options the init function gets: ``iterations`` and ``decompose_lr`` pick the
    decomposition (the workflow passes its path instead), so they are not passed on."""
    method, opts = resolve(config, method)
    if _takes(method, "iterations"):
        opts.pop("iterations", None)
        opts.pop("decompose_lr", None)
    return opts
