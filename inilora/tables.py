"""The paper's tables from evaluation JSONs, with pandas."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from inilora.io import atomic_write_text


def read_evals(paths: list[str]) -> pd.DataFrame:
    """One row per evaluation JSON and metric: model, task, method, rank, lr, seed, benchmark, metric, value.

    The identity comes from the path (inilora.paths.EVAL / BASE_EVAL), the one place it is spelled.
    """
    rows = []
    for p in paths:
        parts = Path(p).parts
        i = parts.index("eval")
        data = json.loads(Path(p).read_text())
        if parts[i + 2] == "base":
            ident = {"model": parts[i + 1], "task": "-", "method": "base", "rank": 0, "lr": 0.0, "seed": 0}
        else:
            model, task, method, rank, lr, seed = parts[i + 1 : i + 7]
            ident = {"model": model, "task": task, "method": method, "rank": int(rank[1:]), "lr": float(lr[2:]),
                     "seed": int(seed[4:])}
        for metric, value in data["metrics"].items():
            rows.append({**ident, "benchmark": data["benchmark"], "n": data["n"], "metric": metric, "value": value})
    return pd.DataFrame(rows)


def table2(spec: dict, eval_paths: list[str], csv: Path, markdown: Path, paper_csv: Path | None = None) -> pd.DataFrame:
    """Rows model x method (x rank), a column per benchmark metric; mean and std over seeds.

    ``spec``: {"methods": [...order...], "benchmarks": [...order...], "notes": [...]}.
    """
    df = read_evals(eval_paths)
    wide = _over_seeds(df, ["model", "method", "rank", "lr"])
    metrics = list(dict.fromkeys(df["metric"]))
    order = [f"{b}:{m}{s}" for b in spec["benchmarks"] for m in metrics for s in ("", "_std")]
    order += [f"{b}:seeds" for b in spec["benchmarks"]]
    wide = wide[[c for c in order if c in wide.columns]].reset_index()
    wide = _method_order(wide, ["base", *spec["methods"]], ["model", "rank", "method"])
    if paper_csv is not None and spec.get("paper"):
        wide = _beside_paper(wide, spec, paper_csv)
    wide["method"] = wide["method"].replace({"base": "base (no fine-tune)"})
    _write(wide, df, "Table 2: methods x benchmarks", spec, csv, markdown)
    return wide


def _beside_paper(wide: pd.DataFrame, spec: dict, paper_csv: Path) -> pd.DataFrame:
    """``<bench>:<metric>:paper`` and ``:ours_minus_paper`` (fractions, as ours) for benchmarks and
    models the config names as the paper's (their ``paper_name``); the paper's Table 2 is in percent."""
    paper = pd.read_csv(paper_csv, comment="#")
    models, benches = spec["paper"]["models"], spec["paper"]["benchmarks"]
    for bench, name in benches.items():
        for metric, column in (("accuracy", name), ("pass@1", f"{name}_pass1"), ("pass@10", f"{name}_pass10")):
            ours = f"{bench}:{metric}"
            if ours not in wide or column not in paper:
                continue
            ref = {(m, r["method"]): r[column] / 100 for m, p in models.items()
                   for _, r in paper[paper["model"] == p].iterrows()}
            wide[f"{ours}:paper"] = [ref.get((m, meth)) for m, meth in zip(wide["model"], wide["method"])]
            wide[f"{ours}:ours_minus_paper"] = wide[ours] - wide[f"{ours}:paper"].astype(float)
    spec["notes"] = [*spec["notes"], f"<benchmark>:<metric>:paper: the paper's Table 2 ({paper_csv.name}) for the "
                     "same model, method and benchmark, as a fraction; :ours_minus_paper: ours minus it"]
    return wide


def _beside_paper_table1(wide: pd.DataFrame, df: pd.DataFrame, spec: dict, paper_csv: Path) -> pd.DataFrame:
    """The paper's Table 1 value (percent there, a fraction here) beside each best-epoch score of an
    encoder, method and task it reports; tasks it does not report (the stand-ins) get none."""
    paper = pd.read_csv(paper_csv, comment="#")
    ref = {(r["model"], r["method"], r["task"]): r["value"] / 100 for _, r in paper.iterrows()}
    first = df.drop_duplicates("benchmark")  # each run's best-epoch row comes before its @last row
    main = dict(zip(first["benchmark"], first["metric"]))
    for task in spec["tasks"]:
        ours = f"{task}:{main.get(task)}"
        values = [ref.get((spec["paper"].get(m), meth, task)) for m, meth in zip(wide["model"], wide["method"])]
        if ours not in wide or all(v is None for v in values):
            continue
        wide.insert(wide.columns.get_loc(ours) + 1, f"{ours}:paper", values)
        wide.insert(wide.columns.get_loc(ours) + 2, f"{ours}:ours_minus_paper", wide[ours] - wide[f"{ours}:paper"].astype(float))
    spec["notes"] = [*spec["notes"], f"<task>:<metric>:paper: the paper's Table 1 ({paper_csv.name}) for the same encoder, "
                     "method and task, as a fraction; :ours_minus_paper: ours minus it"]
    return wide


def table1(spec: dict, run_paths: list[str], csv: Path, markdown: Path, paper_csv: Path | None = None) -> pd.DataFrame:
    """Rows model x method (x rank), a column per task: its main metric at the best epoch (the paper's
    protocol, ``<task>:<metric>``) and at the last epoch (``@last``); mean and std over seeds.

    With ``paper_csv`` (workflow/reference/paper_table1.csv) and encoders the config names as the
    paper's (``spec["paper"]``), ``<task>:<metric>:paper`` and ``:ours_minus_paper`` (fractions)."""
    rows = []
    for p in run_paths:
        run = json.loads(Path(p).read_text())
        ident = {"model": run["model"], "method": run["method"], "rank": run["rank"], "seed": run["seed"]}
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
        wide = _beside_paper_table1(wide, df, spec, paper_csv)
    _write(wide, df, "Table 1: GLUE-style tasks x methods (encoder)", spec, csv, markdown)
    return wide


def table5(meta_paths: list[str], bench_paths: list[str], paper_csv: Path, csv: Path, markdown: Path,
           paper_names: dict[str, str]) -> pd.DataFrame:
    """Decomposition cost per model: the job's wall time and peak RSS (the decompose job's benchmark TSV, cached with its factors),
    the solver's own time, matrices and shapes, and the paper's Table 5 row where the model's
    config ``paper_name`` matches one."""
    paper = pd.read_csv(paper_csv, comment="#").set_index("model")
    rows = []
    for meta_path, bench_path in zip(meta_paths, bench_paths):
        meta = json.loads(Path(meta_path).read_text())
        bench = pd.read_csv(bench_path, sep="\t").iloc[0]
        shapes = pd.Series([f"{m['shape'][0]}x{m['shape'][1]}" for m in meta["modules"].values()]).value_counts()
        name = paper_names.get(meta["model"]["name"])
        ref = paper.loc[name] if name in paper.index else None
        rows.append({"model": meta["model"]["name"], "rank": meta["rank"], "iterations": meta["iterations"],
                     "matrices": len(meta["modules"]), "shapes": ", ".join(f"{n} x {s}" for s, n in shapes.items()),
                     "device": meta.get("device", "-"), "job_min": bench["s"] / 60,
                     "solve_min": meta["solve_seconds"] / 60, "peak_rss_gb": bench["max_rss"] / 1024,
                     "paper_model": name or "-", "paper_time_min": None if ref is None else ref["time_min"],
                     "paper_memory_gb": None if ref is None else ref["memory_gb"]})
    df = pd.DataFrame(rows)
    atomic_write_text(csv, df.to_csv(index=False, float_format="%.4g"))
    md = ["# Table 5: time and memory of the weight approximation", "",
          "- job_min and peak_rss_gb: the decompose job's own measurement (model load included) (model load included); "
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
        main = "accuracy" if f"{bench}:accuracy" in wide.columns else "pass@1"
        col = f"{bench}:{main}"
        best = (wide.sort_values(["lr"]).groupby(["model", "method", "rank"])[col].idxmax())
        wide[f"{bench}:best"] = wide.index.isin(best.values)
    wide = _method_order(wide, spec["methods"], ["model", "rank", "method", "lr"])
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
    for bench, n in df.groupby("benchmark")["n"].max().items():
        md.append(f"- {bench}: {n} items scored, so one item is {1 / n:.4f} of accuracy (or pass@k)")
    md += ["", _markdown(wide), ""]
    atomic_write_text(markdown, "\n".join(md))


def _markdown(df: pd.DataFrame, digits: int = 4) -> str:
    cols = [c for c in df.columns if not c.endswith(("_std", ":seeds"))]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            std = row.get(f"{c}_std")
            if c == "lr":
                cells.append(f"{v:g}" if v else "-")
            elif isinstance(v, float):
                cells.append(f"{v:.{digits}f}" + (f" ± {std:.{digits}f}" if isinstance(std, float) and std == std else ""))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
