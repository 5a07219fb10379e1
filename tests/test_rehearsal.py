"""Shape rehearsals: the paper's architectures at their real width with random weights, offline."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from inilora import models

REPO = Path(__file__).resolve().parent.parent
# `snakemake -n all --configfile workflow/presets/paper.yaml`, pinned by tests/test_workflow.py
PAPER_PRESET_JOBS = {"prepare_model": 6, "decompose": 8, "finetune": 92, "glue": 240, "evaluate": 124, "table1": 1,
                     "table2": 1, "table5": 1, "study_table": 4, "lr_sweep": 1, "figure": 5, "all": 1}


@pytest.mark.parametrize("arch, q_shape, vocab", [("llama2-7b", (4096, 4096), 32000), ("llama3-8b", (4096, 4096), 128256),
                                                  ("llama2-13b", (5120, 5120), 32000), ("gemma-7b", (4096, 3072), 256000),
                                                  ("roberta-large", (1024, 1024), 50265)])
def test_rehearsal_configs_have_the_papers_shapes_and_vocabularies(arch, q_shape, vocab):
    from inilora.config.precheck import linear_shapes
    from inilora.models import skeleton

    cfg = models.rehearsal_config(f"rehearsal:{arch}:1")
    shapes = linear_shapes(skeleton(cfg))
    assert shapes["q_proj" if "roberta" not in arch else "query"] == q_shape
    assert cfg.vocab_size == vocab and cfg.num_hidden_layers == 1
    assert models.rehearsal_config(f"rehearsal:{arch}").num_hidden_layers == models.REHEARSAL_ARCHITECTURES[arch]["num_hidden_layers"]


def test_an_unknown_architecture_or_layer_count_is_refused():
    from inilora.models import ModelError

    with pytest.raises(ModelError, match="unknown rehearsal architecture 'llama9'; known: "):
        models.rehearsal_parse("rehearsal:llama9")
    with pytest.raises(ModelError, match="layer count must be a whole number"):
        models.rehearsal_parse("rehearsal:llama2-7b:two")


def test_the_offline_tokenizer_fits_every_vocabulary_and_is_deterministic():
    a, b = models.rehearsal_tokenizer(), models.rehearsal_tokenizer()
    ids = a("def f(x):\n    return x + 1  # The answer is: 42")["input_ids"]
    assert ids == b("def f(x):\n    return x + 1  # The answer is: 42")["input_ids"]
    assert max(ids) < models.REHEARSAL_VOCAB <= min(v["vocab_size"] for v in models.REHEARSAL_ARCHITECTURES.values())
    pair = a("one", "two")
    assert pair["input_ids"][0] == 0 and "token_type_ids" not in pair  # RoBERTa has a single token type


@pytest.mark.workflow
def test_the_rehearsal_preset_plans_the_paper_presets_jobs_rule_for_rule(tmp_path):
    from test_workflow import job_counts, snakemake

    subprocess.run([sys.executable, "-m", "inilora.rehearsal"], cwd=tmp_path, check=True, capture_output=True)
    rehearsed = job_counts(snakemake(tmp_path, REPO / "workflow/presets/rehearsal.yaml", "-n", "all").stdout)
    assert rehearsed == PAPER_PRESET_JOBS and sum(rehearsed.values()) == 484


@pytest.mark.workflow
def test_a_two_layer_llama2_7b_width_rehearsal_runs_every_stage_on_the_cpu(tmp_path):
    """prepare (random weights, real 4096 width and 32000 vocabulary), decompose, LoRA and IniLoRA
    init + fine-tune, evaluation on GSM8K-layout data, table2; each job's JSON names its device."""
    from test_workflow import snakemake

    subprocess.run([sys.executable, "-m", "inilora.rehearsal", "results/rehearsal-data"], cwd=tmp_path, check=True,
                   capture_output=True)
    config = {
        "models": {"r7b": {"path": "rehearsal:llama2-7b:2", "paper_name": "LLaMA2-7B"}},
        "methods": ["lora", "inilora"], "ranks": [8], "seeds": [1],
        "decompose": {"iterations": 3},
        "train": {"learning_rate": 1e-4, "batch_size": 1, "grad_accum": 1, "max_steps": 1, "max_length": 48,
                  "checkpoint_steps": 0},
        "tasks": {"metamath": {"train": [{"loader": "hf", "preset": "metamathqa", "path": "json", "n": 4,
                                          "data_files": "results/rehearsal-data/metamathqa.jsonl"}],
                               "benchmarks": ["gsm8k"]}},
        "benchmarks": {"gsm8k": {"paper_name": "gsm8k", "max_new_tokens": 2, "batch_size": 2,
                                 "data": {"loader": "hf", "preset": "gsm8k", "path": "json", "split": "train", "n": 2,
                                          "data_files": "results/rehearsal-data/gsm8k.jsonl"}}},
        "table2": {"include_base": False},
    }
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(config))
    snakemake(tmp_path, cfg, "--cores", "2", "results/table2.csv")
    meta = json.loads((tmp_path / "results/decompose/r7b/r8_lr0.0005/it3.json").read_text())
    assert {tuple(m["shape"]) for m in meta["modules"].values()} == {(4096, 4096)} and len(meta["modules"]) == 4
    here = "cuda" if torch.cuda.is_available() else "cpu"
    for method in ("lora", "inilora"):
        run = tmp_path / f"results/finetune/r7b/metamath/{method}/r8/lr0.0001/seed1"
        train = json.loads((run / "train.json").read_text())
        evaluation = json.loads((tmp_path / f"results/eval/r7b/metamath/{method}/r8/lr0.0001/seed1/gsm8k.json").read_text())
        assert train["runtime"]["device"] == evaluation["runtime"]["device"] == meta["runtime"]["device"] == here
        assert evaluation["n"] == 2 and evaluation["runtime"]["generated_tokens"] > 0
    config_json = json.loads((tmp_path / "results/models/r7b/hf/config.json").read_text())
    assert (config_json["hidden_size"], config_json["vocab_size"], config_json["num_hidden_layers"]) == (4096, 32000, 2)
    report = subprocess.run([sys.executable, "-m", "inilora.report.runtime", str(tmp_path / "results")],
                            capture_output=True, text=True, check=True).stdout
    rows = [line.split(" | ") for line in report.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert sorted(r[0].strip("| ") for r in rows) == ["decompose", "evaluate", "evaluate", "finetune", "finetune",
                                                      "finetune (init)", "finetune (init)"]
    assert all(r[2] == here for r in rows)
