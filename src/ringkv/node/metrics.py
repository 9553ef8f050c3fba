"""Metrics: Prometheus instruments of one node (``ringkv_`` prefix, base units, bounded labels).

Each node owns its registry, so several nodes can live in one process (tests) without clashing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Seconds; dense where the design targets live (p99 < 10 ms reads, < 20 ms writes).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
)  # fmt: skip


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
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.requests = Counter(
            "ringkv_requests",
            "Client requests by operation and outcome",
            ["op", "outcome"],
            registry=r,
        )
        self.request_latency = Histogram(
            "ringkv_request_duration_seconds",
            "Client request latency by operation",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.replica_latency = Histogram(
            "ringkv_replica_rpc_duration_seconds",
            "Node-to-node replica call latency by verb",
            ["verb"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.replica_errors = Counter(
            "ringkv_replica_rpc_errors", "Failed replica calls by verb", ["verb"], registry=r
        )
        self.read_repairs = Counter(
            "ringkv_read_repairs", "Stale replicas updated by read repair", registry=r
        )
        self.forwarded = Counter(
            "ringkv_forwarded_requests",
            "Writes forwarded to a replica because this node does not hold the key",
            registry=r,
        )
        self.replica_requests = Counter(
            "ringkv_replica_requests",
            "Replica operations sent, by operation and replica role (primary or fallback)",
            ["op", "role"],
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
        self.members = Gauge(
            "ringkv_members", "Cluster members seen by this node, by liveness", ["alive"],
            registry=r,
        )  # fmt: skip

    # Labelled children, cached: ``labels()`` takes a lock and builds a key on every call, and
    # these are on the request path.

    def replica_request(self, op: str, primary: bool) -> Any:
        return self._child(self.replica_requests, op, "primary" if primary else "fallback")

    def replica_error(self, verb: str) -> Any:
        return self._child(self.replica_errors, verb)

    def replica_latency_of(self, verb: str) -> Any:
        return self._child(self.replica_latency, verb)

    def request_count(self, op: str, outcome: str) -> Any:
        return self._child(self.requests, op, outcome)

    def request_latency_of(self, op: str) -> Any:
        return self._child(self.request_latency, op)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def watch_storage(self, keys: Callable[[], int], size: Callable[[], int]) -> None:
        self.registry.register(_StorageCollector(keys, size))

    def watch_streaming(self, keys: Callable[[], int], size: Callable[[], int]) -> None:
        self.registry.register(_GaugeCollector(
            "ringkv_stream_remaining_keys", "Records the running ring change must still stream",
            keys))  # fmt: skip
        self.registry.register(_GaugeCollector(
            "ringkv_stream_remaining_bytes", "Bytes the running ring change must still stream",
            size))  # fmt: skip

    def watch_hints(self, pending: Callable[[], int]) -> None:
        self.registry.register(_GaugeCollector("ringkv_hints_pending", "Hints not yet delivered",
                                               pending))  # fmt: skip
