"""Our numbers beside the paper's: the stored, cited tables in workflow/reference/ joined to ours where
the config names the paper's model (or encoder) and benchmark (their ``paper_name``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def beside_table2(wide: pd.DataFrame, spec: dict, paper_csv: Path) -> pd.DataFrame:
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


def beside_table1(wide: pd.DataFrame, df: pd.DataFrame, spec: dict, paper_csv: Path) -> pd.DataFrame:
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


def study_rows(spec: dict, paper_csv: Path) -> pd.DataFrame | None:
    """The paper's numbers as r<rank>_paper columns, keyed by our model names; None when no model matches."""
    names = spec.get("paper") or {}
    if not names:
        return None
    ref = pd.read_csv(paper_csv, comment="#")
    ref = ref[ref["benchmark"] == names["benchmark"]]
    ours = {paper: model for model, paper in names["models"].items()}
    ref = ref[ref["model"].isin(ours)].assign(model=lambda d: d["model"].map(ours))
    if ref.empty:
        return None
    keys = ["model", "size", "method"] if "size" in ref.columns else ["model", "method"]
    ref = ref[ref["rank"].isin(spec["ranks"])]
    if ref.empty:
        return None
    wide = ref.pivot_table(index=keys, columns="rank", values="value")
    wide.columns = [f"r{r}_paper" for r in wide.columns]
    return wide.reset_index()
