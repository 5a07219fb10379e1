import json

import pytest

from inilora.data import ALPACA_PROMPT, DataError, load_examples, prompt


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_gsm8k_preset_reads_local_files_in_the_hub_format(tmp_path):
    f = write_jsonl(tmp_path / "test.jsonl", [
        {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"},
        {"question": "What is 1000 + 234?", "answer": "1000 + 234 = 1234\n#### 1,234"},
    ])
    ex = load_examples({"loader": "hf", "preset": "gsm8k", "path": "json", "name": None, "split": "train",
                        "data_files": f})
    assert [e.answer for e in ex] == ["5", "1234"]
    assert ex[1].response.endswith("The answer is: 1234")


def test_metamathqa_preset_takes_the_first_n_rows(tmp_path):
    rows = [{"query": f"What is {i} + 1?", "response": f"{i} + 1 = {i + 1}. The answer is: {i + 1}", "type": "x"}
            for i in range(5)]
    f = write_jsonl(tmp_path / "MetaMathQA-395K.jsonl", rows)
    ex = load_examples({"loader": "hf", "preset": "metamathqa", "path": "json", "data_files": f, "n": 3})
    assert len(ex) == 3 and ex[2].answer == "3" and ex[0].question == "What is 0 + 1?"


def test_codealpaca_format_joins_instruction_and_input(tmp_path):
    f = write_jsonl(tmp_path / "code_alpaca_20k.json", [
        {"instruction": "Write a function that adds two numbers.", "input": "", "output": "def add(a, b):\n    return a + b"},
        {"instruction": "Reverse the list.", "input": "[1, 2, 3]", "output": "x[::-1]"},
    ])
    ex = load_examples({"loader": "hf", "path": "json", "data_files": f, "question_field": "instruction",
                        "input_field": "input", "response_field": "output", "answer_format": "none"})
    assert ex[0].question == "Write a function that adds two numbers." and ex[0].answer == ""
    assert ex[1].question == "Reverse the list.\n[1, 2, 3]" and ex[1].response == "x[::-1]"


def test_missing_field_is_named(tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"q": "x", "a": "y"}])
    with pytest.raises(DataError, match=r"lacks field\(s\) \['query', 'response'\]"):
        load_examples({"loader": "hf", "preset": "metamathqa", "path": "json", "data_files": f})


def test_unknown_loader_lists_valid_ones():
    with pytest.raises(DataError, match=r"valid: \['champ', 'hf', 'math_hub', 'reasoning_gym'\]"):
        load_examples({"loader": "csv"})


def test_reasoning_gym_is_seeded_and_ends_in_the_answer_lead():
    a = load_examples({"loader": "reasoning_gym", "dataset": "gsm_symbolic", "n": 4, "seed": 3})
    b = load_examples({"loader": "reasoning_gym", "dataset": "gsm_symbolic", "n": 4, "seed": 3})
    assert a == b
    for e in a:
        assert e.response.endswith(f"The answer is: {e.answer}") and "####" not in e.response


def test_prompt_is_the_papers_alpaca_template():
    p = prompt("Add 2 and 2.", " Let's think step by step.")
    assert p.startswith("Below is an instruction that describes a task.")
    assert p.endswith("### Instruction:\nAdd 2 and 2.\n\n### Response: Let's think step by step.")
    assert ALPACA_PROMPT.count("{question}") == 1
