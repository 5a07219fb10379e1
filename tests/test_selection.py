"""Tune, then compare: the rate each rule picks, ties, the bootstrap's stability, and what the
selection writes (inilora.report.selection)."""

import json

import numpy as np
import pytest

from inilora import paths
from inilora.report.selection import choose, describe, pick, select, table_marks

SPEC = {"rule": "heldout_loss", "rates": [1e-3, 3e-3, 1e-2], "resamples": 500, "stable_at": 0.8,
        "methods": ["lora", "pissa"], "notes": ["a note"]}


def write_eval(root, method, lr, seed, correct, losses, tokens=None):
    """A numeric-kind evaluation JSON at its workflow path, with per-item records."""
    tokens = tokens or [5] * len(losses)
    path = root / paths.EVAL.format(model="m", task="t", method=method, rank=4, lr=f"{lr:g}", seed=seed, bench="tune")
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{"correct": bool(c), "heldout_loss": loss, "heldout_tokens": n} for c, loss, n in zip(correct, losses, tokens)]
    summed = sum(loss * n for loss, n in zip(losses, tokens))
    path.write_text(json.dumps({"benchmark": "tune", "kind": "numeric", "n": len(records), "records": records,
                                "metrics": {"accuracy": float(np.mean(correct)), "heldout_loss": summed / sum(tokens)}}))
    return str(path)


def test_ties_go_to_the_smaller_rate_and_each_rule_has_its_direction():
    assert pick(np.array([0.5, 0.5, 0.2]), minimise=False) == 0
    assert pick(np.array([0.5, 0.5 + 1e-15, 0.2]), minimise=False) == 0  # equal to 12 decimals: a tie
    assert pick(np.array([2.0, 1.0, 1.0]), minimise=True) == 1
    assert pick(np.array([[1.0, 3.0], [2.0, 1.0]]), minimise=True, axis=0).tolist() == [0, 1]
    assert pick(np.array([np.nan, 2.0, np.inf]), minimise=True) == 1  # a diverged run is never chosen
    assert pick(np.array([np.nan, 0.1, 0.0]), minimise=False) == 1


def test_a_clear_winner_is_stable_and_a_coin_toss_is_not():
    rng = np.random.default_rng(0)
    base = rng.normal(2.0, 0.5, 200)
    clear = choose(np.stack([base + 0.3, base, base + 0.3]), minimise=True, resamples=500)
    assert clear["chosen"] == 1 and clear["frequency"][1] == 1.0
    assert np.isclose(clear["frequency"].sum(), 1.0)
    assert (clear["ci_low"] < clear["scores"]).all() and (clear["scores"] < clear["ci_high"]).all()
    noisy = choose(np.stack([base + rng.normal(0, 0.5, 200), base + rng.normal(0, 0.5, 200)]), minimise=True,
                   resamples=500)
    assert 0.2 < noisy["frequency"].max() < 0.95  # the resamples disagree
    same = choose(np.ones((3, 10)), minimise=False, resamples=500)  # all tie: the smallest rate, every time
    assert same["chosen"] == 0 and same["frequency"].tolist() == [1.0, 0.0, 0.0]


def test_the_selection_follows_the_rule_pairs_the_items_across_rates_and_averages_seeds(tmp_path):
    n = 60
    rng = np.random.default_rng(1)
    hard = rng.normal(3.0, 1.0, n)  # per-item difficulty shared by every rate: the pairing removes it
    evals = []
    for seed in (1, 2):
        for lr, shift, acc in [(1e-3, 0.10, 0.2), (3e-3, 0.0, 0.1), (1e-2, 0.05, 0.5)]:
            correct = rng.random(n) < acc
            evals.append(write_eval(tmp_path, "lora", lr, seed, correct, hard + shift + rng.normal(0, 0.01, n)))
            evals.append(write_eval(tmp_path, "pissa", lr, seed, correct, hard + 0.1 - shift + rng.normal(0, 0.01, n)))
    out = tmp_path / "results"
    result = select(SPEC, evals, out / "selection.json", out / "selection.md", out / "selection.png")
    by = {s["method"]: s for s in result["selections"]}
    assert [s["method"] for s in result["selections"]] == ["lora", "pissa"]  # the config's order
    assert by["lora"]["chosen_lr"] == 3e-3 and by["pissa"]["chosen_lr"] == 1e-3
    for method, s in by.items():
        means = [np.mean([json.loads(open(p).read())["metrics"]["heldout_loss"] for p in evals
                          if f"/{method}/" in p and f"/lr{lr:g}/" in p]) for lr in s["rates"]]
        assert np.allclose(s["scores"], means)  # the item mean is the token-weighted benchmark loss
        assert s["stable"] and s["stability"] == 1.0 and s["seeds"] == [1, 2] and s["items"] == n
        assert s["ci_high"][0] - s["ci_low"][0] > 0.2  # the marginal bands are wide; the paired choice is not
    headline = select({**SPEC, "rule": "headline"}, evals, out / "h.json", out / "h.md", out / "h.png")
    assert all(s["chosen_lr"] == 1e-2 and s["metric"] == "accuracy" for s in headline["selections"])
    saved = json.loads((out / "selection.json").read_text())
    assert saved["rule"] == "heldout_loss" and saved["tie_break"] == "the smaller rate"
    assert "| lora | 4 | 0.003 |" in (out / "selection.md").read_text().replace("| m | t ", "")
    assert (out / "selection.png").stat().st_size > 10_000
    marks, notes = table_marks(saved)
    assert marks[("m", "lora", 4, 3e-3)] == {"tuned:stability": 1.0, "tuned:stable": True}
    assert notes[0].startswith("selection: lora (m, task t, rank 4): lr 0.003 chosen by heldout_loss")
    # a choice in the middle of the grid is bracketed; one at its end is not, and says so
    assert not by["lora"]["at_edge"] and "GRID" not in notes[0]
    assert by["pissa"]["at_edge"] and "AT THE GRID'S LOWEST RATE" in notes[1]
    assert all(s["at_edge"] and "AT THE GRID'S HIGHEST RATE" in describe(s) for s in headline["selections"])


def test_an_unstable_choice_is_marked_and_missing_or_mismatched_runs_are_refused(tmp_path):
    rng = np.random.default_rng(2)
    noise = [rng.normal(0, 1, 40) for _ in range(3)]
    evals = [write_eval(tmp_path, "lora", lr, 1, [0] * 40, 3 + z) for lr, z in zip(SPEC["rates"], noise)]
    out = tmp_path / "out"
    s = select(SPEC, evals, out / "s.json", out / "s.md", out / "s.png")["selections"][0]
    assert not s["stable"] and s["stability"] < 0.8
    assert "UNSTABLE" in (out / "s.md").read_text()
    with pytest.raises(ValueError, match=r"no tuning evaluation at rate\(s\) \[0.01\]"):
        select(SPEC, evals[:2], out / "s.json", out / "s.md", out / "s.png")
    extra = write_eval(tmp_path, "lora", 1e-2, 2, [0] * 40, 3 + noise[2])
    with pytest.raises(ValueError, match="every rate needs the same tuning seeds"):
        select(SPEC, [*evals, extra], out / "s.json", out / "s.md", out / "s.png")
