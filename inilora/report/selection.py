"""Tune, then compare: each method's fine-tuning rate, chosen from its tuning runs by the config's
rule, with how stable that choice is.

For every (model, task, method, rank) the tuning evaluations give one score per tuning item at each
rate, averaged over the tuning seeds. The rule (``tuning.rule``) reads the item mean:

- ``heldout_loss``: the lowest mean held-out loss of the items' reference answers (each item's
  summed cross-entropy over the benchmark's mean token count, inilora.report.stats.metric_scores,
  so the item mean is the benchmark's token-weighted loss);
- ``headline``: the highest headline metric of the benchmark's kind (accuracy, pass@1).

Ties go to the smaller rate (scores compared to 12 decimals, so a tie in exact arithmetic is one
here). Stability: ``scipy.stats.bootstrap`` resamples the tuning items, the same items for every
rate (``paired=True``); each resample picks a rate by the same rule, and the share of resamples that
pick each rate is reported. The percentile intervals of the same resamples are the figure's bands.
The tuning seeds are held fixed (an item's score is its mean over them), not resampled.

Table 1's GLUE runs are selected the same way (``spec["source"] == "glue"``): their items are the
examples of the tuning split held out of each task's training split, scored after the last epoch
(inilora.train.glue.tuning_record): the loss, or for ``headline`` whether the prediction is right.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from inilora.io import atomic_write_text
from inilora.report.figures import selection_figure
from inilora.report.markdown import markdown_table
from inilora.report.stats import CONFIDENCE
from inilora.report.tables import read_evals

KEYS = ["model", "task", "method", "rank"]
DECIMALS = 12  # scores equal to this many decimals are a tie: the smaller rate wins


def pick(scores: np.ndarray, minimise: bool, axis: int = 0) -> np.ndarray:
    """Index of the chosen rate along ``axis`` (rates ascending): the first best, i.e. the smaller
    rate on ties. A non-finite score (a run that diverged) is the worst, never chosen over a finite one."""
    worst = np.inf if minimise else -np.inf
    rounded = np.where(np.isfinite(scores), np.round(scores, DECIMALS), worst)
    return np.argmin(rounded, axis=axis) if minimise else np.argmax(rounded, axis=axis)


def choose(items: np.ndarray, minimise: bool, resamples: int, seed: int = 0) -> dict:
    """The choice among rates from ``items`` (rates x items, rates ascending), with its bootstrap.

    Returns ``scores`` (item means), ``ci_low``/``ci_high`` (95% percentile intervals), ``frequency``
    (share of resamples picking each rate) and ``chosen`` (index)."""
    scores = items.mean(axis=1)
    chosen = int(pick(scores, minimise))
    if items.shape[1] < 2 or np.all(items == items[:, :1]):  # nothing to resample: every draw is the same
        freq = np.zeros(len(scores))
        freq[chosen] = 1.0
        return {"scores": scores, "ci_low": scores.copy(), "ci_high": scores.copy(), "frequency": freq,
                "chosen": chosen}
    res = stats.bootstrap(tuple(items), lambda *rows, axis=-1: np.stack([r.mean(axis=axis) for r in rows]),
                          paired=True, vectorized=True, n_resamples=resamples, method="percentile",
                          confidence_level=CONFIDENCE, random_state=np.random.default_rng(seed))
    picks = pick(res.bootstrap_distribution, minimise, axis=0)
    freq = np.bincount(picks, minlength=len(scores)) / resamples
    return {"scores": scores, "ci_low": np.asarray(res.confidence_interval.low),
            "ci_high": np.asarray(res.confidence_interval.high), "frequency": freq, "chosen": chosen}


def _item_matrix(group, metric: str, where: str) -> tuple[list[float], np.ndarray, list[int]]:
    """(rates ascending, rates x items of seed-mean scores, seeds) of one selection's evaluations;
    every rate must have the same seeds and the same items."""
    rates, rows, seeds = [], [], None
    for lr, at_rate in group.groupby("lr", sort=True):
        by_seed = {e.seed: e.scores for e in at_rate.itertuples(index=False)}
        if any(s is None or metric not in s for s in by_seed.values()):
            raise ValueError(f"{where}, lr {lr:g}: an evaluation has no per-item '{metric}' to select by")
        if seeds is None:
            seeds = sorted(by_seed)
        elif sorted(by_seed) != seeds:
            raise ValueError(f"{where}: lr {lr:g} has seeds {sorted(by_seed)}, another rate {seeds}; "
                             "every rate needs the same tuning seeds")
        per_seed = [by_seed[s][metric] for s in seeds]
        if len({len(x) for x in per_seed}) != 1 or (rows and len(per_seed[0]) != rows[0].shape[0]):
            raise ValueError(f"{where}, lr {lr:g}: the tuning evaluations score different numbers of items")
        rates.append(float(lr))
        rows.append(np.mean(per_seed, axis=0))
    return rates, np.stack(rows), seeds


def read_glue_tuning(run_paths: list[str]) -> pd.DataFrame:
    """One row per GLUE run, as :func:`inilora.report.tables.read_evals` gives an evaluation: model,
    task, method, rank, lr, seed, benchmark (the task's tuning split), ``scores`` (per tuning example:
    ``accuracy`` for classification, then ``heldout_loss``) and path."""
    rows = []
    for p in run_paths:
        run = json.loads(Path(p).read_text())
        if "tuning" not in run:
            raise ValueError(f"{p}: the run held out no tuning split (it ran with 'glue.tuning.rates' empty); "
                             "it cannot take part in a selection")
        items = run["tuning"]["items"]
        scores = {"accuracy": items["correct"]} if "correct" in items else {}
        rows.append({"model": run["model"], "task": run["task"], "method": run["method"], "rank": int(run["rank"]),
                     "lr": float(run["learning_rate"]), "seed": int(run["seed"]),
                     "benchmark": f"{run['task']} tuning split", "path": str(p),
                     "scores": {**scores, "heldout_loss": items["heldout_loss"]}})
    return pd.DataFrame(rows)


def select(spec: dict, eval_paths: list[str], out_json: Path, markdown: Path, figure: Path) -> dict:
    """Choose every (model, task, method, rank)'s rate from its tuning evaluations (or, with
    ``spec["source"]`` "glue", its GLUE runs) by ``spec["rule"]``; write the choice with its figures
    (JSON), a table (markdown) and the figure (PNG)."""
    glue = spec.get("source") == "glue"
    df = read_glue_tuning(eval_paths) if glue else read_evals(eval_paths).drop_duplicates("path")
    minimise = spec["rule"] == "heldout_loss"
    order = {m: i for i, m in enumerate(spec["methods"])}
    selections = []
    for key, group in sorted(df.groupby(KEYS), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 99), kv[0][3])):
        ident = dict(zip(KEYS, key))
        where = "{model}, task {task}, {method}, rank {rank}".format(**ident)
        benches = sorted(set(group["benchmark"]))
        if len(benches) != 1:
            raise ValueError(f"{where}: tuning evaluations on several benchmarks {benches}; one per task")
        headline = next(iter(group["scores"].iloc[0] or {"accuracy": None}))  # the kind's headline comes first
        metric = "heldout_loss" if minimise else headline
        rates, items, seeds = _item_matrix(group, metric, where)
        missing = sorted(set(spec["rates"]) - set(rates))
        if missing:
            raise ValueError(f"{where}: no tuning evaluation at rate(s) {missing}")
        c = choose(items, minimise, spec["resamples"])
        stability = float(c["frequency"][c["chosen"]])
        selections.append({
            **ident, "rank": int(ident["rank"]), "benchmark": benches[0], "metric": metric,
            "direction": "lower" if minimise else "higher", "seeds": seeds, "items": int(items.shape[1]),
            "rates": rates, "scores": c["scores"].tolist(), "ci_low": c["ci_low"].tolist(),
            "ci_high": c["ci_high"].tolist(), "frequency": c["frequency"].tolist(),
            "chosen_lr": rates[c["chosen"]], "chosen_score": float(c["scores"][c["chosen"]]),
            "stability": stability, "stable": stability >= spec["stable_at"],
            # the lowest or highest rate of the grid: the best rate may lie beyond it
            "at_edge": c["chosen"] in (0, len(rates) - 1),
            ("runs" if glue else "evaluations"): sorted(group["path"]),
        })
    if not selections:
        raise ValueError("no tuning evaluations to select from")
    result = {"rule": spec["rule"], "tie_break": "the smaller rate", "resamples": spec["resamples"],
              "stable_at": spec["stable_at"], "notes": spec["notes"], "selections": selections}
    atomic_write_text(out_json, json.dumps(result, indent=1) + "\n")
    atomic_write_text(markdown, selection_markdown(result))
    selection_figure(selections, figure, note="".join(f"{n.rstrip('.')}. " for n in spec["notes"]))
    return result


def describe(s: dict) -> str:
    """One selection in a sentence, for the comparison table's notes."""
    others = ", ".join(f"{r:g} in {f:.0%}" for r, f in zip(s["rates"], s["frequency"]) if f > 0 and r != s["chosen_lr"])
    return (f"{s['method']} ({s['model']}, task {s['task']}, rank {s['rank']}): lr {s['chosen_lr']:g} chosen by "
            f"{s['metric']} {s['chosen_score']:.4g} on {s['items']} tuning items x {len(s['seeds'])} seed(s); "
            f"picked in {s['stability']:.0%} of resamples" + (f" (else {others})" if others else "")
            + ("" if s["stable"] else ": UNSTABLE, the choice flips under resampling")
            + (f"; AT THE GRID'S {'LOWEST' if s['chosen_lr'] == min(s['rates']) else 'HIGHEST'} RATE, so the best "
               "rate may lie beyond the grid" if s.get("at_edge") else ""))


def selection_markdown(result: dict) -> str:
    rows = []
    for s in result["selections"]:
        for lr, score, lo, hi, f in zip(s["rates"], s["scores"], s["ci_low"], s["ci_high"], s["frequency"]):
            rows.append({"model": s["model"], "task": s["task"], "method": s["method"], "rank": s["rank"], "lr": lr,
                         s["metric"]: score, "ci_low": lo, "ci_high": hi, "picked": f,
                         "chosen": "yes" if lr == s["chosen_lr"] else "",
                         "stable": ("yes" if s["stable"] else "NO") if lr == s["chosen_lr"] else ""})
    md = ["# Learning-rate selection", ""]
    md += [f"- {n}" for n in result["notes"]]
    md += [f"- {describe(s)}" for s in result["selections"]]
    md += ["- picked: the share of bootstrap resamples of the tuning items that choose the rate; ci_low, "
           "ci_high: 95% percentile interval of the rate's score over the same resamples", "",
           markdown_table(pd.DataFrame(rows)), ""]
    return "\n".join(md)


def read_selection(path) -> dict:
    """A selection JSON as :func:`select` wrote it."""
    return json.loads(Path(path).read_text())


def table_marks(result: dict) -> tuple[dict, list[str]]:
    """What the comparison table shows of a selection: per row (model, method, rank, lr), the least
    stable of its choices (a row can stand for several tasks) as ``tuned:stability`` and
    ``tuned:stable``; and a note per choice (:func:`describe`)."""
    marks: dict[tuple, dict] = {}
    for s in result["selections"]:
        row = (s["model"], s["method"], s["rank"], s["chosen_lr"])
        if row not in marks or s["stability"] < marks[row]["tuned:stability"]:
            marks[row] = {"tuned:stability": s["stability"], "tuned:stable": s["stable"]}
    notes = [f"selection: {describe(s)}" for s in result["selections"]]
    return marks, notes


def glue_marks(result: dict) -> tuple[dict, list[str]]:
    """What Table 1 shows of its selection: per row (model, method, rank), for each task, the chosen
    rate's stability as ``<task>:tuned:stability`` and ``<task>:tuned:stable`` (Table 1's rows span
    tasks, and each task has its own rate); and a note per choice (:func:`describe`)."""
    marks: dict[tuple, dict] = {}
    for s in result["selections"]:
        marks.setdefault((s["model"], s["method"], s["rank"]), {}).update(
            {f"{s['task']}:tuned:stability": s["stability"], f"{s['task']}:tuned:stable": s["stable"]})
    return marks, [f"selection: {describe(s)}" for s in result["selections"]]
