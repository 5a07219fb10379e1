"""MATH answer extraction and the Hendrycks answer equivalence.

The IniLoRA MATH evaluation (inference/MATH_inference.py, which follows MetaMath's
eval_math.py) scores a generation like this:

- prediction: the text after the *last* "The answer is: " (colon and space included), cut
  at the first ".\\n", stripped, with one trailing "." removed (:func:`extract_prediction`);
- gold: the content of the last ``\\boxed{...}`` of the reference solution
  (:func:`inilora.data.mathsets.gold_from_solution`);
- correct: ``is_equiv(prediction, gold)``, the string normalisation of the MATH benchmark
  (Hendrycks et al. 2021, "Measuring Mathematical Problem Solving With the MATH Dataset",
  ``math_equivalence.py``; :func:`strip_string`, :func:`is_equiv`).

Deviations from that code, all small and deliberate:

- :func:`extract_prediction` falls back to the last ``\\boxed{...}`` of the generation when
  there is no "The answer is: " (``boxed_fallback=True``, the default; the issue asks for
  "the last 'The answer is:' or \\boxed{}"). The paper's script scores such generations
  as wrong; pass ``boxed_fallback=False`` to reproduce it exactly.
- :func:`last_boxed` takes whichever of ``\\boxed`` / ``\\fbox`` comes last (the original
  looks for ``\\fbox`` only when there is no ``\\boxed`` at all) and also reads the
  brace-less ``\\boxed 5`` form (as lm-evaluation-harness does).
- Where the original raised AssertionError/IndexError on malformed LaTeX (two ``\\text{ ``
  units, a bare trailing ``\\frac``), :func:`strip_string` raises ValueError; :func:`is_equiv`
  then falls back to comparing the raw strings, as the original's bare ``except`` did.
"""

from __future__ import annotations

import re

# ANSWER_LEAD is "The answer is: ", with colon and space, exactly as eval_math.py splits; the boxed
# helpers also read the gold answers of MATH's solutions, so they live with its loader
from inilora.data.examples import ANSWER_LEAD
from inilora.data.mathsets import last_boxed, remove_boxed


def extract_prediction(generation: str, boxed_fallback: bool = True) -> str | None:
    """The model's answer in ``generation``, as the paper's MATH evaluation reads it.

    After the last "The answer is: ": cut at the first ".\\n", strip, drop one trailing ".",
    strip again (may be "" when the model wrote nothing after it; that scores as wrong).
    Without it: the content of the last boxed expression if ``boxed_fallback`` (our addition),
    else None.
    """
    if ANSWER_LEAD in generation:
        tail = generation.rsplit(ANSWER_LEAD, 1)[1].split(".\n", 1)[0].strip()
        return tail[:-1].strip() if tail.endswith(".") else tail
    if boxed_fallback:
        boxed = last_boxed(generation)
        return remove_boxed(boxed) if boxed is not None else None
    return None


# --- the Hendrycks MATH normalisation ---------------------------------------------------

def _fix_fracs(s: str) -> str:
    """Brace shorthand fraction arguments: ``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{72}`` -> ``\\frac{1}{72}``.

    Only single-character arguments are braced (``\\frac{72}1`` stays), as in the original.
    """
    head, *pieces = s.split("\\frac")
    out = [head]
    for piece in pieces:
        if piece.startswith("{"):
            out.append("\\frac" + piece)
        elif len(piece) < 2:
            if not piece:  # the original indexed piece[0] here and fell into is_equiv's except
                raise ValueError(f"\\frac without arguments in {s!r}")
            return s  # "\frac1" at the very end: the original gave up and kept the input
        elif piece[1] == "{":
            out.append("\\frac{" + piece[0] + "}" + piece[1:])
        else:
            out.append("\\frac{" + piece[0] + "}{" + piece[1] + "}" + piece[2:])
    return "".join(out)


def _fix_a_slash_b(s: str) -> str:
    """``3/4`` -> ``\\frac{3}{4}``, only for two plain integers written canonically (no "03", no "+3")."""
    parts = s.split("/")
    if len(parts) != 2 or not all(re.fullmatch(r"-?\d+", p) and str(int(p)) == p for p in parts):
        return s
    return "\\frac{" + parts[0] + "}{" + parts[1] + "}"


def _remove_right_units(s: str) -> str:
    """Drop everything from ``\\text{ `` on: in MATH it only introduces units (``5\\text{ cm}``)."""
    if "\\text{ " not in s:
        return s
    parts = s.split("\\text{ ")
    if len(parts) != 2:  # the original asserted exactly one unit
        raise ValueError(f"more than one '\\text{{ ' unit in {s!r}")
    return parts[0]


def _fix_sqrt(s: str) -> str:
    """Brace a one-character square-root argument: ``\\sqrt3`` -> ``\\sqrt{3}``.

    Only one character, as in the original: ``\\sqrt32`` -> ``\\sqrt{3}2``.
    """
    head, *pieces = s.split("\\sqrt")
    if "" in pieces:  # the original indexed an empty piece here and fell into is_equiv's except
        raise ValueError(f"\\sqrt without an argument in {s!r}")
    return head + "".join("\\sqrt" + (p if p[0] == "{" else "{" + p[0] + "}" + p[1:]) for p in pieces)


def strip_string(s: str) -> str:
    """The Hendrycks MATH normal form of an answer string (Hendrycks et al. 2021, ``_strip_string``).

    The steps run in the original order, which matters (units go before spaces, "x=" before
    fractions). Known quirks kept on purpose: only the escaped ``\\$`` and ``\\%`` are removed,
    so ``10%`` does not equal ``10``; ``-3/4`` becomes ``\\frac{-3}{4}``, not ``-\\frac{3}{4}``.
    Raises ValueError on the malformed input the original raised on (see the module docstring).
    """
    s = s.replace("\n", "")
    s = s.replace("\\!", "")  # inverse thin space
    s = s.replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")  # degrees
    s = s.replace("\\$", "")
    s = _remove_right_units(s)
    s = s.replace("\\%", "")
    # ".5" and "0.5" are the same number, whether at the start, after a space or after "{"
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    # a short left-hand side ("x=", "k = ") names the unknown; the value is the answer
    lhs, *rhs = s.split("=")
    if len(rhs) == 1 and len(lhs) <= 2:
        s = rhs[0]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":  # the one decimal the original special-cases
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


def is_equiv(a: str | None, b: str | None) -> bool:
    """True when two MATH answers have the same :func:`strip_string` normal form.

    As in the original, two Nones are equivalent (our evaluator never passes a None gold, so
    this cannot score a missing prediction as correct) and one None is not. When
    normalisation fails on malformed input, the raw strings are compared instead.
    """
    if a is None or b is None:
        return a is None and b is None
    try:
        return strip_string(a) == strip_string(b)
    except ValueError:
        return a == b
