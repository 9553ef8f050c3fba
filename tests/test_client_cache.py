"""ringkv.client_cache without a network: LRU bounds, staleness, revalidation bookkeeping and
what writes through the client do to entries (a read racing a write must not store)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.client import GetResult
from ringkv.client_cache import ENTRY_OVERHEAD_BYTES, ClientCache, make_cache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def value(v: bytes, etag: str = '"t"') -> GetResult:
    return GetResult(True, v, [v], "ctx", etag=etag)


def fill(cache: ClientCache, key: bytes, result: GetResult) -> None:
    plan = cache.plan(key)
    assert cache.complete(plan, 200, result.etag, result) is result


def test_a_miss_then_a_revalidation_then_a_304_serves_the_cached_answer() -> None:
    cache = ClientCache(clock=Clock())
    plan = cache.plan(b"k")
    assert plan.entry is None and not plan.serve and not plan.headers
    first = value(b"v", '"e1"')
    assert cache.complete(plan, 200, '"e1"', first) is first
    plan = cache.plan(b"k")
    assert plan.headers == {"If-None-Match": '"e1"'} and not plan.serve
    got = cache.complete(plan, 304, '"e1"', None)
    assert got.value == b"v" and got.from_cache and got.age == 0.0
    assert cache.metrics.as_dict() == {
        "hits": 0, "revalidations": 1, "not_modified": 1, "misses": 1, "evictions": 0,
    }  # fmt: skip
    assert cache.metrics["304s"] == cache.metrics["not_modified"] == 1
    with pytest.raises(KeyError):
        cache.metrics["nope"]


def test_a_changed_answer_replaces_the_entry() -> None:
    cache = ClientCache(clock=Clock())
    fill(cache, b"k", value(b"old", '"e1"'))
    plan = cache.plan(b"k")
    new = value(b"new", '"e2"')
    assert cache.complete(plan, 200, '"e2"', new) is new
    assert cache.plan(b"k").headers == {"If-None-Match": '"e2"'}


def test_a_deleted_key_is_cached_as_not_found() -> None:
    cache = ClientCache(clock=Clock())
    fill(cache, b"k", value(b"v", '"e1"'))
    gone = GetResult(False, None, [], "ctx", etag='"e2"')
    assert cache.complete(cache.plan(b"k"), 404, '"e2"', gone) is gone
    got = cache.complete(cache.plan(b"k"), 304, '"e2"', None)
    assert not got.found and got.value is None and got.from_cache


def test_max_staleness_serves_without_the_network_only_within_the_age() -> None:
    clock = Clock()
    cache = ClientCache(clock=clock, max_staleness=1.0)
    fill(cache, b"k", value(b"v"))
    clock.now += 0.6
    plan = cache.plan(b"k")
    assert plan.serve and cache.cached(plan).age == pytest.approx(0.6)
    assert cache.cached(plan).from_cache
    clock.now += 0.6  # 1.2 s since a node confirmed it
    plan = cache.plan(b"k")
    assert not plan.serve and plan.headers
    cache.complete(plan, 304, '"t"', None)  # confirmed again: age restarts
    clock.now += 0.5
    assert cache.plan(b"k").serve
    assert not cache.plan(b"k", max_staleness=0.1).serve  # per read, stricter
    assert cache.metrics.hits == 2 and cache.metrics.not_modified == 1


def test_entries_are_bounded_by_count_least_recently_used_first() -> None:
    cache = ClientCache(max_entries=2, clock=Clock())
    fill(cache, b"a", value(b"1"))
    fill(cache, b"b", value(b"2"))
    cache.plan(b"a")  # a is now the most recently used
    fill(cache, b"c", value(b"3"))
    assert b"a" in cache and b"c" in cache and b"b" not in cache
    assert cache.metrics.evictions == 1


def test_entries_are_bounded_by_bytes_and_an_oversized_answer_is_not_cached() -> None:
    big = 1000
    cache = ClientCache(max_bytes=2 * (big + ENTRY_OVERHEAD_BYTES + 20), clock=Clock())
    for key in (b"a", b"b", b"c"):
        fill(cache, key, value(b"x" * big))
    assert len(cache) == 2 and cache.bytes <= cache.max_bytes and b"a" not in cache
    fill(cache, b"huge", value(b"x" * 10 * big))
    assert b"huge" not in cache and len(cache) == 2


def test_siblings_count_every_value() -> None:
    cache = ClientCache(clock=Clock())
    fill(cache, b"k", GetResult(True, None, [b"x" * 100, b"y" * 100], "c", etag='"t"'))
    assert cache.bytes >= 200


def test_a_write_drops_the_entry_and_a_read_in_flight_does_not_store_its_older_answer() -> None:
    cache = ClientCache(clock=Clock())
    fill(cache, b"k", value(b"v1", '"e1"'))
    in_flight = cache.plan(b"k")  # a read sent before the write returned
    cache.invalidate(b"k")
    assert b"k" not in cache and cache.bytes == 0
    stale = value(b"v1", '"e1"')
    assert cache.complete(in_flight, 200, '"e1"', stale) is stale  # returned, but not stored
    assert b"k" not in cache
    # a 304 to a read planned before the write still answers, without refreshing anything
    fill(cache, b"k", value(b"v2", '"e2"'))
    planned = cache.plan(b"k")
    cache.invalidate(b"other")
    assert cache.complete(planned, 304, '"e2"', None).value == b"v2"


def test_answers_without_an_etag_are_not_cached() -> None:
    cache = ClientCache(clock=Clock())
    fill(cache, b"k", GetResult(True, b"v", [b"v"], "c", etag=None))
    assert b"k" not in cache


def test_the_cache_argument() -> None:
    assert make_cache(None) is None and make_cache(False) is None
    assert isinstance(make_cache(True), ClientCache)
    cache = ClientCache()
    assert make_cache(cache) is cache
    from_mapping = make_cache({"max_bytes": 1000, "max_entries": 3, "max_staleness": 0.5})
    assert from_mapping is not None
    assert (from_mapping.max_bytes, from_mapping.max_entries, from_mapping.max_staleness) == (
        1000, 3, 0.5,
    )  # fmt: skip
    with pytest.raises(TypeError):
        make_cache(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ClientCache(max_bytes=0)
    with pytest.raises(ValueError):
        ClientCache(max_staleness=-1)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("rwd"), st.integers(0, 9), st.integers(0, 3000)), max_size=60
    ),
    st.integers(1, 5),
    st.integers(1, 8000),
)
def test_bounds_and_byte_accounting_hold_under_any_sequence(
    ops: list[tuple[str, int, int]], max_entries: int, max_bytes: int
) -> None:
    cache = ClientCache(max_bytes=max_bytes, max_entries=max_entries, clock=Clock())
    for op, k, size in ops:
        key = b"k%d" % k
        if op == "r":
            plan = cache.plan(key)
            result = value(b"x" * size, f'"e{size}"')
            if plan.entry is None or plan.entry.etag != result.etag:
                cache.complete(plan, 200, result.etag, result)
            else:
                assert cache.complete(plan, 304, result.etag, None).value == result.value
        else:
            cache.invalidate(key)
            assert key not in cache
        assert len(cache) <= max_entries
        assert cache.bytes <= max_bytes
        assert cache.bytes == sum(e.size for e in cache._entries.values())
        assert not cache._reads  # every read was counted out


def test_a_caller_changing_a_served_answer_does_not_change_the_entry() -> None:
    cache = ClientCache(clock=Clock(), max_staleness=10)
    fill(cache, b"k", GetResult(True, None, [b"x", b"y"], "c", etag='"t"'))
    cache.cached(cache.plan(b"k")).siblings.append(b"junk")
    assert cache.cached(cache.plan(b"k")).siblings == [b"x", b"y"]


def test_a_write_of_another_key_does_not_stop_a_read_from_storing() -> None:
    cache = ClientCache(clock=Clock())
    planned = cache.plan(b"k")
    cache.invalidate(b"other")
    fresh = value(b"v", '"e"')
    cache.complete(planned, 200, '"e"', fresh)
    assert b"k" in cache


def test_reads_in_flight_are_counted_out_by_complete_or_abandon() -> None:
    cache = ClientCache(clock=Clock())
    first, second = cache.plan(b"k"), cache.plan(b"k")
    cache.abandon(first)  # an error: nothing to cache
    cache.invalidate(b"k")  # a write returns while the second read is in flight
    cache.complete(second, 200, '"e"', value(b"old", '"e"'))
    assert b"k" not in cache and not cache._reads
    third = cache.plan(b"k")  # after the write: stored
    cache.complete(third, 200, '"e2"', value(b"new", '"e2"'))
    assert b"k" in cache and not cache._reads


def test_max_staleness_never_serves_a_value_past_its_ttl() -> None:
    clock = Clock()
    cache = ClientCache(clock=clock, max_staleness=60.0)
    fill(cache, b"k", GetResult(True, b"v", [b"v"], "ctx", ttl=2, etag='"e"'))
    clock.now += 1.5
    plan = cache.plan(b"k")
    assert plan.serve and cache.cached(plan).ttl == 0  # 0.5 s left, whole seconds
    clock.now += 0.5  # the value expired: ask the cluster, where it reads as absent
    plan = cache.plan(b"k")
    assert not plan.serve and plan.headers == {"If-None-Match": '"e"'}
