"""Plain data across the sandbox wall: call arguments in, return values out, as tagged JSON.

Scalars (None, bool, int, float, str) travel as JSON scalars; every container is a JSON array
whose first element names its type, so a decoded value has exactly the built-in types the
candidate returned (a tuple stays a tuple, 1.0 stays a float, dict keys keep their types):
``["L", items]`` list, ``["T", items]`` tuple, ``["S", items]`` set, ``["F", items]`` frozenset,
``["D", [[k, v], ...]]`` dict, ``["B", hex]`` bytes, ``["C", re, im]`` complex.

Anything else cannot cross: no pickle, no objects with their own ``__eq__``. The harness
decodes with :func:`decode`, which builds only built-in values, so a return value cannot
carry code into the process that decides the verdict. It also refuses values that would make
the harness itself slow: more than ``WIRE_LIMITS["items"]`` items, nesting deeper than
``"depth"``, or more than ``"collisions"`` distinct values sharing one hash (a set of integers
2**61 - 1 apart costs quadratic time to build, and again in every set the test makes of it).

This file's source is also sent into the sandbox as the start of the child code, child.py (so it must
stay free of imports beyond json and of ``from __future__``).
"""

import json

WIRE_LIMITS = {"depth": 64, "items": 200_000, "collisions": 16}
_SEQUENCES = {"L": list, "T": tuple, "S": set, "F": frozenset}


class WireError(ValueError):
    """A value that cannot cross the wall, or a reply that is not well-formed."""


def encode(value, depth=0):
    """``value`` as tagged JSON data; WireError for types that cannot cross."""
    if depth > WIRE_LIMITS["depth"]:
        raise WireError("value nested deeper than %d levels" % WIRE_LIMITS["depth"])
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray)):
        return ["B", bytes(value).hex()]
    if isinstance(value, complex):
        return ["C", value.real, value.imag]
    if isinstance(value, dict):
        return ["D", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]]
    for tag, kind in (("L", list), ("T", tuple), ("F", frozenset), ("S", set)):
        if isinstance(value, kind):
            return [tag, [encode(v, depth + 1) for v in value]]
    raise WireError("a %s cannot cross the sandbox (allowed: None, bool, int, float, complex, str, bytes, "
                    "and lists, tuples, sets, frozensets and dicts of them)" % type(value).__name__)


def dumps(value):
    return json.dumps(encode(value), separators=(",", ":")).encode("utf-8")


def decode(data, depth=0, budget=None):
    """The built-in value that tagged JSON ``data`` describes; WireError if it is malformed or degenerate."""
    budget = budget if budget is not None else {"items": WIRE_LIMITS["items"], "hashes": {}}
    budget["items"] -= 1
    if depth > WIRE_LIMITS["depth"] or budget["items"] < 0:
        raise WireError("reply nested deeper than %d levels or with more than %d items"
                        % (WIRE_LIMITS["depth"], WIRE_LIMITS["items"]))
    if data is None or type(data) in (bool, int, float, str):
        return _distinct_hash(data, budget)
    if type(data) is not list or not data or data[0] not in ("L", "T", "S", "F", "D", "B", "C"):
        raise WireError("malformed value %.80r" % (data,))
    tag = data[0]
    try:
        if tag == "B":
            return _distinct_hash(bytes.fromhex(data[1]), budget)
        if tag == "C":
            return complex(float(data[1]), float(data[2]))
        items = data[1]
        if type(items) is not list:
            raise WireError("malformed %s" % tag)
        if tag == "D":
            return {decode(k, depth + 1, budget): decode(v, depth + 1, budget) for k, v in items}
        value = _SEQUENCES[tag](decode(v, depth + 1, budget) for v in items)
        return _distinct_hash(value, budget) if tag in ("T", "F") else value
    except (TypeError, ValueError, IndexError, OverflowError) as err:  # unhashable keys, bad hex, huge ints
        raise WireError("malformed %s value: %s" % (tag, err)) from None


def _distinct_hash(value, budget):
    """``value``, after counting it among the distinct values that share its hash (at most a few may)."""
    try:
        same = budget["hashes"].setdefault(hash(value), [])
    except TypeError:  # a tuple holding a list: never a set element or dict key
        return value
    if not any(type(v) is type(value) and v == value for v in same):
        same.append(value)
        if len(same) > WIRE_LIMITS["collisions"]:
            raise WireError("more than %d distinct values share one hash" % WIRE_LIMITS["collisions"])
    return value


def loads(raw):
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError, OverflowError) as err:
        raise WireError("reply is not JSON: %s" % err) from None
    return decode(data)
