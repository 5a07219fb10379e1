"""The Snakemake workflow itself: what it plans, and a real run on a tiny model."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.workflow  # runs Snakemake in a subprocess: `make test`, not `make test-fast`

REPO = Path(__file__).resolve().parent.parent


def snakemake(workdir, configfile, *args, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def dag(workdir, configfile, target="results/table2.csv"):
    """Jobs (rule, wildcards) and edges of the planned DAG, read from --dag."""
    out = snakemake(workdir, configfile, "-n", "--dag", "dot", target).stdout
    nodes = {}
    for num, label in re.findall(r'^\s*(\d+)\[label = "([^"]*)"', out, re.M):
        rule, *wc = label.split("\\n")
        nodes[num] = (rule, dict(w.split(": ", 1) for w in wc))
    edges = re.findall(r"^\s*(\d+) -> (\d+)", out, re.M)
    return nodes, edges


def test_default_config_plans_one_decomposition_per_model_rank_lr(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["ranks"] = [8, 16]
    config["seeds"] = [11, 22]
    config["decompose"]["lr"] = [5e-4, 1e-3]
    config["method_options"] = {"inilora": {"decompose_lr": 1e-3}}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    nodes, edges = dag(tmp_path, cfg)
    decomps = {n: wc for n, (rule, wc) in nodes.items() if rule == "decompose"}
    assert len(decomps) == len(config["models"]) * 2  # model x rank at the lr inilora uses; not x seed
    inilora = {n for n, (rule, wc) in nodes.items() if rule == "finetune" and wc.get("method") == "inilora"}
    assert len(inilora) == 2 * 2  # rank x seed
    for job in inilora:
        parents = [a for a, b in edges if b == job and a in decomps]
        assert len(parents) == 1 and decomps[parents[0]]["dlr"] == "0.001"
    others = {n for n, (rule, wc) in nodes.items() if rule == "finetune" and wc.get("method") != "inilora"}
    assert not [a for a, b in edges if b in others and a in decomps]
    nodes, edges = dag(tmp_path, cfg, "decompositions")
    model_of = {b: nodes[a][1]["model"] for a, b in edges if nodes[a][0] == "prepare_model"}  # (--dag hides it)
    grid = [("16", "0.0005"), ("16", "0.001"), ("8", "0.0005"), ("8", "0.001")]
    for model in ("smollm2-135m", "minilm-l6"):  # the causal LM and the GLUE encoder: model x rank x lr
        assert sorted((wc["rank"], wc["dlr"]) for n, (rule, wc) in nodes.items()
                      if rule == "decompose" and model_of[n] == model) == grid


def test_bad_config_fails_before_any_job(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["methods"] = ["lora", "dora"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, cfg, "-n", check=False)
    assert proc.returncode != 0
    from inilora.inits import REGISTRY

    assert f"config key 'methods': unknown method 'dora'; valid: {sorted(REGISTRY)}" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_llama_dir):
    work = tmp_path_factory.mktemp("wf")
    config = {
        "models": {"tiny": {"path": str(tiny_llama_dir)}},
        "methods": ["lora", "pissa", "milora", "inilora"],
        "method_options": {"pissa": {"svd_niter": 2}},
        "ranks": [4],
        "seeds": [1],
        "decompose": {"iterations": 60, "checkpoints": [20], "lr": [1e-2]},
        "figure2": {"iterations": [0, 60]},  # checkpoints of the decomposition: fixed here so later tests reuse it
        "train": {"learning_rate": 1e-3, "batch_size": 2, "grad_accum": 1, "max_steps": 2, "max_length": 96},
        "tasks": {"arith": {"train": [{"loader": "reasoning_gym", "dataset": "chain_sum", "n": 8, "seed": 1}],
                            "benchmarks": ["chain", "champ", "mc", "code"]}},
        "benchmarks": {"chain": {"data": {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 4, "seed": 9},
                                 "max_new_tokens": 4},
                       "champ": {"kind": "math", "data": {"loader": "champ", "n": 2}, "max_new_tokens": 4},
                       "mc": {"kind": "mmlu", "data": {"loader": "mmlu_standin", "n": 8}},
                       "code": {"kind": "humaneval", "data": {"loader": "humaneval", "n": 2}, "samples": 2,
                                "temperature": 0.8, "ks": [1, 2], "max_new_tokens": 4}},
    }
    cfg = work / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(config))
    first = snakemake(work, cfg, "--cores", "2", "results/table2.csv")
    return work, cfg, config, first


def test_every_job_json_names_the_device_it_ran_on(tiny_run):
    """decompose, finetune (and its init step), evaluate and evaluate_base record device, dtype, wall
    time, peak memory and throughput, and each job its provenance."""
    work = tiny_run[0]
    here = "cuda" if __import__("torch").cuda.is_available() else "cpu"
    meta = json.loads((work / "results/decompose/tiny/r4_lr0.01/it60.json").read_text())
    train = json.loads((work / "results/finetune/tiny/arith/inilora/r4/lr0.001/seed1/train.json").read_text())
    evals = [json.loads(p.read_text()) for p in (work / "results/eval").rglob("*.json")]
    records = [meta["runtime"], train["runtime"], train["runtime"]["init"], *(e["runtime"] for e in evals)]
    assert len(evals) == 20 and all(r["device"] == here and r["wall_seconds"] >= 0 and r["peak_rss_mb"] > 0
                                    for r in records)
    assert train["runtime"]["train_tokens"] > 0 and train["runtime"]["train_tokens_per_second"] > 0
    jobs = [meta["runtime"], train["runtime"], *(e["runtime"] for e in evals)]  # where each result came from
    assert all(r["provenance"]["versions"]["torch"] and r["provenance"]["machine"]["cpu"] and "git" in r["provenance"]
               for r in jobs)
    generated = [e["runtime"] for e in evals if e["kind"] in ("numeric", "math", "humaneval")]
    assert all(r["generated_tokens"] > 0 and r["dtype"] == ("bfloat16" if here == "cuda" else "float32")
               for r in generated)


def _job_spans(work: Path, rules: set[str]) -> list[tuple[float, float, str]]:
    """(start, end, rule) of each job of ``rules`` in a run, from Snakemake's per-output metadata."""
    jobs: dict[int, tuple[float, float, str]] = {}  # one record per output; a job's outputs share its hash
    for record in (work / ".snakemake/metadata").iterdir():
        meta = json.loads(record.read_text())
        if meta.get("rule") in rules and meta.get("starttime"):
            start, end, _ = jobs.get(meta["job_hash"], (meta["starttime"], meta["endtime"], meta["rule"]))
            jobs[meta["job_hash"]] = (min(start, meta["starttime"]), max(end, meta["endtime"]), meta["rule"])
    return sorted(jobs.values())


def test_cpu_jobs_run_two_at_a_time_and_gpu_jobs_one_and_fine_tunes_first(tiny_run):
    """One thread per job (the default) and --cores 2: without a GPU here two jobs overlap; with
    one, profiles/default's cap keeps the jobs that may take it one at a time. The decomposition and
    the fine-tunes, which the evaluations wait for, start before any evaluation."""
    from inilora.config import gpu_visible

    spans = _job_spans(tiny_run[0], {"decompose", "finetune", "evaluate", "evaluate_base"})
    overlaps = sum(s2 < e1 for (_, e1, _), (s2, _, _) in zip(spans, spans[1:]))
    assert len(spans) == 1 + 4 + 5 * 4  # a decomposition, 4 fine-tunes, 5 models x 4 benchmarks
    assert overlaps == 0 if gpu_visible() else overlaps > 5, spans
    upstream = [start for start, _, rule in spans if rule in ("decompose", "finetune")]
    assert max(upstream) < min(start for start, _, rule in spans if rule.startswith("evaluate")), spans


def test_tiny_config_runs_to_table2(tiny_run):
    work, cfg, config, _ = tiny_run
    table = pd.read_csv(work / "results/table2.csv")
    assert list(table["method"]) == ["base (no fine-tune)", "lora", "pissa", "milora", "inilora"]
    assert table["chain:accuracy"].between(0, 1).all()
    assert (table["chain:heldout_loss"] > 0).all()
    for column in ("champ:accuracy", "champ:heldout_loss", "mc:accuracy", "code:pass@1", "code:pass@2"):
        assert table[column].notna().all(), column  # every benchmark kind is a workflow target
    for column in ("chain:accuracy", "chain:heldout_loss", "code:pass@1", "code:pass@2"):  # each with its interval
        assert (table[f"{column}:ci_low"] <= table[column] + 1e-9).all() and table[f"{column}:ci_high"].notna().all()
    assert table["chain:heldout_loss:p"].notna().sum() == len(table) - 1  # every row but the reference is tested
    for it in (20, 60):  # one decomposition run wrote both counts
        assert (work / f"results/decompose/tiny/r4_lr0.01/it{it}.safetensors").exists()
    assert "decomposition of 60 Adam iterations" in (work / "results/table2.md").read_text()


def test_second_run_does_nothing_and_a_new_seed_reuses_the_decomposition(tiny_run):
    work, cfg, config, _ = tiny_run
    again = snakemake(work, cfg, "-n", "results/table2.csv")
    assert "Nothing to be done" in again.stdout + again.stderr
    config = {**config, "seeds": [1, 2]}
    cfg2 = work / "tiny2.yaml"
    cfg2.write_text(yaml.safe_dump(config))
    assert job_counts(snakemake(work, cfg2, "-n", "results/table2.csv").stdout) == {
        "finetune": 4, "evaluate": 16, "table2": 1}  # no decompose, no prepare_model, no base eval


def job_counts(dry_run_output):
    """The 'Job stats' table of a dry run, without the total."""
    block = dry_run_output.split("Job stats:")[1].split("\n\n")[0]
    rows = [line.split() for line in block.strip().splitlines()[2:]]
    return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[0] != "total"}


def test_the_default_with_every_method_plans_offline(tmp_path):
    """The embedded default listing all registered methods: one fine-tune and its evaluations each,
    one decomposition per model (only inilora reads it), and the GLUE stand-in for every method."""
    from inilora.inits import REGISTRY

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["methods"] = sorted(REGISTRY)
    cfg = tmp_path / "all.yaml"
    cfg.write_text(yaml.safe_dump(config))
    counts = job_counts(snakemake(tmp_path, cfg, "-n", "results/table2.csv", "results/table1.csv").stdout)
    n, benches = len(REGISTRY), len(config["tasks"]["arithmetic"]["benchmarks"])
    assert counts == {"prepare_model": 2, "decompose": 2, "finetune": n, "evaluate": n * benches,
                      "evaluate_base": benches, "glue": n, "table1": 1, "table2": 1}


def test_paper_preset_plans_offline_and_replaces_the_default(tmp_path):
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())  # must not be merged in
    out = snakemake(tmp_path, REPO / "workflow/presets/paper.yaml", "-n", "results/table2.csv").stdout
    # 4 models x (metamath -> gsm8k, math, mmlu and codealpaca -> humaneval) x 4 methods
    assert job_counts(out) == {"prepare_model": 4, "decompose": 4, "finetune": 32, "evaluate": 64, "table2": 1}
    # every table and figure (the README's job counts); `all` before --configfile, which takes several files
    out = snakemake(tmp_path, REPO / "workflow/presets/paper.yaml", "-n", "all").stdout
    from test_rehearsal import PAPER_PRESET_JOBS

    assert job_counts(out) == PAPER_PRESET_JOBS == {"prepare_model": 6, "decompose": 8, "finetune": 92, "glue": 240,
                                                    "evaluate": 124, "table1": 1, "table2": 1, "table5": 1,
                                                    "study_table": 4, "lr_sweep": 1, "figure": 5, "all": 1}


def test_each_kind_of_init_gets_its_config_options_through_the_workflow(tiny_run):
    """One CPU fine-tune of a few steps per kind of init (plain, random with options, a decomposition,
    training data with batch settings, a changed step-0 output), options passed from the config.
    Every registered method runs its real finetune job function in tests/test_every_method.py."""
    work, cfg, config, _ = tiny_run
    methods = ["lora", "lora_reversed", "inilora", "inilora_random", "loraga", "hrp", "lora_one", "corda"]
    config = {**config, "methods": methods, "table2": {"include_base": False},
              "tasks": {"arith": {**config["tasks"]["arith"], "benchmarks": ["chain"]}},
              "method_options": {"inilora_random": {"distribution": "xavier_uniform"}, "lora_reversed": {"seed": 3},
                                 "loraga": {"batches": 2, "batch_size": 2}, "hrp": {"steps": 2, "form": "residual"},
                                 "lora_one": {"batches": 2, "gamma": 64}, "corda": {"batches": 2, "corda_method": "kpm"}}}
    cfg_all = work / "all.yaml"
    cfg_all.write_text(yaml.safe_dump(config))
    snakemake(work, cfg_all, "--cores", "2", "results/table2.csv")
    table = pd.read_csv(work / "results/table2.csv")
    assert sorted(table["method"]) == sorted(methods)
    for m in methods:
        spec = yaml.safe_load((work / f"results/finetune/tiny/arith/{m}/r4/lr0.001/seed1/train.json").read_text())
        assert spec["method_options"] == config["method_options"].get(m, {})
        assert spec["base_changed"] == (m in ("inilora", "inilora_random", "loraga", "hrp", "corda"))


def test_a_learning_rate_sweep_reuses_the_table_runs_and_marks_each_methods_best(tiny_run):
    work, cfg, config, _ = tiny_run
    config = {**config, "lr_sweep": {"values": [1e-3, 4e-3], "methods": ["lora", "inilora"]},
              "tasks": {"arith": {**config["tasks"]["arith"], "benchmarks": ["chain"]}}}
    cfg_sweep = work / "sweep.yaml"
    cfg_sweep.write_text(yaml.safe_dump(config))
    plan = snakemake(work, cfg_sweep, "-n", "results/lr_sweep.csv").stdout
    assert job_counts(plan) == {"finetune": 2, "evaluate": 2, "lr_sweep": 1}  # only the new rate; 1e-3 is the table's
    snakemake(work, cfg_sweep, "--cores", "2", "results/lr_sweep.csv")
    sweep = pd.read_csv(work / "results/lr_sweep.csv")
    assert list(zip(sweep["method"], sweep["lr"])) == [("lora", 0.001), ("lora", 0.004), ("inilora", 0.001),
                                                       ("inilora", 0.004)]
    assert sweep.groupby("method")["chain:best"].sum().tolist() == [1, 1]
    for _method, rows in sweep.groupby("method"):
        assert rows.loc[rows["chain:best"], "chain:accuracy"].item() == rows["chain:accuracy"].max()
    train = yaml.safe_load((work / "results/finetune/tiny/arith/lora/r4/lr0.004/seed1/train.json").read_text())
    assert train["train"]["learning_rate"] == 4e-3


def test_merge_exports_a_model_folder_that_needs_no_peft(tiny_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    work, cfg, config, _ = tiny_run
    run = "results/finetune/tiny/arith/inilora/r4/lr0.001/seed1"
    snakemake(work, cfg, "--cores", "1", f"{run}/merged")
    base = AutoModelForCausalLM.from_pretrained(config["models"]["tiny"]["path"], dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, str(work / run / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(work / run / "merged", dtype=torch.float32).eval()
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (merged(ids).logits - with_adapter(ids).logits).abs().max() < 1e-4
    assert not list((work / run).glob(".merged*"))  # no temporary folder left behind


def test_table5_reports_the_workflows_own_decomposition_cost_beside_the_papers(tiny_run):
    work, cfg, config, _ = tiny_run
    config = {**config, "models": {"tiny": {**config["models"]["tiny"], "paper_name": "LLaMA2-7B"}}}
    cfg5 = work / "t5.yaml"
    cfg5.write_text(yaml.safe_dump(config))
    assert job_counts(snakemake(work, cfg5, "-n", "results/table5.csv").stdout) == {"table5": 1}  # no recompute
    snakemake(work, cfg5, "--cores", "1", "results/table5.csv")
    row = pd.read_csv(work / "results/table5.csv").iloc[0]
    assert row["model"] == "tiny" and row["matrices"] == 4 and row["iterations"] == 60
    assert set(row["shapes"].split(", ")) == {"2 x 32x32", "2 x 16x32"}  # q_proj, v_proj (GQA) of 2 layers
    assert 0 < row["solve_min"] <= row["job_min"] and row["peak_rss_gb"] > 0
    assert (row["paper_model"], row["paper_time_min"], row["paper_memory_gb"]) == ("LLaMA2-7B", 25.8, 16.2)


def test_every_table_and_figure_of_the_paper_builds_and_shares_runs(tiny_run):
    """Tables 3, 4, 6, 7 and Figures 2-6 on the tiny model: a run two targets share is trained once,
    and `snakemake --report` gathers every table and figure into one HTML file."""
    from inilora.report import studies

    work, cfg, config, _ = tiny_run
    config = {**config,
              "table3": {"methods": ["lora", "inilora_alpha"], "ranks": [4]},
              "table4": {"sizes": [4], "methods": ["lora"], "ranks": [4]},
              "table6": {"methods": ["lora", "inilora"], "ranks": [4]},
              "table7": {"ranks": [4]},
              "figure3": {"stds": [0.5]},
              "figure4": {"methods": ["inilora_alpha", "inilora-it0"]},
              "figure5": {"ranks": [4]},
              "lr_sweep": {"values": [1e-3], "methods": ["lora"], "benchmarks": ["chain"]}}
    cfg_all = work / "paper_targets.yaml"
    cfg_all.write_text(yaml.safe_dump(config))
    targets = [f"results/table{t}.csv" for t in (3, 4, 6, 7)] + [f"results/figure{n}.png" for n in range(2, 7)]
    plan = job_counts(snakemake(work, cfg_all, "-n", *targets).stdout)
    # new runs only: inilora_alpha (Table 3, and Figures 3 and 4 at its std 0.5), arith-n4 lora (Table 4) and
    # inilora-it0 (Table 7, Figures 2 and 4); lora and inilora come from Table 2, the decomposition too
    assert plan == {"finetune": 3, "evaluate": 3, "study_table": 4, "figure": 5, "lr_sweep": 1}
    snakemake(work, cfg_all, "--cores", "2", *targets)

    t4 = pd.read_csv(work / "results/table4.csv")
    assert list(t4[["size", "method"]].itertuples(index=False, name=None)) == [(4, "lora")]
    train = yaml.safe_load((work / "results/finetune/tiny/arith-n4/lora/r4/lr0.001/seed1/train.json").read_text())
    assert train["examples"] == 4 and train["train"]["max_steps"] == -1 and train["train"]["epochs"] == 1
    t7 = pd.read_csv(work / "results/table7.csv")
    assert list(t7["method"]) == ["lora", "inilora-it0"] and t7["r4"].between(0, 100).all()
    table2 = pd.read_csv(work / "results/table2.csv").set_index("method")
    t6 = pd.read_csv(work / "results/table6.csv").set_index("method")
    assert np.allclose(t6["r4"], table2.loc[["lora", "inilora"], "chain:accuracy"] * 100)  # the same runs

    evals = [str(work / f"results/eval/tiny/arith/{m}/r4/lr0.001/seed1/chain.json") for m in ("inilora-it0", "inilora")]
    metas = [str(work / f"results/decompose/tiny/r4_lr0.01/it{n}.json") for n in (0, 60)]
    fig2 = studies.figure2_data(evals, metas).sort_values("iterations")
    assert fig2["iterations"].tolist() == [0, 60]
    assert fig2["mse"].is_monotonic_decreasing  # more approximation steps, lower loss
    for n in range(2, 7):
        assert (work / f"results/figure{n}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    snakemake(work, cfg_all, "--report", "report.html", *targets, "results/table2.csv")
    html = (work / "report.html").read_text()
    for name in [Path(t).name for t in targets] + ["table2.html", "table3.html"]:
        assert name in html
    # the report's table page: values with their intervals, the paired differences and their notes
    page = (work / "results/table2.html").read_text()
    t2 = pd.read_csv(work / "results/table2.csv").set_index("method")
    assert f"{t2.loc['lora', 'chain:accuracy']:.4f} [{t2.loc['lora', 'chain:accuracy:ci_low']:.3f}," in page
    assert "Paired differences against lora" in page and "minimum detectable" in page


def test_a_fine_tune_runs_data_parallel_in_one_job_under_torchrun(tmp_path, tiny_llama_dir):
    """train.gpus > 1: one job, one process per device (gloo on a CPU, NCCL on GPUs), the Trainer's DDP.

    IniLoRA with bf16 as in the paper preset: the Trainer's mixed precision over fp32 weights, so the
    factors decomposed from the fp32 weights still pass their provenance check."""
    config = {"models": {"tiny": {"path": str(tiny_llama_dir)}}, "methods": ["inilora"], "ranks": [4], "seeds": [1],
              "decompose": {"iterations": 20},
              "train": {"learning_rate": 1e-3, "batch_size": 2, "grad_accum": 1, "max_steps": 2, "max_length": 96,
                        "gpus": 2, "bf16": True},
              "threads": 1,
              "tasks": {"t": {"train": [{"loader": "reasoning_gym", "dataset": "chain_sum", "n": 8, "seed": 1}],
                              "benchmarks": ["b"]}},
              "benchmarks": {"b": {"data": {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 2}}}}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    run = tmp_path / "results/finetune/tiny/t/inilora/r4/lr0.001/seed1"
    proc = snakemake(tmp_path, cfg, "--cores", "2", "-p", str(run.relative_to(tmp_path) / "train.json"))
    out = proc.stdout + proc.stderr  # snakemake 9 prints shell commands on stderr
    assert "torch.distributed.run --standalone --nproc_per_node 2 -m inilora finetune" in out
    log = yaml.safe_load((run / "train.json").read_text())
    assert log["world_size"] == 2 and log["steps"] == 2
    digests = log["init_sha256_per_rank"]  # each rank ran the init itself, and they agreed before step 1
    assert len(digests) == 2 and digests[0] == digests[1] and len(digests[0]) == 64
    assert (run / "adapter/adapter_model.safetensors").exists()
