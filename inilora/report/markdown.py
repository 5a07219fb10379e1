"""Markdown for tables: one cell format for every table (mean, or mean +- std over seeds)."""

from __future__ import annotations

import pandas as pd


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
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
