"""Where each job ran and at what cost: one row per job JSON's ``runtime`` record, grouped by rule.

``python -m inilora.report.runtime <results dir> > report.md`` (the GPU rehearsal writes its report so).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from inilora import paths

# rule -> (pattern of its JSON, key path of the runtime record)
SOURCES = {
    "decompose": (paths.FACTORS_META, ("runtime",)),
    "finetune (init)": (paths.TRAIN_LOG, ("runtime", "init")),
    "finetune": (paths.TRAIN_LOG, ("runtime",)),
    "evaluate": (paths.EVAL, ("runtime",)),
    "evaluate_base": (paths.BASE_EVAL, ("runtime",)),
    "glue": (paths.GLUE_RUN, ("runtime",)),
}
COLUMNS = ["rule", "job", "device", "gpu", "dtype", "wall_seconds", "peak_gpu_mb", "peak_rss_mb", "throughput"]


def _throughput(record: dict) -> str:
    rates = [f"{record[k]:.1f} {k.removesuffix('_per_second').replace('_', ' ')}/s"
             for k in record if k.endswith("_per_second") and record[k] is not None]
    return ", ".join(rates)


def collect(root: Path) -> pd.DataFrame:
    rows = []
    for rule, (pattern, keys) in SOURCES.items():
        glob = pattern.replace(paths.RESULTS + "/", "", 1)
        for name in paths.WILDCARDS:
            glob = glob.replace("{" + name + "}", "*")
        for f in sorted(root.glob(glob)):
            record = json.loads(f.read_text())
            for k in keys:
                record = (record or {}).get(k)
            if not record:
                continue
            rows.append({"rule": rule, "job": str(f.relative_to(root)), **{c: record.get(c) for c in COLUMNS[2:-1]},
                         "throughput": _throughput(record)})
    df = pd.DataFrame(rows, columns=COLUMNS)
    # one decompose job writes every checkpoint with the same record: keep one row per run
    run = df["rule"] + " " + df["job"].str.rsplit("/", n=1).str[0].where(df["rule"] == "decompose", df["job"])
    return df[~run.duplicated(keep="last")].reset_index(drop=True)


def markdown(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in df.itertuples(index=False):
        lines.append("| " + " | ".join("-" if v is None or v != v else str(v) for v in r) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else paths.RESULTS)
    print(f"# Runtime of every job under {root}\n\n{markdown(collect(root))}")
