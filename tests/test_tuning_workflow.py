"""Tune, then compare, in one Snakemake command on a tiny model: the checkpoint's choice follows the
rule, Table 2 runs at the chosen rates, and a changed rule or tuning set reruns only what follows."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from test_workflow import snakemake

pytestmark = pytest.mark.workflow


def snapshot(work, *folders):
    """{path: (mtime_ns, bytes)} of every file under ``folders`` of the run directory."""
    out = {}
    for folder in folders:
        for f in sorted((work / folder).rglob("*")):
            if f.is_file():
                out[str(f.relative_to(work))] = (f.stat().st_mtime_ns, f.read_bytes())
    return out


def tuning_scores(work, selection, metric):
    """Each rate's score recomputed from the tuning evaluation JSONs: the seed mean of the metric."""
    return [np.mean([json.loads((work / p).read_text())["metrics"][metric] for p in selection["evaluations"]
                     if f"/lr{lr:g}/" in p]) for lr in selection["rates"]]


def expected_choice(scores, lower):
    """The smaller rate on ties, the best score otherwise."""
    best = min(scores) if lower else max(scores)
    return next(i for i, s in enumerate(scores) if round(s, 12) == round(best, 12))


def test_one_command_tunes_selects_and_compares_and_a_changed_rule_reruns_only_what_follows(tmp_path, tiny_llama_dir):
    work = tmp_path
    config = {
        "models": {"tiny": {"path": str(tiny_llama_dir)}},
        "methods": ["lora", "pissa"],
        "method_options": {"pissa": {"svd_niter": 2}},
        "ranks": [4],
        "seeds": [1],
        # a shared rate outside the grid: a table row at 0.0005 would mean the choice was ignored
        "train": {"learning_rate": 5e-4, "batch_size": 2, "grad_accum": 1, "max_steps": 2, "max_length": 96},
        "tasks": {"arith": {"train": [{"loader": "reasoning_gym", "dataset": "chain_sum", "n": 8, "seed": 1}],
                            "benchmarks": ["chain"]}},
        "benchmarks": {"chain": {"data": {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 4, "seed": 9},
                                 "max_new_tokens": 4},
                       "chain_tune": {"data": {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 6, "seed": 7},
                                      "max_new_tokens": 4}},
        "tuning": {"rates": [1e-3, 3e-2], "benchmarks": {"arith": "chain_tune"}, "resamples": 200},
    }
    cfg = work / "tune.yaml"
    cfg.write_text(yaml.safe_dump(config))
    snakemake(work, cfg, "--cores", "2", "results/table2.csv")

    selection = json.loads((work / "results/selection.json").read_text())
    assert selection["rule"] == "heldout_loss" and len(selection["selections"]) == 2
    table = pd.read_csv(work / "results/table2.csv")
    for s in selection["selections"]:
        scores = tuning_scores(work, s, "heldout_loss")
        assert np.allclose(s["scores"], scores)
        assert s["chosen_lr"] == s["rates"][expected_choice(scores, lower=True)]
        assert all(p.endswith("/chain_tune.json") and "/seed1/" in p for p in s["evaluations"])
        row = table[table["method"] == s["method"]]
        assert row["lr"].tolist() == [s["chosen_lr"]]  # the comparison ran at the chosen rate
        assert row["tuned:stability"].item() == s["stability"]
    notes = (work / "results/table2.md").read_text()
    assert "selection: lora (tiny, task arith, rank 4): lr" in notes and "rates tuned per method" in notes
    assert (work / "results/selection.png").stat().st_size > 10_000

    # The rule changes: the selection and Table 2 rerun; no fine-tune and no tuning evaluation does.
    trained = snapshot(work, "results/finetune")
    tuned = {p: v for p, v in snapshot(work, "results/eval").items() if p.endswith("chain_tune.json")}
    cfg.write_text(yaml.safe_dump({**config, "tuning": {**config["tuning"], "rule": "headline"}}))
    plan = snakemake(work, cfg, "-n", "results/table2.csv").stdout
    assert "checkpoint select_rates" in plan and "rule finetune" not in plan and "rule evaluate:" not in plan
    snakemake(work, cfg, "--cores", "2", "results/table2.csv")
    assert snapshot(work, "results/finetune") == trained  # every run at every rate was trained on seed 1 already
    assert {p: v for p, v in snapshot(work, "results/eval").items() if p.endswith("chain_tune.json")} == tuned
    selection = json.loads((work / "results/selection.json").read_text())
    table = pd.read_csv(work / "results/table2.csv")
    assert selection["rule"] == "headline"
    for s in selection["selections"]:
        assert s["metric"] == "accuracy"
        assert s["chosen_lr"] == s["rates"][expected_choice(tuning_scores(work, s, "accuracy"), lower=False)]
        assert table.loc[table["method"] == s["method"], "lr"].tolist() == [s["chosen_lr"]]

    # The tuning items change: their evaluations and the selection rerun; no fine-tune does.
    benches = {**config["benchmarks"], "chain_tune": {**config["benchmarks"]["chain_tune"],
                                                      "data": {**config["benchmarks"]["chain_tune"]["data"], "seed": 8}}}
    cfg.write_text(yaml.safe_dump({**config, "benchmarks": benches, "tuning": {**config["tuning"], "rule": "headline"}}))
    snakemake(work, cfg, "--cores", "2", "results/table2.csv")
    assert snapshot(work, "results/finetune") == trained
    retuned = {p: v for p, v in snapshot(work, "results/eval").items() if p.endswith("chain_tune.json")}
    assert retuned.keys() == tuned.keys() and all(retuned[p][0] != tuned[p][0] for p in tuned)


def test_table1_tunes_on_a_split_held_out_of_training_and_reports_validation_at_the_chosen_rates(tmp_path):
    """Table 1 in one command: every method at each rate, the rate picked from the tuning split (held
    out of the training rows), the table at the picked rates; a changed rule retrains nothing."""
    from test_glue import apple_rows, table1_config, tiny_bert, write_jsonl

    work = tmp_path
    sst2 = {"train": str(write_jsonl(work / "train.jsonl", apple_rows(40, 0))),
            "validation": str(write_jsonl(work / "validation.jsonl", apple_rows(16, 1)))}
    config = table1_config(
        work, {"bert": {"path": str(tiny_bert(work / "bert"))}},
        {"model": "bert", "tasks": ["sst2"], "data": {"sst2": {"data_files": sst2}}, "methods": ["lora", "pissa"],
         "ranks": [4], "seeds": [0], "epochs": 1, "batch_size": 8, "max_length": 16,
         "learning_rate": 5e-4,  # outside the grid: a fallback would show
         "tuning": {"rates": [1e-3, 5e-2], "fraction": 0.25, "seed": 1}},
        method_options={"pissa": {"svd_niter": 2}}, tuning={"resamples": 200})
    cfg = work / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    snakemake(work, cfg, "--cores", "2", "results/table1.csv")

    selection = json.loads((work / "results/selection_table1.json").read_text())
    table = pd.read_csv(work / "results/table1.csv").set_index("method")
    assert selection["rule"] == "heldout_loss" and len(selection["selections"]) == 2
    for s in selection["selections"]:
        runs = [json.loads((work / p).read_text()) for p in s["runs"]]
        assert [r["learning_rate"] for r in runs] == s["rates"] == [1e-3, 5e-2]
        assert all(r["tuning"]["examples"] == 10 and r["train_examples"] == 30 and r["eval_examples"] == 16
                   for r in runs)  # a quarter of the 40 training rows held out, the validation rows untouched
        scores = [r["tuning"]["loss"] for r in runs]
        assert np.allclose(s["scores"], scores)
        assert s["chosen_lr"] == s["rates"][expected_choice(scores, lower=True)]
        assert table.loc[s["method"], "sst2:lr"] == s["chosen_lr"]  # the table reports the chosen rate's run
        chosen = runs[s["rates"].index(s["chosen_lr"])]
        assert table.loc[s["method"], "sst2:accuracy"] == pytest.approx(chosen["best"]["accuracy"])
        assert table.loc[s["method"], "sst2:tuned:stability"] == s["stability"]
    assert "rates tuned per method (results/selection_table1.json)" in (work / "results/table1.md").read_text()

    trained = snapshot(work, "results/glue")
    cfg.write_text(yaml.safe_dump({**config, "tuning": {**config["tuning"], "rule": "headline"}}))
    plan = snakemake(work, cfg, "-n", "results/table1.csv").stdout
    assert "checkpoint select_glue_rates" in plan and "rule glue:" not in plan
    snakemake(work, cfg, "--cores", "2", "results/table1.csv")
    assert snapshot(work, "results/glue") == trained
    selection = json.loads((work / "results/selection_table1.json").read_text())
    table = pd.read_csv(work / "results/table1.csv").set_index("method")
    for s in selection["selections"]:
        runs = [json.loads((work / p).read_text()) for p in s["runs"]]
        scores = [r["tuning"]["metrics"]["accuracy"] for r in runs]
        assert s["metric"] == "accuracy" and s["chosen_lr"] == s["rates"][expected_choice(scores, lower=False)]
        assert table.loc[s["method"], "sst2:lr"] == s["chosen_lr"]
