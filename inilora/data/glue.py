"""GLUE tasks as data: each task's fields, labels and metrics, its loader (hub or local files), the
offline GLUE-style stand-ins, and the metrics the paper reports for them (scikit-learn's and scipy's
definitions, computed here on numpy arrays).

Stand-ins (no internet here, so no GLUE): ``arith_claim`` (RTE-like pair), ``champ_topic``
(5-way single sentence), ``arith_closeness`` (STS-B-like regression). They are built from
data shipped on PyPI, are labelled "not GLUE" wherever they appear, and come in the same
dict-of-columns format as the real tasks, so one code path trains both. Training on them is
:mod:`inilora.train.glue`.
"""

from __future__ import annotations

import functools
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
log = logging.getLogger(__name__)

Columns = dict[str, list]  # {"sentence1": [...], "sentence2": [...], "label": [...]}

# ----------------------------------------------------------------------------- metrics


def _arrays(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels as arrays whose last axis is the items: 1-D for one evaluation, or a
    stack of resamples (..., n) for the statistics (inilora.report.stats), labels (n) or (..., n)."""
    p, y = np.asarray(predictions), np.asarray(labels)
    if p.ndim == 2 and p.shape[1] == 1 and y.ndim <= 1 and y.size == p.shape[0] != 1:
        p = p.reshape(-1)  # a regression head's (n, 1) scores, not a stack of one-item resamples
    if p.ndim <= 1 or y.ndim <= 1 and p.shape[-1] != y.size:
        p, y = (p.reshape(-1), y.reshape(-1)) if p.ndim <= 1 else (p, y.reshape(-1))
    if p.shape[-1] != y.shape[-1]:
        raise ValueError(f"{p.shape[-1]} predictions for {y.shape[-1]} labels")
    if p.shape[-1] == 0:
        raise ValueError("no predictions to score")
    return p, y


def _value(x):
    """A float for one evaluation, an array for a stack of resamples."""
    return float(x) if np.ndim(x) == 0 else x


def _items_last(metric: Callable) -> Callable:
    """``axis`` as scipy.stats passes it to a vectorised statistic; the items must be the last axis."""
    @functools.wraps(metric)
    def wrapped(predictions, labels, axis=-1):
        if axis not in (-1, np.ndim(predictions) - 1):
            raise ValueError(f"{metric.__name__}: the items must be the last axis, not axis {axis}")
        return metric(predictions, labels)
    return wrapped


@_items_last
def accuracy(predictions, labels) -> float:
    p, y = _arrays(predictions, labels)
    return _value((p == y).mean(axis=-1))


@_items_last
def f1(predictions, labels) -> float:
    """Binary F1 of the positive class 1: 2 TP / (2 TP + FP + FN); 0.0 when there is no
    positive in either (sklearn's ``zero_division`` default)."""
    p, y = _arrays(predictions, labels)
    tp = ((p == 1) & (y == 1)).sum(axis=-1)
    wrong = (p != y).sum(axis=-1)  # FP + FN for 0/1 labels
    denom = 2 * tp + wrong
    return _value(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))


@_items_last
def matthews_corr(predictions, labels) -> float:
    """Matthews correlation, the K-class form (Gorodkin 2004) that sklearn uses; binary MCC for K = 2.

    (c s - sum_k p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)), c correct, s total,
    p_k / t_k predicted / true counts of class k. 0.0 when a side is constant (undefined).
    """
    p, y = _arrays(predictions, labels)
    classes = np.union1d(p, y)
    pk = (p[..., None] == classes).sum(axis=-2).astype(np.float64)
    tk = (y[..., None] == classes).sum(axis=-2).astype(np.float64)
    s, c = float(p.shape[-1]), (p == y).sum(axis=-1).astype(np.float64)
    denom = np.sqrt((s * s - (pk * pk).sum(axis=-1)) * (s * s - (tk * tk).sum(axis=-1)))
    return _value(np.where(denom > 0, (c * s - (pk * tk).sum(axis=-1)) / np.where(denom > 0, denom, 1.0), 0.0))


@_items_last
def pearson(predictions, labels) -> float:
    """Pearson's r; NaN when either side is constant (as scipy)."""
    p, y = _arrays(predictions, labels)
    p = p.astype(np.float64) - p.mean(axis=-1, keepdims=True)
    y = y.astype(np.float64) - y.mean(axis=-1, keepdims=True)
    denom = np.sqrt((p * p).sum(axis=-1) * (y * y).sum(axis=-1))
    return _value(np.where(denom > 0, (p * y).sum(axis=-1) / np.where(denom > 0, denom, 1.0), np.nan))


@_items_last
def spearman(predictions, labels) -> float:
    """Spearman's rho: Pearson's r of the ranks, ties getting average ranks (``scipy.stats.rankdata``)."""
    from scipy.stats import rankdata

    p, y = _arrays(predictions, labels)
    return pearson(rankdata(p, axis=-1), rankdata(y, axis=-1))


METRICS: dict[str, Callable[..., float]] = {
    "matthews_correlation": matthews_corr,
    "accuracy": accuracy,
    "f1": f1,
    "pearson": pearson,
    "spearman": spearman,
}

# ----------------------------------------------------------------------------- tasks

ARITH_CLAIM_LABEL = "arith-claim: is the stated answer to an arithmetic question right? (RTE-style stand-in; not GLUE)"
CHAMP_TOPIC_LABEL = "champ-topic: topic of a competition math problem, 5 classes (CoLA/SST-2-style stand-in; not GLUE)"
ARITH_CLOSENESS_LABEL = ("arith-closeness: how close a stated answer is to the right one, 0-5 "
                         "(STS-B-style regression stand-in; not GLUE, not semantic similarity)")


@dataclass(frozen=True)
class Task:
    """One classification task. ``text_fields``: 1 (single sentence) or 2 (pair) column names;
    ``num_labels`` 1 means regression (MSE); ``main_metric`` is the one maximised over epochs."""

    name: str
    label: str
    text_fields: tuple[str, ...]
    num_labels: int
    validation_split: str
    main_metric: str
    metrics: tuple[str, ...]
    glue: bool = True

    @property
    def regression(self) -> bool:
        return self.num_labels == 1


def _task(name, label, fields, num_labels, main, metrics, validation="validation", glue=True) -> Task:
    return Task(name, label, tuple(fields), num_labels, validation, main, tuple(metrics), glue)


TASKS: dict[str, Task] = {t.name: t for t in (
    _task("cola", "CoLA", ["sentence"], 2, "matthews_correlation", ["matthews_correlation"]),
    _task("sst2", "SST-2", ["sentence"], 2, "accuracy", ["accuracy"]),
    _task("mrpc", "MRPC", ["sentence1", "sentence2"], 2, "accuracy", ["accuracy", "f1"]),
    _task("qqp", "QQP", ["question1", "question2"], 2, "accuracy", ["accuracy", "f1"]),
    _task("stsb", "STS-B", ["sentence1", "sentence2"], 1, "pearson", ["pearson", "spearman"]),
    _task("mnli", "MNLI-mm", ["premise", "hypothesis"], 3, "accuracy", ["accuracy"], "validation_mismatched"),
    _task("qnli", "QNLI", ["question", "sentence"], 2, "accuracy", ["accuracy"]),
    _task("rte", "RTE", ["sentence1", "sentence2"], 2, "accuracy", ["accuracy"]),
    _task("arith_claim", ARITH_CLAIM_LABEL, ["sentence1", "sentence2"], 2, "accuracy", ["accuracy", "f1"],
          glue=False),
    _task("champ_topic", CHAMP_TOPIC_LABEL, ["sentence"], 5, "accuracy", ["accuracy", "matthews_correlation"],
          glue=False),
    _task("arith_closeness", ARITH_CLOSENESS_LABEL, ["sentence1", "sentence2"], 1, "pearson",
          ["pearson", "spearman"], glue=False),
)}
GLUE_TASKS = tuple(n for n, t in TASKS.items() if t.glue)


def get_task(task: str) -> Task:
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}'; valid: GLUE {list(GLUE_TASKS)}, "
                         f"stand-ins {[n for n in TASKS if n not in GLUE_TASKS]}")
    return TASKS[task]


def compute_metrics(task: str, predictions, labels) -> dict[str, float]:
    """Every metric of ``task``. ``predictions``: class ids (N), logits (N x K) or, for a
    regression task, scores (N or N x 1)."""
    p = predicted(task, predictions)
    return {m: METRICS[m](p, labels) for m in get_task(task).metrics}


def predicted(task: str, predictions) -> np.ndarray:
    """Class ids (argmax of the logits) or, for a regression task, scores: what the metrics score."""
    p = np.asarray(predictions)
    if get_task(task).regression:
        return p.reshape(-1).astype(np.float64)
    return p.argmax(axis=-1) if p.ndim == 2 else p


# ----------------------------------------------------------------------------- data

_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def to_columns(rows, fields: Sequence[str]) -> Columns:
    """Rows as a list of dicts or as columns -> columns restricted to ``fields``."""
    if isinstance(rows, dict):
        return {f: list(rows[f]) for f in fields}
    return {f: [r[f] for r in rows] for f in fields}


def check_fields(t: Task, present: Sequence[str], where: str) -> None:
    missing = [f for f in (*t.text_fields, "label") if f not in present]
    if missing:
        raise ValueError(f"{where}: task '{t.name}' needs field(s) {missing}; the data has {sorted(present)}")


def load_glue(task: str, split: str, path: str = "nyu-mll/glue", data_files=None, n: int | None = None) -> Columns:
    """One split of a GLUE task as columns: its text fields and ``label``.

    From the hub (``datasets.load_dataset(path, task, split=split)``) or from local
    ``data_files`` in the hub's format (json / jsonl / parquet / csv, chosen by extension): a
    file (or list of files) is read as ``split``; a dict maps split names to files.
    ``n`` keeps the first n rows.
    """
    import datasets

    t = get_task(task)
    if not t.glue:
        raise ValueError(f"task '{task}' is a stand-in, not GLUE; build it with standin('{task}')")
    if data_files is None:
        ds = datasets.load_dataset(path, task, split=split)
        where = f"{path}/{task}:{split}"
    else:
        files = data_files if isinstance(data_files, dict) else {split: data_files}
        first = files[split] if split in files else next(iter(files.values()))
        first = first if isinstance(first, (str, Path)) else first[0]
        suffix = Path(str(first)).suffix.lower()
        if suffix not in _BUILDERS:
            raise ValueError(f"data_files {first}: extension '{suffix}' unknown; valid: {sorted(_BUILDERS)}")
        files = {k: [str(f) for f in v] if isinstance(v, (list, tuple)) else str(v) for k, v in files.items()}
        ds = datasets.load_dataset(_BUILDERS[suffix], data_files=files, split=split)
        where = f"{first}"
    check_fields(t, ds.column_names, where)
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    return to_columns(ds.to_dict(), (*t.text_fields, "label"))


# ----------------------------------------------------------------------------- stand-ins

ARITH_SOURCES = {  # reasoning-gym dataset -> its config; small numbers keep the claims checkable
    "chain_sum": {"min_digits": 1, "max_digits": 3},
    "basic_arithmetic": {"max_terms": 4, "max_digits": 2},
}
PERTURBATIONS = ("near", "swap", "sign", "scale")


def _arith_items(n: int, seed: int, avoid: set[str] = frozenset()) -> list[tuple[str, int]]:
    """n distinct (question, integer answer) pairs, split evenly over ARITH_SOURCES, none in ``avoid``."""
    import reasoning_gym

    out, seen = [], set(avoid)
    per = [n // len(ARITH_SOURCES) + (i < n % len(ARITH_SOURCES)) for i in range(len(ARITH_SOURCES))]
    for k, ((name, cfg), want) in enumerate(zip(ARITH_SOURCES.items(), per)):
        got = 0
        for attempt in range(8):  # top up when duplicates were dropped
            for item in reasoning_gym.create_dataset(name, size=2 * want + 8, seed=seed * 1009 + k * 101 + attempt,
                                                     **cfg):
                q = item["question"].strip()
                if q in seen or got == want:
                    continue
                seen.add(q)
                out.append((q, int(item["answer"])))
                got += 1
            if got == want:
                break
        if got < want:
            raise ValueError(f"reasoning-gym '{name}' gave only {got} distinct questions of {want}")
    random.Random(seed).shuffle(out)  # mix the sources, so any first rows / first batches see both
    return out


def wrong_answer(answer: int, kind: str, rng: random.Random) -> int:
    """A wrong answer of one ``kind``: near (+-1..9), swap (two adjacent digits), sign (-a),
    scale (x10 or /10). Falls back to ``near`` where a kind cannot change the number."""
    digits = str(abs(answer))
    if kind == "swap":
        spots = [i for i in range(len(digits) - 1) if digits[i] != digits[i + 1] and (i or digits[i + 1] != "0")]
        if spots:
            i = rng.choice(spots)
            swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :]
            return int(swapped) * (-1 if answer < 0 else 1)
    if kind == "sign" and answer != 0:
        return -answer
    if kind == "scale" and abs(answer) >= 10:
        return answer * 10 if rng.random() < 0.5 else int(answer / 10)
    if kind == "scale" and answer != 0:
        return answer * 10
    return answer + rng.choice([-1, 1]) * rng.randint(1, 9)


def _arith_claim_split(items, seed: int, kinds: Sequence[str]) -> Columns:
    rng = random.Random(seed)
    right = set(rng.sample(range(len(items)), len(items) // 2))  # exactly half correct (floor)
    cols: Columns = {"sentence1": [], "sentence2": [], "label": [], "perturbation": []}
    for i, (q, a) in enumerate(items):
        kind = "none" if i in right else kinds[rng.randrange(len(kinds))]
        claimed = a if kind == "none" else wrong_answer(a, kind, rng)
        cols["sentence1"].append(q)
        cols["sentence2"].append(f"The answer is {claimed}.")
        cols["label"].append(int(kind == "none"))
        cols["perturbation"].append(kind)
    return cols


def arith_claim(n_train: int = 512, n_validation: int = 256, seed: int = 0,
                perturbations: Sequence[str] = PERTURBATIONS) -> dict[str, Columns]:
    """RTE-like stand-in (not GLUE): sentence1 a reasoning-gym arithmetic question, sentence2
    "The answer is N." with N right (label 1) or wrong (label 0, made by one of ``perturbations``,
    drawn uniformly; the kind is kept in column ``perturbation``), exactly half of each split
    right. Validation questions never occur in train. Deterministic in ``seed``."""
    unknown = sorted(set(perturbations) - set(PERTURBATIONS))
    if unknown or not perturbations:
        raise ValueError(f"arith_claim perturbations {list(perturbations)}: need some of {list(PERTURBATIONS)}")
    kinds = tuple(perturbations)
    train = _arith_items(n_train, 2 * seed)
    validation = _arith_items(n_validation, 2 * seed + 1, avoid={q for q, _ in train})
    return {"train": _arith_claim_split(train, seed, kinds),
            "validation": _arith_claim_split(validation, seed + 1, kinds)}


def closeness(claimed: int, answer: int) -> float:
    """5 (exact) .. 0 (off by the answer's own size or more): 5 max(0, 1 - |N - a| / max(|a|, 1))."""
    return 5.0 * max(0.0, 1.0 - abs(claimed - answer) / max(abs(answer), 1))


def _arith_closeness_split(items, seed: int) -> Columns:
    rng = random.Random(seed)
    cols: Columns = {"sentence1": [], "sentence2": [], "label": []}
    for q, a in items:
        claimed = a + round(rng.uniform(-1.2, 1.2) * max(abs(a), 1))  # scores spread over 0..5
        cols["sentence1"].append(q)
        cols["sentence2"].append(f"The answer is {claimed}.")
        cols["label"].append(closeness(claimed, a))
    return cols


def arith_closeness(n_train: int = 512, n_validation: int = 256, seed: int = 0) -> dict[str, Columns]:
    """STS-B-like regression stand-in (not GLUE, and not semantic similarity): the same pairs as
    ``arith_claim`` with a stated answer off by a uniform relative error in [-1.2, 1.2], label
    ``closeness`` on STS-B's 0-5 scale. It exercises the regression path (MSE head,
    Pearson / Spearman) on a target a model can learn only by judging magnitudes."""
    train = _arith_items(n_train, 2 * seed)
    validation = _arith_items(n_validation, 2 * seed + 1, avoid={q for q, _ in train})
    return {"train": _arith_closeness_split(train, seed), "validation": _arith_closeness_split(validation, seed + 1)}


CHAMP_CATEGORIES = ("Combinatorics", "Inequality", "Number-Theory", "Polynomial", "Sequence")


@functools.lru_cache(maxsize=1)
def _champ_problems() -> dict:
    import champ_dataset

    return champ_dataset.load("v0").problems


def champ_topic(validation_fraction: float = 0.2, seed: int = 0) -> dict[str, Columns]:
    """5-way single-sentence stand-in (not GLUE): a CHAMP problem's text (champ-dataset v0, 270
    problems) -> its category, label = index in CHAMP_CATEGORIES. The split is stratified per
    category with a seeded shuffle (0.2: 216 train / 54 validation)."""
    by_cat: dict[str, list[str]] = {c: [] for c in CHAMP_CATEGORIES}
    for pid, p in sorted(_champ_problems().items()):
        cat = getattr(p, "category", None) or pid.split("_")[1]  # ids look like P_Inequality_1
        if cat not in by_cat:
            raise ValueError(f"CHAMP problem {pid} has category '{cat}'; expected one of {CHAMP_CATEGORIES}")
        by_cat[cat].append(p.text)
    rng = random.Random(seed)
    out = {s: {"sentence": [], "label": []} for s in ("train", "validation")}
    for label, cat in enumerate(CHAMP_CATEGORIES):
        texts = by_cat[cat][:]
        rng.shuffle(texts)
        k = round(len(texts) * validation_fraction)
        for split, part in (("validation", texts[:k]), ("train", texts[k:])):
            out[split]["sentence"] += part
            out[split]["label"] += [label] * len(part)
    return out



def tuning_split(rows, task: str, fraction: float, seed: int) -> tuple[Columns, Columns]:
    """(train, tuning): a seeded ``fraction`` of the training rows held out to choose the learning
    rate on, so that the validation split stays the test. Stratified by label for classification
    (each class gives round(fraction x its count)), a plain seeded draw for regression; both parts
    keep the rows' order."""
    t = get_task(task)
    cols = to_columns(rows, list(rows) if isinstance(rows, dict) else list(rows[0]))
    labels = cols["label"]
    rng = random.Random(seed)
    groups = [list(range(len(labels)))] if t.regression else [
        [i for i, y in enumerate(labels) if y == c] for c in sorted(set(labels))]
    held = set()
    for group in groups:
        rng.shuffle(group)
        held.update(group[:round(len(group) * fraction)])
    if not held or len(held) == len(labels):
        raise ValueError(f"task {task}: a tuning fraction of {fraction} of {len(labels)} training rows leaves "
                         f"{len(held)} to tune on and {len(labels) - len(held)} to train on; both need rows")

    def part(tuning: bool) -> Columns:
        return {f: [v[i] for i in range(len(labels)) if (i in held) == tuning] for f, v in cols.items()}

    return part(False), part(True)

STANDINS: dict[str, Callable[..., dict[str, Columns]]] = {
    "arith_claim": arith_claim,
    "champ_topic": champ_topic,
    "arith_closeness": arith_closeness,
}


def standin(task: str, **options) -> dict[str, Columns]:
    """{"train": columns, "validation": columns} of a stand-in task."""
    if task not in STANDINS:
        raise ValueError(f"unknown stand-in '{task}'; valid: {sorted(STANDINS)}")
    return STANDINS[task](**options)
