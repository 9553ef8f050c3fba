"""Metrics: Prometheus instruments of one node (``ringkv_`` prefix, base units, bounded labels).

Each node owns its registry, so several nodes can live in one process (tests) without clashing.

The instruments every request touches (request counts and latencies, replica calls) are plain
numbers (``_Family``) exported by a collector at scrape time, not ``prometheus_client``
instruments: those take a lock on every increment, and a node changes and reads its metrics on
its event-loop thread only, so the lock buys nothing on the hot path.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# Seconds; dense where the design targets live (p99 < 10 ms reads, < 20 ms writes).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
)  # fmt: skip
# Bytes: a key's value, from tiny to the 64 MiB --max-value-bytes ceiling.
SIZE_BUCKETS = tuple(float(4**i * 64) for i in range(11))
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class _Count:
    """One labelled counter: ``inc``."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _Histogram:
    """One labelled histogram: ``observe``; counts per bucket, cumulated when exported."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1  # bucket "le" bound
        self.sum += amount


class _Family(Collector):
    """A labelled counter or histogram of plain numbers (see the module docstring)."""

    def __init__(
        self,
        name: str,
        doc: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name, self.doc, self.labelnames, self.buckets = name, doc, labelnames, buckets
        self.children: dict[tuple[str, ...], Any] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
            child = _Histogram(self.buckets) if self.buckets is not None else _Count()
            self.children[values] = child
        return child

    def collect(self) -> Iterable[Metric]:
        labels = list(self.labelnames)
        if self.buckets is None:
            counter = CounterMetricFamily(self.name, self.doc, labels=labels)
            for values, count in self.children.items():
                counter.add_metric(list(values), count.value, created=count.created)
            yield counter
            return
        histogram = HistogramMetricFamily(self.name, self.doc, labels=labels)
        bounds = [*(str(float(b)) for b in self.buckets), "+Inf"]
        for values, child in self.children.items():
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, child.counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            histogram.add_metric(list(values), buckets, child.sum)
        yield histogram

    def describe(self) -> Iterable[Metric]:
        return self.collect()


class _StorageCollector(Collector):
    def __init__(self, keys: Callable[[], int], size: Callable[[], int]) -> None:
        self._keys = keys
        self._size = size

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "ringkv_stored_keys", "Approximate number of keys in local storage", value=self._keys()
        )
        yield GaugeMetricFamily(
            "ringkv_stored_bytes", "Approximate bytes of local storage", value=self._size()
        )


class _GaugeCollector(Collector):
    def __init__(self, name: str, doc: str, read: Callable[[], float]) -> None:
        self._name, self._doc, self._read = name, doc, read

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(self._name, self._doc, value=self._read())


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = _Family(
            "ringkv_requests",
            "Client requests by operation and outcome",
            ("op", "outcome"),
            registry=r,
        )
        self.request_latency = _Family(
            "ringkv_request_duration_seconds",
            "Client request latency by operation",
            ("op",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.replica_latency = _Family(
            "ringkv_replica_rpc_duration_seconds",
            "Node-to-node replica call latency by verb",
            ("verb",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.replica_errors = _Family(
            "ringkv_replica_rpc_errors", "Failed replica calls by verb", ("verb",), registry=r
        )
        self.request_size = _Family(
            "ringkv_request_size_bytes", "Value bytes clients sent, by operation", ("op",),
            buckets=SIZE_BUCKETS, registry=r,
        )  # fmt: skip
        self.response_size = _Family(
            "ringkv_response_size_bytes", "Value bytes returned to clients, by operation",
            ("op",), buckets=SIZE_BUCKETS, registry=r,
        )  # fmt: skip
        ProcessCollector(registry=r)  # process_cpu_seconds_total, memory, open files
        # measured by ringkv.node.observability.RuntimeMonitor
        self.event_loop_lag = _Family(
            "ringkv_event_loop_lag_seconds",
            "How late the event loop ran a timer: time it spent busy elsewhere",
            (), buckets=LAG_BUCKETS, registry=r,
        ).labels()  # fmt: skip
        self.gc_pause = _Family(
            "ringkv_gc_pause_seconds", "Garbage collector pauses, by generation",
            ("generation",), buckets=GC_BUCKETS, registry=r,
        )  # fmt: skip
        self.read_repairs = Counter(
            "ringkv_read_repairs", "Stale replicas updated by read repair", registry=r
        )
        self.digest_reads = _Family(
            "ringkv_digest_reads",
            "Revalidation reads (If-None-Match) by outcome: the replicas' digests agreed, "
            "differed (a full read followed), or a replica could not answer digests",
            ("outcome",),
            registry=r,
        )
        self.forwarded = Counter(
            "ringkv_forwarded_requests",
            "Writes forwarded to a replica because this node does not hold the key",
            registry=r,
        )
        self.shard_handovers = Counter(
            "ringkv_shard_handovers",
            "Client requests this shard handed to the shard of its node that serves them "
            "(--shards > 1; a token-aware client makes none)",
            registry=r,
        )
        self.replica_requests = _Family(
            "ringkv_replica_requests",
            "Replica operations sent, by operation and replica role (primary or fallback)",
            ("op", "role"),
            registry=r,
        )
        self.fallback_writes = Counter(
            "ringkv_fallback_writes", "Writes sent to a fallback for a down primary", registry=r
        )
        self.hints_stored = Counter("ringkv_hints_stored", "Hints stored", registry=r)
        self.hints_delivered = Counter(
            "ringkv_hints_delivered", "Hints handed to their target", registry=r
        )
        self.hints_dropped = Counter(
            "ringkv_hints_dropped", "Hints dropped after the hint window", registry=r
        )
        self.anti_entropy_exchanges = Counter(
            "ringkv_anti_entropy_exchanges",
            "Completed anti-entropy range exchanges, by result",
            ["result"],
            registry=r,
        )
        self.anti_entropy_keys = Counter(
            "ringkv_anti_entropy_keys",
            "Records moved by anti-entropy, by direction (fetched or pushed)",
            ["direction"],
            registry=r,
        )
        self.tombstones_purged = Counter(
            "ringkv_tombstones_purged", "Tombstones removed after the grace period", registry=r
        )
        self.stream_keys = Counter(
            "ringkv_stream_keys", "Records streamed by ring changes this node drove", registry=r
        )
        self.stream_bytes = Counter(
            "ringkv_stream_bytes", "Bytes streamed by ring changes this node drove", registry=r
        )
        self.cleanup_keys = Counter(
            "ringkv_cleanup_keys", "Records deleted by cleanup (ranges this node gave away)",
            registry=r,
        )  # fmt: skip
        self.cleanup_bytes = Counter(
            "ringkv_cleanup_bytes", "Bytes of records deleted by cleanup", registry=r
        )
        self.cleanup_ranges = Counter(
            "ringkv_cleanup_ranges", "Token ranges cleanup finished (deleted what it held)",
            registry=r,
        )  # fmt: skip
        self.sibling_warnings = Counter(
            "ringkv_sibling_warnings", "Writes that left a key with 25 or more siblings",
            registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            "ringkv_rejected_requests",
            "Client requests refused before running, by reason",
            ["reason"],
            registry=r,
        )
        # Known label values start at 0, so rates and dashboards have a series before the
        # first event (Prometheus cannot tell "never happened" from "not exported").
        for family, values in (
            (self.anti_entropy_exchanges, ("equal", "repaired", "skipped")),
            (self.anti_entropy_keys, ("fetched", "pushed")),
            (self.rejected, ("unauthenticated", "forbidden", "overloaded", "connections")),
        ):
            for value in values:
                family.labels(value)
        self.refused_input = Counter(
            "ringkv_refused_input",
            "Input from clients or peers refused as malformed or forged, by source and reason",
            ["source", "reason"],
            registry=r,
        )
        self.members = Gauge(
            "ringkv_members", "Cluster members seen by this node, by liveness", ["alive"],
            registry=r,
        )  # fmt: skip

    # The request path's labelled children.

    def replica_request(self, op: str, primary: bool) -> Any:
        return self.replica_requests.labels(op, "primary" if primary else "fallback")

    def replica_error(self, verb: str) -> Any:
        return self.replica_errors.labels(verb)

    def replica_latency_of(self, verb: str) -> Any:
        return self.replica_latency.labels(verb)

    def request_count(self, op: str, outcome: str) -> Any:
        return self.requests.labels(op, outcome)

    def request_latency_of(self, op: str) -> Any:
        return self.request_latency.labels(op)

    def watch_storage(self, keys: Callable[[], int], size: Callable[[], int]) -> None:
        self.registry.register(_StorageCollector(keys, size))

    def watch_streaming(self, keys: Callable[[], int], size: Callable[[], int]) -> None:
        self.registry.register(_GaugeCollector(
            "ringkv_stream_remaining_keys", "Records the running ring change must still stream",
            keys))  # fmt: skip
        self.registry.register(_GaugeCollector(
            "ringkv_stream_remaining_bytes", "Bytes the running ring change must still stream",
            size))  # fmt: skip

    def watch_cleanup(
        self, remaining: Callable[[], tuple[int, int, int]], disk: Callable[[], int]
    ) -> None:
        """``remaining``: (ranges, keys, bytes) the node's cleanup has still to delete;
        ``disk``: RocksDB's size on disk (what cleanup reclaims, once compacted)."""
        self.registry.register(_GaugeCollector(
            "ringkv_disk_bytes", "RocksDB's size on disk (SST files, memtables)",
            disk))  # fmt: skip
        for i, what in enumerate(("ranges", "keys", "bytes")):
            self.registry.register(_GaugeCollector(
                f"ringkv_cleanup_remaining_{what}", f"{what.capitalize()} cleanup has still to "
                "delete (ranges this node no longer replicates)",
                lambda i=i: remaining()[i]))  # type: ignore[misc]  # fmt: skip

    def watch_hints(self, pending: Callable[[], int]) -> None:
        self.registry.register(_GaugeCollector("ringkv_hints_pending", "Hints not yet delivered",
                                               pending))  # fmt: skip
