"""MATH problems as :class:`~inilora.data.Example`\\ s: the real benchmark and an offline stand-in.

Both loaders have the data-loader signature ``loader(n=None, seed=0, **options)`` and
rewrite the worked solution MetaMath-style to end in "\\nThe answer is: {gold}", so that the
answer a model learns to write is the one :func:`inilora.mathequiv.extract_prediction`
reads back and :func:`inilora.mathequiv.is_equiv` compares with ``Example.answer``.

- ``math_hub`` (:func:`load_math_hub`): MATH (Hendrycks et al. 2021) through
  ``datasets.load_dataset``: the hub copy, or local files in the Hendrycks format or in the
  ``MATH_test.jsonl`` format of MetaMath / MiLoRA / IniLoRA.
- ``champ`` (:func:`load_champ`): CHAMP competition maths (Mao et al. 2024), shipped on PyPI
  as ``champ-dataset``. An offline stand-in for MATH when the hub cannot be reached; it is
  *not* MATH, and its numbers are not comparable to the paper's.
"""

from __future__ import annotations

import functools
import random
import re
import warnings
from pathlib import Path

from inilora.data.examples import ANSWER_LEAD, DataError, Example

MATH_HUB = "EleutherAI/hendrycks_math"
# The hub copy is split by subject; config name -> the ``type`` label in the rows. The
# paper evaluates on all 5000 test problems, so by default every config is read, in this order.
MATH_SUBJECTS = {
    "algebra": "Algebra",
    "counting_and_probability": "Counting & Probability",
    "geometry": "Geometry",
    "intermediate_algebra": "Intermediate Algebra",
    "number_theory": "Number Theory",
    "prealgebra": "Prealgebra",
    "precalculus": "Precalculus",
}
# Field names of the two file formats: (question, worked solution).
MATH_FORMATS = {
    "hendrycks": ("problem", "solution"),          # the MATH release and the hub copy
    "instruction_output": ("instruction", "output"),  # MetaMath's / MiLoRA's MATH_test.jsonl
}
_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


# ----------------------------------------------------------------------------- MATH's boxed answers

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """The whole last ``\\boxed{...}`` (or ``\\fbox{...}``, or ``\\boxed 5``) in ``text``, else None.

    Braces are matched, so ``\\boxed{\\frac{1}{2}}`` comes back whole. An unclosed box gives None.
    The brace-less form runs to the next "$" or line end (``$\\boxed 5$`` -> ``\\boxed 5``).
    """
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    rest = text[start + len(cmd):]
    if rest.startswith(" ") and not rest.lstrip(" ").startswith("{"):
        content = re.split(r"[$\n]", rest, maxsplit=1)[0].strip()
        return f"{cmd} {content}" if content else None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return None


def remove_boxed(s: str) -> str:
    """The content of a ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed 5`` string (from :func:`last_boxed`)."""
    for cmd in _BOX_COMMANDS:
        if s.startswith(cmd + " ") and not s[len(cmd):].lstrip(" ").startswith("{"):
            return s[len(cmd) + 1:]
        body = s[len(cmd):].lstrip(" ")
        if s.startswith(cmd) and body.startswith("{") and s.endswith("}"):
            return body[1:-1]
    raise ValueError(f"not a \\boxed{{...}} or \\fbox{{...}} string: {s!r}")


def gold_from_solution(solution: str) -> str:
    """The gold answer of a MATH solution: the content of its last boxed expression."""
    boxed = last_boxed(solution)
    if boxed is None:
        raise ValueError(f"no closed \\boxed{{...}} or \\fbox{{...}} in solution ending {solution[-120:]!r}")
    return remove_boxed(boxed)


def with_answer(solution: str, gold: str) -> str:
    """A worked solution rewritten to end in "The answer is: {gold}" (MetaMath style)."""
    return f"{solution.rstrip()}\n{ANSWER_LEAD}{gold}"


def _file_builder(data_files) -> str:
    """The ``datasets`` builder for local files, from the extension of the first file."""
    first = data_files
    while not isinstance(first, (str, Path)):  # a list of files or a {split: files} dict
        first = next(iter(first.values() if isinstance(first, dict) else first))
    suffix = Path(first).suffix.lower()
    if suffix not in _FILE_BUILDERS:
        raise DataError(f"math_hub data_files: extension '{suffix}' of {first} unknown; "
                        f"valid: {sorted(_FILE_BUILDERS)}")
    return _FILE_BUILDERS[suffix]


def _read_rows(path, name, split, subjects, data_files, kw):
    """The raw ``datasets.Dataset`` for one spec (local files, one hub config, or all MATH configs)."""
    import datasets

    if data_files is not None:
        # name the files' split as asked, so split="test" works on a bare file list too
        files = data_files if isinstance(data_files, dict) else {split: data_files}
        return datasets.load_dataset(_file_builder(data_files), data_files=files, split=split, **kw)
    if name is None and path == MATH_HUB:
        parts = [datasets.load_dataset(path, config, split=split, **kw) for config in subjects or MATH_SUBJECTS]
        return datasets.concatenate_datasets(parts)
    return datasets.load_dataset(path, name, split=split, **kw)


def _detect_format(columns: list[str], fmt: str | None, where: str) -> str:
    """The file format of ``columns``: the one asked for (checked), else the first whose fields are present."""
    if fmt is not None and fmt not in MATH_FORMATS:
        raise DataError(f"math_hub format '{fmt}' unknown; valid: {sorted(MATH_FORMATS)}")
    for candidate, fields in MATH_FORMATS.items():
        if fmt in (None, candidate) and set(fields) <= set(columns):
            return candidate
    wanted = {fmt: MATH_FORMATS[fmt]} if fmt else MATH_FORMATS
    missing = {k: sorted(set(v) - set(columns)) for k, v in wanted.items()}
    raise DataError(f"{where} lacks the MATH fields: missing {missing}; it has {sorted(columns)}")


def load_math_hub(n: int | None = None, seed: int = 0, path: str = MATH_HUB, name: str | None = None,
                  split: str = "test", subjects: list[str] | None = None, levels: list[int] | None = None,
                  data_files=None, format: str | None = None, **kw) -> list[Example]:
    """MATH problems (Hendrycks et al. 2021) as Examples; ``answer`` is the last boxed expression of the solution.

    Source: ``data_files`` (local json/jsonl/parquet, builder chosen by extension) when given,
    else the hub ``path``/``name``. With the default ``EleutherAI/hendrycks_math`` and
    ``name=None`` the 7 subject configs are read and concatenated in :data:`MATH_SUBJECTS`
    order (the 5000 test problems of the paper). ``kw`` goes to ``datasets.load_dataset``.

    ``format``: "hendrycks" (``problem``, ``solution``, ``level``, ``type``) or
    "instruction_output" (``instruction``, ``output``, ``type``: MATH_test.jsonl); None detects
    it from the fields. ``subjects`` (config names of :data:`MATH_SUBJECTS`) and ``levels``
    (1-5) keep the matching rows. ``n`` keeps the first ``n`` rows that pass the filters, in
    file order (deterministic; ``seed`` is unused and only there for the loader signature).
    Rows whose solution has no boxed answer are skipped with a warning.
    """
    unknown = sorted(set(subjects or []) - set(MATH_SUBJECTS))
    if unknown:
        raise DataError(f"math_hub subjects {unknown} unknown; valid: {list(MATH_SUBJECTS)}")
    bad_levels = [lv for lv in levels or [] if lv not in range(1, 6)]
    if bad_levels:
        raise DataError(f"math_hub levels {bad_levels} invalid; valid: 1, 2, 3, 4, 5")
    ds = _read_rows(path, name, split, subjects, data_files, kw)
    where = f"MATH data {data_files or path} ({split})"
    qf, sf = MATH_FORMATS[_detect_format(ds.column_names, format, where)]
    for option, value, field in (("subjects", subjects, "type"), ("levels", levels, "level")):
        if value and field not in ds.column_names:
            raise DataError(f"math_hub {option} filters on the '{field}' field, which {where} lacks; "
                            f"it has {sorted(ds.column_names)}")
    labels = {MATH_SUBJECTS[s] for s in subjects or []}
    level_names = {f"Level {lv}" for lv in levels or []}

    out, no_box = [], []
    for i, row in enumerate(ds):
        if n is not None and len(out) >= n:
            break
        if (labels and row["type"] not in labels) or (level_names and row["level"] not in level_names):
            continue
        try:
            gold = gold_from_solution(row[sf])
        except ValueError:
            no_box.append(i)
            continue
        out.append(Example(row[qf].strip(), with_answer(row[sf], gold), gold))
    if no_box:
        warnings.warn(f"{where}: skipped {len(no_box)} row(s) with no boxed answer (first: row {no_box[0]})", stacklevel=2)
    return out


# --- CHAMP, the offline stand-in ---------------------------------------------------------

# CHAMP marks the maths inside its answers with @@...@@. Its answers are sometimes sentences;
# these are the phrasings around a single value that we read through (see champ_gold).
_CHAMP_CATEGORIES = ("Combinatorics", "Inequality", "Number-Theory", "Polynomial", "Sequence")
_CLARIFICATION = re.compile(r"\s+\((?:i\.e\.|none\b|no\b).*\)$")  # "100 (i.e., all values)"
_ALTERNATIVE = re.compile(r",\s+or\s+(equivalently|approximately|an equivalent form such as)\s+")
_LEADS = ("The limit exists and is equal to ", "The only possible value for the limit is ")
_COUNT_NOUN = re.compile(r"\s+(?:is the only possible value|values?|pairs?|roots?|inequalities|times)$")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
_SPAN = re.compile(r"@@([^@]+)@@")


def _outside_brackets(expr: str, chars: str) -> bool:
    """Whether one of ``chars`` occurs outside brackets in ``expr``.

    A comma or "=" there makes a list or an equation ("x=2, y=1", "f(x)=0"); inside brackets
    it is part of one value ("C(n, 4)", "sum_(k=1)^n 1/k").
    """
    depth = 0
    for ch in expr:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch in chars and depth == 0:
            return True
    return False


def champ_gold(raw_answer: str, keep_yes_no: bool = False) -> str | None:
    """A gold string that ``is_equiv`` can compare, from a CHAMP ``raw_answer``; None when there is none.

    Usable: one number (``239``, ``-1/2``) or one marked expression (``@@2^(n-1)@@``), after
    reading through (a) a trailing "(i.e., ...)"/"(none ...)"/"(no ...)" clarification,
    (b) "X, or equivalently Y" (the last exact form is kept, often the plain number; an
    "or approximately" form never is), (c) the leads "The limit exists and is equal to" /
    "The only possible value for the limit is", (d) a trailing "is the only possible value" or
    count noun ("98 values", "0 pairs"). Not usable: sentences ("No integer solutions",
    "At least 1 number"), lists and systems ("1 and 19", "x=2, y=1"), relations and
    equations ("x(n)>y(n-1) for all n≥2", "f(x)=0"); "Yes"/"No" only with ``keep_yes_no``,
    because a coin flip gets half of them right. Unicode minus signs become "-".
    """
    text = _CLARIFICATION.sub("", raw_answer.strip())
    forms = _ALTERNATIVE.split(text)
    # forms = [first, kind, form, kind, form, ...]; approximations are not the answer
    exact = [forms[0]] + [form for kind, form in zip(forms[1::2], forms[2::2]) if kind != "approximately"]
    text = exact[-1].strip()
    for lead in _LEADS:
        text = text.removeprefix(lead)
    text = _COUNT_NOUN.sub("", text).replace("\u2212", "-")
    if keep_yes_no and text in ("Yes", "No"):
        return text
    if _NUMBER.fullmatch(text):
        return text
    span = _SPAN.fullmatch(text)
    if span is None:
        return None
    expr = span.group(1).strip()
    if _outside_brackets(expr, ",=") or re.search(r"[<>≤≥±]| and | or ", expr):
        return None
    return expr


@functools.lru_cache(maxsize=1)
def _champ_problems() -> dict:
    """CHAMP v0, id -> problem; parsed once per process (about a second each time otherwise)."""
    import champ_dataset

    return champ_dataset.load("v0").problems


def load_champ(n: int | None = None, seed: int = 0, categories: list[str] | None = None,
               keep_yes_no: bool = False) -> list[Example]:
    """CHAMP competition maths (offline MATH stand-in; not MATH), as Examples.

    CHAMP (Mao et al. 2024, "CHAMP: A Competition-level Dataset for Fine-Grained Analyses of
    LLMs' Mathematical Reasoning Capabilities"): 270 problems in 5 categories with worked,
    step-by-step solutions, from the ``champ-dataset`` package (no network).
    ``question`` is the problem text, ``response`` the solution steps one per line followed
    by "The answer is: {gold}", ``answer`` the gold from :func:`champ_gold`. Problems without
    a usable gold are left out: 182 of the 270 remain (Combinatorics 38, Inequality 44,
    Number-Theory 36, Polynomial 34, Sequence 30), 215 with ``keep_yes_no``.

    Order: problems sorted by id (category, then number); ``categories`` keeps only those
    (valid: Combinatorics, Inequality, Number-Theory, Polynomial, Sequence). With ``n``
    smaller than what is left, a random sample of ``n`` drawn with ``seed`` (the first ``n``
    of a seeded shuffle, so a smaller ``n`` gives a subset of a larger one), returned in id order.
    """
    unknown = sorted(set(categories or []) - set(_CHAMP_CATEGORIES))
    if unknown:
        raise DataError(f"champ categories {unknown} unknown; valid: {list(_CHAMP_CATEGORIES)}")
    problems = _champ_problems()

    def id_key(pid: str):  # "P_Number-Theory_12" -> ("Number-Theory", 12): numeric, not "1, 10, 11"
        category, number = pid.removeprefix("P_").rsplit("_", 1)
        return category, int(number)

    out = []
    for pid in sorted(problems, key=id_key):
        p = problems[pid]
        gold = champ_gold(p.raw_answer, keep_yes_no)
        if gold is None or (categories and p.category not in categories):
            continue
        steps = "\n".join(step.text.strip() for step in p.solution.steps)
        out.append(Example(p.text.strip(), with_answer(steps, gold), gold))
    if n is not None and n < len(out):
        keep = sorted(random.Random(seed).sample(range(len(out)), len(out))[:n])
        out = [out[i] for i in keep]
    return out


LOADERS = {"math_hub": load_math_hub, "champ": load_champ}
