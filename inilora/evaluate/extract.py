"""Answer extraction and scoring in the paper's style (MetaMath's GSM8K evaluation).

The IniLoRA evaluation (inference/gsm8k_inference.py, docs/init-methods.md sec. 1e) takes the
text after the *last* "The answer is: ", reads the first signed number or fraction there,
evaluates fractions and rounds the prediction to an int; no match scores as wrong. The
gold answer is the text after "####" with commas removed.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

ANSWER_LEAD = "The answer is"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/-?\d[\d,]*(?:\.\d+)?)?|-?\.\d+")


def extract_answer(text: str) -> str | None:
    """The answer string after the last 'The answer is' (a colon is optional), else None."""
    if ANSWER_LEAD not in text:
        return None
    tail = text.rsplit(ANSWER_LEAD, 1)[1].lstrip(":").strip()
    return tail or None


def to_number(text: str | None) -> float | None:
    """First signed number or fraction in ``text`` as a float (commas dropped), else None."""
    if text is None:
        return None
    m = _NUMBER.search(text)
    if not m:
        return None
    token = m.group(0).replace(",", "")
    try:
        if "/" in token:
            num, den = token.split("/")
            return float(Fraction(num) / Fraction(den)) if float(den) != 0 else None
        return float(token)
    except (ValueError, ZeroDivisionError):
        return None


def numeric_correct(answer: str | None, gold: str) -> bool:
    """Paper rule: the extracted answer, rounded to an int, equals the gold number (or is within 1e-4 relative)."""
    pred = to_number(answer)
    gold_value = to_number(gold)
    if pred is None or gold_value is None:
        return False
    return round(pred) == gold_value or math.isclose(pred, gold_value, rel_tol=1e-4)
