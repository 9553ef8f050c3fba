"""Quorum rules: how many of the N replicas must answer a read (R) or acknowledge a write (W).

A request names its level either directly (``r=``/``w=``: ``one``, ``quorum`` = N/2+1, ``all`` or
an integer 1..N) or through a consistency preset that sets both (``strong``: W=N, R=1;
``balanced``: W=quorum, R=quorum, the default; ``eventual``: W=1, R=1), as in the seed design.
``strong`` requests, and any request with ``strict=true``, count only primary replicas;
others may count sloppy-quorum fallbacks (hinted handoff).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Operation = Literal["read", "write"]

PRESETS: dict[str, tuple[str, str]] = {
    # name: (read level, write level)
    "strong": ("one", "all"),
    "balanced": ("quorum", "quorum"),
    "eventual": ("one", "one"),
}
DEFAULT_CONSISTENCY = "balanced"
LEVEL_NAMES = ("one", "quorum", "all")


class QuorumError(ValueError):
    """An invalid r/w/consistency/strict combination; the message is fit for a client."""


@dataclass(frozen=True, slots=True)
class Quorum:
    """The resolved requirement for one request."""

    n: int
    required: int
    strict: bool = False

    def met(self, acks: int) -> bool:
        return acks >= self.required

    def to_wire(self) -> list[Any]:
        """As a forwarded request carries it: the receiver uses it as it is."""
        return [self.n, self.required, self.strict]

    @classmethod
    def from_wire(cls, raw: Any) -> Quorum:
        """A quorum from a peer; ``QuorumError`` unless it is ``[n, required, strict]`` with
        1 <= required <= n."""
        if not isinstance(raw, (list, tuple)) or len(raw) != 3:
            raise QuorumError("a quorum is [n, required, strict]")
        n, required, strict = raw
        if type(n) is not int or type(required) is not int or type(strict) is not bool:
            raise QuorumError("a quorum is [n, required, strict]")
        if not 1 <= required <= n:
            raise QuorumError(f"required={required} is out of range 1..{n}")
        return cls(n, required, strict)


def majority(n: int) -> int:
    return n // 2 + 1


def level_count(level: str, n: int, param: str = "level") -> int:
    """Turn ``one``/``quorum``/``all``/``1..N`` into a replica count."""
    value = level.strip().lower()
    if value == "one":
        return 1
    if value == "quorum":
        return majority(n)
    if value == "all":
        return n
    if value.isascii() and value.isdigit():
        count = int(value) if len(value) <= 6 else n + 1  # no giant int() on hostile input
        if 1 <= count <= n:
            return count
        raise QuorumError(f"{param}={level} is out of range: must be between 1 and N={n}")
    raise QuorumError(f"{param}={level!r} is not one of one, quorum, all or an integer 1..{n}")


def parse_bool(value: str | None, param: str) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise QuorumError(f"{param}={value!r} must be true or false")


def resolve(
    op: Operation,
    n: int,
    level: str | None = None,
    consistency: str | None = None,
    strict: str | None = None,
    default_consistency: str = DEFAULT_CONSISTENCY,
) -> Quorum:
    """Resolve a request's parameters into a ``Quorum``; raises ``QuorumError`` when invalid.

    ``level`` is the ``r=`` value for reads and the ``w=`` value for writes. Giving both a level
    and a preset is ambiguous and refused, as is ``strict=false`` with the ``strong`` preset.
    """
    if n < 1:
        raise QuorumError("replication factor must be at least 1")
    param = "r" if op == "read" else "w"
    strict_flag = parse_bool(strict, "strict")
    if level is not None and consistency is not None:
        raise QuorumError(f"give either {param}= or consistency=, not both")
    if level is not None:
        return Quorum(n, level_count(level, n, param), bool(strict_flag))
    preset = (consistency if consistency is not None else default_consistency).strip().lower()
    if preset not in PRESETS:
        raise QuorumError(f"consistency={preset!r} is not one of {', '.join(sorted(PRESETS))}")
    read_level, write_level = PRESETS[preset]
    if preset == "strong":
        if strict_flag is False:
            raise QuorumError("consistency=strong is always strict; strict=false contradicts it")
        strict_flag = True
    chosen = read_level if op == "read" else write_level
    return Quorum(n, level_count(chosen, n, param), bool(strict_flag))
