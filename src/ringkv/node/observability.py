"""Observability: the node's health metrics read at scrape time, and the runtime's own.

``NodeCollector`` reads, when Prometheus scrapes, what the node already knows: membership
(phi per peer, member states, token ranges short of replicas), RocksDB's properties and
statistics (SST bytes per level, pending compaction, memtables, block cache, write stalls),
the data disk against the 507 watermark, anti-entropy progress, hints and their window,
tombstones waiting for purge and the TLS certificate's expiry. Nothing here runs on the
request path.

``RuntimeMonitor`` measures the event loop's lag (a timer that should fire every
``LAG_PROBE_INTERVAL`` seconds; how late it fires is the time the loop was busy elsewhere) and
the garbage collector's pauses (``gc.callbacks``), as histograms.

Names follow the Prometheus conventions: ``ringkv_`` prefix, base units (seconds, bytes),
``_total`` on counters, and labels with a bounded set of values (levels, states, peers of one
cluster).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ringkv.core import gossip as g
from ringkv.core.placement import preference_list
from ringkv.core.ring import Ring
from ringkv.node.metrics import NodeMetrics

if TYPE_CHECKING:
    from ringkv.node.node import Node

log = logging.getLogger(__name__)

ROCKSDB_LEVELS = 7  # RocksDB's default num_levels: L0..L6
LAG_PROBE_INTERVAL = 0.1  # seconds

# RocksDB ticker statistics (``rocksdb.options-statistics``) exported as counters.
_TICKERS = {
    "rocksdb.block.cache.hit": "hit",
    "rocksdb.block.cache.miss": "miss",
    "rocksdb.stall.micros": "stall_micros",
}


def parse_statistics(text: str | None) -> dict[str, int]:
    """The ticker counts of RocksDB's statistics dump (``name COUNT : n`` lines)."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        name, _, rest = line.partition(" COUNT : ")
        if rest and name in _TICKERS:
            try:
                out[_TICKERS[name]] = int(rest.split()[0])
            except ValueError:
                continue
    return out


def parse_write_stalls(text: str | None) -> dict[str, int]:
    """``total-delays`` and ``total-stops`` of ``rocksdb.cf-write-stall-stats``."""
    out: dict[str, int] = {}
    _, _, body = (text or "").partition(":")
    for item in body.split(","):
        name, _, value = item.strip().partition(": ")
        if name in ("total-delays", "total-stops") and value.strip().isdigit():
            out[name[len("total-") :]] = int(value)
    return out


def certificate_expiry(path: str) -> float | None:
    """The notAfter of a PEM certificate as a Unix time, or None when it cannot be read.

    The standard library decodes certificates only through this helper of the ssl module (the
    one its own tests use); without it the metric is left out rather than guessed."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return None
    try:
        return float(ssl.cert_time_to_seconds(decode(path)["notAfter"]))
    except (OSError, ValueError, KeyError, ssl.SSLError):
        return None


class _RangeReplicas:
    """The replica nodes of every token range of one ring, computed once per ring."""

    def __init__(self) -> None:
        self._ring: Ring | None = None
        self._replicas: list[tuple[str, ...]] = []

    def of(self, ring: Ring, n: int) -> list[tuple[str, ...]]:
        if ring is not self._ring:
            self._replicas = [
                tuple(r.node for r in preference_list(ring, token_range.end, n))
                for token_range in (ring.ranges() if len(ring) else [])
            ]
            self._ring = ring
        return self._replicas


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class NodeCollector(Collector):
    """Scrape-time metrics of one node (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._ranges = _RangeReplicas()
        self._cert_stamp: tuple[str, float] | None = None
        self._cert_expiry: float | None = None

    def collect(self) -> Iterable[Metric]:
        for part in (self._membership, self._rocksdb, self._disk, self._anti_entropy,
                     self._hints, self._tls):  # fmt: skip
            try:
                yield from part()
            except Exception:  # one broken source must not cost the whole scrape
                log.exception("metrics: %s failed", part.__name__)

    def _membership(self) -> Iterable[Metric]:
        membership = self.node.membership
        me = self.node.config.node_id
        now = time.monotonic()
        phi = GaugeMetricFamily(
            "ringkv_peer_phi",
            "Phi accrual suspicion of each peer this node watches (heartbeats), as it sees it "
            "(convicted above --phi-threshold; +Inf: never heard from); members that left are "
            "not listed",
            labels=["peer"],
        )
        states = dict.fromkeys(g.MEMBER_STATES, 0)
        removed = membership.removed_nodes()
        gone = set()
        for node, state in membership.gossiper.states.items():
            status = str(state.get(g.STATUS, g.STARTING))
            if node in removed and state.generation <= removed[node]:
                status = g.LEFT  # removed by force: gone as if it had left
            if status == g.LEFT:
                gone.add(node)  # silent by design
            states[status] = states.get(status, 0) + 1
        for node, value in membership.watched_phi(now).items():
            if node != me and node not in gone:
                phi.add_metric([node], value)
        yield phi
        by_state = GaugeMetricFamily(
            "ringkv_member_states", "Cluster members known to this node, by state",
            labels=["state"],
        )  # fmt: skip
        for status, count in sorted(states.items()):
            by_state.add_metric([status], count)
        yield by_state
        yield _gauge(
            "ringkv_phi_threshold", "Phi above which a peer is convicted (--phi-threshold)",
            self.node.config.phi_threshold,
        )  # fmt: skip
        n = self.node.config.replication_factor
        ring = membership.ring
        replicas = self._ranges.of(ring, n)
        up = membership.up_nodes()
        short = sum(1 for nodes in replicas if sum(1 for x in nodes if x in up) < n)
        yield _gauge("ringkv_ring_ranges", "Token ranges of the ring", len(replicas))
        yield _gauge(
            "ringkv_ranges_below_replication_factor",
            "Token ranges with fewer live replicas than the replication factor, as this node "
            "sees the cluster",
            short,
        )
        yield _gauge("ringkv_replication_factor", "Replicas of every key (N)", n)

    def _rocksdb(self) -> Iterable[Metric]:
        storage = self.node.storage
        if storage is None:
            return
        sst_bytes = GaugeMetricFamily(
            "ringkv_rocksdb_sst_bytes", "Bytes of live SST files, by LSM level", labels=["level"]
        )
        sst_files = GaugeMetricFamily(
            "ringkv_rocksdb_sst_files", "Live SST files, by LSM level", labels=["level"]
        )
        size, files = [0] * ROCKSDB_LEVELS, [0] * ROCKSDB_LEVELS
        for f in storage.sst_files():
            level = min(int(f.get("level", 0)), ROCKSDB_LEVELS - 1)
            size[level] += int(f.get("size", 0))
            files[level] += 1
        for level in range(ROCKSDB_LEVELS):
            sst_bytes.add_metric([str(level)], size[level])
            sst_files.add_metric([str(level)], files[level])
        yield sst_bytes
        yield sst_files
        prop = storage.db_int_property
        for name, key, doc in (
            ("ringkv_rocksdb_pending_compaction_bytes", "rocksdb.estimate-pending-compaction-bytes",
             "Bytes compaction estimates it must rewrite to settle the LSM tree"),
            ("ringkv_rocksdb_memtable_bytes", "rocksdb.cur-size-all-mem-tables",
             "Bytes in active and unflushed memtables"),
            ("ringkv_rocksdb_block_cache_usage_bytes", "rocksdb.block-cache-usage",
             "Bytes held in the block cache"),
            ("ringkv_rocksdb_block_cache_capacity_bytes", "rocksdb.block-cache-capacity",
             "Block cache capacity (--block-cache-mb)"),
            ("ringkv_rocksdb_running_compactions", "rocksdb.num-running-compactions",
             "Compactions running now"),
            ("ringkv_rocksdb_write_stopped", "rocksdb.is-write-stopped",
             "1 while RocksDB stops writes (too many L0 files or pending compaction)"),
            ("ringkv_rocksdb_delayed_write_rate_bytes", "rocksdb.actual-delayed-write-rate",
             "Write rate RocksDB throttles to while it delays writes (0: not delaying)"),
        ):  # fmt: skip
            yield _gauge(name, doc, prop(key))
        stats = parse_statistics(storage.db_property("rocksdb.options-statistics"))
        hits, misses = stats.get("hit", 0), stats.get("miss", 0)
        cache = CounterMetricFamily(
            "ringkv_rocksdb_block_cache_lookups", "Block cache lookups, by result",
            labels=["result"],
        )  # fmt: skip
        cache.add_metric(["hit"], hits)
        cache.add_metric(["miss"], misses)
        yield cache
        yield _gauge(
            "ringkv_rocksdb_block_cache_hit_ratio",
            "Block cache hits over lookups since the node started (rate the lookups counter "
            "for a recent ratio)",
            hits / (hits + misses) if hits + misses else 0.0,
        )
        stalls = CounterMetricFamily(
            "ringkv_rocksdb_write_stalls", "Write stalls RocksDB imposed, by kind (delay or stop)",
            labels=["kind"],
        )  # fmt: skip
        counts = parse_write_stalls(storage.db_property("rocksdb.cf-write-stall-stats"))
        for kind in ("delay", "stop"):
            stalls.add_metric([kind], counts.get(kind + "s", 0))
        yield stalls
        yield CounterMetricFamily(
            "ringkv_rocksdb_write_stall_seconds", "Time writes waited in RocksDB write stalls",
            value=stats.get("stall_micros", 0) / 1e6,
        )  # fmt: skip

    def _disk(self) -> Iterable[Metric]:
        storage = self.node.storage
        if storage is None:
            return
        free, total = storage.disk_space()
        yield _gauge("ringkv_disk_free_bytes", "Free bytes on the data directory's disk", free)
        yield _gauge("ringkv_disk_total_bytes", "Size of the data directory's disk", total)
        yield _gauge(
            "ringkv_disk_min_free_bytes",
            "Free space below which writes are refused with 507 (--min-free-bytes)",
            storage.min_free_bytes,
        )
        yield _gauge(
            "ringkv_writes_refused",
            "1 while this node refuses writes (507): disk below --min-free-bytes or RocksDB "
            "stopped writing",
            1 if self.node.disk_guard.reason else 0,
        )

    def _anti_entropy(self) -> Iterable[Metric]:
        node = self.node
        ae = node.anti_entropy
        yield _gauge(
            "ringkv_anti_entropy_interval_seconds",
            "Seconds between anti-entropy exchanges (0: anti-entropy is off)",
            node.config.anti_entropy_interval,
        )
        alive = node.membership.is_alive
        me = node.config.node_id
        total = in_sync = 0
        oldest_ms: float = time.time() * 1000
        started_ms = (time.time() - (time.monotonic() - node.started)) * 1000
        for end, nodes in ae.replicas.items():
            total += 1
            peers = [p for p in nodes if p != me]
            if all(ae.last_result.get((end, p)) == "equal" for p in peers):
                in_sync += 1
            for peer in peers:
                if alive(peer):
                    oldest_ms = min(oldest_ms, ae.last_exchange.get((end, peer), started_ms))
        yield _gauge("ringkv_anti_entropy_ranges", "Token ranges this node replicates", total)
        yield _gauge(
            "ringkv_anti_entropy_ranges_in_sync",
            "Replicated ranges whose last exchange with every other replica found equal trees",
            in_sync,
        )
        yield _gauge(
            "ringkv_anti_entropy_full_exchange_age_seconds",
            "Seconds since every replicated range was last exchanged with every live replica "
            "(counted from start-up for a pair never exchanged)",
            max(0.0, time.time() - oldest_ms / 1000),
        )
        yield _gauge(
            "ringkv_tombstones_pending_purge",
            "Tombstone-only records kept, as counted by the last purge pass",
            ae.tombstones_pending,
        )

    def _hints(self) -> Iterable[Metric]:
        handoff = self.node.handoff
        oldest = handoff.oldest_ms
        yield _gauge(
            "ringkv_hints_oldest_age_seconds",
            "Age of the oldest pending hint at the last expiry pass (0: none); hints older "
            "than the hint window are dropped",
            0.0 if oldest is None else max(0.0, time.time() - oldest / 1000),
        )
        yield _gauge(
            "ringkv_hint_window_seconds", "Seconds hints are kept (--hint-window)",
            handoff.window_ms / 1000,
        )  # fmt: skip

    def _tls(self) -> Iterable[Metric]:
        tls = self.node.tls
        if tls is None:
            return
        try:
            stamp = (tls.cert_file, os.stat(tls.cert_file).st_mtime)
        except OSError:
            return
        if stamp != self._cert_stamp:  # decoded again only when the file changed
            self._cert_stamp, self._cert_expiry = stamp, certificate_expiry(tls.cert_file)
        if self._cert_expiry is not None:
            yield _gauge(
                "ringkv_tls_certificate_expiry_timestamp_seconds",
                "When the node's TLS certificate expires (Unix time)",
                self._cert_expiry,
            )


class RuntimeMonitor:
    """Event-loop lag and garbage-collector pauses, into the node's histograms."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.lag = metrics.event_loop_lag
        self._pauses = metrics.gc_pause
        self._gc_started = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self._pauses.labels(str(info.get("generation", 0))).observe(
                time.perf_counter() - self._gc_started
            )
            self._gc_started = 0.0

    async def run(self) -> None:
        gc.callbacks.append(self._on_gc)
        loop = asyncio.get_running_loop()
        try:
            while True:
                due = loop.time() + LAG_PROBE_INTERVAL
                await asyncio.sleep(LAG_PROBE_INTERVAL)
                self.lag.observe(max(0.0, loop.time() - due))
        finally:
            gc.callbacks.remove(self._on_gc)


def watch(node: Node) -> asyncio.Task[None]:
    """Register the node's scrape-time collector and start the runtime monitor's probe."""
    node.metrics.registry.register(NodeCollector(node))
    return asyncio.create_task(RuntimeMonitor(node.metrics).run())
