"""The paper's tables from evaluation JSONs, with pandas."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from inilora.io import atomic_write_text

METRICS = ["accuracy", "heldout_loss"]


def read_evals(paths: list[str]) -> pd.DataFrame:
    """One row per evaluation JSON: model, task, method, rank, seed, benchmark and metrics.

    The identity comes from the path (inilora.paths.EVAL / BASE_EVAL), the one place it is spelled.
    """
    rows = []
    for p in paths:
        parts = Path(p).parts
        i = parts.index("eval")
        data = json.loads(Path(p).read_text())
        if parts[i + 2] == "base":
            ident = {"model": parts[i + 1], "task": "-", "method": "base", "rank": 0, "seed": 0}
        else:
            model, task, method, rank, seed = parts[i + 1 : i + 6]
            ident = {"model": model, "task": task, "method": method, "rank": int(rank[1:]), "seed": int(seed[4:])}
        rows.append({**ident, "benchmark": data["benchmark"], "label": data.get("label", data["benchmark"]),
                     "n": data["n"], **{m: data[m] for m in METRICS}})
    return pd.DataFrame(rows)


def table2(spec: dict, eval_paths: list[str], csv: Path, markdown: Path) -> pd.DataFrame:
    """Rows model x method (x rank), a column per benchmark metric; mean and std over seeds.

    ``spec``: {"methods": [...order...], "benchmarks": [...order...], "notes": [...]}.
    """
    df = read_evals(eval_paths)
    g = df.groupby(["model", "method", "rank", "benchmark"])[METRICS]
    agg = g.mean().join(g.std(ddof=1).add_suffix("_std")).join(g.size().rename("seeds"))
    wide = agg.unstack("benchmark")
    wide.columns = [f"{bench}:{metric}" for metric, bench in wide.columns]
    order = [f"{b}:{m}{s}" for b in spec["benchmarks"] for m in METRICS for s in ("", "_std")]
    order += [f"{b}:seeds" for b in spec["benchmarks"]]
    wide = wide[[c for c in order if c in wide.columns]].reset_index()
    rank_order = {m: i for i, m in enumerate(["base", *spec["methods"]])}
    wide = wide.sort_values(["model", "rank", "method"], key=lambda s: s.map(rank_order) if s.name == "method" else s)
    wide["method"] = wide["method"].replace({"base": "base (no fine-tune)"})
    csv_text = wide.to_csv(index=False, float_format="%.4f")
    atomic_write_text(csv, csv_text)
    md = ["# Table 2: methods x benchmarks", ""]
    md += [f"- {n}" for n in spec.get("notes", [])]
    for bench, n in df.groupby("benchmark")["n"].max().items():
        md.append(f"- {bench}: {n} items scored, so one item is {1 / n:.4f} of accuracy")
    md += ["", _markdown(wide), ""]
    atomic_write_text(markdown, "\n".join(md))
    return wide


def _markdown(df: pd.DataFrame) -> str:
    cols = [c for c in df.columns if not c.endswith(("_std", ":seeds"))]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            std = row.get(f"{c}_std")
            if isinstance(v, float):
                cells.append(f"{v:.4f}" + (f" ± {std:.4f}" if isinstance(std, float) and std == std else ""))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
