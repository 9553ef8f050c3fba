"""Tests for ringkv.core.validators: the ETag of a version set and If-None-Match for reads."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.core.conditions import MalformedCondition
from ringkv.core.expiry import is_live
from ringkv.core.validators import (
    IfNoneMatch,
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


NOW = 1_000_000

A1 = version("a", 1, b"one")
B1_OVER_A1 = version("b", 1, b"two", a=1)
B1_BLIND = version("b", 1, b"two")
A2_TOMBSTONE = version("a", 2, None, a=1)


def test_an_etag_is_a_strong_quoted_entity_tag() -> None:
    tag = etag_of([A1], NOW)
    assert tag.startswith('"') and tag.endswith('"') and not tag.startswith("W/")
    assert parse_if_none_match(tag) == IfNoneMatch(False, frozenset({tag}))


def test_siblings_and_a_value_over_them_get_different_tags_although_their_context_is_equal() -> (
    None
):
    siblings = merge_siblings([A1], [B1_BLIND])
    assert len(siblings) == 2
    # the context alone could not tell these apart
    assert context_of(siblings) == context_of([B1_OVER_A1])
    assert etag_of(siblings, NOW) != etag_of([B1_OVER_A1], NOW)


def test_a_tombstone_an_empty_record_and_a_value_have_different_tags() -> None:
    tags = {etag_of([A1], NOW), etag_of([A2_TOMBSTONE], NOW), etag_of([], NOW)}
    assert len(tags) == 3
    assert not has_value([A2_TOMBSTONE], NOW) and not has_value([], NOW) and has_value([A1], NOW)
    # one live sibling next to a tombstone is a value
    assert has_value([A2_TOMBSTONE, B1_BLIND], NOW)


def test_the_tag_does_not_depend_on_order() -> None:
    assert etag_of([A1, B1_BLIND], NOW) == etag_of([B1_BLIND, A1], NOW)


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
    tag = etag_of([A1], NOW)
    assert not_modified(parse_if_none_match(tag), tag, True)
    assert not_modified(parse_if_none_match("W/" + tag), tag, True)
    assert not_modified(parse_if_none_match(f'"other", {tag}'), tag, True)
    assert not_modified(parse_if_none_match("*"), tag, True)
    assert not not_modified(parse_if_none_match('"other"'), tag, True)
    assert not not_modified(None, tag, True)


def test_an_absent_or_deleted_key_is_never_not_modified() -> None:
    """RFC 9110 §13.2.1: a 404 ignores preconditions, so a tombstone's own tag or * give 404."""
    tag = etag_of([A2_TOMBSTONE], NOW)
    assert not not_modified(parse_if_none_match(tag), tag, has_value([A2_TOMBSTONE], NOW))
    assert not not_modified(parse_if_none_match("*"), etag_of([], NOW), False)


# -- properties -------------------------------------------------------------------------------

actors = st.sampled_from(["a", "b", "c"])
versions = st.builds(
    lambda actor, counter, value, ctx, expires: Version(
        actor, counter, VClock({a: (c, 0) for a, c in ctx.items()}), value, counter, expires
    ),
    actors,
    st.integers(1, 6),
    st.none() | st.binary(max_size=4),
    st.dictionaries(actors, st.integers(1, 6), max_size=3),
    st.sampled_from([0, 0, NOW - 1, NOW, NOW + 1]),
)
version_sets = st.lists(versions, max_size=5).map(lambda vs: merge_siblings((), vs))


@settings(max_examples=200, deadline=None)
@given(version_sets, version_sets)
def test_tags_are_equal_exactly_when_the_dots_and_their_liveness_are(
    x: tuple[Version, ...], y: tuple[Version, ...]
) -> None:
    def marks(vs: tuple[Version, ...]) -> tuple[set[tuple[str, int, bool]], bool]:
        live = {(v.actor, v.counter, is_live(v, NOW)) for v in vs}
        return live, any(is_live(v, NOW) and v.expires for v in vs)

    assert (etag_of(x, NOW) == etag_of(y, NOW)) == (marks(x) == marks(y))


@settings(max_examples=200, deadline=None)
@given(version_sets, versions)
def test_any_write_merged_in_changes_the_tag_or_was_already_covered(
    current: tuple[Version, ...], write: Version
) -> None:
    merged = merge_siblings(current, [write])
    if etag_of(merged, NOW) == etag_of(current, NOW):
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
    assert digest_of_record(record, NOW) == (etag_of(vs, NOW), has_value(vs, NOW))


@pytest.mark.parametrize("record", [b"\xc1", b"\x93\x01", b"\x91\x92\xa1a\x01", b"\x01"])
def test_an_undecodable_record_has_no_digest(record: bytes) -> None:
    with pytest.raises(MalformedRecord):
        digest_of_record(record, NOW)


def test_a_value_expiring_changes_the_tag_and_its_ttl_makes_it_weak() -> None:
    expiring = Version("a", 1, VClock.empty(), b"v", 1, NOW + 5000)
    before = etag_of([expiring], NOW)
    assert before.startswith('W/"') and has_value([expiring], NOW)
    after = etag_of([expiring], NOW + 5000)
    assert after != before and not after.startswith("W/")
    assert not has_value([expiring], NOW + 5000)
    # the weak tag still matches itself (weak comparison)
    assert not_modified(parse_if_none_match(before), before, True)
    record = encode_record([expiring])
    assert digest_of_record(record, NOW) == (before, True)
    assert digest_of_record(record, NOW + 5000) == (after, False)
