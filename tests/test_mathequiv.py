import pytest

from inilora.data.mathsets import gold_from_solution, last_boxed, remove_boxed
from inilora.evaluate.mathequiv import extract_prediction, is_equiv, strip_string

EQUIVALENT = [
    # (a, b, the rule that makes them equal)
    ("\\frac{1}{2}", "0.5", "0.5 special case"),
    ("\\frac{1}{2}\\text{ hours}", ".5", "units + leading '.' + 0.5"),
    ("\\dfrac12", "\\frac{1}{2}", "dfrac + shorthand frac"),
    ("\\tfrac{3}{4}", "\\frac{3}{4}", "tfrac"),
    ("\\frac1{72}", "\\frac{1}{72}", "shorthand frac, braced denominator"),
    ("\\frac a b", "\\frac{a}{b}", "spaces, then shorthand frac"),
    ("\\frac12+\\frac13", "\\frac{1}{2} + \\frac{1}{3}", "several shorthand fracs"),
    ("\\dfrac{\\sqrt3}{2}", "\\frac{\\sqrt{3}}{2}", "dfrac + sqrt"),
    ("3/4", "\\frac{3}{4}", "a/b of integers"),
    ("-3/4", "\\frac{-3}{4}", "a/b of signed integers"),
    ("10\\%", "10", "percent"),
    ("12.5\\%", "12.5", "percent"),
    ("5^\\circ", "5", "degrees"),
    ("30^{\\circ}", "30", "degrees, braced"),
    ("5\\text{ cm}", "5", "units"),
    ("12 \\text{ square units}", "12", "units after a space"),
    ("6\\text{ inches}^2", "6", "everything from the unit on"),
    ("x=3", "3", "short left-hand side"),
    ("k = 7", "7", "short left-hand side with spaces"),
    ("y = \\frac12", "\\frac{1}{2}", "left-hand side + shorthand frac"),
    ("\\left(1,2\\right)", "(1,2)", "left/right"),
    ("\\left[ 2, 5 \\right)", "[2,5)", "left/right + spaces"),
    ("\\sqrt3", "\\sqrt{3}", "sqrt shorthand"),
    ("2\\sqrt2", "2\\sqrt{2}", "sqrt shorthand after a coefficient"),
    (".25", "0.25", "leading '.'"),
    ("(1, .5)", "(1,0.5)", "' .' inside"),
    ("\\frac{.5}{2}", "\\frac{0.5}{2}", "'{.' inside"),
    ("\\$5", "5", "dollar sign"),
    ("\\$18.90", "18.90", "dollar sign"),
    ("\\$\\frac{1}{2}", "0.5", "dollar sign + 0.5"),
    ("\\frac{1}\n{2}", "\\frac{1}{2}", "linebreak"),
    ("3\\!000", "3000", "inverse space"),
    ("\\\\frac{1}{2}", "\\frac{1}{2}", "double backslash"),
    (" 7 ", "7", "spaces"),
    ("(2, 3)", "(2,3)", "spaces"),
    ("\\pi", "\\pi", "identical"),
]

NOT_EQUIVALENT = [
    ("1/3", "0.33", "no numeric evaluation"),
    ("x+1", "x-1", "different expressions"),
    ("2/4", "\\frac{1}{2}", "no simplification"),
    ("0.50", "\\frac{1}{2}", "only the exact string 0.5 becomes 1/2"),
    ("3", "3.0", "no numeric evaluation"),
    ("1,000", "1000", "thousands separators are kept"),
    ("\\pi", "3.14", "no numeric evaluation"),
    ("10%", "10", "only the escaped \\% is removed (original quirk)"),
    ("$5$", "5", "only the escaped \\$ is removed (original quirk)"),
    ("-\\frac{3}{4}", "-3/4", "-3/4 becomes \\frac{-3}{4} (original quirk)"),
    ("\\sqrt{32}", "\\sqrt32", "sqrt shorthand braces one character"),
    ("\\frac{72}1", "\\frac{72}{1}", "only a leading shorthand argument is braced"),
    ("03/4", "\\frac{3}{4}", "a/b needs canonical integers"),
    ("abc=3", "3", "left-hand sides longer than 2 characters stay"),
    ("x = y = 3", "3", "two '=' stay"),
    ("5 cm", "5", "units only inside \\text{ ...}"),
    ("5\\text{cm}", "5", "\\text{ without a space is not a unit"),
    ("5\\text{ cm} + 2\\text{ m}", "5", "two units: raw comparison"),
    ("(1,2)", "[1,2]", "brackets differ"),
    ("", "0", "empty answer"),
]


@pytest.mark.parametrize("a,b,rule", EQUIVALENT, ids=[r for *_, r in EQUIVALENT])
def test_equivalent_pairs(a, b, rule):
    assert is_equiv(a, b) and is_equiv(b, a)


@pytest.mark.parametrize("a,b,rule", NOT_EQUIVALENT, ids=[r for *_, r in NOT_EQUIVALENT])
def test_not_equivalent_pairs(a, b, rule):
    assert not is_equiv(a, b) and not is_equiv(b, a)


def test_none_handling_follows_the_original():
    assert is_equiv(None, None)
    assert not is_equiv(None, "3") and not is_equiv("3", None)


def test_malformed_input_falls_back_to_raw_comparison():
    twice = "5\\text{ cm}\\text{ m}"
    with pytest.raises(ValueError, match="more than one"):
        strip_string(twice)
    with pytest.raises(ValueError, match="without arguments"):
        strip_string("1+\\frac")
    with pytest.raises(ValueError, match="without an argument"):
        strip_string("2\\sqrt")
    assert is_equiv(twice, twice) and is_equiv("1+\\frac", "1+\\frac") and not is_equiv("2\\sqrt", "2")
    assert strip_string("\\frac1") == "\\frac1"  # too short to fix: kept as written


def test_strip_string_normal_forms():
    assert strip_string("\\dfrac{1}{2}") == "\\frac{1}{2}"
    assert strip_string("x = 3/4") == "\\frac{3}{4}"
    assert strip_string("\\left( 3, \\sqrt2 \\right)") == "(3,\\sqrt{2})"


@pytest.mark.parametrize("text,boxed", [
    ("so $x = \\boxed{\\frac{1}{2}}$.", "\\boxed{\\frac{1}{2}}"),
    ("\\boxed{\\left(\\frac{\\sqrt{3}}{2}, {1}\\right)}", "\\boxed{\\left(\\frac{\\sqrt{3}}{2}, {1}\\right)}"),
    ("first \\boxed{1}, then \\boxed{2}.", "\\boxed{2}"),
    ("\\boxed{1} and at last \\fbox{2}", "\\fbox{2}"),
    ("the answer is $\\boxed 5$.", "\\boxed 5"),
    ("spaced \\boxed {12}", "\\boxed {12}"),
    ("unclosed \\boxed{1", None),
    ("no box here", None),
])
def test_last_boxed_matches_nested_braces(text, boxed):
    assert last_boxed(text) == boxed


@pytest.mark.parametrize("boxed,content", [
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"), ("\\boxed 5", "5"), ("\\fbox{7}", "7"), ("\\boxed {12}", "12"),
])
def test_remove_boxed(boxed, content):
    assert remove_boxed(boxed) == content


def test_remove_boxed_rejects_other_strings():
    with pytest.raises(ValueError, match=r"not a \\boxed"):
        remove_boxed("5")


def test_gold_is_the_last_boxed_content_of_the_solution():
    solution = ("We have $\\boxed{x}$ first. Then $y = \\frac{\\sqrt{2}}{2}$, "
                "so the answer is $\\boxed{\\dfrac{\\sqrt{2}}{2}}$.")
    assert gold_from_solution(solution) == "\\dfrac{\\sqrt{2}}{2}"
    with pytest.raises(ValueError, match="no closed"):
        gold_from_solution("The answer is 4.")


@pytest.mark.parametrize("generation,fallback,expected", [
    ("2 + 3 = 5.\nThe answer is: 5", True, "5"),
    ("The answer is: 3.\nThe answer is: \\frac{1}{2}.\nSome more text.", True, "\\frac{1}{2}"),  # the last one
    ("The answer is: 12.", True, "12"),          # trailing period dropped
    ("The answer is: 3.14", True, "3.14"),       # a decimal point is not a full stop
    ("The answer is: 2.5.\nThat is all.", True, "2.5"),
    ("The answer is:  x = 4 \n", True, "x = 4"),
    ("The answer is: 4 and \\boxed{5}", True, "4 and \\boxed{5}"),  # the answer lead wins
    ("The answer is: ", True, ""),
    ("so $\\boxed{\\frac{2}{3}}$.", True, "\\frac{2}{3}"),       # our boxed fallback
    ("so $\\boxed{\\frac{2}{3}}$.", False, None),                # the paper: no answer
    ("The answer is 7", True, None),             # the paper needs the colon and space
    ("I don't know.", True, None),
])
def test_extract_prediction(generation, fallback, expected):
    assert extract_prediction(generation, boxed_fallback=fallback) == expected


def test_prediction_and_gold_meet_in_is_equiv():
    gold = gold_from_solution("Half of it: $\\boxed{\\dfrac{1}{2}}$.")
    assert is_equiv(extract_prediction("Halve it.\nThe answer is: 0.5.\n"), gold)
    assert not is_equiv(extract_prediction("Halve it.\nThe answer is: 1/3"), gold)
    assert not is_equiv(extract_prediction("no answer at all"), gold)
