"""Markdown for tables: one cell format for every table.

A value reads ``mean`` or ``mean ± std`` (over seeds); where the table carries its 95% interval
(``<col>:ci_low`` / ``:ci_high``) it reads ``0.087 [0.047, 0.134]``. Paired differences against the
reference method get a table of their own, with the significant ones (Holm-adjusted p < 0.05)
marked ``*``.
"""

from __future__ import annotations

import pandas as pd

STAT_SUFFIXES = (":ci_low", ":ci_high", ":diff_ci_low", ":diff_ci_high", ":p", ":p_holm")


def _is_stat(c: str) -> bool:
    return c.endswith(STAT_SUFFIXES) or ":diff_vs_" in c


def _num(v) -> bool:
    return isinstance(v, float) and v == v


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    cols = [c for c in df.columns if not c.endswith(("_std", ":seeds")) and not _is_stat(c)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            std = row.get(f"{c}_std")
            low, high = row.get(f"{c}:ci_low"), row.get(f"{c}:ci_high")
            if c == "lr":
                cells.append(f"{v:g}" if v else "-")
            elif isinstance(v, float) and _num(low) and _num(high):
                cells.append(f"{v:.{digits}f} [{low:.{min(digits, 3)}f}, {high:.{min(digits, 3)}f}]")
            elif isinstance(v, float):
                cells.append(f"{v:.{digits}f}" + (f" ± {std:.{digits}f}" if _num(std) else ""))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def differences_table(df: pd.DataFrame, reference: str, labels: tuple[str, ...] = ("model", "method", "rank")) -> str:
    """``diff [low, high], p (Holm p)`` per row and metric against ``reference``; ``*``: Holm p < 0.05."""
    metrics = [c.rsplit(":", 1)[0] for c in df.columns if c.endswith(f":diff_vs_{reference}")]
    if not metrics:
        return ""
    lines = ["| " + " | ".join([*labels, *(f"{m} − {reference}" for m in metrics)]) + " |",
             "|" + "---|" * (len(labels) + len(metrics))]
    for _, row in df.iterrows():
        if not any(_num(row.get(f"{m}:diff_vs_{reference}")) for m in metrics):
            continue
        cells = [str(row[k]) for k in labels]
        for m in metrics:
            d = row.get(f"{m}:diff_vs_{reference}")
            if not _num(d):
                cells.append("-")
                continue
            mark = " *" if row[f"{m}:p_holm"] < 0.05 else ""
            cells.append(f"{d:+.3f} [{row[f'{m}:diff_ci_low']:+.3f}, {row[f'{m}:diff_ci_high']:+.3f}], "
                         f"p {row[f'{m}:p']:.3f} (Holm {row[f'{m}:p_holm']:.3f}){mark}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
