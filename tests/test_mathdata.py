import json

import pytest

from inilora.data import ANSWER_LEAD, DataError, Example
from inilora.data.mathsets import MATH_SUBJECTS, champ_gold, load_champ, load_math_hub
from inilora.evaluate.mathequiv import extract_prediction, is_equiv

HENDRYCKS_ROWS = [
    {"problem": " What is $1/2 + 1/4$? ", "level": "Level 1", "type": "Prealgebra",
     "solution": "$\\frac12 + \\frac14 = \\boxed{\\frac{3}{4}}$."},
    {"problem": "Compute $\\arccos(-1)$.", "level": "Level 2", "type": "Precalculus",
     "solution": "Since $\\cos \\pi = -1,$ $\\arccos (-1) = \\boxed{\\pi}.$"},
    {"problem": "Simplify $\\sqrt{8}$.", "level": "Level 3", "type": "Algebra",
     "solution": "Try $\\boxed{4}$? No: $\\sqrt{8} = \\boxed{2\\sqrt{2}}$."},
    {"problem": "Find the point.", "level": "Level 5", "type": "Algebra",
     "solution": "It is $\\boxed{\\left( \\frac{1}{2}, {3} \\right)}$."},
]
GOLDS = ["\\frac{3}{4}", "\\pi", "2\\sqrt{2}", "\\left( \\frac{1}{2}, {3} \\right)"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def check_examples(examples, golds):
    assert all(isinstance(e, Example) for e in examples)
    assert [e.answer for e in examples] == golds
    for e in examples:
        assert e.response.endswith("\n" + ANSWER_LEAD + e.answer)
        assert is_equiv(extract_prediction(e.response), e.answer)  # training and evaluation agree


def test_hendrycks_jsonl(tmp_path):
    ex = load_math_hub(data_files=write_jsonl(tmp_path / "test.jsonl", HENDRYCKS_ROWS))
    check_examples(ex, GOLDS)
    assert ex[0].question == "What is $1/2 + 1/4$?"
    assert ex[0].response == "$\\frac12 + \\frac14 = \\boxed{\\frac{3}{4}}$.\nThe answer is: \\frac{3}{4}"


def test_hendrycks_parquet(tmp_path):
    import pandas as pd

    path = tmp_path / "test.parquet"
    pd.DataFrame(HENDRYCKS_ROWS).to_parquet(path)
    check_examples(load_math_hub(data_files=str(path), split="train"), GOLDS)


def test_first_n_rows_and_filters(tmp_path):
    f = write_jsonl(tmp_path / "test.jsonl", HENDRYCKS_ROWS)
    assert [e.answer for e in load_math_hub(n=2, data_files=f)] == GOLDS[:2]
    assert [e.answer for e in load_math_hub(subjects=["algebra"], data_files=f)] == GOLDS[2:]
    assert [e.answer for e in load_math_hub(levels=[1, 5], data_files=f)] == [GOLDS[0], GOLDS[3]]
    assert [e.answer for e in load_math_hub(n=1, subjects=["algebra"], levels=[5], data_files=f)] == [GOLDS[3]]


def test_instruction_output_format(tmp_path):
    rows = [{"idx": f"hendrycks_math_{i}", "instruction": r["problem"], "input": "", "output": r["solution"],
             "type": r["type"]} for i, r in enumerate(HENDRYCKS_ROWS)]
    f = write_jsonl(tmp_path / "MATH_test.jsonl", rows)
    check_examples(load_math_hub(data_files=f), GOLDS)
    check_examples(load_math_hub(data_files=f, format="instruction_output"), GOLDS)
    assert [e.answer for e in load_math_hub(data_files=f, subjects=["precalculus"])] == [GOLDS[1]]
    with pytest.raises(DataError, match=r"levels filters on the 'level' field.*it has \['idx', 'input'"):
        load_math_hub(data_files=f, levels=[1])
    with pytest.raises(DataError, match=r"missing \{'hendrycks': \['problem', 'solution'\]\}"):
        load_math_hub(data_files=f, format="hendrycks")


def test_missing_fields_are_named(tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"question": "x", "answer": "y"}])
    with pytest.raises(DataError, match=r"missing \{'hendrycks': \['problem', 'solution'\], "
                                        r"'instruction_output': \['instruction', 'output'\]\}; "
                                        r"it has \['answer', 'question'\]"):
        load_math_hub(data_files=f)


@pytest.mark.parametrize("options,message", [
    ({"subjects": ["calculus"]}, r"subjects \['calculus'\] unknown; valid: \['algebra'"),
    ({"levels": [0, 6]}, r"levels \[0, 6\] invalid; valid: 1, 2, 3, 4, 5"),
    ({"format": "alpaca"}, r"format 'alpaca' unknown; valid: \['hendrycks', 'instruction_output'\]"),
    ({"data_files": "test.csv"}, r"extension '.csv' of test.csv unknown; valid: \['.json', '.jsonl', '.parquet'\]"),
])
def test_bad_options_are_named(tmp_path, options, message):
    options = {"data_files": write_jsonl(tmp_path / "test.jsonl", HENDRYCKS_ROWS), **options}
    with pytest.raises(DataError, match=message):
        load_math_hub(**options)


def test_rows_without_a_boxed_answer_are_skipped_with_a_warning(tmp_path):
    rows = HENDRYCKS_ROWS[:1] + [{**HENDRYCKS_ROWS[1], "solution": "The answer is $\\pi$."}]
    with pytest.warns(UserWarning, match=r"skipped 1 row\(s\) with no boxed answer \(first: row 1\)"):
        ex = load_math_hub(data_files=write_jsonl(tmp_path / "test.jsonl", rows))
    assert [e.answer for e in ex] == GOLDS[:1]


def test_hub_default_reads_all_seven_subject_configs_in_order(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        subject = MATH_SUBJECTS.get(name, "Algebra")
        row = {**HENDRYCKS_ROWS[0], "type": subject, "solution": f"$\\boxed{{{len(calls)}}}$"}
        return datasets.Dataset.from_list([row])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ex = load_math_hub()
    assert calls == [("EleutherAI/hendrycks_math", c, "test") for c in MATH_SUBJECTS]
    assert [e.answer for e in ex] == [str(i) for i in range(1, 8)]
    calls.clear()
    load_math_hub(subjects=["geometry", "algebra"])
    assert [c[1] for c in calls] == ["geometry", "algebra"]
    calls.clear()
    load_math_hub(path="someone/math", name="all")  # other hub copies: one load, as named
    assert calls == [("someone/math", "all", "test")]


@pytest.mark.parametrize("raw,gold", [
    ("239", "239"),
    ("@@-1/2@@", "-1/2"),
    ("@@2^(n-1)@@", "2^(n-1)"),
    ("@@C(n+1, 2m+1)@@", "C(n+1, 2m+1)"),                     # a comma inside brackets is one value
    ("@@C(10, 5)@@, or equivalently @@252@@", "252"),          # the last exact form
    ("@@5/14@@, or approximately 35.7%", "5/14"),              # never the approximation
    ("100 (i.e., all values)", "100"),
    ("0 is the only possible value", "0"),
    ("98 values", "98"),
    ("The limit exists and is equal to @@2/3@@", "2/3"),
    ("@@(x+1)(x^3\u2212x^2+1)@@", "(x+1)(x^3-x^2+1)"),           # unicode minus
    ("No integer solutions", None),
    ("At least 1 number", None),
    ("376 and 625", None),
    ("@@x=2, y=1@@", None),
    ("@@f(x)=0@@", None),
    ("@@x(n)>y(n-1)@@ for all @@n≥2@@", None),
    ("No", None),
])
def test_champ_gold(raw, gold):
    assert champ_gold(raw) == gold


def test_champ_gold_keeps_yes_no_only_when_asked():
    assert champ_gold("Yes") is None and champ_gold("Yes", keep_yes_no=True) == "Yes"


def test_champ_examples():
    ex = load_champ()
    assert len(ex) == 182 and len(load_champ(keep_yes_no=True)) == 215
    assert len({e.question for e in ex}) == len(ex)
    for e in ex:
        assert e.response.endswith("\n" + ANSWER_LEAD + e.answer)
        assert is_equiv(extract_prediction(e.response), e.answer)
    first = ex[0]  # sorted by id: P_Combinatorics_1
    assert first.answer == "239" and first.question.startswith("Let a string consist of digit 1, 2, 3.")


def test_champ_sample_is_seeded_and_nested():
    everything = load_champ()
    a, b, c = load_champ(n=20, seed=0), load_champ(n=20, seed=0), load_champ(n=20, seed=1)
    assert len(a) == 20 and a == b and a != c
    assert set(load_champ(n=5, seed=0)) <= set(a)  # a smaller n is a subset
    order = [everything.index(e) for e in a]
    assert order == sorted(order)  # returned in id order
    assert load_champ(n=1000) == everything


def test_champ_categories():
    ex = load_champ(categories=["Sequence", "Combinatorics"])
    assert len(ex) == 30 + 38
    with pytest.raises(DataError, match=r"categories \['Geometry'\] unknown; valid: \['Combinatorics'"):
        load_champ(categories=["Geometry"])
