"""JSON input: the one parser for JSON that comes from outside (admin bodies, tokens files,
answers a client reads).

``json.loads`` recurses once per nesting level, so a few kilobytes of ``[`` exhaust the stack
(``RecursionError``, an answer 500 where a 400 is due). ``parse_json`` measures the nesting
first, with a loop rather than recursion, and refuses anything deeper than ``MAX_DEPTH``; every
failure is a ``JsonInputError`` (a ``ValueError``) with a reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: No document ringkv reads nests deeper than a few levels.
MAX_DEPTH = 32

# Possessive: a long string (a base64 value) is skipped in one step, without backtracking.
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class JsonInputError(ValueError):
    """Not acceptable JSON: undecodable, invalid, or nested too deep."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (brackets inside strings do not
    count; in an invalid document the figure may be too high, never too low)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_json(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Decode a JSON document from outside; ``JsonInputError`` for anything unacceptable."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    except UnicodeDecodeError:
        raise JsonInputError("not UTF-8 text") from None
    if nesting_depth(text) > max_depth:
        raise JsonInputError(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except RecursionError:  # unreachable after the depth check; kept as a last guard
        raise JsonInputError(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line is not None else ""
        raise JsonInputError(f"not valid JSON{where}") from None
