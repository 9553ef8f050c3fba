"""ringkv.core.conditions (If-None-Match / If-Match) and ringkv.core.expiry (TTL rules)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringkv.core.conditions import (
    Condition,
    MalformedCondition,
    judge,
    parse_condition,
    same_clock,
)
from ringkv.core.expiry import (
    MAX_TTL_SECONDS,
    dead_since,
    expires_at,
    is_expired,
    is_live,
    live_versions,
    parse_ttl,
    purgeable,
    remaining_ms,
)
from ringkv.core.versions import (
    HLC_LOGICAL_BITS,
    VClock,
    Version,
    context_of,
    decode_record,
    encode_context,
    encode_record,
    merge_siblings,
    new_version,
    version_from_wire,
    version_to_wire,
)

EMPTY = VClock.empty()
NOW = 1_000_000
SKEW_MS = 5000  # the skew the rules are given (a node's --max-clock-skew)


def ts(wall_ms: int) -> int:
    return wall_ms << HLC_LOGICAL_BITS


def write(
    current: tuple[Version, ...], context: VClock, actor: str, value: bytes | None,
    wall: int = NOW, expires: int = 0,
) -> tuple[Version, ...]:  # fmt: skip
    version = new_version(current, context, actor, value, ts(wall), expires=expires)
    return merge_siblings(current, [version])


# --- parsing -----------------------------------------------------------------------------------


def test_parse_conditions() -> None:
    assert parse_condition(None, None) is None
    assert parse_condition("*", None) == Condition("absent")
    assert parse_condition(" * ", None) == Condition("absent")
    assert parse_condition(None, "*") == Condition("replace")
    assert parse_condition(None, '"*"') == Condition("replace")
    clock = VClock({"a": (3, 7)})
    token = encode_context(clock)
    assert parse_condition(None, token) == Condition("matches", clock)
    assert parse_condition(None, f'"{token}"') == Condition("matches", clock)  # as an ETag


@pytest.mark.parametrize(
    ("none_match", "match"),
    [("*", "*"), ("abc", None), ('"etag"', None), (None, ""), (None, '""'), (None, "!!!")],
)
def test_malformed_conditions(none_match: str | None, match: str | None) -> None:
    with pytest.raises(MalformedCondition):
        parse_condition(none_match, match)


# --- judging -----------------------------------------------------------------------------------


def test_if_none_match_passes_only_without_a_live_value() -> None:
    assert judge(Condition("absent"), (), NOW) == EMPTY
    record = write((), EMPTY, "a", b"v")
    assert judge(Condition("absent"), record, NOW) is None
    deleted = write(record, context_of(record), "a", None)
    context = judge(Condition("absent"), deleted, NOW)
    assert context is not None and same_clock(context, context_of(deleted))
    # the create supersedes the tombstone: no sibling left behind
    created = write(deleted, context, "b", b"new")
    assert [v.value for v in created] == [b"new"]


def test_if_none_match_over_an_expired_value_behaves_as_over_a_deleted_one() -> None:
    record = write((), EMPTY, "a", b"v", expires=NOW + 10)
    assert judge(Condition("absent"), record, NOW) is None
    context = judge(Condition("absent"), record, NOW + 10)
    assert context is not None
    created = write(record, context, "b", b"new", wall=NOW + 10)
    assert [v.value for v in created] == [b"new"]


def test_if_match_passes_only_for_the_version_read() -> None:
    record = write((), EMPTY, "a", b"v1")
    read = context_of(record)
    assert judge(Condition("matches", read), record, NOW) == read
    newer = write(record, read, "b", b"v2")
    assert judge(Condition("matches", read), newer, NOW) is None
    sibling = write(record, EMPTY, "c", b"concurrent")
    assert judge(Condition("matches", read), sibling, NOW) is None
    assert judge(Condition("matches", read), (), NOW) is None  # gone (purged) since


def test_if_match_ignores_clock_timestamps() -> None:
    a, b = VClock({"a": (2, 5)}), VClock({"a": (2, 9), "b": (0, 1)})
    assert same_clock(a, b)
    assert not same_clock(a, VClock({"a": (3, 5)}))


def test_replace_covers_every_version_seen() -> None:
    record: tuple[Version, ...] = ()
    for i in range(5):
        record = write(record, EMPTY, f"n{i}", b"blind %d" % i)
    assert len(record) == 5
    context = judge(Condition("replace"), record, NOW)
    assert context is not None
    replaced = write(record, context, "n0", b"only")
    assert [v.value for v in replaced] == [b"only"]


@st.composite
def records(draw: st.DrawFn) -> tuple[Version, ...]:
    record: tuple[Version, ...] = ()
    for _ in range(draw(st.integers(0, 6))):
        known = draw(st.booleans())
        value = draw(st.sampled_from([b"x", b"y", None]))
        expires = draw(st.sampled_from([0, NOW - 5, NOW + 5]))
        actor = draw(st.sampled_from(["a", "b", "c"]))
        record = write(record, context_of(record) if known else EMPTY, actor, value,
                       expires=expires if value is not None else 0)  # fmt: skip
    return record


@given(records(), st.sampled_from(["absent", "replace"]))
def test_a_passing_condition_never_loses_an_unseen_version(
    record: tuple[Version, ...], kind: str
) -> None:
    """Whatever the judgement returns covers only what was seen: a version the read did not
    see (written concurrently, elsewhere) survives the conditional write as a sibling."""
    seen = record
    context = judge(Condition(kind), seen, NOW)  # type: ignore[arg-type]
    if context is None:
        assert kind == "absent" and live_versions(seen, NOW)
        return
    unseen = new_version((), EMPTY, "zz", b"unseen", ts(NOW))
    after = write((*seen, unseen), context, "a", b"cond")
    values = [v.value for v in after]
    assert b"cond" in values and b"unseen" in values
    assert all(v.value in (b"cond", b"unseen") for v in after)  # everything seen superseded


@given(records())
def test_if_match_with_the_current_context_always_passes(record: tuple[Version, ...]) -> None:
    current = context_of(record)
    assert judge(Condition("matches", current), record, NOW) == current


# --- expiry ------------------------------------------------------------------------------------


def test_ttl_parsing() -> None:
    assert parse_ttl("0") == 0
    assert parse_ttl("60") == 60
    assert parse_ttl(str(MAX_TTL_SECONDS)) == MAX_TTL_SECONDS
    for bad in ("", "-1", "1.5", "abc", "\uff11", str(MAX_TTL_SECONDS + 1), "9" * 40):
        with pytest.raises(ValueError):
            parse_ttl(bad)


def test_expiry_judgement() -> None:
    assert expires_at(NOW, 0) == 0
    assert expires_at(NOW, 5) == NOW + 5000
    [forever] = write((), EMPTY, "a", b"v")
    [ttl] = write((), EMPTY, "a", b"v", expires=NOW + 5000)
    assert is_live(forever, 10**15) and remaining_ms(forever, NOW) is None
    assert is_live(ttl, NOW + 4999) and not is_expired(ttl, NOW + 4999)
    assert not is_live(ttl, NOW + 5000) and is_expired(ttl, NOW + 5000)
    assert remaining_ms(ttl, NOW) == 5000 and remaining_ms(ttl, NOW + 9000) == 0
    assert dead_since(forever, SKEW_MS) is None
    assert dead_since(ttl, SKEW_MS) == NOW + 5000 + SKEW_MS


def test_purgeable_records() -> None:
    expired = write((), EMPTY, "a", b"v", expires=NOW)
    horizon = NOW + SKEW_MS + 1
    assert purgeable(expired, horizon, SKEW_MS)
    assert not purgeable(expired, NOW + SKEW_MS, SKEW_MS)  # within the allowed skew
    deleted = write((), EMPTY, "a", None, wall=NOW)
    assert purgeable((*expired, *deleted), horizon, SKEW_MS)
    live = write(expired, EMPTY, "b", b"live")
    assert not purgeable(live, 10**15, SKEW_MS)
    assert not purgeable((), horizon, SKEW_MS)


def test_expiry_is_part_of_the_version_and_its_encoding() -> None:
    record = write((), EMPTY, "a", b"v", expires=NOW + 1)
    assert decode_record(encode_record(record)) == record
    [version] = record
    assert version_from_wire(version_to_wire(version)) == version
    [plain] = write((), EMPTY, "a", b"v")
    assert len(version_to_wire(plain)) == 5  # records without expiry keep their encoding
    with pytest.raises(ValueError):
        version_from_wire([*version_to_wire(plain), -1])


def test_expired_value_still_supersedes_what_it_overwrote() -> None:
    """An older value under an expired one must not come back when the expired one is read."""
    old = write((), EMPTY, "a", b"old")
    newer = write(old, context_of(old), "b", b"new", expires=NOW + 1)
    assert [v.value for v in newer] == [b"new"]
    # a replica that still has "old" merges the expired version: "old" stays superseded
    merged = merge_siblings(old, newer)
    assert live_versions(merged, NOW + 1) == []


def test_writes_cover_values_expired_beyond_the_skew() -> None:
    from ringkv.core.expiry import covering_expired

    record: tuple[Version, ...] = ()
    for i in range(3):  # blind writes, each with a TTL that has run out
        record = write(record, EMPTY, f"n{i}", b"old %d" % i, expires=NOW)
    assert len(record) == 3
    assert covering_expired(EMPTY, record, NOW + SKEW_MS - 1, SKEW_MS) == EMPTY  # within skew
    context = covering_expired(EMPTY, record, NOW + SKEW_MS, SKEW_MS)
    after = write(record, context, "n9", b"new", wall=NOW + SKEW_MS)
    assert [v.value for v in after] == [b"new"]
    live = write((), EMPTY, "a", b"live", expires=NOW * 10)
    assert covering_expired(EMPTY, live, NOW + SKEW_MS, SKEW_MS) == EMPTY  # not expired yet


def test_write_once_expired_records_are_purgeable_at_once() -> None:
    once = write((), EMPTY, "a", b"v", expires=NOW)
    dead = NOW + SKEW_MS
    assert not purgeable(once, 0, SKEW_MS)  # the grace rule alone: not yet
    assert not purgeable(once, 0, SKEW_MS, dead - 1)  # within the allowed skew
    assert purgeable(once, 0, SKEW_MS, dead)
    over = write(once, context_of(once), "b", b"w", expires=NOW)  # superseded something
    assert not purgeable(over, 0, SKEW_MS, dead * 2)
    blind_twice = write(once, EMPTY, "b", b"w", expires=NOW)  # two write-once siblings
    assert purgeable(blind_twice, 0, SKEW_MS, dead)
    mixed = write(once, EMPTY, "b", None, wall=NOW)  # a tombstone waits for the grace
    assert not purgeable(mixed, 0, SKEW_MS, dead * 2)
