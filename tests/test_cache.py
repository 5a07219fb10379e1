"""Decompositions shared between workflows through Snakemake's output cache (`--cache decompose`)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.workflow  # runs Snakemake in a subprocess: `make test`, not `make test-fast`

REPO = Path(__file__).resolve().parent.parent
DECOMP = "results/decompose/tiny/r4_lr0.01"
BENCH = "results/timings/decompose/tiny_r4_lr0.01.tsv"
SOLVER_LINE = "mean MSE / Eckart-Young optimum"  # what the decompose CLI logs after solving


def snakemake(workdir, configfile, cache_dir, *args):
    """A workflow run in ``workdir`` with the decompose rule cached in ``cache_dir``."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), *args, "--cache", "decompose"]  # --cache last: it takes a list
    env = {**os.environ, "SNAKEMAKE_OUTPUT_CACHE": str(cache_dir)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc.stdout + proc.stderr


def write_config(path, model_dir, ranks=(4,), lrs=(1e-2,)):
    config = {"models": {"tiny": {"path": str(model_dir), "paper_name": "LLaMA2-7B"}}, "methods": ["inilora"],
              "ranks": list(ranks), "decompose": {"iterations": 10, "lr": list(lrs)},
              "tasks": {"t": {"train": [{"loader": "reasoning_gym", "dataset": "chain_sum", "n": 4}],
                              "benchmarks": ["b"]}},
              "benchmarks": {"b": {"data": {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 2}}}}
    path.write_text(yaml.safe_dump(config))
    return path


def planned(dry_run_output):
    """{decomposition folder: 'obtained from' or 'written to'} the cache, from a dry run."""
    return dict(re.findall(r"Output file results/decompose/tiny/(\S+?)/\S+ will be (obtained from|written to)",
                           dry_run_output))


@pytest.fixture(scope="module")
def two_workdirs(tmp_path_factory, tiny_llama_dir):
    """Workdir A decomposes into an empty cache; workdir B, same config, then builds table5."""
    root = tmp_path_factory.mktemp("cache")
    model = shutil.copytree(tiny_llama_dir, root / "model")  # a copy: one test rewrites its weights
    cache = root / "cache"
    cache.mkdir()
    cfg = write_config(root / "c.yaml", model)
    for work in ("A", "B"):  # the model is prepared already (saves a job); its key still enters decompose's
        manifest = root / work / "results/models/tiny/model.json"
        manifest.parent.mkdir(parents=True)
        manifest.write_text(json.dumps({"name": "tiny", "path": str(model), "source": str(model), "note": ""}))
    out_a = snakemake(root / "A", cfg, cache, "--cores", "2", "decompositions")
    out_b = snakemake(root / "B", cfg, cache, "--cores", "2", "decompositions", "results/table5.csv")
    return root, model, cache, cfg, out_a, out_b


def test_a_second_workdir_reuses_the_decomposition_without_solving(two_workdirs):
    root, _, cache, _, out_a, out_b = two_workdirs
    a, b = root / "A", root / "B"
    assert f"Moving output file {DECOMP}/it10.safetensors to cache" in out_a
    assert SOLVER_LINE in (a / "results/logs/decompose/tiny_r4_lr0.01.log").read_text()
    assert f"Symlinking output file {DECOMP}/it10.safetensors from cache" in out_b
    log_b = b / "results/logs/decompose/tiny_r4_lr0.01.log"
    assert not log_b.exists() or log_b.read_text() == ""  # the decompose command never ran in B
    names = {f.name for f in (a / DECOMP).iterdir()}
    assert {"it10.safetensors", "it10.json"} <= names == {f.name for f in (b / DECOMP).iterdir()}
    for rel in [*(f"{DECOMP}/{n}" for n in names), BENCH]:
        assert (b / rel).read_bytes() == (a / rel).read_bytes(), rel
        assert os.readlink(b / rel) == os.readlink(a / rel) and Path(os.readlink(b / rel)).parent == cache


def test_table5_of_a_cache_hit_reports_the_original_solve(two_workdirs):
    root = two_workdirs[0]
    bench = pd.read_csv(root / "A" / BENCH, sep="\t").iloc[0]
    row = pd.read_csv(root / "B/results/table5.csv").iloc[0]
    assert row["job_min"] == pytest.approx(bench["s"] / 60, rel=1e-3)  # A's measurement, not B's (no) job
    assert 0 < row["solve_min"] <= row["job_min"] and row["peak_rss_gb"] > 0
    assert (row["iterations"], row["paper_model"]) == (10, "LLaMA2-7B")


def test_another_rank_or_lr_misses_the_cache(two_workdirs, tmp_path):
    root, model, cache, *_ = two_workdirs
    cfg = write_config(tmp_path / "grid.yaml", model, ranks=(4, 2), lrs=(1e-2, 2e-2))
    plan = planned(snakemake(tmp_path / "C", cfg, cache, "-n", "decompositions"))
    assert plan == {"r4_lr0.01": "obtained from", "r2_lr0.01": "written to",
                    "r4_lr0.02": "written to", "r2_lr0.02": "written to"}


def test_new_weights_at_the_same_path_miss_the_cache(two_workdirs, tmp_path):
    from safetensors.torch import load_file, save_file

    root, model, cache, cfg, *_ = two_workdirs
    weights = model / "model.safetensors"
    original = weights.read_bytes()
    tensors = load_file(weights)
    name = next(n for n in tensors if n.endswith("q_proj.weight"))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, weights, metadata={"format": "pt"})
    try:
        assert planned(snakemake(tmp_path / "D", cfg, cache, "-n", "decompositions")) == {"r4_lr0.01": "written to"}
    finally:
        weights.write_bytes(original)
