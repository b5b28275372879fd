"""The coordinator's rule for JSON numbers, for code that parses JSON text
before the coordinator sees it (the ASGI middleware).

Canonical JSON (RFC 8785) holds a number as the nearest IEEE 754 double,
written in the shortest form that reads back as that double, so
`1234567890123456789` and `1234567890123456788` would both become
`1234567890123456800` and share a fingerprint. The coordinator therefore
refuses a number unless its canonical form is the same decimal number: `1`,
`1.0` and `1e0` are one number and pass, as do `0.1`, `9007199254740992` and
`1e21`; `1234567890123456789` and `0.10000000000000000001` are refused. The
vectors in testdata/fingerprints.json hold every implementation to it.

What this module can see: the literal, through `json.loads`' number hooks.
`Coordinator.run(json_payload=...)` needs no check here: `json.dumps` writes
an int exactly (so the coordinator refuses a large one, naming it) and a
float in its shortest form (so it passes, being a double already).
"""

import json
import math
from decimal import Decimal
from typing import Optional


class _Inexact:
    """Stands in for a number that canonical JSON would change."""


_INEXACT = _Inexact()


def keeps_its_value(literal: str) -> bool:
    """True if canonical JSON writes the number `literal` as the same number."""
    value = float(literal)  # correctly rounded, as every JSON parser's double
    # repr is the shortest form that reads back as the double, as in
    # ECMAScript; Decimal compares by value, so 1e+21 equals 1000000000000000000000.
    return math.isfinite(value) and Decimal(literal) == Decimal(repr(value))


def _int(literal: str):
    return int(literal) if keeps_its_value(literal) else _INEXACT


def _float(literal: str):
    return float(literal) if keeps_its_value(literal) else _INEXACT


def loads(text) -> tuple:
    """(parsed, pointer): `text` parsed as `json.loads` does, and the JSON
    Pointer of the first number, in document order, that canonical JSON would
    change (None if there is none; then `parsed` holds every number as sent).
    Raises ValueError as `json.loads` does."""
    parsed = json.loads(text, parse_int=_int, parse_float=_float)
    return parsed, _first_inexact(parsed, "")


def first_inexact_number(text) -> Optional[str]:
    """The JSON Pointer of the first number in `text` that canonical JSON
    would change, or None."""
    return loads(text)[1]


def _first_inexact(value, pointer: str) -> Optional[str]:
    # A stack, not recursion: the document may be as deep as json.loads allows.
    stack = [(pointer, value)]
    while stack:
        pointer, value = stack.pop()
        if value is _INEXACT:
            return pointer
        if isinstance(value, dict):
            children = [(name.replace("~", "~0").replace("/", "~1"), child) for name, child in value.items()]
        elif isinstance(value, list):
            children = [(str(index), child) for index, child in enumerate(value)]
        else:
            continue
        stack.extend((f"{pointer}/{token}", child) for token, child in reversed(children))
    return None
