"""Every artifact path, spelled once; Snakemake rules use these patterns as they are.

Wildcards: ``{model}``, ``{task}``, ``{method}`` (a registry key or variant), ``{rank}``,
``{seed}``, ``{bench}`` (a benchmark), ``{iters}`` (decomposition iterations), ``{dlr}`` (the
decomposition's Adam learning rate) and ``{lr}`` (the fine-tuning learning rate). Read a path's
identity back with :func:`parse`, never by position.
"""

from __future__ import annotations

import re

RESULTS = "results"

MODEL_MANIFEST = f"{RESULTS}/models/{{model}}/model.json"
MODEL_DIR = f"{RESULTS}/models/{{model}}/hf"

DECOMP_DIR = f"{RESULTS}/decompose/{{model}}/r{{rank}}_lr{{dlr}}"
FACTORS = f"{DECOMP_DIR}/it{{iters}}.safetensors"
FACTORS_META = f"{DECOMP_DIR}/it{{iters}}.json"
# The decompose job's own wall time and peak RSS (Snakemake's benchmark-TSV columns), cached with its factors
DECOMP_TIMING = f"{RESULTS}/timings/decompose/{{model}}_r{{rank}}_lr{{dlr}}.tsv"

RUN_DIR = f"{RESULTS}/finetune/{{model}}/{{task}}/{{method}}/r{{rank}}/lr{{lr}}/seed{{seed}}"
ADAPTER = f"{RUN_DIR}/adapter/adapter_model.safetensors"
TRAIN_LOG = f"{RUN_DIR}/train.json"
INITIAL_ADAPTER = f"{RUN_DIR}/initial_adapter/adapter_model.safetensors"  # the factors at step 0 (Figure 4)
MERGED = f"{RUN_DIR}/merged"  # optional: a standalone model folder, base + adapter merged

EVAL = f"{RESULTS}/eval/{{model}}/{{task}}/{{method}}/r{{rank}}/lr{{lr}}/seed{{seed}}/{{bench}}.json"
BASE_EVAL = f"{RESULTS}/eval/{{model}}/base/{{bench}}.json"

GLUE_RUN = f"{RESULTS}/glue/{{model}}/{{task}}/{{method}}/r{{rank}}/lr{{lr}}/seed{{seed}}.json"
TABLE1 = f"{RESULTS}/table1.csv"
TABLE1_MD = f"{RESULTS}/table1.md"
TABLE1_HTML = f"{RESULTS}/table1.html"  # the table as the report shows it

TABLE5 = f"{RESULTS}/table5.csv"
TABLE5_MD = f"{RESULTS}/table5.md"

TABLE2 = f"{RESULTS}/table2.csv"
TABLE2_MD = f"{RESULTS}/table2.md"
TABLE2_HTML = f"{RESULTS}/table2.html"  # the table as the report shows it
LR_SWEEP = f"{RESULTS}/lr_sweep.csv"
LR_SWEEP_MD = f"{RESULTS}/lr_sweep.md"
LR_SWEEP_HTML = f"{RESULTS}/lr_sweep.html"  # the table as the report shows it
# tune, then compare: each method's chosen rate (a checkpoint's output), its table and its figure
SELECTION = f"{RESULTS}/selection.json"
SELECTION_MD = f"{RESULTS}/selection.md"
SELECTION_FIGURE = f"{RESULTS}/selection.png"
# the same for Table 1's GLUE runs (their tuning split is held out of each task's training split)
GLUE_SELECTION = f"{RESULTS}/selection_table1.json"
GLUE_SELECTION_MD = f"{RESULTS}/selection_table1.md"
GLUE_SELECTION_FIGURE = f"{RESULTS}/selection_table1.png"

# the paper's analyses: accuracy by rank (Tables 3, 4, 6, 7) and Figures 2-6
STUDY_TABLE = f"{RESULTS}/{{table}}.csv"
STUDY_TABLE_MD = f"{RESULTS}/{{table}}.md"
STUDY_TABLE_HTML = f"{RESULTS}/{{table}}.html"  # the table as the report shows it
FIGURE = f"{RESULTS}/{{figure}}.png"

# the paper's own numbers, shipped with the workflow (relative to its base directory)
PAPER_TABLE = "workflow/reference/paper_{table}.csv"
PAPER_TABLE5 = PAPER_TABLE.format(table="table5")

LOGS = f"{RESULTS}/logs"
LOG = {
    "prepare_model": f"{LOGS}/prepare_model/{{model}}.log",
    "decompose": f"{LOGS}/decompose/{{model}}_r{{rank}}_lr{{dlr}}.log",
    "finetune": f"{LOGS}/finetune/{{model}}_{{task}}_{{method}}_r{{rank}}_lr{{lr}}_seed{{seed}}.log",
    "merge": f"{LOGS}/merge/{{model}}_{{task}}_{{method}}_r{{rank}}_lr{{lr}}_seed{{seed}}.log",
    "glue": f"{LOGS}/glue/{{model}}_{{task}}_{{method}}_r{{rank}}_lr{{lr}}_seed{{seed}}.log",
    "evaluate": f"{LOGS}/evaluate/{{model}}_{{task}}_{{method}}_r{{rank}}_lr{{lr}}_seed{{seed}}_{{bench}}.log",
    "evaluate_base": f"{LOGS}/evaluate/{{model}}_base_{{bench}}.log",
    "table1": f"{LOGS}/table1.log",
    "table2": f"{LOGS}/table2.log",
    "table5": f"{LOGS}/table5.log",
    "lr_sweep": f"{LOGS}/lr_sweep.log",
    "select_rates": f"{LOGS}/select_rates.log",
    "select_glue_rates": f"{LOGS}/select_glue_rates.log",
    "study_table": f"{LOGS}/{{table}}.log",
    "figure": f"{LOGS}/{{figure}}.log",
}

# How each wildcard reads back (what Snakemake's wildcard_constraints also allow).
WILDCARDS = {
    "model": r"[A-Za-z0-9_.\-]+",
    "task": r"[A-Za-z0-9_\-]+",  # a task, or <task>-n<size> (Table 4)
    "method": r"[a-z0-9_][a-z0-9_.+\-]*",  # a registry key or a variant (inilora.config.methods)
    "bench": r"[A-Za-z0-9_\-]+",
    "rank": r"\d+",
    "seed": r"\d+",
    "iters": r"\d+",
    "lr": r"[0-9.e\-+]+",
    "dlr": r"[0-9.e\-+]+",
    "table": r"table[3467]",
    "figure": r"figure[2-6]",
}
TYPES = {"rank": int, "seed": int, "iters": int, "lr": float, "dlr": float}


def parse(pattern: str, path: str) -> dict:
    """The wildcards of ``path`` under ``pattern`` (one of the patterns above), typed (rank, seed and
    iterations as int, learning rates as float). A path may carry a prefix before ``results/``."""
    regex = re.escape(pattern)
    for name in WILDCARDS:
        regex = regex.replace(re.escape("{" + name + "}"), f"(?P<{name}>{WILDCARDS[name]})", 1)
        regex = regex.replace(re.escape("{" + name + "}"), f"(?P={name})")
    m = re.search(f"(?:^|/){regex}$", str(path))
    if m is None:
        raise ValueError(f"{path} does not match the artifact pattern {pattern}")
    return {k: TYPES.get(k, str)(v) for k, v in m.groupdict().items()}


def parse_eval(path: str) -> dict:
    """The identity of an evaluation JSON, a fine-tuned run's (``EVAL``) or the base model's
    (``BASE_EVAL``: task "-", method "base", rank 0, lr 0.0, seed 0): model, task, method, rank, lr,
    seed, bench."""
    try:
        return parse(EVAL, path)
    except ValueError:
        return {**parse(BASE_EVAL, path), "task": "-", "method": "base", "rank": 0, "lr": 0.0, "seed": 0}
