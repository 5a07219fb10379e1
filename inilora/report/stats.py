"""Uncertainty of every comparison: intervals over items (and seeds) and paired tests, on scipy.stats.

Per benchmark and method, from the per-item results in the evaluation JSONs (and, for Table 1, the
per-example predictions of the GLUE runs, whose metrics are recomputed on every resample):

- the mean with a 95% interval, bootstrapped over items (``scipy.stats.bootstrap``, percentile);
  with several seeds, over seeds and then items (a two-level resample scipy does not offer, so it
  is written here: resample the seeds, then the items within each);
- the paired difference against a reference method (``stats.reference``, default ``lora``) with a
  bootstrap interval, and a p-value: the exact McNemar test (``scipy.stats.binomtest`` on the
  discordant pairs) for one seed and a 0/1 metric, else a paired permutation test over items, each
  (seed, item) pair's sign flipped (``scipy.stats.permutation_test``, ``permutation_type="samples"``),
  which keeps every pair within its seed;
- a Holm correction across the methods of a benchmark (scipy has Benjamini-Hochberg only, so Holm's
  step-down is written here, 5 lines);
- the minimum detectable difference at 80% power for the benchmark's size and baseline (the normal
  approximation for two proportions, which ignores the pairing and so errs on the large side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from inilora.data import glue
from inilora.evaluate.humaneval import pass_at_k
from inilora.evaluate.kinds import KINDS

CONFIDENCE = 0.95
RESAMPLES = 9999
ALPHA = 0.05


def item_scores(result: dict) -> tuple[str, np.ndarray]:
    """(headline metric, one score per item) of an evaluation JSON, by its kind's record
    (inilora.evaluate.kinds): 0/1 correctness per item for numeric, math and mmlu; for humaneval
    each problem's unbiased pass@1, c / n."""
    kind = KINDS[result.get("kind", "numeric")]
    return kind.headline, np.array([kind.item_score(r) for r in result["records"]], dtype=float)


def metric_scores(result: dict) -> dict[str, np.ndarray]:
    """Every metric of an evaluation JSON that has per-item scores, the headline first:

    - numeric and math: ``accuracy`` (0/1) and ``heldout_loss``, each item's summed cross-entropy
      times n / (all scored tokens), so that the item mean is exactly the benchmark's token-weighted
      loss (a bootstrap then resamples items with the token total held fixed);
    - humaneval: ``pass@k`` for every k the result reports, each problem's unbiased pass@k;
    - mmlu: ``accuracy``.
    """
    headline, scores = item_scores(result)
    out = {headline: scores}
    records = result["records"]
    if KINDS[result.get("kind", "numeric")].sampled:
        for name in result.get("metrics", {}):
            k = int(name.split("@")[1]) if name.startswith("pass@") else None
            if k and k > 1 and all(r["n"] >= k for r in records):
                out[name] = np.array([pass_at_k(r["n"], r["correct"], k) for r in records], dtype=float)
    elif records and all("heldout_loss" in r for r in records):
        summed = np.array([r["heldout_loss"] * r["heldout_tokens"] for r in records], dtype=float)
        total = sum(r["heldout_tokens"] for r in records)
        if total:
            out["heldout_loss"] = summed * len(records) / total
    return out


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


BATCH_ELEMENTS = 1 << 24  # resampled items held at once (x 8 bytes per column), so 40k-item GLUE sets fit


def _mean(values, axis=-1):
    return np.mean(values, axis=axis)


def _batch(n: int, resamples: int) -> int | None:
    """scipy's ``batch``: None (all resamples at once, the draws unchanged) unless that is too large."""
    return None if n * resamples <= BATCH_ELEMENTS else max(1, BATCH_ELEMENTS // n)


def statistic_ci(samples: list[tuple[np.ndarray, ...]], statistic=_mean, seed: int = 0,
                 resamples: int = RESAMPLES) -> tuple[float, float, float]:
    """(value, low, high): the mean over seeds of ``statistic(*columns, axis=-1)`` and its 95% interval.

    Each seed's sample is a tuple of per-item columns of one length: (scores,) for item scores with
    the mean, (predictions, labels) for a metric such as F1 or a Matthews correlation. The statistic
    is vectorised along the last axis. One seed: ``scipy.stats.bootstrap`` over items, the columns
    resampled together; several: resample the seeds, then the items within each."""
    value = float(np.mean([statistic(*cols) for cols in samples]))
    if len(samples) == 1:
        cols = samples[0]
        if len(cols) == 1 and np.all(cols[0] == cols[0][0]):  # no spread to resample (all right or all wrong)
            return value, value, value
        res = stats.bootstrap(cols, statistic, confidence_level=CONFIDENCE, n_resamples=resamples,
                              method="percentile", random_state=_rng(seed), vectorized=True, paired=len(cols) > 1,
                              batch=_batch(len(cols[0]), resamples))
        return value, float(res.confidence_interval.low), float(res.confidence_interval.high)
    draws = _two_level(samples, statistic, _rng(seed), resamples)
    low, high = np.quantile(draws, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return value, float(low), float(high)


def _two_level(samples: list[tuple[np.ndarray, ...]], statistic, rng: np.random.Generator,
               resamples: int) -> np.ndarray:
    """Bootstrap draws of the seed mean: seeds drawn with replacement, then items within each (a
    two-level resample scipy does not offer)."""
    S = len(samples)
    sizes = {len(cols[0]) for cols in samples}
    draws = np.empty(resamples)
    if len(sizes) == 1:  # the same items under every seed: vectorised, in batches
        n = sizes.pop()
        stacked = [np.stack(column) for column in zip(*samples)]  # each (seeds, items)
        step = max(1, BATCH_ELEMENTS // (S * n))
        for start in range(0, resamples, step):
            b = min(step, resamples - start)
            picked = rng.integers(S, size=(b, S))[..., None]
            items = rng.integers(n, size=(b, S, n))
            draws[start:start + b] = statistic(*(c[picked, items] for c in stacked)).mean(axis=-1)
        return draws
    for i in range(resamples):
        values = []
        for s in rng.integers(S, size=S):
            cols = samples[s]
            idx = rng.integers(len(cols[0]), size=len(cols[0]))
            values.append(statistic(*(c[idx] for c in cols)))
        draws[i] = np.mean(values)
    return draws


def mean_ci(by_seed: list[np.ndarray], seed: int = 0, resamples: int = RESAMPLES) -> tuple[float, float, float]:
    """(mean, low, high): the mean over seeds of the per-seed item means, and its 95% interval."""
    return statistic_ci([(np.asarray(x, dtype=float),) for x in by_seed], _mean, seed, resamples)


@dataclass
class Paired:
    diff: float
    low: float
    high: float
    p: float
    test: str


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value of paired 0/1 outcomes: a binomial test on the discordant pairs."""
    only_a, only_b = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired(a_by_seed: list[np.ndarray], b_by_seed: list[np.ndarray], seed: int = 0,
           resamples: int = RESAMPLES, labels_by_seed: list[np.ndarray] | None = None, metric=None,
           correct=None) -> Paired:
    """metric(a) - metric(b) on the same items under the same seeds, its 95% interval and a paired p-value.

    Without labels, ``a`` and ``b`` are item scores and the metric is their mean: the interval
    bootstraps the per-item differences. With labels (GLUE predictions), ``metric(predictions,
    labels, axis)`` is recomputed on every resample of items, both methods' predictions and the
    labels drawn together. The p-value is the exact McNemar test for one seed and 0/1 outcomes
    (0/1 item scores, or ``correct(predictions, labels)`` for an accuracy); else a paired
    permutation test that swaps the two methods' results on each (seed, item), with the mean over
    seeds of the per-seed difference as its statistic."""
    if [len(x) for x in a_by_seed] != [len(x) for x in b_by_seed]:
        raise ValueError("paired comparison needs the same items under the same seeds for both methods")
    a_by_seed = [np.asarray(x, dtype=float) for x in a_by_seed]
    b_by_seed = [np.asarray(x, dtype=float) for x in b_by_seed]
    a, b = np.concatenate(a_by_seed), np.concatenate(b_by_seed)
    if np.all(a == b):
        return Paired(0.0, 0.0, 0.0, 1.0, "identical on every item")
    bounds = np.cumsum([0, *(len(x) for x in a_by_seed)])
    if labels_by_seed is None:
        diff, low, high = mean_ci([x - y for x, y in zip(a_by_seed, b_by_seed)], seed, resamples)
        outcomes = (a, b) if set(np.unique(np.concatenate([a, b]))) <= {0.0, 1.0} else None

        def one(x, lo, hi, axis):
            return np.mean(x[..., lo:hi], axis=axis)
    else:
        labels = np.concatenate([np.asarray(y) for y in labels_by_seed])
        diff, low, high = statistic_ci(
            [(x, y, np.asarray(lab)) for x, y, lab in zip(a_by_seed, b_by_seed, labels_by_seed)],
            lambda x, y, lab, axis=-1: metric(x, lab, axis=axis) - metric(y, lab, axis=axis), seed, resamples)
        outcomes = None if correct is None else (correct(a, labels).astype(float), correct(b, labels).astype(float))

        def one(x, lo, hi, axis):
            return metric(x[..., lo:hi], labels[lo:hi], axis=axis)
    if len(a_by_seed) == 1 and outcomes is not None:
        return Paired(diff, low, high, mcnemar_exact(*outcomes), "exact McNemar")

    def seed_mean_difference(x, y, axis=-1):
        return np.mean([one(x, lo, hi, axis) - one(y, lo, hi, axis) for lo, hi in zip(bounds[:-1], bounds[1:])],
                       axis=0)

    if not np.isfinite(diff):  # e.g. Pearson of constant predictions: no statistic, so no test
        return Paired(diff, float("nan"), float("nan"), float("nan"), "undefined (the metric is NaN)")
    res = stats.permutation_test((a, b), seed_mean_difference, permutation_type="samples", n_resamples=resamples,
                                 vectorized=True, random_state=_rng(seed), batch=_batch(len(a), resamples))
    return Paired(diff, low, high, float(res.pvalue), "paired permutation (sign flips within seeds)")


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment: p_(i) * (m - i + 1), made monotone, capped at 1. An undefined
    (NaN) p stays NaN and is not counted among the m tests."""
    defined = [i for i, p in enumerate(pvalues) if p == p]
    order = sorted(defined, key=lambda i: pvalues[i])
    adjusted = np.full(len(pvalues), np.nan)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, pvalues[i] * (len(defined) - rank)))
        adjusted[i] = running
    return adjusted.tolist()


def against_reference(reference_runs: dict, others: list[tuple], compare, where: str, reference: str,
                      notes: list[str]) -> list[tuple]:
    """Each ``(key, name, runs by seed)`` of ``others`` paired with ``reference_runs`` on the seeds
    they share, by ``compare(other's runs, reference's runs)`` (lists in seed order), with Holm over
    all of them: [(key, Paired, Holm p)]. One that shares no seed is left out, with a note."""
    compared = []
    for key, name, runs in others:
        seeds = sorted(set(runs) & set(reference_runs))
        if not seeds:
            notes.append(f"{where}: {name} shares no seed with {reference}; not compared")
            continue
        compared.append((key, compare([runs[s] for s in seeds], [reference_runs[s] for s in seeds])))
    return [(key, r, p) for (key, r), p in zip(compared, holm([r.p for _, r in compared]))]


def difference_columns(column: str, reference: str, r: Paired, p_holm: float, scale: float = 1.0) -> dict:
    """A table's paired-test columns for ``column``: ``diff_vs_<reference>``, its interval, p and Holm p."""
    return {f"{column}:diff_vs_{reference}": scale * r.diff, f"{column}:diff_ci_low": scale * r.low,
            f"{column}:diff_ci_high": scale * r.high, f"{column}:p": r.p, f"{column}:p_holm": p_holm}


def detectable_note(n: int, seeds: int, base: float, reference: str) -> str:
    """The notes' sentence on the minimum detectable difference for ``n`` items x ``seeds``."""
    return (f"a difference smaller than {min_detectable_difference(n * seeds, base):.3f} (the minimum detectable "
            f"at 80% power from {reference}'s {base:.3f}"
            + (f", with {n} x {seeds} pairs and no spread between seeds" if seeds > 1 else "")
            + ") is unlikely to be found")


def min_detectable_difference(n: int, baseline: float, alpha: float = ALPHA, power: float = 0.8) -> float:
    """The difference in proportion a two-sided test at ``alpha`` detects with ``power`` on ``n``
    items per method when the reference scores ``baseline`` (normal approximation, unpaired)."""
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    p = min(max(baseline, 1 / (2 * n)), 1 - 1 / (2 * n))  # a 0 or 1 baseline has no spread to use
    return float(z * math.sqrt(2 * p * (1 - p) / n))


def items_for(n_effect: float, baseline: float, alpha: float = ALPHA, power: float = 0.8) -> int:
    """Items per method that give ``min_detectable_difference`` = ``n_effect`` (for sizing a study)."""
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return math.ceil(2 * baseline * (1 - baseline) * (z / n_effect) ** 2)


# ----------------------------------------------------------------------------- tables


def comparison_columns(evals, reference: str, same_lr: bool = False):
    """Per (model, method, rank, lr) and benchmark: interval and paired test columns for a table, from
    ``evals``, the frame inilora.report.tables.read_evals built (its ``scores``, one entry per evaluation).

    Returns (columns, notes): ``columns[(model, method, rank, lr)]`` maps ``<bench>:<metric>:ci_low``,
    ``:ci_high``, ``:diff_vs_<reference>``, ``:diff_ci_low``, ``:diff_ci_high``, ``:p``, ``:p_holm`` to
    values; the reference is each method's row at the same model and rank (the base row is compared
    too); Holm runs over the methods of one benchmark, model and rank. ``same_lr``: compare against
    the reference at the same fine-tuning lr (a sweep), not at its own (a table of tuned rows).
    """
    runs: dict[tuple, dict[int, np.ndarray]] = {}
    metrics_of: dict[str, list[str]] = {}
    for e in evals.drop_duplicates("path").itertuples(index=False):
        if e.scores is None:
            continue
        for metric, scores in e.scores.items():
            known = metrics_of.setdefault(e.benchmark, [])
            if metric not in known:
                known.append(metric)
            runs.setdefault((e.model, e.method, e.rank, e.lr, e.benchmark, metric), {})[e.seed] = scores
    columns: dict[tuple, dict[str, float]] = {}
    notes = []
    for (model, method, rank, lr, bench, metric), by_seed in runs.items():
        col = f"{bench}:{metric}"
        _, low, high = mean_ci([by_seed[s] for s in sorted(by_seed)])
        columns.setdefault((model, method, rank, lr), {}).update({f"{col}:ci_low": low, f"{col}:ci_high": high})
    groups: dict[tuple, list[tuple]] = {}
    for (model, method, rank, lr, bench, metric) in runs:
        groups.setdefault((model, bench, metric), []).append((method, rank, lr))
    for (model, bench, metric), members in groups.items():
        col = f"{bench}:{metric}"
        headline = metric == metrics_of[bench][0]
        cells = sorted({(r, lr if same_lr else None) for _, r, lr in members if r})
        for rank, at_lr in cells:
            ref = [m for m in members if m[0] == reference and m[1] == rank and at_lr in (None, m[2])]
            if not ref:
                continue
            ref_runs = runs[(model, *ref[0], bench, metric)]
            where = f"{model}, rank {rank}" + (f", lr {at_lr:g}" if at_lr is not None else "")
            others = []
            for method, r, lr in members:
                if (method, r, lr) == ref[0] or (r != rank and method != "base") or at_lr not in (None, lr):
                    continue
                other = runs[(model, method, r, lr, bench, metric)]
                if method == "base":  # one base evaluation stands for every seed of the reference
                    other = {s: other[0] for s in ref_runs}
                others.append(((model, method, r if method != "base" else 0, lr), method, other))
            compared = against_reference(ref_runs, others, paired, f"{bench} {metric} ({where})", reference, notes)
            for key, result, p_holm in compared:
                columns.setdefault(key, {}).update(difference_columns(col, reference, result, p_holm))
            tests = sorted({c[1].test for c in compared})
            n_items = len(next(iter(ref_runs.values())))
            if not headline:
                notes.append(f"{bench} {metric} ({where}): the same {n_items} items, intervals and tests "
                             f"({', '.join(tests) or 'none'}, Holm over {len(compared)})"
                             + ("; per item, its summed cross-entropy over the benchmark's mean token count"
                                if metric == "heldout_loss" else ""))
                continue
            base_rate = float(np.mean([x.mean() for x in ref_runs.values()]))
            notes.append(f"{bench} ({where}): {n_items} items x {len(ref_runs)} seed(s); intervals: 95% bootstrap "
                         f"over items{' and seeds' if len(ref_runs) > 1 else ''}; differences against {reference}: "
                         f"{', '.join(tests) or 'none'}, Holm-adjusted over {len(compared)} comparison(s); "
                         + detectable_note(n_items, len(ref_runs), base_rate, reference))
    return columns, notes


def prediction_columns(runs: list[dict], reference: str) -> tuple[dict, list[str]]:
    """Table 1's intervals and paired tests from the GLUE runs' per-example predictions.

    Per (model, method, rank) and column ``<task>:<main metric>`` (the best epoch's predictions) and
    ``<task>:<main metric>@last`` (the last epoch's): the metric's 95% interval, bootstrapped over
    the validation examples (and seeds), and its paired difference against ``reference`` at the same
    model and rank, with the exact McNemar test for an accuracy on one seed, else the paired
    permutation test; Holm over the methods of a column. Returns (columns, notes) as
    ``comparison_columns``. Runs without ``predictions`` (older runs) get no columns, and a note says so.
    """
    samples: dict[tuple, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    metric_of, missing = {}, []
    for run in runs:
        if "predictions" not in run:
            missing.append(f"{run['task']} {run['method']} seed {run['seed']}")
            continue
        labels = np.asarray(run["predictions"]["labels"])
        main = run["main_metric"]
        for column, key in ((f"{run['task']}:{main}", "best"), (f"{run['task']}:{main}@last", "last")):
            metric_of[column] = main
            samples.setdefault((run["model"], run["method"], run["rank"], column), {})[run["seed"]] = (
                np.asarray(run["predictions"][key], dtype=float), labels)
    columns: dict[tuple, dict[str, float]] = {}
    notes = [f"no per-example predictions in the runs of {', '.join(missing)} (run before they were recorded): "
             "no intervals for them"] if missing else []
    for (model, method, rank, column), by_seed in samples.items():
        metric = glue.METRICS[metric_of[column]]
        _, low, high = statistic_ci([by_seed[s] for s in sorted(by_seed)], metric)
        columns.setdefault((model, method, rank), {}).update({f"{column}:ci_low": low, f"{column}:ci_high": high})
    for (model, method, rank, column), by_seed in samples.items():
        if method != reference:
            continue
        main = metric_of[column]

        def compare(other, ref, main=main, column=column):
            if any(not np.array_equal(o[1], r[1]) for o, r in zip(other, ref)):
                raise ValueError(f"{column}: a method and {reference} were scored on different validation "
                                 "examples; a paired comparison needs the same ones")
            return paired([o[0] for o in other], [r[0] for r in ref], labels_by_seed=[r[1] for r in ref],
                          metric=glue.METRICS[main], correct=(lambda p, y: p == y) if main == "accuracy" else None)

        others = [((model, m, rank), m, other) for (m2, m, r2, c2), other in samples.items()
                  if (m2, r2, c2) == (model, rank, column) and m != reference]
        compared = against_reference(by_seed, others, compare, column, reference, notes)
        for key, result, p_holm in compared:
            columns.setdefault(key, {}).update(difference_columns(column, reference, result, p_holm))
        if column.endswith("@last"):
            continue
        n, seeds = len(next(iter(by_seed.values()))[1]), len(by_seed)
        tests = sorted({c[1].test for c in compared})
        base = float(np.mean([glue.METRICS[main](*by_seed[s]) for s in by_seed]))
        mde = ("; " + detectable_note(n, seeds, base, reference) if main == "accuracy"
               else f"; {main} has no closed-form minimum detectable difference: the interval widths say how "
                    "precise it is")
        notes.append(f"{column.split(':')[0]} ({model}, rank {rank}): {n} validation examples x {seeds} seed(s); intervals: 95% "
                     f"bootstrap over examples{' and seeds' if seeds > 1 else ''}, the metric recomputed on each "
                     f"resample; differences against {reference}: {', '.join(tests) or 'none'}, Holm-adjusted over "
                     f"{len(compared)} comparison(s), for the best epoch and @last alike{mde}. The best epoch is "
                     "chosen on these same examples, so it and its interval lean high; @last has no such choice")
    return columns, notes
