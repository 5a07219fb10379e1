import pytest

from inilora.evaluate.extract import extract_answer, numeric_correct, to_number


@pytest.mark.parametrize("text,expected", [
    ("Let's add. 3 + 4 = 7. The answer is: 7", "7"),
    ("The answer is: 5\nThe answer is: 12.", "12."),  # the last one counts
    ("so the total is 1,234 apples. The answer is 1,234", "1,234"),
    ("I am not sure.", None),
    ("The answer is: ", None),
])
def test_extract_takes_text_after_the_last_answer_lead(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text,value", [
    ("-4", -4.0), ("1,234 dollars", 1234.0), ("3/4 of it", 0.75), ("2.50", 2.5), ("x = -7/2", -3.5),
    ("none", None), ("5/0", None),
])
def test_to_number_reads_the_first_signed_number_or_fraction(text, value):
    assert to_number(text) == value


@pytest.mark.parametrize("answer,gold,ok", [
    ("18", "18", True),
    ("18.", "18", True),
    ("17.6", "18", True),     # the paper rounds predictions to an int
    ("1,080 eggs", "1080", True),
    ("-4", "-4", True),
    ("4", "-4", False),
    ("36/2", "18", True),
    (None, "18", False),
    ("eighteen", "18", False),
])
def test_numeric_correct_follows_the_paper(answer, gold, ok):
    assert numeric_correct(answer, gold) is ok


def test_gsm8k_gold_and_response_rewrite():
    from inilora.data import gsm8k_gold, gsm8k_to_response

    cot = "She has 3 + 4 = 7 apples.\n#### 1,007"
    assert gsm8k_gold(cot) == "1007"
    assert gsm8k_to_response(cot) == "She has 3 + 4 = 7 apples.\nThe answer is: 1007"
