"""Markdown for tables: one cell format for every table.

A value reads ``mean`` or ``mean ± std`` (over seeds); where the table carries its 95% interval
(``<col>:ci_low`` / ``:ci_high``) it reads ``0.087 [0.047, 0.134]``. Paired differences against the
reference method get a table of their own, with the significant ones (Holm-adjusted p < 0.05)
marked ``*``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

STAT_SUFFIXES = (":ci_low", ":ci_high", ":diff_ci_low", ":diff_ci_high", ":p", ":p_holm")


def _is_stat(c: str) -> bool:
    return c.endswith(STAT_SUFFIXES) or ":diff_vs_" in c


def _num(v) -> bool:
    return isinstance(v, float) and v == v


def cells(df: pd.DataFrame, digits: int = 4) -> tuple[list[str], list[list[str]]]:
    """(column names, rows of cell strings): the one cell format every table's Markdown and HTML share."""
    cols = [c for c in df.columns if not c.endswith(("_std", ":seeds")) and not _is_stat(c)]
    rows = []
    for _, row in df.iterrows():
        out = []
        for c in cols:
            v = row[c]
            std = row.get(f"{c}_std")
            low, high = row.get(f"{c}:ci_low"), row.get(f"{c}:ci_high")
            if c == "lr":
                out.append(f"{v:g}" if v else "-")
            elif isinstance(v, float) and _num(low) and _num(high):
                out.append(f"{v:.{digits}f} [{low:.{min(digits, 3)}f}, {high:.{min(digits, 3)}f}]")
            elif isinstance(v, float):
                out.append(f"{v:.{digits}f}" + (f" ± {std:.{digits}f}" if _num(std) else ""))
            else:
                out.append(str(v))
        rows.append(out)
    return cols, rows


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    return _markdown(*cells(df, digits))


def _p(p: float) -> str:
    """A p-value as read: three decimals, and "< 0.001" below that (a permutation test's floor is
    1 / (resamples + 1), so smaller digits would only show the resample count)."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def difference_cells(df: pd.DataFrame, reference: str, labels: tuple[str, ...] = ("model", "method", "rank")
                     ) -> tuple[list[str], list[list[str]]]:
    """``diff [low, high], p (Holm p)`` per row and metric against ``reference``; ``*``: Holm p < 0.05."""
    metrics = [c.rsplit(":", 1)[0] for c in df.columns if c.endswith(f":diff_vs_{reference}")]
    if not metrics:
        return [], []
    header = [*labels, *(f"{m} − {reference}" for m in metrics)]
    rows = []
    for _, row in df.iterrows():
        if not any(_num(row.get(f"{m}:diff_vs_{reference}")) for m in metrics):
            continue
        out = [(f"{row[k]:g}" if row[k] else "-") if k == "lr" else str(row[k]) for k in labels]
        for m in metrics:
            d = row.get(f"{m}:diff_vs_{reference}")
            if not _num(d):
                out.append("-")
                continue
            mark = " *" if row[f"{m}:p_holm"] < 0.05 else ""
            out.append(f"{d:+.3f} [{row[f'{m}:diff_ci_low']:+.3f}, {row[f'{m}:diff_ci_high']:+.3f}], "
                       f"p {_p(row[f'{m}:p'])} (Holm {_p(row[f'{m}:p_holm'])}){mark}")
        rows.append(out)
    return header, rows


def differences_table(df: pd.DataFrame, reference: str, labels: tuple[str, ...] = ("model", "method", "rank")) -> str:
    header, rows = difference_cells(df, reference, labels)
    return _markdown(header, rows) if header else ""


DIFFERENCES_INTRO = ("Each method minus {reference} on the same items (and seeds), with its 95% bootstrap interval, "
                     "the test's p and the Holm-adjusted p over the methods of a benchmark; * marks Holm p < 0.05. "
                     "A difference without a * is not distinguishable from noise at this size.")


def html_path(markdown: Path | str) -> Path:
    """The HTML page beside a table's Markdown (the Snakemake report shows it)."""
    return Path(markdown).with_suffix(".html")


def html_page(title: str, notes: list[str], table: tuple[list[str], list[list[str]]],
              differences: tuple[list[str], list[list[str]]] | None = None, reference: str | None = None) -> str:
    """A self-contained HTML page of a table (the Snakemake report shows it): its notes, the values
    with their intervals, and the paired differences with the significant ones in bold."""
    from html import escape

    def table_html(header, rows, bold=lambda cell: False):
        head = "".join(f"<th>{escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td><b>{escape(c)}</b></td>" if bold(c) else f"<td>{escape(c)}</td>"
                                        for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">', f"<title>{escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}th{background:#eee}</style></head><body>",
             f"<h1>{escape(title)}</h1>", "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>",
             table_html(*table)]
    if differences and differences[0]:
        parts += [f"<h2>Paired differences against {escape(reference)}</h2>",
                  f"<p>{escape(DIFFERENCES_INTRO.format(reference=reference))}</p>",
                  table_html(*differences, bold=lambda c: c.endswith(" *"))]
    return "\n".join([*parts, "</body></html>", ""])
