"""A bounded client-side read cache with HTTP revalidation, shared by `Client` and `AsyncClient`.

Opt in with ``Client(..., cache=ClientCache(max_bytes=..., max_entries=...))`` (or
``cache=True`` for the defaults). The cache keeps, per key, the last read's answer -- a value,
siblings, or "not found" after a delete (a tombstone) -- with its context and its ``ETag``, in
least-recently-used order within a bound in bytes and in entries.

- A read of a cached key *revalidates*: it sends ``If-None-Match`` with the cached tag at the
  read's own quorum. ``304 Not Modified`` means the quorum resolved the same version set, so the
  cached answer is returned without its bytes crossing the network (``from_cache=True``,
  ``age=0``); any other answer replaces the entry. Revalidation is as strong as a plain read.
- ``max_staleness`` (seconds, per cache or per read) lets a read whose entry was confirmed by a
  node at most that long ago skip the network entirely. That is a **weaker read** than the
  quorum named: it may miss writes of other clients made in that window (including new
  siblings and deletes). Such results have ``from_cache=True`` and ``age`` = seconds since a
  node last confirmed the entry.
- A write or delete through the same client drops the key's entry once it returns (failed or
  not), and a read that was already in flight then does not store its older answer: the next
  read goes to the cluster, so a client always reads its own writes. (The entry is dropped
  rather than updated because the write's answer does not say which siblings the cluster now
  holds: a cached single value must never hide siblings.)
- An answer without an ``ETag`` (an older node) is not cached.

Counters on ``cache.metrics`` (also ``client.cache_metrics``): ``hits`` (served without the
network), ``revalidations`` (conditional reads sent), ``not_modified`` (304s received),
``misses`` (reads without a usable entry), ``evictions`` (entries dropped for the bounds).

Time is read from ``clock`` (monotonic by default), so tests can drive it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CacheMetrics", "ClientCache", "ReadPlan"]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_ENTRIES = 10_000
#: What an entry costs beyond its key, values, context and tag (objects, the LRU links).
ENTRY_OVERHEAD_BYTES = 200
IF_NONE_MATCH = "If-None-Match"


@dataclass
class CacheMetrics:
    hits: int = 0
    revalidations: int = 0
    not_modified: int = 0
    misses: int = 0
    evictions: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def __getitem__(self, name: str) -> int:
        """``metrics["hits"]``; ``"304s"`` is ``not_modified``."""
        if name not in _NAMES:
            raise KeyError(name)
        return int(getattr(self, _ALIASES.get(name, name)))


_ALIASES = {"304s": "not_modified"}
_NAMES = frozenset({f.name for f in dataclasses.fields(CacheMetrics)} | set(_ALIASES))


@dataclass(frozen=True, slots=True)
class _Entry:
    result: Any  # a GetResult as the node answered it
    etag: str
    validated: float  # clock() when a node last confirmed it
    size: int
    expires: float | None = None  # clock() when its value expires (the answer's ttl), if ever


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What a read does: serve ``cached`` as it is, or send ``headers`` and then `complete`."""

    key: bytes
    entry: _Entry | None
    serve: bool
    age: float
    headers: Mapping[str, str]
    epoch: int  # writes of the key through the client seen when the read was planned


def _served(entry: _Entry, age: float, now: float) -> Any:
    """The cached answer, with its own list of siblings (a caller may change it) and its
    remaining ttl."""
    result = entry.result
    ttl = result.ttl if entry.expires is None else max(0, int(entry.expires - now))
    return dataclasses.replace(
        result, siblings=list(result.siblings), from_cache=True, age=age, ttl=ttl
    )


def _size(key: bytes, result: Any, etag: str) -> int:
    values = result.siblings if result.siblings else ([result.value] if result.value else [])
    return (
        ENTRY_OVERHEAD_BYTES
        + len(key)
        + sum(len(v) for v in values)
        + len(result.context or "")
        + len(etag)
    )


class ClientCache:
    """An LRU of read answers bounded by ``max_bytes`` and ``max_entries`` (thread-safe)."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        *,
        max_staleness: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes <= 0 or max_entries <= 0:
            raise ValueError("max_bytes and max_entries must be positive")
        if max_staleness is not None and max_staleness < 0:
            raise ValueError("max_staleness must not be negative")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_staleness = max_staleness
        self.clock = clock
        self.metrics = CacheMetrics()
        self.bytes = 0
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        # key -> [reads of it in flight, writes of it through the client since the first]
        self._reads: dict[bytes, list[int]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    # -- the read protocol: plan, send, complete

    def plan(self, key: bytes, max_staleness: float | None = None) -> ReadPlan:
        """Decide a read: a hit within ``max_staleness`` (default: the cache's), else a
        revalidation of the cached entry, else a miss."""
        limit = self.max_staleness if max_staleness is None else max_staleness
        with self._lock:
            entry = self._entries.get(key)
            age = 0.0
            if entry is not None:
                self._entries.move_to_end(key)
                now = self.clock()
                age = max(0.0, now - entry.validated)
                # never serve a value past its expiry without asking: it reads as absent there
                live = entry.expires is None or now < entry.expires
                if limit is not None and age <= limit and live:
                    self.metrics.hits += 1
                    return ReadPlan(key, entry, True, age, {}, 0)
            state = self._reads.get(key)
            if state is None:
                state = self._reads[key] = [0, 0]
            state[0] += 1
            if entry is None:
                self.metrics.misses += 1
                return ReadPlan(key, None, False, 0.0, {}, state[1])
            self.metrics.revalidations += 1
            return ReadPlan(key, entry, False, age, {IF_NONE_MATCH: entry.etag}, state[1])

    def cached(self, plan: ReadPlan) -> Any:
        """The result a hit serves."""
        assert plan.entry is not None
        return _served(plan.entry, plan.age, self.clock())

    def complete(self, plan: ReadPlan, status: int, etag: str | None, result: Any) -> Any:
        """Finish a read that went to a node: ``status`` and ``etag`` of the answer, ``result``
        its GetResult (None for a 304). Returns what the read returns."""
        with self._lock:
            # stored only when no write of the key through this client returned meanwhile
            current = self._finish(plan)
            if status == 304 and plan.entry is not None:
                self.metrics.not_modified += 1
                entry = plan.entry
                if current and self._entries.get(plan.key) is entry:
                    self._entries[plan.key] = dataclasses.replace(entry, validated=self.clock())
                return _served(entry, 0.0, self.clock())
            if current:
                self._store(plan.key, result, etag)
            return result

    def abandon(self, plan: ReadPlan) -> None:
        """A read that went to a node ended without an answer to cache (an error)."""
        with self._lock:
            self._finish(plan)

    def _finish(self, plan: ReadPlan) -> bool:
        """Count the read out; True when no write of its key came back since its plan."""
        state = self._reads.get(plan.key)
        if state is None:
            return False
        current = state[1] == plan.epoch
        state[0] -= 1
        if state[0] <= 0:
            del self._reads[plan.key]
        return current

    # -- writes through the client

    def invalidate(self, key: bytes) -> None:
        """A write or delete of ``key`` through this client returned (or failed)."""
        with self._lock:
            state = self._reads.get(key)
            if state is not None:
                state[1] += 1
            entry = self._entries.pop(key, None)
            if entry is not None:
                self.bytes -= entry.size

    def clear(self) -> None:
        with self._lock:
            for state in self._reads.values():
                state[1] += 1
            self._entries.clear()
            self.bytes = 0

    # -- bounds

    def _store(self, key: bytes, result: Any, etag: str | None) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        if result is None or not etag:
            return
        size = _size(key, result, etag)
        if size > self.max_bytes:
            return
        now = self.clock()
        ttl = getattr(result, "ttl", None)
        expires = now + ttl if ttl is not None else None
        self._entries[key] = _Entry(result, etag, now, size, expires)
        self.bytes += size
        while self.bytes > self.max_bytes or len(self._entries) > self.max_entries:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size
            self.metrics.evictions += 1


def make_cache(cache: ClientCache | Mapping[str, Any] | bool | None) -> ClientCache | None:
    """The ``cache=`` argument of the clients: a ClientCache, its keyword arguments as a
    mapping (``{"max_bytes": ..., "max_entries": ..., "max_staleness": ...}``), True (the
    defaults), or None/False (no cache)."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return ClientCache()
    if isinstance(cache, ClientCache):
        return cache
    if isinstance(cache, Mapping):
        return ClientCache(**cache)
    raise TypeError("cache must be a ClientCache, a mapping of its arguments, True or None")
