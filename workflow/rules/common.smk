# Config checks run before any job; every path pattern comes from inilora.paths.
import json
import sys

from inilora import config as cfg
from inilora import paths
from inilora.precheck import check_models

try:
    cfg.check(cfg.validate_schema(config))
    check_models(config)  # ranks and target modules against each model's shapes (no weights read)
except cfg.ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}")


wildcard_constraints:
    model=r"[A-Za-z0-9_.\-]+",
    task=r"[A-Za-z0-9_\-]+",  # a task, or <task>-n<size> (Table 4)
    method=r"[a-z0-9_][a-z0-9_.+\-]*",  # a registry key, a variant, or <method>-it<N> / -std<s> / -<distribution>
    bench=r"[A-Za-z0-9_\-]+",
    rank=r"\d+",
    seed=r"\d+",
    iters=r"\d+",
    lr=r"[0-9.e\-+]+",


# The Python running Snakemake (a venv's) runs the jobs too; no PATH lookup needed.
INILORA = f"{sys.executable} -m inilora"


def spec_json(spec):
    """Specs travel to the CLI as JSON; as params, a changed setting reruns the job."""
    return json.dumps(spec, sort_keys=True)


def manifest(wildcards):
    return paths.MODEL_MANIFEST.format(model=wildcards.model)


def threads_per_job():
    return config["train"]["threads"]
