"""The paper's tables from evaluation JSONs, with pandas."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from inilora import provenance
from inilora.evaluate.kinds import headlines
from inilora.io import atomic_write_text, read_result
from inilora.paths import parse_eval
from inilora.report.markdown import (
    DIFFERENCES_INTRO,
    cells,
    difference_cells,
    differences_table,
    html_page,
    html_path,
    markdown_table,
)
from inilora.report.paper import beside_table1, beside_table2
from inilora.report.stats import comparison_columns, metric_scores, prediction_columns


def read_evals(paths: list[str]) -> pd.DataFrame:
    """One row per evaluation JSON and metric: model, task, method, rank, lr, seed, benchmark, metric,
    value, n, path, ``scores``: every per-item score of the evaluation
    (inilora.report.stats.metric_scores, the headline first; None where the JSON has no records), and
    ``provenance``: the job's record of versions, commit and machine (None before it was recorded).

    Each JSON is read once: the tables' intervals and paired tests take their items from this frame.
    The identity comes from the path, read back through inilora.paths.parse_eval.
    """
    rows = []
    for p in paths:
        data = read_result(str(p))
        ident = {k: v for k, v in parse_eval(p).items() if k != "bench"}
        scores = metric_scores(data) if "records" in data else None
        origin = (data.get("runtime") or {}).get("provenance")
        for metric, value in data["metrics"].items():
            rows.append({**ident, "benchmark": data["benchmark"], "n": data["n"], "metric": metric, "value": value,
                         "path": str(p), "scores": scores, "provenance": origin})
    return pd.DataFrame(rows)


def table2(spec: dict, eval_paths: list[str], csv: Path, markdown: Path, paper_csv: Path | None = None,
           tuned: tuple[dict, list[str]] | None = None) -> pd.DataFrame:
    """Rows model x method (x rank), a column per benchmark metric; mean and std over seeds.

    ``spec``: {"methods": [...order...], "benchmarks": [...order...], "notes": [...]}. ``tuned``: the
    rows' rate selection (inilora.report.selection.table_marks): columns per (model, method, rank,
    lr) row, ``tuned:stability`` and ``tuned:stable``, and notes.
    """
    df = read_evals(eval_paths)
    wide = _over_seeds(df, ["model", "method", "rank", "lr"])
    metrics = list(dict.fromkeys(df["metric"]))
    order = [f"{b}:{m}{s}" for b in spec["benchmarks"] for m in metrics for s in ("", "_std")]
    order += [f"{b}:seeds" for b in spec["benchmarks"]]
    wide = wide[[c for c in order if c in wide.columns]].reset_index()
    wide = _method_order(wide, ["base", *spec["methods"]], ["model", "rank", "method"])
    if paper_csv is not None and spec.get("paper"):
        wide = beside_table2(wide, spec, paper_csv)
    wide, spec = with_uncertainty(wide, df, spec)
    if tuned is not None:
        marks, notes = tuned
        wide = _place(wide, marks, ["model", "method", "rank", "lr"])
        spec = {**spec, "notes": [*spec["notes"], *notes]}
    wide["method"] = wide["method"].replace({"base": "base (no fine-tune)"})
    _write(wide, df, "Table 2: methods x benchmarks", spec, csv, markdown)
    return wide


def with_uncertainty(wide: pd.DataFrame, evals: pd.DataFrame, spec: dict,
                     same_lr: bool = False) -> tuple[pd.DataFrame, dict]:
    """Add each headline metric's 95% interval and its paired test against the reference method
    (inilora.report.stats) from the frame :func:`read_evals` built, and say in the notes what they are."""
    reference = spec.get("reference", "lora")
    columns, notes = comparison_columns(evals, reference, same_lr)
    wide = _place(wide, columns, ["model", "method", "rank", "lr"])
    return wide, {**spec, "notes": [*spec.get("notes", []), *notes], "reference": reference}


def _with_prediction_uncertainty(wide: pd.DataFrame, runs: list[dict], spec: dict) -> tuple[pd.DataFrame, dict]:
    """Table 1's intervals and paired tests (inilora.report.stats.prediction_columns), each after its metric."""
    reference = spec.get("reference", "lora")
    columns, notes = prediction_columns(runs, reference)
    return _place(wide, columns, ["model", "method", "rank"]), {**spec, "notes": [*spec.get("notes", []), *notes],
                                                              "reference": reference}


def _place(wide: pd.DataFrame, columns: dict, keys: list[str]) -> pd.DataFrame:
    """Add the statistics ``columns[(row key)][name]``, each right after the metric it belongs to."""
    rows = list(zip(*(wide[k] for k in keys)))
    names = list(dict.fromkeys(c for values in columns.values() for c in values))
    for name in names:
        wide[name] = [columns.get(k, {}).get(name) for k in rows]
    order = []
    for c in wide.columns:
        if c not in names:
            order += [c, *(n for n in names if n.rsplit(":", 1)[0] == c)]
    return wide[order + [n for n in names if n not in order]]


def table1(spec: dict, run_paths: list[str], csv: Path, markdown: Path, paper_csv: Path | None = None,
           tuned: tuple[dict, list[str]] | None = None) -> pd.DataFrame:
    """Rows model x method (x rank), a column per task: its main metric at the best epoch (the paper's
    protocol, ``<task>:<metric>``) and at the last epoch (``@last``); mean and std over seeds; and the
    rate the task's runs trained at (``<task>:lr``).

    With ``paper_csv`` (workflow/reference/paper_table1.csv) and encoders the config names as the
    paper's (``spec["paper"]``), ``<task>:<metric>:paper`` and ``:ours_minus_paper`` (fractions).
    ``tuned``: the rows' rate selection (inilora.report.selection.glue_marks): columns per row and
    task, ``<task>:tuned:stability`` and ``<task>:tuned:stable``, and notes."""
    rows, runs = [], []
    for p in run_paths:
        run = json.loads(Path(p).read_text())
        runs.append(run)
        ident = {"model": run["model"], "method": run["method"], "rank": run["rank"], "seed": run["seed"],
                 "path": str(p), "provenance": (run.get("runtime") or {}).get("provenance")}
        main = run["main_metric"]
        rows.append({**ident, "benchmark": run["task"], "metric": main, "value": run["best"][main],
                     "n": run["eval_examples"]})
        rows.append({**ident, "benchmark": run["task"], "metric": f"{main}@last", "value": run["last"][main],
                     "n": run["eval_examples"]})
    df = pd.DataFrame(rows)
    wide = _over_seeds(df, ["model", "method", "rank"])
    metrics = list(dict.fromkeys(df["metric"]))
    order = [f"{t}:{m}{s}" for t in spec["tasks"] for m in metrics for s in ("", "_std")]
    wide = wide[[c for c in [*order, *(f"{t}:seeds" for t in spec["tasks"])] if c in wide.columns]].reset_index()
    wide = _method_order(wide, spec["methods"], ["model", "rank", "method"])
    if paper_csv is not None and spec.get("paper"):
        wide = beside_table1(wide, df, spec, paper_csv)
    wide, spec = _with_prediction_uncertainty(wide, runs, spec)
    wide = _place(wide, _rates(runs), ["model", "method", "rank"])
    if tuned is not None:
        marks, notes = tuned
        wide = _place(wide, marks, ["model", "method", "rank"])
        spec = {**spec, "notes": [*spec["notes"], *notes]}
    _write(wide, df, "Table 1: GLUE-style tasks x methods (encoder)", spec, csv, markdown)
    return wide


def _rates(runs: list[dict]) -> dict[tuple, dict]:
    """{(model, method, rank): {"<task>:lr": rate}} of Table 1's runs (a run that does not record its
    rate gives none); one rate per row and task."""
    rates: dict[tuple, dict] = {}
    for run in runs:
        if run.get("learning_rate") is None:
            continue
        row, column = (run["model"], run["method"], run["rank"]), f"{run['task']}:lr"
        lr, seen = float(run["learning_rate"]), rates.setdefault(row, {})
        if seen.setdefault(column, lr) != lr:
            raise ValueError(f"Table 1: {run['method']} ({run['model']}, rank {run['rank']}) has runs of task "
                             f"{run['task']} at two rates, {seen[column]:g} and {lr:g}; one row holds one rate")
    return rates


def table5(meta_paths: list[str], timing_paths: list[str], paper_csv: Path, csv: Path, markdown: Path,
           paper_names: dict[str, str]) -> pd.DataFrame:
    """Decomposition cost per model: the job's wall time and peak RSS (the decompose job's timing file, cached with its factors),
    the solver's own time, matrices and shapes, and the paper's Table 5 row where the model's
    config ``paper_name`` matches one."""
    paper = pd.read_csv(paper_csv, comment="#").set_index("model")
    rows = []
    for meta_path, timing_path in zip(meta_paths, timing_paths):
        meta = json.loads(Path(meta_path).read_text())
        timing = pd.read_csv(timing_path, sep="\t").iloc[0]
        shapes = pd.Series([f"{m['shape'][0]}x{m['shape'][1]}" for m in meta["modules"].values()]).value_counts()
        name = paper_names.get(meta["model"]["name"])
        ref = paper.loc[name] if name in paper.index else None
        rows.append({"model": meta["model"]["name"], "rank": meta["rank"], "iterations": meta["iterations"],
                     "matrices": len(meta["modules"]), "shapes": ", ".join(f"{n} x {s}" for s, n in shapes.items()),
                     "device": meta.get("device", "-"), "job_min": timing["s"] / 60,
                     "solve_min": meta["solve_seconds"] / 60, "peak_rss_gb": timing["max_rss"] / 1024,
                     "paper_model": name or "-", "paper_time_min": None if ref is None else ref["time_min"],
                     "paper_memory_gb": None if ref is None else ref["memory_gb"]})
    df = pd.DataFrame(rows)
    atomic_write_text(csv, df.to_csv(index=False, float_format="%.4g"))
    md = ["# Table 5: time and memory of the weight approximation", "",
          "- job_min and peak_rss_gb: the decompose job's own measurement (model load included); "
          "solve_min: the solver alone",
          "- paper: one RTX 4090, 64 matrices concurrently, rank 8, 20000 steps (IniLoRA paper, Table 5)", "",
          "| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    md += ["| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r) + " |" for r in df.itertuples(index=False)]
    atomic_write_text(markdown, "\n".join(md) + "\n")
    return df


def lr_sweep(spec: dict, eval_paths: list[str], csv: Path, markdown: Path) -> pd.DataFrame:
    """Rows method x learning rate, a column per benchmark metric (mean, std over seeds), and
    ``<bench>:best`` marking each method's best rate by mean accuracy (the smaller rate on ties)."""
    df = read_evals(eval_paths)
    wide = _over_seeds(df, ["model", "method", "rank", "lr"]).reset_index()
    for bench in df["benchmark"].unique():
        main = next(h for h in headlines() if f"{bench}:{h}" in wide.columns)
        col = f"{bench}:{main}"
        best = (wide.sort_values(["lr"]).groupby(["model", "method", "rank"])[col].idxmax())
        wide[f"{bench}:best"] = wide.index.isin(best.values)
    wide = _method_order(wide, spec["methods"], ["model", "rank", "method", "lr"])
    wide, spec = with_uncertainty(wide, df, spec, same_lr=True)
    _write(wide, df, "Learning-rate sweep: methods x fine-tuning learning rate", spec, csv, markdown)
    return wide


def _over_seeds(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, std (ddof 1) and seed count per ``keys`` x benchmark, one column per benchmark metric."""
    g = df.groupby([*keys, "benchmark", "metric"])["value"]
    agg = pd.DataFrame({"": g.mean(), "_std": g.std(ddof=1), "seeds": g.size()})
    wide = agg.unstack(["benchmark", "metric"])
    wide.columns = [f"{bench}:{metric}{stat}" if stat != "seeds" else f"{bench}:seeds"
                    for stat, bench, metric in wide.columns]
    return wide.loc[:, ~wide.columns.duplicated()]


def _method_order(df: pd.DataFrame, methods: list[str], by: list[str]) -> pd.DataFrame:
    """Rows in the config's method order (the table's reading order), not alphabetical."""
    order = {m: i for i, m in enumerate(methods)}
    return df.sort_values(by, key=lambda s: s.map(order) if s.name == "method" else s).reset_index(drop=True)


def _write(wide: pd.DataFrame, df: pd.DataFrame, title: str, spec: dict, csv: Path, markdown: Path) -> None:
    atomic_write_text(csv, wide.to_csv(index=False, float_format="%.6g"))
    md = [f"# {title}", ""]
    md += [f"- {n}" for n in spec.get("notes", [])]
    if "provenance" in df:  # what differs between the runs combined here (versions, commit, machine)
        md += [f"- {n}" for n in provenance.differences(list(df.drop_duplicates("path")["provenance"]))]
    for bench, n in df.groupby("benchmark")["n"].max().items():
        md.append(f"- {bench}: {n} items scored, so one item is {1 / n:.4f} of accuracy (or pass@k)")
    md += ["", markdown_table(wide), ""]
    reference = spec.get("reference")
    labels = ("model", "method", "rank", "lr") if "lr" in wide else ("model", "method", "rank")
    diffs = differences_table(wide, reference, labels) if reference else ""
    if diffs:
        md += [f"## Paired differences against {reference}", "", DIFFERENCES_INTRO.format(reference=reference), "",
               diffs, ""]
    atomic_write_text(markdown, "\n".join(md))
    notes = [line[2:] for line in md if line.startswith("- ")]
    atomic_write_text(html_path(markdown), html_page(title, notes, cells(wide),
                                                     difference_cells(wide, reference, labels) if reference else None,
                                                     reference))


