"""The paper's analyses: Tables 3, 4, 6 and 7 (accuracy by rank) and the data behind Figures 2-6.

Every number comes from the workflow's own result files (evaluation JSONs, training logs,
decomposition metadata, initial adapters); the paper's numbers come from the cited CSVs in
``workflow/reference/`` and are shown beside ours only where the config says the model and the
benchmark are the paper's (their ``paper_name``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from inilora import paths, provenance
from inilora.config.methods import parse_variant
from inilora.evaluate.kinds import headlines
from inilora.io import atomic_write_text
from inilora.report import figures
from inilora.report.markdown import (DIFFERENCES_INTRO, cells, difference_cells, differences_table, html_page, html_path,
                                     markdown_table)
from inilora.report.paper import study_rows
from inilora.report.stats import against_reference, difference_columns, mean_ci, min_detectable_difference, paired
from inilora.report.tables import read_evals

TITLES = {
    "table3": "Table 3: LoRA, IniLoRA, IniLoRA-alpha and IniLoRA-beta by rank",
    "table4": "Table 4: LoRA and IniLoRA by training-set size and rank",
    "table6": "Table 6: methods by rank",
    "table7": "Table 7: IniLoRA with zero approximation steps versus LoRA",
}


def main_metric(df: pd.DataFrame) -> str:
    """The benchmark's headline metric: accuracy, or pass@1 for code."""
    metrics = set(df["metric"])
    for m in headlines():
        if m in metrics:
            return m
    raise ValueError(f"no accuracy or pass@1 among the metrics {sorted(metrics)}")


def accuracy(eval_paths: list[str]) -> pd.DataFrame:
    """Headline metric in percent per model, task, method, rank, lr and seed (one row per evaluation)."""
    df = read_evals(eval_paths)
    metric = main_metric(df)
    df = df[df["metric"] == metric].copy()
    df["value"] *= 100
    df["metric"] = f"{df['benchmark'].iloc[0]}:{metric} (%)"
    return df


def over_seeds(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """accuracy (mean), accuracy_std (ddof 1, NaN for one seed) and seeds per ``keys``, with the 95%
    interval over items (and seeds) where the rows carry ``scores`` (a frame from :func:`accuracy`)."""
    g = df.groupby(keys, sort=False)["value"]
    out = pd.DataFrame({"accuracy": g.mean(), "accuracy_std": g.std(ddof=1), "seeds": g.size()}).reset_index()
    out["metric"] = df["metric"].iloc[0]
    if "scores" in df:  # the 95% interval over items (and seeds), in percent, where the JSONs carry items
        intervals = {k: _interval(list(headline_scores(g_df))) for k, g_df in df.groupby(keys, sort=False)}
        key_of = list(zip(*[out[k] for k in keys])) if len(keys) > 1 else list(out[keys[0]])
        out["ci_low"] = [intervals[k][0] for k in key_of]
        out["ci_high"] = [intervals[k][1] for k in key_of]
    return out


def headline_scores(rows: pd.DataFrame) -> list[np.ndarray | None]:
    """Each row's headline score per item (the first of its ``scores``), None where its JSON has no records."""
    return [None if s is None else next(iter(s.values())) for s in rows["scores"]]


def _paired_columns(df: pd.DataFrame, keys: list[str], ranks: list[int], reference: str) -> tuple[dict, list[str]]:
    """Each method against ``reference`` at the same rank (and model, and size for Table 4), on the same
    items and seeds: ``r<rank>:diff_vs_<reference>`` with its interval, ``:p`` and ``:p_holm`` (Holm over
    the methods of a column), in points. Runs whose JSONs lack per-item records are left out."""
    def by_seed(rows: pd.DataFrame) -> dict[int, np.ndarray]:
        out = {int(seed): s for seed, s in zip(rows["seed"], headline_scores(rows))}
        return {} if any(v is None for v in out.values()) else out

    columns: dict[tuple, dict[str, float]] = {}
    tests, notes = set(), []
    group_keys = [k for k in keys if k != "method"]
    for rank in ranks:
        at_rank = df[df["rank"] == rank]
        for group, rows in (at_rank.groupby(group_keys, sort=False) if group_keys else [((), at_rank)]):
            group = group if isinstance(group, tuple) else (group,)
            ref = by_seed(rows[rows["method"] == reference])
            if not ref:
                continue
            others = []
            for method, mrows in rows[rows["method"] != reference].groupby("method", sort=False):
                other = by_seed(mrows)
                if not other:
                    continue
                if any(len(other[s]) != len(ref[s]) for s in set(other) & set(ref)):
                    notes.append(f"r{rank}: {method} and {reference} were scored on different items; not compared")
                    continue
                key = dict(zip(group_keys, group)) | {"method": method}
                others.append((tuple(key[k] for k in keys), method, other))
            for key, r, p_holm in against_reference(ref, others, paired, f"r{rank}", reference, notes):
                columns.setdefault(key, {}).update(difference_columns(f"r{rank}", reference, r, p_holm, scale=100))
                tests.add(r.test)
    notes += ([f"r<rank>:diff_vs_{reference}: each method minus {reference} at the same rank on the same items and "
               f"seeds, in points, with its 95% bootstrap interval; p: {', '.join(sorted(tests))}; p_holm: Holm over "
               "the methods of a column"] if tests else
              [f"no paired differences: no {reference} row with per-item results at the same rank"])
    return columns, notes


def _interval(scores: list[np.ndarray | None]) -> tuple[float, float]:
    """95% bootstrap interval (percent) of the headline metric over the items of these runs' seeds;
    NaN when a JSON has no per-item records."""
    if any(s is None for s in scores):
        return float("nan"), float("nan")
    _, low, high = mean_ci(scores)
    return 100 * low, 100 * high


def rank_table(spec: dict, eval_paths: list[str], paper_csv: Path, csv: Path, markdown: Path) -> pd.DataFrame:
    """Rows model (x size) x method, a column per rank: mean accuracy in percent, its std over seeds,
    and, where the paper reports the same model and benchmark, the paper's number and ours minus it."""
    df = accuracy(eval_paths)
    keys = ["model", "method"]
    if spec["table"] == "table4":
        df["size"] = df["task"].str.rpartition("-n")[2].astype(int)
        keys = ["model", "size", "method"]
    stats = over_seeds(df, [*keys, "rank"])
    wide = stats.pivot(index=keys, columns="rank", values=["accuracy", "accuracy_std", "seeds", "ci_low", "ci_high"])
    cols = {}
    for r in spec["ranks"]:
        cols[f"r{r}"] = wide[("accuracy", r)]
        cols[f"r{r}_std"] = wide[("accuracy_std", r)]
        cols[f"r{r}:seeds"] = wide[("seeds", r)]
        cols[f"r{r}:ci_low"] = wide[("ci_low", r)]
        cols[f"r{r}:ci_high"] = wide[("ci_high", r)]
    table = pd.DataFrame(cols).reset_index()
    reference = spec.get("reference", "lora")
    paired_cols, paired_notes = _paired_columns(df, keys, spec["ranks"], reference)
    for name in dict.fromkeys(c for v in paired_cols.values() for c in v):
        table[name] = [paired_cols.get(k, {}).get(name) for k in zip(*(table[c] for c in keys))]
    notes = [*spec["notes"], *paired_notes, *provenance.differences(list(df.drop_duplicates("path")["provenance"]))]
    paper = study_rows(spec, paper_csv)
    if paper is not None:
        table = table.merge(paper, how="left", on=[k for k in keys if k in paper.columns])
        for r in spec["ranks"]:
            if f"r{r}_paper" in table:
                table[f"r{r}_ours_minus_paper"] = table[f"r{r}"] - table[f"r{r}_paper"]
        notes.append(f"r<rank>_paper: the paper's {spec['paper']['benchmark']} number for the same model and "
                     f"method ({paper_csv.name}); r<rank>_ours_minus_paper: ours minus it, in points")
    order = {m: i for i, m in enumerate(spec["methods"])}
    table = table.sort_values([k for k in keys if k != "method"] + ["method"],
                              key=lambda s: s.map(order) if s.name == "method" else s).reset_index(drop=True)
    table["method"] = table["method"].map(lambda m: spec.get("labels", {}).get(m, m))
    table = table[[c for c in table.columns if c != "paper_model"]]
    atomic_write_text(csv, table.to_csv(index=False, float_format="%.4g"))
    n = df.groupby("benchmark")["n"].max()
    notes += [f"{b}: {k} items scored, so one item is {100 / k:.2f} points" for b, k in n.items()]
    notes.append(f"r<rank>: {df['metric'].iloc[0]} at LoRA rank <rank>, mean ± std over seeds, or, where the "
                 "evaluations carry per-item results, mean [95% bootstrap interval over items and seeds]")
    for b, k in n.items():
        ref = (df[df["method"] == reference] if (df["method"] == reference).any() else df)["value"].mean() / 100
        notes.append(f"{b}: two methods must differ by about {100 * min_detectable_difference(int(k), ref):.1f} points "
                     f"(the minimum detectable at 80% power with {k} items from {100 * ref:.1f}%) before one seed can tell them apart")
    title = TITLES[spec["table"]]
    md = [f"# {title}", "", *[f"- {x}" for x in notes], "", markdown_table(table, digits=1), ""]
    diffs = differences_table(table, reference, tuple(keys))
    if diffs:
        md += [f"## Paired differences against {reference}", "",
               DIFFERENCES_INTRO.format(reference=reference) + " Differences are in points.", "", diffs, ""]
    atomic_write_text(markdown, "\n".join(md))
    atomic_write_text(html_path(markdown), html_page(
        title, notes, cells(table, digits=1), difference_cells(table, reference, tuple(keys)), reference))
    return table


# ----------------------------------------------------------------------------- figures


def figure2_data(eval_paths: list[str], meta_paths: list[str]) -> pd.DataFrame:
    """Accuracy per checkpoint, with the checkpoint's mean MSE over matrices (its metadata)."""
    df = accuracy(eval_paths)
    acc = over_seeds(df, ["model", "method"])
    mse = {}
    for p in meta_paths:
        meta = json.loads(Path(p).read_text())
        mse[(meta["model"]["name"], meta["iterations"])] = meta["mean_mse"]
    acc["iterations"] = [_iterations(m, meta_paths) for m in acc["method"]]
    acc["mse"] = [mse[(model, it)] for model, it in zip(acc["model"], acc["iterations"])]
    return acc


def _iterations(method: str, meta_paths: list[str]) -> int:
    """A Figure 2 run's iteration count: from its name (<method>-it<N>), else the full run's."""
    parsed = parse_variant(method)
    if parsed and parsed[1] == "iterations":
        return parsed[2]
    return max(json.loads(Path(p).read_text())["iterations"] for p in meta_paths)


def figure4_values(initial_dirs: dict[str, Path]) -> dict[str, dict[str, np.ndarray]]:
    """The initial A and B entries of the first adapted layer of each run (label -> {"A", "B"})."""
    from safetensors.torch import load_file

    values = {}
    for label, path in initial_dirs.items():
        tensors = load_file(str(path))
        a = sorted(k for k in tensors if "lora_A" in k)[0]
        b = a.replace("lora_A", "lora_B")
        values[label] = {"A": tensors[a].float().flatten().numpy(), "B": tensors[b].float().flatten().numpy()}
    return values


def figure5_data(log_paths: list[str]) -> pd.DataFrame:
    rows = []
    for p in log_paths:
        log = json.loads(Path(p).read_text())
        for point in log["curve"]:
            rows.append({"model": log["model"], "method": log.get("variant", log["method"]), "rank": log["rank"],
                         "seed": log["train"]["seed"], "step": point["step"], "loss": point["loss"]})
    return pd.DataFrame(rows)


def figure6_data(sweep_csv: Path) -> pd.DataFrame:
    """The learning-rate sweep's mean accuracy (or pass@1) per method and rate, in percent."""
    sweep = pd.read_csv(sweep_csv)
    col = next(c for c in sweep.columns if c.endswith((":accuracy", ":pass@1")))
    out = pd.DataFrame({"model": sweep["model"], "method": sweep["method"], "rank": sweep["rank"], "lr": sweep["lr"],
                        "accuracy": sweep[col] * 100, "accuracy_std": sweep.get(f"{col}_std", np.nan) * 100,
                        "seeds": sweep[f"{col.split(':')[0]}:seeds"], "metric": f"{col} (%)"})
    if f"{col}:ci_low" in sweep:
        out["ci_low"], out["ci_high"] = sweep[f"{col}:ci_low"] * 100, sweep[f"{col}:ci_high"] * 100
    return out


def draw(spec: dict, inputs: dict[str, list[str]], out: Path) -> figures.Drawn:
    """Collect the data of ``spec['figure']`` from its input files and draw it."""
    which = spec["figure"]
    note = " ".join(f"{n}." for n in spec["notes"])
    labels = spec.get("labels", {})
    if which == "figure2":
        return figures.figure2(figure2_data(inputs["evals"], inputs["meta"]), out, note)
    if which == "figure3":
        df = over_seeds(accuracy(inputs["evals"]), ["model", "method"])
        df["std"] = [_std(m, spec) for m in df["method"]]
        return figures.figure3(df, out, note)
    if which == "figure4":
        df = over_seeds(accuracy(inputs["evals"]), ["model", "method"])
        df["method"] = df["method"].map(lambda m: labels.get(m, m))
        methods = {p: paths.parse(paths.INITIAL_ADAPTER, p)["method"] for p in inputs["initial"]}
        dirs = {labels.get(m, m): Path(p) for p, m in methods.items()}
        return figures.figure4(df, figure4_values(dirs), out, note)
    if which == "figure5":
        return figures.figure5(figure5_data(inputs["logs"]), out, note)
    if which == "figure6":
        return figures.figure6(figure6_data(Path(inputs["sweep"][0])), out, note)
    raise ValueError(f"unknown figure '{which}'")


def _std(method: str, spec: dict) -> float:
    """A Figure 3 run's std: from its name (<method>-std<s>), else the method's own default."""
    parsed = parse_variant(method)
    if parsed and parsed[1] == "std":
        return parsed[2]
    return spec["default_std"]
