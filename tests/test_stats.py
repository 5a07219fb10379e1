"""The statistics, tested by simulation against a known truth and against exact values."""

import numpy as np
import pytest
from scipy import stats as sps

from inilora.report import stats

SIMULATIONS = 400


def binomial_bounds(rate: float, trials: int, q: float = 0.999) -> tuple[float, float]:
    """The range a rate estimated from ``trials`` Bernoulli(rate) draws falls in with probability q."""
    lo, hi = sps.binom.ppf([(1 - q) / 2, (1 + q) / 2], trials, rate)
    return lo / trials, hi / trials


def test_mcnemar_exact_on_fixed_tables_equals_the_binomial_tail():
    a = np.array([1] * 1 + [0] * 6 + [1] * 5 + [0] * 20)  # 1 right only for a, 6 only for b, 5 both, 20 neither
    b = np.array([0] * 1 + [1] * 6 + [1] * 5 + [0] * 20)
    assert stats.mcnemar_exact(a, b) == pytest.approx(2 * (1 + 7) / 2**7)  # 2 P(X <= 1), X ~ Bin(7, 1/2) = 0.125
    a2, b2 = np.array([1] * 9 + [0] * 2 + [0] * 30), np.array([0] * 9 + [1] * 2 + [0] * 30)
    assert stats.mcnemar_exact(a2, b2) == pytest.approx(sps.binomtest(2, 11, 0.5).pvalue)
    assert stats.mcnemar_exact(a2, a2) == 1.0


def test_the_issues_table_one_seed_chain_sum():
    """LoRA 9/127 against MiLoRA 14/127 with 7 discordant pairs one way and 2 the other: p = 0.18."""
    lora = np.zeros(127)
    milora = np.zeros(127)
    lora[:9] = 1
    milora[2:16] = 1  # shares 7 items with lora, 7 of its own, lora keeps 2 of its own
    r = stats.paired([milora], [lora], resamples=999)
    assert r.test == "exact McNemar" and r.diff == pytest.approx(5 / 127)
    assert r.p == pytest.approx(sps.binomtest(7, 9, 0.5).pvalue)
    assert r.low < r.diff < r.high


def test_identical_methods_are_rejected_about_five_percent_of_the_time():
    """Two seeds of 100 paired items each from the same per-item difficulty: the permutation test's
    rejection rate at 0.05 over 400 comparisons lies in the binomial bound around 5%."""
    rng = np.random.default_rng(0)
    rejected = 0
    for _ in range(SIMULATIONS):
        difficulty = rng.uniform(0.05, 0.6, size=100)
        a = [(rng.random(100) < difficulty).astype(float) for _ in range(2)]
        b = [(rng.random(100) < difficulty).astype(float) for _ in range(2)]
        rejected += stats.paired(a, b, resamples=499, seed=int(rng.integers(1 << 30))).p < 0.05
    lo, hi = binomial_bounds(0.05, SIMULATIONS)
    assert lo <= rejected / SIMULATIONS <= hi, rejected


def test_exact_mcnemar_never_rejects_identical_methods_more_than_its_level():
    rng = np.random.default_rng(1)
    rejected = 0
    for _ in range(SIMULATIONS):
        difficulty = rng.uniform(0.0, 0.3, size=127)
        a, b = (rng.random(127) < difficulty).astype(float), (rng.random(127) < difficulty).astype(float)
        rejected += stats.mcnemar_exact(a, b) < 0.05
    assert rejected / SIMULATIONS <= binomial_bounds(0.05, SIMULATIONS)[1]  # exact, so conservative


def test_a_difference_of_the_minimum_detectable_size_is_found_at_about_eighty_percent():
    """Independent items at baseline 0.3: a true difference of the formula's MDE is detected at about
    the 80% the formula promises (the normal approximation; within a binomial bound)."""
    n, base = 200, 0.3
    effect = stats.min_detectable_difference(n, base)
    assert 0.12 < effect < 0.15
    rng = np.random.default_rng(2)
    found = 0
    for _ in range(SIMULATIONS):
        a = (rng.random(n) < base + effect).astype(float)
        b = (rng.random(n) < base).astype(float)
        found += stats.mcnemar_exact(a, b) < 0.05
    lo, hi = binomial_bounds(0.8, SIMULATIONS)
    assert lo - 0.05 <= found / SIMULATIONS <= hi, found  # exact McNemar is a little conservative


def test_bootstrap_intervals_cover_the_true_mean_about_95_percent():
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(SIMULATIONS):
        x = (rng.random(150) < 0.3).astype(float)
        _, lo, hi = stats.mean_ci([x], seed=int(rng.integers(1 << 30)), resamples=999)
        covered += lo <= 0.3 <= hi
    lo, hi = binomial_bounds(0.95, SIMULATIONS)
    assert lo - 0.02 <= covered / SIMULATIONS <= hi, covered  # the percentile bootstrap runs slightly short


def test_two_level_intervals_widen_with_seed_to_seed_spread():
    rng = np.random.default_rng(4)
    same = [(rng.random(100) < 0.3).astype(float) for _ in range(3)]
    spread = [(rng.random(100) < p).astype(float) for p in (0.1, 0.3, 0.5)]
    w_same = np.subtract(*stats.mean_ci(same, resamples=999)[2:0:-1])
    w_spread = np.subtract(*stats.mean_ci(spread, resamples=999)[2:0:-1])
    assert w_spread > 1.5 * w_same


def test_holm_matches_its_definition():
    assert stats.holm([0.01, 0.04, 0.03, 0.20]) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    assert stats.holm([0.5]) == [0.5]


def test_items_for_inverts_the_minimum_detectable_difference():
    n = stats.items_for(0.03, 0.08)
    assert stats.min_detectable_difference(n, 0.08) <= 0.03 < stats.min_detectable_difference(n - 50, 0.08)


def test_item_scores_read_every_kind():
    assert stats.item_scores({"kind": "numeric", "records": [{"correct": True}, {"correct": False}]})[1].tolist() == [1, 0]
    metric, s = stats.item_scores({"kind": "humaneval", "records": [{"n": 20, "correct": 5}, {"n": 20, "correct": 0}]})
    assert metric == "pass@1" and s.tolist() == [0.25, 0.0]


def test_table2_carries_intervals_and_paired_tests_against_lora(tmp_path):
    """Per-item records in the evaluation JSONs become ci_low / ci_high, diff_vs_lora with its interval,
    p and p_holm columns, a Markdown cell `mean [low, high]` and a table of differences."""
    import json

    from inilora.report.tables import table2

    rng = np.random.default_rng(5)
    truth = {"lora": 0.3, "inilora": 0.6, "pissa": 0.3}
    paths = []
    for method, rate in truth.items():
        for seed in (1, 2):
            correct = (rng.random(120) < rate).tolist()
            p = tmp_path / f"results/eval/tiny/t/{method}/r8/lr0.001/seed{seed}/chain.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps({"benchmark": "chain", "kind": "numeric", "n": 120,
                                     "metrics": {"accuracy": float(np.mean(correct))},
                                     "records": [{"correct": c} for c in correct]}))
            paths.append(str(p))
    base = tmp_path / "results/eval/tiny/base/chain.json"
    base.parent.mkdir(parents=True)
    base_correct = (rng.random(120) < 0.05).tolist()
    base.write_text(json.dumps({"benchmark": "chain", "kind": "numeric", "n": 120, "metrics": {"accuracy": float(np.mean(base_correct))},
                                "records": [{"correct": c} for c in base_correct]}))
    spec = {"methods": ["lora", "inilora", "pissa"], "benchmarks": ["chain"], "notes": []}
    wide = table2(spec, [str(base), *paths], tmp_path / "t.csv", tmp_path / "t.md").set_index("method")
    for m in wide.index:
        assert wide.loc[m, "chain:accuracy:ci_low"] <= wide.loc[m, "chain:accuracy"] <= wide.loc[m, "chain:accuracy:ci_high"]
    ini, pis, base_row = wide.loc["inilora"], wide.loc["pissa"], wide.loc["base (no fine-tune)"]
    assert ini["chain:accuracy:diff_vs_lora"] == pytest.approx(ini["chain:accuracy"] - wide.loc["lora", "chain:accuracy"])
    assert ini["chain:accuracy:p_holm"] < 0.01 and ini["chain:accuracy:diff_ci_low"] > 0  # a 30-point difference
    assert pis["chain:accuracy:p_holm"] >= pis["chain:accuracy:p"] and pis["chain:accuracy:diff_ci_low"] < 0 < pis["chain:accuracy:diff_ci_high"]
    assert base_row["chain:accuracy:p"] < 0.01 and np.isnan(wide.loc["lora", "chain:accuracy:p"])
    md = (tmp_path / "t.md").read_text()
    assert f"{ini['chain:accuracy']:.4f} [{ini['chain:accuracy:ci_low']:.3f}, {ini['chain:accuracy:ci_high']:.3f}]" in md
    assert "## Paired differences against lora" in md and "(Holm " in md and " *" in md
    assert "p < 0.001" in md and "p 0.000" not in md  # a permutation p below 0.001: "< 0.001", not a rounded 0
    assert "120 items x 2 seed(s)" in md and "paired permutation" in md and "minimum detectable" in md


def write_items(root, method, lr, seed, rate, rng, n=100, task="t", rank=8):
    import json

    correct = (rng.random(n) < rate).tolist()
    p = root / f"results/eval/tiny/{task}/{method}/r{rank}/lr{lr:g}/seed{seed}/chain.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"benchmark": "chain", "kind": "numeric", "n": n, "metrics": {"accuracy": float(np.mean(correct))},
                             "records": [{"correct": c} for c in correct]}))
    return str(p)


def test_the_lr_sweep_compares_each_rate_with_lora_at_the_same_rate_and_figure6_draws_intervals(tmp_path):
    from inilora.report import studies
    from inilora.report.tables import lr_sweep

    rng = np.random.default_rng(6)
    paths = [write_items(tmp_path, m, lr, 1, rate, rng) for m, lr, rate in
             [("lora", 1e-3, 0.2), ("lora", 4e-3, 0.2), ("inilora", 1e-3, 0.2), ("inilora", 4e-3, 0.7)]]
    wide = lr_sweep({"methods": ["lora", "inilora"], "notes": []}, paths, tmp_path / "s.csv", tmp_path / "s.md")
    ini = wide[wide["method"] == "inilora"].set_index("lr")
    assert ini.loc[4e-3, "chain:accuracy:p_holm"] < 0.01 and ini.loc[1e-3, "chain:accuracy:p_holm"] > 0.05
    assert ini.loc[4e-3, "chain:accuracy:diff_vs_lora"] == pytest.approx(
        ini.loc[4e-3, "chain:accuracy"] - wide[(wide["method"] == "lora") & (wide["lr"] == 4e-3)]["chain:accuracy"].item())
    diffs = (tmp_path / "s.md").read_text().split("## Paired differences")[1]
    assert "| inilora | 8 | 0.004 |" in diffs and "| inilora | 8 | 0.001 |" in diffs  # each rate's row says its rate
    fig = studies.figure6_data(tmp_path / "s.csv")
    assert (fig["ci_low"] <= fig["accuracy"]).all() and (fig["accuracy"] <= fig["ci_high"]).all()


def test_a_rank_table_shows_each_cells_interval_over_items_and_seeds(tmp_path):
    from inilora.report import studies

    rng = np.random.default_rng(7)
    paths = [write_items(tmp_path, m, 1e-3, s, rate, rng) for m, rate in (("lora", 0.2), ("inilora", 0.3)) for s in (1, 2)]
    spec = {"table": "table6", "methods": ["lora", "inilora"], "ranks": [8], "benchmark": "chain", "notes": [],
            "paper": {}, "labels": {}}
    table = studies.rank_table(spec, paths, tmp_path / "none.csv", tmp_path / "t.csv", tmp_path / "t.md")
    row = table.set_index("method").loc["inilora"]
    assert row["r8:ci_low"] < row["r8"] < row["r8:ci_high"] and row["r8:ci_high"] - row["r8:ci_low"] < 30
    md = (tmp_path / "t.md").read_text()
    assert f"{row['r8']:.1f} [{row['r8:ci_low']:.1f}, {row['r8:ci_high']:.1f}]" in md and "minimum detectable" in md
    # the paired difference against lora at the same rank, in points, over both seeds' items
    lora = table.set_index("method").loc["lora"]
    assert row["r8:diff_vs_lora"] == pytest.approx(row["r8"] - lora["r8"])
    assert row["r8:diff_ci_low"] < row["r8:diff_vs_lora"] < row["r8:diff_ci_high"] and 0 <= row["r8:p_holm"] <= 1
    assert np.isnan(lora["r8:diff_vs_lora"]) and "Paired differences against lora" in md
    assert "paired permutation" in md and "in points" in md


def test_every_metric_with_per_item_scores_gets_them_and_the_heldout_loss_mean_is_token_weighted():
    numeric = {"kind": "numeric", "records": [{"correct": True, "heldout_loss": 2.0, "heldout_tokens": 1},
                                              {"correct": False, "heldout_loss": 0.5, "heldout_tokens": 3}]}
    scores = stats.metric_scores(numeric)
    assert list(scores) == ["accuracy", "heldout_loss"]
    assert scores["heldout_loss"].mean() == pytest.approx((2.0 * 1 + 0.5 * 3) / 4)  # the benchmark's own number
    code = {"kind": "humaneval", "metrics": {"pass@1": 0.1, "pass@10": 0.2},
            "records": [{"n": 20, "correct": 5}, {"n": 20, "correct": 0}]}
    scores = stats.metric_scores(code)
    assert list(scores) == ["pass@1", "pass@10"]
    from inilora.evaluate.humaneval import pass_at_k

    assert scores["pass@10"].tolist() == [pass_at_k(20, 5, 10), 0.0]


def glue_run(method, seed, labels, best, last, task="champ_topic", main="accuracy"):
    return {"model": "enc", "method": method, "rank": 8, "seed": seed, "task": task, "main_metric": main,
            "best": {main: float(stats_metric(main)(best, labels)), "epoch": 3},
            "last": {main: float(stats_metric(main)(last, labels)), "epoch": 5}, "eval_examples": len(labels),
            "predictions": {"labels": list(labels), "best": list(best), "last": list(last)}}


def stats_metric(main):
    from inilora.data.glue import METRICS

    return METRICS[main]


def test_table1_carries_intervals_and_paired_tests_from_per_example_predictions(tmp_path):
    """Per-example predictions at the best and last epochs become intervals and paired tests in Table 1,
    the metric recomputed on each resample; McNemar for an accuracy on one seed, permutation else."""
    import json

    from inilora.report.tables import table1

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=200)
    good = np.where(rng.random(200) < 0.8, labels, (labels + 1) % 5)
    poor = np.where(rng.random(200) < 0.4, labels, (labels + 2) % 5)
    paths = []
    for method, pred in (("lora", poor), ("inilora", good), ("pissa", poor)):
        path = tmp_path / f"{method}.json"
        path.write_text(json.dumps(glue_run(method, 0, labels.tolist(), pred.tolist(), pred.tolist())))
        paths.append(str(path))
    # a second task with a correlation metric and two seeds: the permutation test, two-level intervals
    y = rng.normal(size=120)
    for method, noise in (("lora", 1.0), ("inilora", 0.3), ("pissa", 1.0)):
        for seed in (0, 1):
            pred = y + noise * rng.normal(size=120)
            path = tmp_path / f"{method}-stsb-{seed}.json"
            path.write_text(json.dumps(glue_run(method, seed, y.tolist(), pred.tolist(), pred.tolist(), "stsb",
                                                "pearson")))
            paths.append(str(path))
    spec = {"tasks": ["champ_topic", "stsb"], "methods": ["lora", "pissa", "inilora"]}
    wide = table1(spec, paths, tmp_path / "t1.csv", tmp_path / "t1.md").set_index("method")
    acc = "champ_topic:accuracy"
    assert wide.loc["lora", f"{acc}:ci_low"] < wide.loc["lora", acc] < wide.loc["lora", f"{acc}:ci_high"]
    assert wide.loc["inilora", f"{acc}:diff_vs_lora"] == pytest.approx(np.mean(good == labels) - np.mean(poor == labels))
    assert wide.loc["inilora", f"{acc}:p"] == pytest.approx(stats.mcnemar_exact(good == labels, poor == labels))
    assert wide.loc["inilora", f"{acc}:p_holm"] < 0.05 and wide.loc["pissa", f"{acc}:p"] == 1.0  # pissa = lora
    assert f"{acc}@last:diff_vs_lora" in wide.columns  # the unselected epoch too
    r = "stsb:pearson"
    assert wide.loc["inilora", f"{r}:diff_ci_low"] > 0 and wide.loc["inilora", f"{r}:p_holm"] < 0.05
    assert wide.loc["pissa", f"{r}:diff_ci_low"] < 0 < wide.loc["pissa", f"{r}:diff_ci_high"]
    md = (tmp_path / "t1.md").read_text()
    assert "200 validation examples x 1 seed(s)" in md and "120 validation examples x 2 seed(s)" in md
    assert "exact McNemar" in md and "paired permutation" in md and "lean high" in md
    assert f"{wide.loc['lora', acc]:.4f} [{wide.loc['lora', f'{acc}:ci_low']:.3f}," in md
    page = (tmp_path / "t1.html").read_text()  # what the Snakemake report shows: the same cells
    assert f"{wide.loc['lora', acc]:.4f} [{wide.loc['lora', f'{acc}:ci_low']:.3f}," in page
    assert page.count("<b>") == 4 and "lean high" in page  # inilora, both tasks, best and @last


def test_a_metric_interval_recomputes_the_metric_and_covers_its_truth():
    """The bootstrap of a Matthews correlation over (prediction, label) pairs covers the population
    value about 95% of the time (200 simulated validation sets)."""
    from inilora.data.glue import matthews_corr

    rng = np.random.default_rng(5)

    def draw(n):
        y = rng.integers(0, 2, size=n)
        return np.where(rng.random(n) < 0.75, y, 1 - y), y  # MCC of a 75%-right balanced predictor: 0.5
    covered, trials = 0, 200
    for _ in range(trials):
        p, y = draw(300)
        _, lo, hi = stats.statistic_ci([(p, y)], matthews_corr, seed=int(rng.integers(1 << 30)), resamples=999)
        covered += lo <= 0.5 <= hi
    lo, hi = binomial_bounds(0.95, trials)
    assert lo - 0.03 <= covered / trials <= hi, covered


def test_an_undefined_metric_gets_no_p_value_and_holm_leaves_it_out():
    """Pearson of constant predictions is NaN: its comparison has no test (not the smallest p)."""
    from inilora.data.glue import pearson

    rng = np.random.default_rng(8)
    y = rng.normal(size=100)
    r = stats.paired([y + rng.normal(size=100)], [np.full(100, 2.5)], labels_by_seed=[y], metric=pearson,
                     resamples=199)
    assert np.isnan(r.p) and r.test.startswith("undefined")
    adjusted = stats.holm([0.01, float("nan"), 0.04])
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)


def test_table1_skips_a_pair_of_methods_with_no_seed_in_common():
    """Runs without predictions drop out seed by seed; two methods left with disjoint seeds are
    not compared (and a note says so), rather than failing the table."""
    labels = [0, 1] * 20
    runs = [glue_run("lora", 0, labels, labels, labels), glue_run("pissa", 1, labels, labels[::-1], labels)]
    columns, notes = stats.prediction_columns(runs, "lora")
    assert ("enc", "pissa", 8) in columns and "champ_topic:accuracy:diff_vs_lora" not in columns[("enc", "pissa", 8)]
    assert any("pissa shares no seed" in n for n in notes)


def test_a_regression_heads_column_of_scores_is_scored_as_one_evaluation():
    from inilora.data.glue import pearson

    assert pearson(np.array([[0.5], [1.5], [4.0]]), [0.0, 2.0, 5.0]) == pytest.approx(pearson([0.5, 1.5, 4.0], [0, 2, 5]))


def test_a_rank_table_says_when_two_methods_were_scored_on_different_items(tmp_path):
    from inilora.report import studies

    rng = np.random.default_rng(9)
    paths = [write_items(tmp_path, "lora", 1e-3, 1, 0.2, rng), write_items(tmp_path, "inilora", 1e-3, 1, 0.3, rng, n=90)]
    spec = {"table": "table6", "methods": ["lora", "inilora"], "ranks": [8], "benchmark": "chain", "notes": [],
            "paper": {}, "labels": {}}
    table = studies.rank_table(spec, paths, tmp_path / "none.csv", tmp_path / "t.csv", tmp_path / "t.md")
    assert "r8:diff_vs_lora" not in table
    assert "inilora and lora were scored on different items; not compared" in (tmp_path / "t.md").read_text()
