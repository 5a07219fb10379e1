"""MMLU as the IniLoRA paper measures it: 0-shot, Tulu chat format, next-token choice among A-D.

The paper evaluates MMLU with open-instruct's ``eval/mmlu/run_eval.py`` (``--ntrain 0
--use_chat_format``). For one question that script builds

    "The following are multiple choice questions (with answers) about  {subject}.\\n\\n"
    "{question}\\nA. {choice}\\nB. {choice}\\nC. {choice}\\nD. {choice}\\nAnswer:"

(the double space is real: the subject is written as " " + each word, a quirk inherited
from the original Hendrycks code and kept here so that the token sequence is the same), wraps
it as one Tulu user turn with no BOS, ``"<|user|>\\n{prompt}\\n<|assistant|>\\n"``, and, since
that ends in a newline, appends ``"The answer is:"``. The prediction is the argmax of the
next-token logits restricted to the last token of " A", " B", " C", " D"; accuracy is over
all questions, and the subcategory and category numbers are also question-weighted (the
script concatenates the per-question scores of every subject in a group).

Data: ``load_hub`` reads the ``cais/mmlu`` hub format or local files in that format, or the
original Hendrycks CSVs. ``load_standin`` is an offline stand-in in the MMLU *format* made
from reasoning-gym arithmetic tasks; it is not MMLU and its numbers are not MMLU numbers.
"""

from __future__ import annotations

import ast
import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from inilora.data import DataError

LETTERS = ("A", "B", "C", "D")
CHAT_FORMATS = ("tulu", "none")
HUB_FIELDS = ("question", "subject", "choices", "answer")
STANDIN_LABEL = "reasoning-gym multiple choice (MMLU-format stand-in; not MMLU)"
# Group of every subject outside the 57 Hendrycks subjects; in this pipeline those are
# exactly the stand-in's reasoning-gym tasks, so their numbers stay apart from real MMLU groups.
STANDIN_GROUP = "standin"

# Hendrycks et al. (2021), "Measuring Massive Multitask Language Understanding": each of the
# 57 subjects belongs to one subcategory, each subcategory to one of 4 categories. Written
# subcategory -> subjects so that a reader can check it against the paper's table at a glance.
SUBCATEGORY_SUBJECTS = {
    "math": ["abstract_algebra", "college_mathematics", "elementary_mathematics",
             "high_school_mathematics", "high_school_statistics"],
    "physics": ["astronomy", "college_physics", "conceptual_physics", "high_school_physics"],
    "chemistry": ["college_chemistry", "high_school_chemistry"],
    "biology": ["college_biology", "high_school_biology"],
    "computer science": ["college_computer_science", "computer_security",
                         "high_school_computer_science", "machine_learning"],
    "engineering": ["electrical_engineering"],
    "history": ["high_school_european_history", "high_school_us_history",
                "high_school_world_history", "prehistory"],
    "philosophy": ["formal_logic", "logical_fallacies", "moral_disputes", "moral_scenarios",
                   "philosophy", "world_religions"],
    "law": ["international_law", "jurisprudence", "professional_law"],
    "politics": ["high_school_government_and_politics", "public_relations", "security_studies",
                 "us_foreign_policy"],
    "culture": ["human_sexuality", "sociology"],
    "economics": ["econometrics", "high_school_macroeconomics", "high_school_microeconomics"],
    "geography": ["high_school_geography"],
    "psychology": ["high_school_psychology", "professional_psychology"],
    "other": ["global_facts", "miscellaneous", "professional_accounting"],
    "business": ["business_ethics", "management", "marketing"],
    "health": ["anatomy", "clinical_knowledge", "college_medicine", "human_aging",
               "medical_genetics", "nutrition", "professional_medicine", "virology"],
}
CATEGORY_SUBCATEGORIES = {
    "STEM": ["physics", "chemistry", "biology", "computer science", "math", "engineering"],
    "humanities": ["history", "philosophy", "law"],
    "social sciences": ["politics", "culture", "economics", "geography", "psychology"],
    "other (business, health, misc.)": ["other", "business", "health"],
}
SUBJECT_SUBCATEGORY = {s: sub for sub, subjects in SUBCATEGORY_SUBJECTS.items() for s in subjects}
SUBCATEGORY_CATEGORY = {sub: cat for cat, subs in CATEGORY_SUBCATEGORIES.items() for sub in subs}

# reasoning-gym generators with integer answers, so that distractors can be near misses.
STANDIN_TASKS = ("basic_arithmetic", "chain_sum", "gcd", "lcm", "leg_counting", "products")


@dataclass(frozen=True)
class MMLUItem:
    """One question: ``choices`` holds the 4 options in A-D order, ``answer`` is 0-3."""

    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int

    def __post_init__(self):
        object.__setattr__(self, "choices", tuple(str(c) for c in self.choices))
        if len(self.choices) != 4:
            raise DataError(f"MMLU item needs 4 choices, got {len(self.choices)}: {self.choices!r}")
        if self.answer not in range(4):
            raise DataError(f"MMLU answer index must be 0-3, got {self.answer!r}")


def groups(subject: str) -> tuple[str, str]:
    """(subcategory, category) of a subject; (STANDIN_GROUP, STANDIN_GROUP) outside the 57."""
    sub = SUBJECT_SUBCATEGORY.get(subject)
    return (sub, SUBCATEGORY_CATEGORY[sub]) if sub else (STANDIN_GROUP, STANDIN_GROUP)


# ---------------------------------------------------------------------------- prompt


def question_prompt(item: MMLUItem) -> str:
    """The 0-shot open-instruct / Hendrycks prompt, ending in "\\nAnswer:"."""
    subject = "".join(" " + word for word in item.subject.split("_"))  # leading space kept, see module doc
    head = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, item.choices))
    return f"{head}{item.question}{options}\nAnswer:"


def build_prompt(item: MMLUItem, chat_format: str = "tulu") -> str:
    """The text the model reads.

    ``tulu`` (the paper): open-instruct's Tulu user turn around the whole question prompt
    (its "Answer:" included), then the assistant turn opened with "The answer is:".
    ``none``: the raw question prompt ending in "Answer:", for base models.
    """
    text = question_prompt(item)
    if chat_format == "tulu":
        return f"<|user|>\n{text}\n<|assistant|>\nThe answer is:"
    if chat_format == "none":
        return text
    raise ValueError(f"chat_format={chat_format!r}; allowed: {list(CHAT_FORMATS)}")


def letter_token_ids(tok) -> list[int]:
    """Token ids scored for A-D: the last token of " A", ..., " D", as open-instruct takes them.

    The space is part of the encoding because the answer follows "is:" or "Answer:". Where a
    tokenizer splits " A" into several tokens (the test suite's tiny BPE gives "Ġ" + "A"), the
    last piece stands for the letter, as in open-instruct, and a warning says so: the model is
    then scored on a token that is not its literal next token.
    """
    ids, split = [], []
    for letter in LETTERS:
        enc = tok.encode(" " + letter, add_special_tokens=False)
        ids.append(enc[-1])
        if len(enc) != 1:
            split.append(letter)
    if split:
        warnings.warn(f"' X' is not a single token for X in {split}; scoring the last piece of each "
                      f"(ids {ids}), as open-instruct does", stacklevel=2)
    if len(set(ids)) != 4:
        raise ValueError(f"the letters A-D map to repeated token ids {ids}; this tokenizer cannot score MMLU")
    return ids


# ---------------------------------------------------------------------------- data


def _answer_index(value) -> int:
    """0-3 from an int-like value or a letter A-D (the two layouts MMLU copies use)."""
    if isinstance(value, str):
        text = value.strip().upper()
        if text in LETTERS:
            return LETTERS.index(text)
        if text.isdigit():
            value = int(text)
    if isinstance(value, int) or hasattr(value, "__index__"):
        if int(value) in range(4):
            return int(value)
    raise DataError(f"MMLU answer {value!r} is not allowed; use an index 0-3 or a letter A-D")


def _choices(value) -> list:
    """The choices as a list; CSV files store the list as its Python/JSON literal."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise DataError(f"MMLU 'choices' {value[:80]!r} is neither a list nor a list literal") from None
    return list(value)


def _builder(data_files, path: str) -> str:
    """The ``datasets`` builder for local files: ``path`` when it names one, else the file suffix."""
    if path in ("json", "parquet", "csv"):
        return path
    first = data_files if isinstance(data_files, str) else next(iter(
        data_files.values() if isinstance(data_files, dict) else data_files))
    first = first if isinstance(first, str) else first[0]
    suffix = Path(first).suffix.lstrip(".")
    builder = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv"}.get(suffix)
    if builder is None:
        raise DataError(f"cannot tell the format of data_files {first!r}; allowed suffixes: "
                        ".json, .jsonl, .parquet, .csv (or pass path='json'|'parquet'|'csv')")
    return builder


def _subsample(items: list[MMLUItem], n: int | None, seed: int) -> list[MMLUItem]:
    """``n`` items drawn with ``seed``, in their original order.

    Drawn rather than cut because MMLU files are sorted by subject, so the first ``n``
    would cover only the first few subjects.
    """
    if n is None or n >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def _hendrycks_csv(data_files, split: str) -> list[MMLUItem]:
    """Rows ``question, A, B, C, D, letter`` (no header) from ``{subject}_{split}.csv`` files.

    ``data_files``: one file, a list of files, or a folder (its ``*_{split}.csv`` files, in
    sorted subject order as open-instruct reads them).
    """
    import pandas as pd

    files = [data_files] if isinstance(data_files, (str, Path)) else list(data_files)
    if len(files) == 1 and Path(files[0]).is_dir():
        files = sorted(Path(files[0]).glob(f"*_{split}.csv"))
        if not files:
            raise DataError(f"no '*_{split}.csv' files in {data_files!r}")
    items = []
    for f in map(Path, files):
        if not f.name.endswith(f"_{split}.csv"):
            raise DataError(f"Hendrycks CSV {f.name!r} is not named '{{subject}}_{split}.csv'")
        subject = f.name[: -len(f"_{split}.csv")]
        df = pd.read_csv(f, header=None, keep_default_na=False)
        if df.shape[1] != 6:
            raise DataError(f"Hendrycks CSV {f} has {df.shape[1]} columns; expected 6: question, A, B, C, D, answer")
        for q, a, b, c, d, ans in df.itertuples(index=False):
            items.append(MMLUItem(subject, str(q), (a, b, c, d), _answer_index(ans)))
    return items


def load_hub(path: str = "cais/mmlu", name: str | None = "all", split: str = "test", data_files=None,
             n: int | None = None, seed: int = 0, format: str = "hub") -> list[MMLUItem]:
    """MMLU questions through ``datasets.load_dataset`` (hub id or local files), or Hendrycks CSVs.

    ``format="hub"``: rows with ``question``, ``subject``, ``choices`` (4 strings) and
    ``answer`` (0-3, or a letter A-D). With ``data_files`` (a path, list or dict) local
    json/jsonl/parquet/csv files in that layout are read; ``path`` and ``name`` are then
    ignored unless ``path`` names a builder. ``format="hendrycks_csv"``: the original release
    (``data/test/{subject}_test.csv``), ``data_files`` being files or their folder.
    ``n``: a seeded subset of that many questions (see ``_subsample``).
    """
    if format == "hendrycks_csv":
        if data_files is None:
            raise DataError("format='hendrycks_csv' needs data_files (CSV files or their folder)")
        return _subsample(_hendrycks_csv(data_files, split), n, seed)
    if format != "hub":
        raise DataError(f"format={format!r}; allowed: ['hub', 'hendrycks_csv']")

    import datasets

    if data_files is not None:
        data_files = str(data_files) if isinstance(data_files, Path) else data_files
        builder = _builder(data_files, path)
        # a bare path lands in split "train"; naming it `split` keeps one call for both cases
        files = data_files if isinstance(data_files, dict) else {split: data_files}
        ds = datasets.load_dataset(builder, data_files=files, split=split)
        where = f"data_files={data_files!r}"
    else:
        ds = datasets.load_dataset(path, name, split=split)
        where = f"{path}/{name} split {split}"
    missing = [f for f in HUB_FIELDS if f not in ds.column_names]
    if missing:
        raise DataError(f"MMLU data {where} lacks field(s) {missing}; present: {sorted(ds.column_names)}")
    items = [MMLUItem(row["subject"], row["question"], tuple(_choices(row["choices"])), _answer_index(row["answer"]))
             for row in ds]
    return _subsample(items, n, seed)


def _distractors(answer: str, others: list[str], rng: random.Random) -> list[str]:
    """3 wrong answers: near misses of the number and answers of the task's other questions."""
    pool = set(others)
    try:
        value = int(answer)
        # near misses make the choice hard for a model that only roughly knows the size
        pool |= {str(value + d) for d in (-10, -2, -1, 1, 2, 3, 10)} | {str(value * 10)}
    except ValueError:
        pass
    pool.discard(answer)
    if len(pool) < 3:
        raise DataError(f"cannot make 3 distractors for answer {answer!r}: pool {sorted(pool)}")
    return rng.sample(sorted(pool), 3)  # sorted: set order is not reproducible across runs


def load_standin(n: int = 200, seed: int = 0) -> list[MMLUItem]:
    """n offline questions: reasoning-gym multiple choice (MMLU-format stand-in; not MMLU).

    That label is STANDIN_LABEL; put it next to every number this data gives.

    Each reasoning-gym task in STANDIN_TASKS acts as a "subject" (tasks take turns, so
    ``n`` is spread evenly). The correct answer sits at a letter drawn with ``seed``; the 3
    other choices are distinct wrong numbers (see ``_distractors``). Same ``n`` and ``seed``,
    same items. It checks that the MMLU pipeline runs end to end where MMLU cannot be
    downloaded; its scores measure arithmetic, not world knowledge.
    """
    import reasoning_gym

    rng = random.Random(seed)
    per_task = math.ceil(n / len(STANDIN_TASKS))
    by_task = {}
    for k, task in enumerate(STANDIN_TASKS):
        # one seed per task: tasks given the same seed reuse the same random numbers
        rows = list(reasoning_gym.create_dataset(task, size=per_task, seed=seed * len(STANDIN_TASKS) + k))
        by_task[task] = [(r["question"].strip(), str(r["answer"]).strip()) for r in rows]
    items = []
    for i in range(per_task):
        for task, rows in by_task.items():
            question, answer = rows[i]
            choices = _distractors(answer, [a for _, a in rows], rng)
            position = rng.randrange(4)
            choices.insert(position, answer)
            items.append(MMLUItem(task, question, tuple(choices), position))
    return items[:n]


# ---------------------------------------------------------------------------- scoring


@torch.no_grad()
def letter_probs(model, tok, prompts: list[str], batch_size: int = 8, add_special_tokens: bool = False,
                 progress: bool = True) -> torch.Tensor:
    """Softmax over the A-D letter logits at the next position: ``len(prompts) x 4``.

    Left padding puts every prompt's last token in the last column. Position ids count real
    tokens only, so a padded prompt gets the positions it has alone (batched == one at a time,
    also for absolute position embeddings). No BOS by default: open-instruct tokenizes with
    ``add_special_tokens=False`` and builds the chat text with ``add_bos=False``.
    Prompts run longest first, so a too-large batch fails at once and padding stays small.
    """
    letter_ids = letter_token_ids(tok)
    device = next(model.parameters()).device
    model.eval()
    lengths = [len(tok.encode(p, add_special_tokens=add_special_tokens)) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    out = torch.empty(len(prompts), 4)
    side, tok.padding_side = tok.padding_side, "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # as open-instruct does for Llama, which ships without one
    try:
        bar = tqdm(total=len(prompts), desc="mmlu", disable=not progress, mininterval=2)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True,
                      add_special_tokens=add_special_tokens).to(device)
            position_ids = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            # logits_to_keep=1: only the next-token logits, not seq x vocab per prompt
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           position_ids=position_ids, logits_to_keep=1).logits[:, -1, :]
            out[idx] = torch.softmax(logits[:, letter_ids].float(), dim=-1).cpu()
            bar.update(len(idx))
        bar.close()
    finally:
        tok.padding_side = side
    return out


def _means(records: list[dict], key) -> dict[str, float]:
    """Question-weighted accuracy per group (``key(record)``), groups that have questions only."""
    sums: dict[str, list[int]] = {}
    for r in records:
        total = sums.setdefault(key(r), [0, 0])
        total[0] += r["correct"]
        total[1] += 1
    return {g: c / k for g, (c, k) in sorted(sums.items())}


def score(model, tok, items: list[MMLUItem], batch_size: int = 8, chat_format: str = "tulu",
          progress: bool = True, add_special_tokens: bool = False) -> dict:
    """Accuracy of ``model`` on ``items`` by next-token choice among A-D.

    Returns ``n``, ``accuracy`` (all questions), ``accuracy_se`` (binomial standard error),
    ``per_subject`` / ``per_subcategory`` / ``per_category`` (question-weighted, as
    open-instruct; subjects outside the Hendrycks 57 count under STANDIN_GROUP), and
    ``records``: per question ``subject``, gold ``answer`` and ``prediction`` (letters),
    ``correct`` and ``probs`` (A-D, summing to 1).
    """
    if not items:
        raise ValueError("score() got no MMLU items")
    prompts = [build_prompt(item, chat_format) for item in items]
    probs = letter_probs(model, tok, prompts, batch_size, add_special_tokens, progress)
    records = []
    for item, p in zip(items, probs):
        pred = int(p.argmax())
        records.append({"subject": item.subject, "answer": LETTERS[item.answer], "prediction": LETTERS[pred],
                        "correct": pred == item.answer, "probs": [round(float(x), 6) for x in p]})
    accuracy = sum(r["correct"] for r in records) / len(records)
    return {
        "n": len(records),
        "accuracy": accuracy,
        # binomial standard error, so a reader can see which differences are noise
        "accuracy_se": math.sqrt(accuracy * (1 - accuracy) / len(records)),
        "per_subject": _means(records, lambda r: r["subject"]),
        "per_subcategory": _means(records, lambda r: groups(r["subject"])[0]),
        "per_category": _means(records, lambda r: groups(r["subject"])[1]),
        "records": records,
    }
