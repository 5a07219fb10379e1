"""The paper's Figures 2-6 as PNGs, from tidy pandas frames collected elsewhere.

Every function checks its columns, draws one figure (possibly several panels), prints the
caller's ``note`` as a footnote (which data stands in for a paper dataset, ...), writes the PNG
atomically and returns a :class:`Drawn` naming what was drawn, so tests need no image parsing.
Accuracy error bars are the std over seeds; a NaN std (one seed) draws no bar.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless cluster jobs: never look for a display

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from inilora.io import atomic_write  # noqa: E402

DPI = 150
NOTE_FONTSIZE = 7
MARKERS = "osD^v<>pP*X"
ACCURACY = ["model", "accuracy", "accuracy_std", "seeds", "metric"]


@dataclass(frozen=True)
class Drawn:
    """What a figure function drew: ``panels``, each axes' title left to right; ``texts``, the
    figure-level texts (suptitle, footnote; a wrapped footnote contains newlines)."""

    panels: list[str]
    texts: list[str]


def moving_average(values, window: int) -> np.ndarray:
    """Centred moving average of a 1-D sequence; the ends average the points that exist."""
    return pd.Series(values, dtype=float).rolling(window, center=True, min_periods=1).mean().to_numpy()


def _check(df: pd.DataFrame, required: list[str], number: int, expected: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"figure {number}: missing columns {missing}; required {required}")
    if df.empty:
        raise ValueError(f"no data for figure {number}: expected {expected}")


def _colours(labels) -> dict:
    """One fixed colour per label, so a method keeps its colour across panels."""
    cmap = matplotlib.colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(dict.fromkeys(labels))}


def _label(keys: dict, vary: dict) -> str:
    """Legend label: the method, plus the other keys that vary across the figure (e.g. "llama inilora r8")."""
    return " ".join(f"r{v}" if k == "rank" else str(v) for k, v in keys.items() if vary[k] or k == "method")


def _log_if_wide(ax, values, axis: str) -> None:
    """Log scale when positive values span more than a decade; linear keeps small ranges readable."""
    v = np.asarray(values, dtype=float)
    if (v > 0).all() and v.max() / v.min() > 10:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _has_interval(df: pd.DataFrame) -> bool:
    return "ci_low" in df and bool(df["ci_low"].notna().all())


def _seeds_note(df: pd.DataFrame) -> str:
    lo, hi = int(df["seeds"].min()), int(df["seeds"].max())
    n = str(lo) if lo == hi else f"{lo}-{hi}"
    if _has_interval(df):
        return f"Points: mean over {n} seed(s); error bars: 95% bootstrap interval over the items (and seeds)."
    return f"Points: mean over {n} seed(s); error bars: std over seeds (none with one seed)."


def _yerr(df: pd.DataFrame):
    """Asymmetric bars from the interval when the data has one, else the std over seeds (NaN: none)."""
    if _has_interval(df):
        return np.vstack([df["accuracy"] - df["ci_low"], df["ci_high"] - df["accuracy"]]).astype(float)
    return df["accuracy_std"].to_numpy(dtype=float)


def _errorbar(ax, x, df: pd.DataFrame, **kw) -> None:
    # NaN entries in yerr are simply not drawn, which is what a single seed without items should show.
    ax.errorbar(x, df["accuracy"], yerr=_yerr(df), capsize=3, **kw)


def _finish(fig, out: Path, title: str, note: str) -> Drawn:
    """Suptitle, footnote wrapped to the figure width, layout, atomic PNG write, close."""
    try:
        fig.suptitle(title)
        width_in, height_in = fig.get_size_inches()
        # DejaVu Sans averages ~0.6 em per character; 0.65 leaves a margin so no line is clipped
        wrapped = textwrap.fill(" ".join(note.split()), width=int(width_in * 72 / (0.65 * NOTE_FONTSIZE)))
        lines = wrapped.count("\n") + 1 if wrapped else 0
        bottom = (lines * 1.4 * NOTE_FONTSIZE / 72 + 0.08) / height_in
        if wrapped:
            fig.text(0.01, 0.01, wrapped, fontsize=NOTE_FONTSIZE, ha="left", va="bottom")
        fig.tight_layout(rect=(0, bottom, 1, 1))
        # the temporary name ends in .tmp, so the format cannot come from the suffix
        atomic_write(Path(out), lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
        return Drawn([ax.get_title() for ax in fig.axes], [t.get_text() for t in fig.texts])
    finally:
        plt.close(fig)


def figure2(df: pd.DataFrame, out: Path, note: str = "",
            title: str = "Figure 2: downstream accuracy vs decomposition loss") -> Drawn:
    """Accuracy of checkpoints of one decomposition run against their loss (paper Fig. 2).

    ``df``: one row per (model, checkpoint): ``iterations`` (solver steps), ``mse`` (mean squared
    error ||W - BA||^2 / (out * in), averaged over matrices), ``accuracy`` / ``accuracy_std`` over
    ``seeds`` fine-tunes, ``metric`` (y label). Left: accuracy vs mse, each point labelled with its
    iterations, green centred moving average (window 3) over points sorted by mse. Right: mse vs
    iterations. Returns the two panel titles.
    """
    _check(df, [*ACCURACY, "iterations", "mse"], 2, "one row per decomposition checkpoint")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    models = list(dict.fromkeys(df["model"]))
    colours = _colours(models)
    for i, (model, g) in enumerate(df.groupby("model", sort=False)):
        g = g.sort_values("mse")
        style = dict(color=colours[model], marker=MARKERS[i % len(MARKERS)])
        label = model if len(models) > 1 else None
        _errorbar(left, g["mse"], g, linestyle="none", label=label, **style)
        for x, y, it in zip(g["mse"], g["accuracy"], g["iterations"]):
            left.annotate(str(int(it)), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        # the paper's green trend line; per-model colours once several models share the panel
        left.plot(g["mse"], moving_average(g["accuracy"], 3), color="green" if len(models) == 1 else colours[model],
                  linestyle="-" if len(models) == 1 else "--", label=f"moving average{f' ({model})' if label else ''}")
        g = g.sort_values("iterations")
        right.plot(g["iterations"], g["mse"], label=label, **style)
    _log_if_wide(left, df["mse"], "x")
    left.set(title="accuracy vs decomposition loss", xlabel="decomposition MSE",
             ylabel=", ".join(dict.fromkeys(df["metric"])))
    left.legend(fontsize=7)
    right.set_xscale("symlog", linthresh=1)  # iteration 0 (the random start) must stay on the axis
    _log_if_wide(right, df["mse"], "y")
    right.set(title="decomposition loss vs iterations", xlabel="iterations", ylabel="decomposition MSE")
    if len(models) > 1:
        right.legend(fontsize=7)
    return _finish(fig, out, title, f"{note} {_seeds_note(df)}")


def figure3(df: pd.DataFrame, out: Path, note: str = "",
            title: str = "Figure 3: accuracy vs initialisation std",
            reference: dict[str, float] | None = None, reference_label: str = "LoRA (B = 0)") -> Drawn:
    """Accuracy against the std of the random init that is decomposed (paper Fig. 3).

    ``df``: one row per (model, std): ``std`` (> 0, dimensionless), ``accuracy`` / ``accuracy_std``
    over ``seeds``, ``metric``. ``reference``: model -> accuracy drawn as a dashed line (e.g. LoRA).
    Returns the panel title.
    """
    _check(df, [*ACCURACY, "std"], 3, "one row per (model, init std)")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    models = list(dict.fromkeys(df["model"]))
    colours = _colours(models)
    for i, (model, g) in enumerate(df.groupby("model", sort=False)):
        g = g.sort_values("std")
        _errorbar(ax, g["std"], g, color=colours[model], marker=MARKERS[i % len(MARKERS)], label=model)
        if reference and model in reference:
            ax.axhline(reference[model], color=colours[model], linestyle="--",
                       label=reference_label if len(models) == 1 else f"{reference_label}, {model}")
    _log_x_at(ax, df["std"])
    ax.set(title="accuracy vs init std", xlabel="init std", ylabel=", ".join(dict.fromkeys(df["metric"])))
    ax.legend(fontsize=7)
    return _finish(fig, out, title, f"{note} {_seeds_note(df)}")


def figure4(acc: pd.DataFrame, values: dict[str, dict[str, np.ndarray]], out: Path, note: str = "",
            title: str = "Figure 4: initialisation distributions") -> Drawn:
    """Accuracy per init distribution, and the distributions themselves (paper Fig. 4).

    ``acc``: one row per (model, method): ``accuracy`` / ``accuracy_std`` over ``seeds``, ``metric``;
    bars in row order. ``values``: label -> {"A": initial A entries (1-D, from A: r x in),
    "B": initial B entries (1-D, from B: out x r)} of one layer. Histograms are densities over the
    central 99% of all labels' entries (log y). Returns the three panel titles.
    """
    _check(acc, [*ACCURACY, "method"], 4, "one row per (model, init method)")
    if not values:
        raise ValueError("no data for figure 4: expected values = {label: {'A': array, 'B': array}}")
    bad = [label for label, v in values.items() if not {"A", "B"} <= set(v)]
    if bad:
        raise ValueError(f"figure 4: values for {bad} lack 'A' or 'B'; each label needs both")
    fig, (bars, hist_a, hist_b) = plt.subplots(1, 3, figsize=(14, 4.2))
    methods, models = list(dict.fromkeys(acc["method"])), list(dict.fromkeys(acc["model"]))
    width = 0.8 / len(models)
    for i, (model, g) in enumerate(acc.groupby("model", sort=False)):
        g = g.set_index("method").reindex(methods)
        x = np.arange(len(methods)) + (i - (len(models) - 1) / 2) * width
        bars.bar(x, g["accuracy"], width, yerr=_yerr(g), capsize=3,
                 label=model if len(models) > 1 else None)
    bars.set_xticks(np.arange(len(methods)), methods, rotation=30, ha="right")
    bars.set(title="accuracy per initialisation", ylabel=", ".join(dict.fromkeys(acc["metric"])))
    if len(models) > 1:
        bars.legend(fontsize=7)
    colours = _colours(values)
    for ax, key in ((hist_a, "A"), (hist_b, "B")):
        entries = {label: np.asarray(v[key], dtype=float).ravel() for label, v in values.items()}
        lo, hi = np.percentile(np.concatenate(list(entries.values())), [0.5, 99.5])
        if hi <= lo:  # every label constant (e.g. all B = 0): give the spike a visible bin
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 61)
        for label, v in entries.items():
            ax.hist(v, bins=bins, density=True, histtype="step", log=True, color=colours[label], label=label)
        ax.set(title=f"initial {key} entries", xlabel=f"{key} entry (central 99%)", ylabel="density")
        ax.legend(fontsize=6)
    return _finish(fig, out, title, f"{note} {_seeds_note(acc)}")


def figure5(df: pd.DataFrame, out: Path, note: str = "", title: str = "Figure 5: training loss per rank",
            smooth: float = 0.0) -> Drawn:
    """Training loss curves, one panel per rank, one line per method (paper Fig. 5).

    ``df``: one row per (model, method, rank, seed, step): ``loss`` (mean token cross-entropy, nats).
    Lines are the mean over seeds, bands min..max over seeds. ``smooth`` in [0, 1): EMA weight of
    the past applied to each seed's curve first (0 = raw). Returns one title per rank, "rank 8", ...
    """
    _check(df, ["model", "method", "rank", "seed", "step", "loss"], 5, "one row per (method, rank, seed, step)")
    if not 0 <= smooth < 1:
        raise ValueError(f"figure 5: smooth={smooth} is not in [0, 1)")
    ranks = sorted(df["rank"].unique())
    fig, axes = plt.subplots(1, len(ranks), figsize=(max(6.5, 4.2 * len(ranks)), 4.2), sharey=True, squeeze=False)
    keys = ["model", "method"]
    vary = {k: df[k].nunique() > 1 for k in keys}
    colours = _colours(_label(dict(zip(keys, k)), vary) for k in df[keys].itertuples(index=False))
    df = df.sort_values("step")
    if smooth:
        df = df.assign(loss=df.groupby([*keys, "rank", "seed"])["loss"]
                       .transform(lambda s: s.ewm(alpha=1 - smooth, adjust=False).mean()))
    for ax, rank in zip(axes[0], ranks):
        for k, g in df[df["rank"] == rank].groupby(keys, sort=False):
            label = _label(dict(zip(keys, k)), vary)
            stats = g.groupby("step")["loss"].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], color=colours[label], label=label)
            if g["seed"].nunique() > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=colours[label], alpha=0.2, linewidth=0)
        ax.set(title=f"rank {rank}", xlabel="training step")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("training loss")
    return _finish(fig, out, title, note)


def _log_x_at(ax, values) -> None:
    """A log x axis labelled at the swept values only (matplotlib's minor labels collide there)."""
    ax.set_xscale("log")
    ticks = sorted(set(float(v) for v in values))
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def figure6(df: pd.DataFrame, out: Path, note: str = "",
            title: str = "Figure 6: accuracy vs learning rate") -> Drawn:
    """Accuracy against the fine-tuning learning rate, one line per method (and rank) (paper Fig. 6).

    ``df``: one row per (model, method, rank, lr): ``accuracy`` / ``accuracy_std`` over ``seeds``,
    ``metric``. Returns the panel title.
    """
    _check(df, [*ACCURACY, "method", "rank", "lr"], 6, "one row per (method, rank, learning rate)")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    keys = ["model", "method", "rank"]
    vary = {k: df[k].nunique() > 1 for k in keys}
    for i, (k, g) in enumerate(df.groupby(keys, sort=False)):
        g = g.sort_values("lr")
        _errorbar(ax, g["lr"], g, marker=MARKERS[i % len(MARKERS)], label=_label(dict(zip(keys, k)), vary))
    _log_x_at(ax, df["lr"])
    ax.set(title="accuracy vs learning rate", xlabel="learning rate", ylabel=", ".join(dict.fromkeys(df["metric"])))
    ax.legend(fontsize=7)
    return _finish(fig, out, title, f"{note} {_seeds_note(df)}")


def selection_figure(selections: list[dict], out: Path, note: str = "",
                     title: str = "Learning-rate selection: the tuning score against the rate") -> Drawn:
    """One panel per selection (model, task, method, rank): its tuning score at each rate with the
    bootstrap's 95% band, the chosen rate starred, and the share of resamples picking each rate
    written over its point (the paper's Figure 6, with the noise of the choice shown).

    ``selections``: the ``selections`` of a selection JSON (inilora.report.selection)."""
    if not selections:
        raise ValueError("no selections to draw: expected one per (model, task, method, rank)")
    cols = min(3, len(selections))
    rows = -(-len(selections) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    vary = {k: len({s[k] for s in selections}) > 1 for k in ("model", "task", "rank")}
    for ax, s in zip(axes.flat, selections):
        x, y = np.asarray(s["rates"]), np.asarray(s["scores"])
        ax.fill_between(x, s["ci_low"], s["ci_high"], alpha=0.25, color="tab:blue", linewidth=0)
        ax.plot(x, y, marker="o", color="tab:blue")
        best = s["rates"].index(s["chosen_lr"])
        ax.plot([x[best]], [y[best]], marker="*", markersize=15, color="tab:red" if not s["stable"] else "tab:orange",
                linestyle="none", label=f"chosen {s['chosen_lr']:g} ({s['stability']:.0%})")
        for xi, yi, f in zip(x, y, s["frequency"]):
            ax.annotate(f"{f:.0%}", (xi, yi), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        _log_x_at(ax, x)
        extra = " ".join(f"r{s[k]}" if k == "rank" else str(s[k]) for k in ("model", "task", "rank") if vary[k])
        ax.set(title=f"{s['method']} {extra}".strip() + ("" if s["stable"] else " (unstable)"),
               xlabel="learning rate", ylabel=f"{s['metric']} ({s['direction']} is better)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(selections):]:
        ax.remove()
    seeds = sorted({len(s["seeds"]) for s in selections})
    return _finish(fig, out, title, f"{note} Points: tuning score, item mean over {seeds[0]} seed(s); bands: 95% "
                   "bootstrap interval over the tuning items; over each point, the share of resamples picking it.")
