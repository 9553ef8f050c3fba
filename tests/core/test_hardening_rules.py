"""The pure rules behind the hardening: clock bounds, depth-limited JSON, absence."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringkv.core.absence import alive_interval, away_too_long
from ringkv.core.clock_bounds import ClockSkew, check_clock, check_versions, hlc_limit
from ringkv.core.json_input import JsonInputError, nesting_depth, parse_json
from ringkv.core.versions import HLC_LOGICAL_BITS, VClock, Version, hlc_now

WALL = 1_700_000_000_000
SKEW = 5_000


def test_a_clock_within_the_skew_passes_and_one_beyond_is_refused() -> None:
    check_clock(VClock({"a": (WALL << 16, WALL + SKEW)}), WALL, SKEW)
    with pytest.raises(ClockSkew, match="ahead"):
        check_clock(VClock({"a": (1, WALL + SKEW + 1)}), WALL, SKEW)
    with pytest.raises(ClockSkew, match="counter"):
        check_clock(VClock({"a": (hlc_limit(WALL, SKEW) + 1, 1)}), WALL, SKEW)
    # the two forged contexts of the report
    with pytest.raises(ClockSkew):
        check_clock(VClock({"x": (1, 2**63 - 1)}), WALL, SKEW)
    with pytest.raises(ClockSkew):
        check_clock(VClock({"x": (1, 2**47)}), WALL, SKEW)


@given(st.integers(0, 10**6), st.integers(0, 2**16 - 1))
def test_every_clock_a_node_makes_passes_at_any_later_time(elapsed: int, logical: int) -> None:
    """What hlc_now produces at wall time t passes the check at any time >= t."""
    timestamp = hlc_now((WALL << HLC_LOGICAL_BITS) + logical, WALL)
    version = Version("n1#1", timestamp, VClock({"n2#1": (timestamp - 1, WALL)}), b"v", timestamp)
    check_versions([version], WALL + elapsed, SKEW)
    check_clock(version.clock(), WALL + elapsed, SKEW)


def test_a_peer_version_from_the_future_is_refused() -> None:
    future = (WALL + SKEW + 1) << HLC_LOGICAL_BITS
    with pytest.raises(ClockSkew, match="timestamped"):
        check_versions([Version("n2#1", 5, VClock({}), b"v", future)], WALL, SKEW)
    bad_context = Version("n2#1", 5, VClock({"x": (1, WALL + 10 * SKEW)}), b"v", 5)
    with pytest.raises(ClockSkew, match="context"):
        check_versions([bad_context], WALL, SKEW)


def test_json_deeper_than_the_limit_is_refused_before_parsing() -> None:
    with pytest.raises(JsonInputError, match="deeper"):
        parse_json(b"[" * 5000)
    with pytest.raises(JsonInputError, match="deeper"):
        parse_json(b'{"a":' * 40 + b"1" + b"}" * 40)
    assert parse_json(b'{"a": "' + b"[" * 40 + b'"}') == {"a": "[" * 40}  # inside a string
    with pytest.raises(JsonInputError, match="valid"):
        parse_json(b'{"a": ')
    with pytest.raises(JsonInputError, match="UTF-8"):
        parse_json(b"\xff")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(json_values)
def test_nesting_depth_is_exact_for_valid_json(value: object) -> None:
    def depth(v: object) -> int:
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    text = json.dumps(value)
    assert nesting_depth(text) == depth(value)
    if depth(value) <= 32:
        assert parse_json(text) == value


@given(st.binary(max_size=200))
def test_parse_json_refuses_anything_only_with_its_error(data: bytes) -> None:
    with contextlib.suppress(JsonInputError):
        parse_json(data)


def test_absence_refuses_only_when_the_cluster_ran_on() -> None:
    grace = 100.0
    now = WALL
    assert away_too_long(None, now, grace, [1e9]) is None  # a new node
    assert away_too_long(now - 50_000, now, grace, [1e9]) is None  # within the grace
    away = now - 200_000
    why = away_too_long(away, now, grace, [10.0, 250.0])
    assert why is not None and "--tombstone-grace" in why
    assert away_too_long(away, now, grace, [10.0, 150.0]) is None  # no peer ran all along
    assert away_too_long(away, now, grace, []) is None  # nobody answered
    assert alive_interval(1.0) >= 0.2 and alive_interval(86400 * 10) == 60.0
