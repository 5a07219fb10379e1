"""The analysis tables (3, 4, 6, 7) and figure data, from evaluation JSONs written here."""

import json
from pathlib import Path

import pandas as pd
import pytest

from inilora.report import studies

REPO = Path(__file__).resolve().parent.parent


def write_eval(root, task, method, rank, seed, accuracy, n=50):
    p = root / f"results/eval/tiny/{task}/{method}/r{rank}/lr0.001/seed{seed}/chain.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"benchmark": "chain", "n": n, "metrics": {"accuracy": accuracy, "heldout_loss": 1.0}}))
    return str(p)


def spec(table, methods, ranks, paper=None):
    return {"table": table, "methods": methods, "ranks": ranks, "benchmark": "chain", "notes": ["a note"],
            "paper": paper or {}, "labels": {}}


def test_a_rank_table_gives_percent_mean_and_std_over_seeds_beside_the_papers_number(tmp_path):
    evals = [write_eval(tmp_path, "arith", m, r, s, acc)
             for m, r, s, acc in [("inilora", 8, 1, 0.30), ("inilora", 8, 2, 0.20), ("lora", 8, 1, 0.10),
                                  ("lora", 8, 2, 0.14), ("lora", 4, 1, 0.02), ("inilora", 4, 1, 0.04)]]
    paper = {"benchmark": "gsm8k", "models": {"tiny": "LLaMA2-7B"}}
    table = studies.rank_table(spec("table6", ["lora", "inilora"], [4, 8], paper), evals,
                               REPO / "workflow/reference/paper_table6.csv", tmp_path / "t.csv", tmp_path / "t.md")
    assert list(table["method"]) == ["lora", "inilora"]  # the config's order
    row = table.set_index("method").loc["inilora"]
    assert row["r8"] == pytest.approx(25.0) and row["r8_std"] == pytest.approx(7.0711, abs=1e-3)
    assert row["r8:seeds"] == 2 and row["r4"] == pytest.approx(4.0)
    assert row["r8_paper"] == 22.5 and row["r8_ours_minus_paper"] == pytest.approx(2.5)
    assert "r4_paper" not in table  # the paper has no rank 4
    md = (tmp_path / "t.md").read_text()
    assert "| tiny | inilora | 4.0 | 25.0 ± 7.1 |" in md and "ours minus it, in points" in md
    assert "one item is 2.00 points" in md

    plain = studies.rank_table(spec("table6", ["lora", "inilora"], [4, 8]), evals,
                               REPO / "workflow/reference/paper_table6.csv", tmp_path / "p.csv", tmp_path / "p.md")
    assert not [c for c in plain.columns if "paper" in c]  # no paper model named: no comparison


def test_table4_rows_are_data_size_by_method(tmp_path):
    evals = [write_eval(tmp_path, f"arith-n{size}", m, 8, 1, acc)
             for size, m, acc in [(80, "lora", 0.1), (80, "inilora", 0.2), (320, "lora", 0.3), (320, "inilora", 0.4)]]
    table = studies.rank_table(spec("table4", ["lora", "inilora"], [8]), evals,
                               REPO / "workflow/reference/paper_table4.csv", tmp_path / "t.csv", tmp_path / "t.md")
    assert list(table[["size", "method"]].itertuples(index=False, name=None)) == [
        (80, "lora"), (80, "inilora"), (320, "lora"), (320, "inilora")]
    assert table["r8"].tolist() == pytest.approx([10, 20, 30, 40])


def test_figure_points_read_their_setting_from_the_variant_name(tmp_path):
    assert studies._std("inilora_alpha-std0.0001", {}) == 1e-4
    assert studies._std("inilora_alpha", {"default_std": 0.5}) == 0.5
    meta = tmp_path / "it4000.json"
    meta.write_text(json.dumps({"iterations": 4000}))
    assert studies._iterations("inilora-it100", [str(meta)]) == 100
    assert studies._iterations("inilora", [str(meta)]) == 4000


def test_figure5_reads_each_runs_loss_curve(tmp_path):
    log = tmp_path / "train.json"
    log.write_text(json.dumps({"model": "tiny", "method": "inilora", "variant": "inilora-it0", "rank": 8,
                               "train": {"seed": 3}, "curve": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]}))
    df = studies.figure5_data([str(log)])
    assert df.to_dict("records") == [
        {"model": "tiny", "method": "inilora-it0", "rank": 8, "seed": 3, "step": 1, "loss": 2.0},
        {"model": "tiny", "method": "inilora-it0", "rank": 8, "seed": 3, "step": 2, "loss": 1.5}]


def test_table2_shows_the_papers_number_and_ours_minus_it_for_a_paper_model_and_benchmark(tmp_path):
    from inilora.report.tables import table2

    evals = [write_eval(tmp_path, "metamath", m, 8, 11, acc) for m, acc in [("lora", 0.25), ("inilora", 0.20)]]
    spec = {"methods": ["lora", "inilora"], "benchmarks": ["chain"], "notes": [],
            "paper": {"models": {"tiny": "LLaMA2-7B"}, "benchmarks": {"chain": "gsm8k"}}}
    wide = table2(spec, evals, tmp_path / "t.csv", tmp_path / "t.md", REPO / "workflow/reference/paper_table2.csv")
    row = wide.set_index("method").loc["inilora"]
    assert row["chain:accuracy:paper"] == pytest.approx(0.225)  # the paper's 22.5 % (LLaMA2-7B, GSM8K)
    assert row["chain:accuracy:ours_minus_paper"] == pytest.approx(0.20 - 0.225)
    assert "ours minus it" in (tmp_path / "t.md").read_text()


def test_table1_puts_the_papers_glue_score_beside_ours_per_encoder_and_skips_stand_ins(tmp_path):
    from inilora.report.tables import table1

    def run(model, method, task, metric, best, seed=0):
        p = tmp_path / f"{model}_{task}_{method}_{seed}.json"
        p.write_text(json.dumps({"model": model, "method": method, "rank": 8, "seed": seed, "task": task,
                                 "main_metric": metric, "best": {metric: best}, "last": {metric: best - 0.01},
                                 "eval_examples": 100}))
        return str(p)

    runs = [run("rb", "lora", "cola", "matthews", 0.60), run("rb", "inilora", "cola", "matthews", 0.65),
            run("rl", "inilora", "cola", "matthews", 0.70), run("rb", "inilora", "champ_topic", "accuracy", 0.5),
            run("mini", "inilora", "cola", "matthews", 0.1)]
    spec = {"methods": ["lora", "inilora"], "tasks": ["cola", "champ_topic"], "notes": [],
            "paper": {"rb": "RoBERTa Base", "rl": "RoBERTa Large"}}
    wide = table1(spec, runs, tmp_path / "t.csv", tmp_path / "t.md", REPO / "workflow/reference/paper_table1.csv")
    rows = wide.set_index(["model", "method"])
    assert rows.loc[("rb", "inilora"), "cola:matthews:paper"] == pytest.approx(0.637)  # 63.7 (RoBERTa Base)
    assert rows.loc[("rb", "lora"), "cola:matthews:ours_minus_paper"] == pytest.approx(0.60 - 0.635)
    assert rows.loc[("rl", "inilora"), "cola:matthews:paper"] == pytest.approx(0.694)  # 69.4 (RoBERTa Large)
    assert pd.isna(rows.loc[("mini", "inilora"), "cola:matthews:paper"])  # no paper encoder: no number
    assert not any(c.startswith("champ_topic") and "paper" in c for c in wide.columns)  # a stand-in
    assert "ours minus it" in (tmp_path / "t.md").read_text()
