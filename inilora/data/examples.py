"""Training and evaluation examples, all in one shape: question, response, answer.

- ``question``: the instruction put into the prompt.
- ``response``: the training target, ending in the paper's "The answer is: X" so that
  evaluation extracts answers the way the IniLoRA / MetaMath evaluation does.
- ``answer``: the gold answer string.

Loaders (the ``loader`` key of a data spec in the config):
- ``reasoning_gym``: procedural generators shipped on PyPI (offline). ``gsm_symbolic`` is
  GSM8K-*style* (templates made from GSM8K problems), not GSM8K itself.
- ``math_hub`` / ``champ``: MATH through ``datasets`` and CHAMP, its offline stand-in
  (``inilora.data.mathsets``).
- ``hf``: any dataset ``datasets.load_dataset`` reads: a hub id (``openai/gsm8k``,
  ``meta-math/MetaMathQA``) or local ``data_files``; the field names and the gold-answer
  format are options, with presets for the paper's datasets.
"""

from __future__ import annotations

from dataclasses import dataclass

# The Alpaca prompt of the IniLoRA / MetaMath train.py (docs/init-methods.md sec. 1d).
ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{question}\n\n### Response:"
)

ANSWER_LEAD = "The answer is: "

# Presets for the real datasets of the paper: hub id and field mapping.
HF_PRESETS = {
    "gsm8k": {"path": "openai/gsm8k", "name": "main", "split": "test",
              "question_field": "question", "response_field": "answer", "answer_format": "gsm8k"},
    "metamathqa": {"path": "meta-math/MetaMathQA", "split": "train",
                   "question_field": "query", "response_field": "response", "answer_format": "answer_is"},
}


class DataError(ValueError):
    pass


@dataclass(frozen=True)
class Example:
    question: str
    response: str
    answer: str


def gsm8k_gold(text: str) -> str:
    """Gold answer after '####' (commas dropped), as the MetaMath GSM8K evaluation reads it."""
    if "####" not in text:
        raise DataError(f"no '####' in GSM8K-style answer: {text[-80:]!r}")
    return text.split("####")[-1].strip().replace(",", "")


def gsm8k_to_response(text: str) -> str:
    """Rewrite a '#### N' chain of thought to end in 'The answer is: N'."""
    gold = gsm8k_gold(text)
    body = text.rsplit("####", 1)[0].rstrip()
    return f"{body}\n{ANSWER_LEAD}{gold}"


def _reasoning_gym(dataset: str, n: int, seed: int, **kwargs) -> list[Example]:
    import reasoning_gym

    items = reasoning_gym.create_dataset(dataset, size=n, seed=seed, **kwargs)
    out = []
    for item in items:
        answer = str(item["answer"]).strip()
        cot = (item.get("metadata") or {}).get("answer_cot")
        response = gsm8k_to_response(cot) if cot and "####" in cot else f"{ANSWER_LEAD}{answer}"
        out.append(Example(item["question"].strip(), response, answer))
    return out


def _hf(n: int | None = None, seed: int = 0, preset: str | None = None, **spec) -> list[Example]:
    import datasets

    spec = {**HF_PRESETS.get(preset, {}), **spec} if preset else spec
    if preset and preset not in HF_PRESETS:
        raise DataError(f"unknown hf preset '{preset}'; valid: {sorted(HF_PRESETS)}")
    input_field = spec.pop("input_field", None)  # CodeAlpaca: instruction + "\n" + input when input is set
    try:
        qf, rf, fmt = spec.pop("question_field"), spec.pop("response_field"), spec.pop("answer_format", "answer_is")
    except KeyError as e:
        raise DataError(f"hf data spec needs {e.args[0]} (or a preset: {sorted(HF_PRESETS)})") from None
    path = spec.pop("path", None) or ("json" if spec.get("data_files") else None)
    if path is None:
        raise DataError("hf data spec needs 'path' (a hub id) or 'data_files' (local files)")
    split = spec.pop("split", "train")
    ds = datasets.load_dataset(path, spec.pop("name", None), split=split, **spec)
    missing = {qf, rf} - set(ds.column_names)
    if missing:
        raise DataError(f"dataset {path} ({split}) lacks field(s) {sorted(missing)}; it has {ds.column_names}")
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))  # the paper takes the first rows (train[:10000])
    out = []
    for row in ds:
        text = str(row[rf])
        question = row[qf].strip()
        if input_field and str(row.get(input_field) or "").strip():
            question = f"{question}\n{row[input_field].strip()}"
        if fmt == "none":  # code or free text: trained on, no gold answer to score
            out.append(Example(question, text.strip(), ""))
        elif fmt == "gsm8k":
            out.append(Example(question, gsm8k_to_response(text), gsm8k_gold(text)))
        elif fmt == "answer_is":
            gold = text.rsplit(ANSWER_LEAD.strip(), 1)[-1].strip() if ANSWER_LEAD.strip() in text else ""
            out.append(Example(question, text.strip(), gold))
        else:
            raise DataError(f"answer_format '{fmt}' unknown; valid: ['answer_is', 'gsm8k', 'none']")
    return out


LOADERS = {"reasoning_gym": _reasoning_gym, "hf": _hf}  # inilora.data adds MATH's and CHAMP's (mathsets)


def data_file_list(files) -> list:
    """``data_files`` as ``datasets`` takes it (a path, a list, or {split: path or list}) as one flat list."""
    if files is None:
        return []
    if isinstance(files, dict):
        return [f for v in files.values() for f in data_file_list(v)]
    return [files] if isinstance(files, str) else list(files)


def local_fields(spec: dict) -> tuple[str, set[str], set[str]] | None:
    """(file, fields present, fields needed) of an ``hf`` spec's first local data file, read
    cheaply (a jsonl's first line, a csv header, a parquet schema, a json under 64 MB), so a
    wrong file is refused before any job runs. None when it cannot be told without loading."""
    import json
    from pathlib import Path

    if spec.get("loader") != "hf" or not spec.get("data_files"):
        return None
    full = {**HF_PRESETS.get(spec.get("preset"), {}), **spec}
    needed = {full.get("question_field"), full.get("response_field"), full.get("input_field")} - {None}
    first = Path(data_file_list(spec["data_files"])[0]).expanduser()
    if not first.is_file():
        return None
    if first.suffix == ".jsonl":
        with open(first) as fh:
            present = set(json.loads(fh.readline() or "{}"))
    elif first.suffix == ".csv":
        import pandas as pd

        present = set(pd.read_csv(first, nrows=0).columns)
    elif first.suffix == ".parquet":
        import pyarrow.parquet as pq

        present = set(pq.read_schema(first).names)
    elif first.suffix == ".json" and first.stat().st_size < 64 * 2**20:
        rows = json.loads(first.read_text())
        rows = rows if isinstance(rows, list) else [rows]
        present = set(rows[0]) if rows else set()
    else:
        return None
    return str(first), present, needed


def prompt(question: str, suffix: str = "") -> str:
    return ALPACA_PROMPT.format(question=question) + suffix

