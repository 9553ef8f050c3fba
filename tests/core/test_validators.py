"""Tests for ringkv.core.validators: the ETag of a version set and If-None-Match for reads."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.core.validators import (
    IfNoneMatch,
    MalformedCondition,
    digest_of_record,
    etag_of,
    has_value,
    not_modified,
    parse_if_none_match,
)
from ringkv.core.versions import (
    MalformedRecord,
    VClock,
    Version,
    context_of,
    encode_record,
    merge_siblings,
)


def version(actor: str, counter: int, value: bytes | None = b"v", **ctx: int) -> Version:
    clock = VClock({a: (c, 0) for a, c in ctx.items()})
    return Version(actor, counter, clock, value, counter)


A1 = version("a", 1, b"one")
B1_OVER_A1 = version("b", 1, b"two", a=1)
B1_BLIND = version("b", 1, b"two")
A2_TOMBSTONE = version("a", 2, None, a=1)


def test_an_etag_is_a_strong_quoted_entity_tag() -> None:
    tag = etag_of([A1])
    assert tag.startswith('"') and tag.endswith('"') and not tag.startswith("W/")
    assert parse_if_none_match(tag) == IfNoneMatch(False, frozenset({tag}))


def test_siblings_and_a_value_over_them_get_different_tags_although_their_context_is_equal() -> (
    None
):
    siblings = merge_siblings([A1], [B1_BLIND])
    assert len(siblings) == 2
    # the context alone could not tell these apart
    assert context_of(siblings) == context_of([B1_OVER_A1])
    assert etag_of(siblings) != etag_of([B1_OVER_A1])


def test_a_tombstone_an_empty_record_and_a_value_have_different_tags() -> None:
    tags = {etag_of([A1]), etag_of([A2_TOMBSTONE]), etag_of([])}
    assert len(tags) == 3
    assert not has_value([A2_TOMBSTONE]) and not has_value([]) and has_value([A1])
    # one live sibling next to a tombstone is a value
    assert has_value([A2_TOMBSTONE, B1_BLIND])


def test_the_tag_does_not_depend_on_order() -> None:
    assert etag_of([A1, B1_BLIND]) == etag_of([B1_BLIND, A1])


@pytest.mark.parametrize(
    ("header", "tags"),
    [
        ('"x"', {'"x"'}),
        ('W/"x"', {'"x"'}),
        ('"x", W/"y"', {'"x"', '"y"'}),
        (' "x" ,, "y",', {'"x"', '"y"'}),  # empty list elements are allowed (RFC 9110 §5.6.1)
        ('"a,b"', {'"a,b"'}),  # a comma inside an opaque tag
        ('""', {'""'}),
        ('"x"\t,\t"y"', {'"x"', '"y"'}),
    ],
)
def test_entity_tag_lists_parse(header: str, tags: set[str]) -> None:
    assert parse_if_none_match(header) == IfNoneMatch(False, frozenset(tags))


def test_star_parses_as_any() -> None:
    assert parse_if_none_match(" * ").any


@pytest.mark.parametrize(
    "header",
    ["", "x", '"x', 'w/"x"', '"x" "y"', '"x";', '*, "x"', '"a"b"', '"\x7f"', ",", '"\x01"'],
)
def test_malformed_conditions_are_refused(header: str) -> None:
    with pytest.raises(MalformedCondition):
        parse_if_none_match(header)


def test_an_oversized_condition_is_refused() -> None:
    with pytest.raises(MalformedCondition, match="too long"):
        parse_if_none_match(", ".join(['"abcdefgh"'] * 2000))


def test_not_modified_uses_weak_comparison_and_star() -> None:
    tag = etag_of([A1])
    assert not_modified(parse_if_none_match(tag), tag, True)
    assert not_modified(parse_if_none_match("W/" + tag), tag, True)
    assert not_modified(parse_if_none_match(f'"other", {tag}'), tag, True)
    assert not_modified(parse_if_none_match("*"), tag, True)
    assert not not_modified(parse_if_none_match('"other"'), tag, True)
    assert not not_modified(None, tag, True)


def test_an_absent_or_deleted_key_is_never_not_modified() -> None:
    """RFC 9110 §13.2.1: a 404 ignores preconditions, so a tombstone's own tag or * give 404."""
    tag = etag_of([A2_TOMBSTONE])
    assert not not_modified(parse_if_none_match(tag), tag, has_value([A2_TOMBSTONE]))
    assert not not_modified(parse_if_none_match("*"), etag_of([]), False)


# -- properties -------------------------------------------------------------------------------

actors = st.sampled_from(["a", "b", "c"])
versions = st.builds(
    lambda actor, counter, value, ctx: Version(
        actor, counter, VClock({a: (c, 0) for a, c in ctx.items()}), value, counter
    ),
    actors,
    st.integers(1, 6),
    st.none() | st.binary(max_size=4),
    st.dictionaries(actors, st.integers(1, 6), max_size=3),
)
version_sets = st.lists(versions, max_size=5).map(lambda vs: merge_siblings((), vs))


@settings(max_examples=200, deadline=None)
@given(version_sets, version_sets)
def test_tags_are_equal_exactly_when_the_dot_sets_are(
    x: tuple[Version, ...], y: tuple[Version, ...]
) -> None:
    same_dots = {v.dot for v in x} == {v.dot for v in y}
    assert (etag_of(x) == etag_of(y)) == same_dots


@settings(max_examples=200, deadline=None)
@given(version_sets, versions)
def test_any_write_merged_in_changes_the_tag_or_was_already_covered(
    current: tuple[Version, ...], write: Version
) -> None:
    merged = merge_siblings(current, [write])
    if etag_of(merged) == etag_of(current):
        assert {v.dot for v in merged} == {v.dot for v in current}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="abcXYZ09-_,W/!", max_size=8), max_size=5), st.booleans())
def test_a_list_of_tags_matches_each_of_its_members(raw: list[str], weak: bool) -> None:
    tags = ['"' + t.replace('"', "") + '"' for t in raw]
    if not tags:
        return
    header = ", ".join(("W/" if weak else "") + t for t in tags)
    condition = parse_if_none_match(header)
    for tag in tags:
        assert not_modified(condition, tag, True)
        assert not_modified(condition, "W/" + tag, True)
    other = '"not-one-of-them~"'  # ~ is not in the alphabet above
    assert not not_modified(condition, other, True)


@settings(max_examples=200, deadline=None)
@given(version_sets)
def test_the_digest_of_an_encoded_record_is_its_tag_and_whether_it_has_a_value(
    vs: tuple[Version, ...],
) -> None:
    record = encode_record(vs) if vs else b""
    assert digest_of_record(record) == (etag_of(vs), has_value(vs))


@pytest.mark.parametrize("record", [b"\xc1", b"\x93\x01", b"\x91\x92\xa1a\x01", b"\x01"])
def test_an_undecodable_record_has_no_digest(record: bytes) -> None:
    with pytest.raises(MalformedRecord):
        digest_of_record(record)


def _expiring(actor: str, counter: int, expires: int, value: bytes | None = b"v") -> Version:
    return Version(actor, counter, VClock({}), value, counter, expires)


def test_a_value_that_expires_changes_its_tag_and_stops_being_a_value_at_its_expiry() -> None:
    v = _expiring("a", 1, expires=5_000)
    before, after = etag_of([v], 4_999), etag_of([v], 5_000)
    assert before != after
    assert has_value([v], 4_999) and not has_value([v], 5_000)
    # a revalidation of the live version after its expiry is not a 304
    assert not not_modified(parse_if_none_match(before), after, has_value([v], 5_000))
    # one sibling expiring changes the representation (300 -> 200): the tag changes too
    live = _expiring("b", 1, expires=0)
    assert etag_of([v, live], 4_999) != etag_of([v, live], 5_000)
    assert has_value([v, live], 5_000)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(1, 5), st.integers(0, 10), st.booleans()),
        min_size=1,
        max_size=4,
        unique_by=lambda t: (t[0], t[1]),
    ),
    st.integers(0, 12),
)
def test_the_digest_of_a_record_judges_expiry_as_the_versions_do(
    specs: list[tuple[str, int, int, bool]], now_ms: int
) -> None:
    vs = tuple(_expiring(a, c, e, b"x" if live else None) for a, c, e, live in specs)
    record = encode_record(vs)
    assert digest_of_record(record, now_ms) == (etag_of(vs, now_ms), has_value(vs, now_ms))
