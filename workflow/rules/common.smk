# Config checks run before any job; helpers and input functions of every rule file live here.
import json
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

from inilora import config as cfg
from inilora import paths
from inilora.config.precheck import check_models
from inilora.models import ModelError, builtin_file

try:
    cfg.check(cfg.validate_schema(config))
    # Ranks and target modules against each model's shapes (no weights read, but transformers'
    # model classes: seconds to import). Once, in the main process; a cluster job parses the
    # workflow again only to run its rule.
    if workflow.is_main_process:
        check_models(config)
except cfg.ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}")


wildcard_constraints:
    **paths.WILDCARDS,


# Rules run `inilora` subcommands. With --sdm conda they run in workflow/envs/inilora.yaml, with the
# package from this checkout; otherwise in the Python running Snakemake (a venv's), no PATH lookup.
REPO = Path(workflow.basedir)
ENV = "../envs/inilora.yaml"
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    INILORA = f"PYTHONPATH={shlex.quote(str(REPO))}:$PYTHONPATH python -m inilora"
else:
    INILORA = f"{shlex.quote(sys.executable)} -m inilora"
THREADS = config["threads"]

# Of the jobs ready to run, those that unlock the most work go first: a decomposition gates the
# IniLoRA fine-tunes, and each fine-tune its evaluations. Started late, they leave a core idle
# while the last of them runs alone.
PRIORITY = {"decompose": 2, "finetune": 1}

# profiles/default caps `gpu` at 1 for one machine. A run with --cores where no job can have a GPU
# lifts that cap to the cores (local_gpu_cap), so `--cores 2` runs two one-thread jobs at a time.
# The cluster profiles, run with `--workflow-profile none`, set no cap, and none is added; nor
# where --cores is not given (a cluster run, --report), since the executor is not known yet here.
CORES = workflow.resource_settings.cores
if "gpu" in workflow.global_resources and isinstance(CORES, int):
    GPU_CAP = cfg.local_gpu_cap(config, CORES, cfg.gpu_visible())
    GPU_NOW = getattr(workflow.global_resources["gpu"], "value", workflow.global_resources["gpu"])
    if GPU_CAP is not None and isinstance(GPU_NOW, int) and GPU_CAP > GPU_NOW:
        workflow.register_resource("gpu", GPU_CAP)


def computed_resources(rule, **wildcard_args):
    """``mem_mb`` and ``runtime`` of a rule's jobs from inilora/config/resources.py: functions of the
    model's size and the job's work, memory times the attempt. ``wildcard_args`` name the wildcards
    the runtime reads (``task="task"``)."""

    def mem(wildcards, attempt):
        return cfg.mem_mb(config, rule, wildcards.model, attempt)

    def minutes(wildcards, attempt):
        work = {arg: getattr(wildcards, name) for arg, name in wildcard_args.items()}
        return cfg.runtime_min(config, rule, wildcards.model, attempt, **work)

    return {"mem_mb": mem, "runtime": minutes}


def spec_json(spec):
    """Specs travel to the CLI as JSON; as params, a changed setting reruns the job."""
    return json.dumps(spec, sort_keys=True)


def manifest(wildcards):
    return paths.MODEL_MANIFEST.format(model=wildcards.model)


def shipped(pattern, **wildcards):
    """A file shipped with the workflow (the paper's tables), not one in the run directory."""
    return str(REPO / pattern.format(**wildcards))


# ----------------------------------------------------------------------------- decompose

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def model_weights(wildcards):
    """The files the approximated weights are read from: config.json and weight files of a local
    folder, or the file a builtin package ships. As inputs, their content (not their path) enters
    the cache key, so an edited or different model misses it. A hub id has none (its id is the key)."""
    path = cfg.model_entry(config, wildcards.model)["path"]
    if path.startswith("builtin:"):
        try:
            path = str(builtin_file(path.split(":", 1)[1]))
        except (KeyError, ModelError):
            return []  # prepare_model names the missing package
    source = Path(path).expanduser()
    if source.is_file():
        return [str(source)]
    if not source.is_dir():
        return []
    return sorted(str(f) for f in source.iterdir() if f.name == "config.json" or f.name.endswith(WEIGHT_SUFFIXES))


def decompose_outputs():
    """Every file under a name of its own: the cache stores a multi-output rule only that way."""
    out = {}
    for n in cfg.iteration_counts(config):
        (out[f"factors_it{n}"],) = expand(paths.FACTORS, iters=n, allow_missing=True)
        (out[f"meta_it{n}"],) = expand(paths.FACTORS_META, iters=n, allow_missing=True)
    return {**out, "timing": paths.DECOMP_TIMING}


# ----------------------------------------------------------------------------- finetune, glue


def factors_input(w):
    """Only methods that read a decomposition depend on one (so LoRA never waits for it)."""
    wc = cfg.factors_wildcards(config, w.model, w.method, w.rank)
    return {"factors": paths.FACTORS.format(**wc)} if wc else {}


def factors_flag(w, input):
    return f"--factors {shlex.quote(input.factors)}" if "factors" in input.keys() else ""


def launcher(gpus):
    """One process, or one per GPU under torchrun: the Trainer then runs DDP inside the one job."""
    if gpus == 1:
        return INILORA
    return INILORA.replace("-m inilora", f"-m torch.distributed.run --standalone --nproc_per_node {gpus} -m inilora")


# ----------------------------------------------------------------------------- tables


def table2_input(w):
    """Table 2's evaluations; with tuning on, at the rates the select_rates checkpoint chose (and
    its JSON, for the table's marks and notes). A changed choice plans new runs; an unchanged one
    reuses them."""
    if not cfg.tuning_on(config):
        return {"evals": cfg.table2_inputs(config)}
    selection = checkpoints.select_rates.get().output.json
    return {"evals": cfg.table2_inputs(config, cfg.selected_rates(selection)), "selection": selection}


def table1_input(w):
    """Table 1's GLUE runs; with ``glue.tuning`` on, at the rates the select_glue_rates checkpoint
    chose (and its JSON, for the table's marks and notes)."""
    if not cfg.glue_tuning_on(config):
        return {"runs": cfg.glue_inputs(config) or cfg.require("glue.tasks", "list GLUE tasks or stand-ins, e.g. [champ_topic]")}
    selection = checkpoints.select_glue_rates.get().output.json
    return {"runs": cfg.glue_inputs(config, cfg.selected_rates(selection)), "selection": selection}


def named(input, name: str) -> list[str]:
    """The files of one named input (none when it is absent, as before a checkpoint is done)."""
    files = input.get(name, [])
    return [files] if isinstance(files, str) else list(files)


# ----------------------------------------------------------------------------- figures


def figure_flags(w, input):
    """``--evals ... --meta ...``: the figure command takes each named input as a flag."""
    return " ".join(f"--{name} " + " ".join(shlex.quote(f) for f in input[name]) for name in input.keys())
