"""Cleanup after a scale-out: disk use before and after 3 -> 6 nodes, cleanup throughput, and
the foreground read latency while cleanup runs against while nothing does.

    .venv/bin/python benchmarks/cleanup.py [--keys 100000] [--value-bytes 1024] [--json FILE]

1. Preload ``--keys`` keys of ``--value-bytes`` on 3 nodes (3 zones, N=3, w=all).
2. Stop the nodes and measure each one's RocksDB offline after a full compaction (RocksDB's
   own size: total SST bytes), start them again.
3. A reader thread runs quorum GETs of random keys (closed loop, paced) for the rest of the
   run, timestamping each; join n4, n5, n6 one at a time, each followed by the automatic
   cleanup and an idle pause. Reads are classed by when they started: during a cleanup round
   that deleted something (from the nodes' own reports), or during an idle pause (no ring
   change, no cleanup); reads during streaming count for neither. Idle and cleanup windows
   alternate, so both classes see the same machine load.
4. Stop the nodes and measure every node's compacted size again. "Without cleanup" is what
   the disks would hold had the old owners kept everything: their size before plus the new
   nodes' size after.

Cleanup throughput is each round's ``keys_done`` / ``bytes_done`` over its own duration
(``finished_ms - started_ms``: hand-off checks, range deletes and the final compaction).
A benchmark, not a test (tests/test_benchmarks_smoke.py runs it with --keys 300).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import Cluster, wait_until

from ringkv.client import AsyncClient, Client, RingkvError
from ringkv.node.storage import Storage

READ_INTERVAL = 0.004  # seconds between two reads of the reader thread (about 200/s)
IDLE_SECONDS = 6.0


async def preload(urls: list[str], keys: int, value_bytes: int) -> None:
    client = AsyncClient(urls)
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with gate:  # a value of its own per key: RocksDB compresses repeats away
            await client.put(f"k{i}", os.urandom(value_bytes), w="all")

    await asyncio.gather(*(one(i) for i in range(keys)))
    await client.close()


def compacted_size(path: Path) -> int:
    """RocksDB's size on disk after a full compaction (the node must be stopped)."""
    storage = Storage(str(path), min_free_bytes=0)
    try:
        storage.compact()
        return storage.sst_bytes()
    finally:
        storage.close()


def measure(cluster: Cluster, nodes: list[int]) -> dict[str, int]:
    sizes = {}
    for i in nodes:
        cluster.node(i).terminate()
    for i in nodes:
        sizes[cluster.node(i).node_id] = compacted_size(cluster.node(i).data_dir)
    return sizes


class Reader:
    """Quorum GETs of random keys in a thread: (start wall time, latency, ok) per read."""

    def __init__(self, urls: list[str], keys: int) -> None:
        self.urls, self.keys = urls, keys
        self.samples: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Reader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        rng = random.Random(1)
        client = Client(self.urls, timeout=5.0)
        deadline = time.monotonic() + 3600
        while not self._stop.is_set() and time.monotonic() < deadline and len(self.samples) < 2e6:
            key = f"k{rng.randrange(self.keys)}"
            wall, started = time.time(), time.perf_counter()
            try:
                ok = client.get(key, r="quorum").found
            except RingkvError:
                ok = False
            self.samples.append((wall, time.perf_counter() - started, ok))
            self._stop.wait(READ_INTERVAL)
        client.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cleanup_reports(cluster: Cluster) -> dict[str, dict[str, Any]] | None:
    """Every member's cleanup report once all are done for the current ring, else None."""
    node = next(n for n in cluster.nodes if n.running)
    document = Client(node.url).progress()
    if document["cleanup_pending"] or document["in_progress"] is not None:
        return None
    return {r["node"]: r for r in document["cleanup"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=1024)
    parser.add_argument("--cleanup-rate", default=str(32 * 1024 * 1024))
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    results: dict[str, Any] = {"keys": args.keys, "value_bytes": args.value_bytes}
    with tempfile.TemporaryDirectory(prefix="ringkv-cleanup-") as tmp:
        extra = ["--anti-entropy-interval", "0", "--cleanup-rate", args.cleanup_rate]
        cluster = Cluster(Path(tmp), nodes=6, zones=3, extra_args=extra)
        try:
            for node in cluster.nodes[:3]:
                node.start()
            cluster.wait_ready(60)
            started = time.monotonic()
            asyncio.run(preload(cluster.urls[:3], args.keys, args.value_bytes))
            print(f"preloaded {args.keys} keys in {time.monotonic() - started:.1f} s", flush=True)
            before = measure(cluster, [0, 1, 2])
            for node in cluster.nodes[:3]:
                node.start()
            cluster.wait_ready(60)
            # the new nodes start now, waiting to be told to join: their ports are taken
            # before the reader's connections could take them
            for node in cluster.nodes[3:]:
                node.args += ["--auto-join", "false"]
                node.start()
            wait_until(lambda: cleanup_reports(cluster), 60, interval=0.5, message="settled")
            rounds: list[dict[str, Any]] = []
            idle: list[tuple[float, float]] = []
            with Reader(cluster.urls[:3], args.keys) as reader:
                for index in (3, 4, 5):
                    t0 = time.time()
                    time.sleep(IDLE_SECONDS)
                    idle.append((t0, time.time()))
                    joining = cluster.node(index)
                    Client(joining.url).admin("join", joining.node_id)
                    wait_until(
                        lambda n=joining: Client(n.url).status()["node"]["state"] == "normal",
                        900, interval=0.5, message="join",
                    )  # fmt: skip
                    reports = wait_until(
                        lambda: cleanup_reports(cluster), 900, interval=0.5, message="cleanup"
                    )
                    for node_id, r in sorted(reports.items()):
                        if r.get("keys_done"):
                            rounds.append({"join": cluster.node(index).node_id,
                                           "node": node_id, **r})  # fmt: skip
                    done = [f"{r['node']} {r['keys_done']} keys" for r in rounds
                            if r["join"] == joining.node_id]  # fmt: skip
                    print(f"joined {joining.node_id}; cleaned: {', '.join(done)}", flush=True)
                t0 = time.time()
                time.sleep(IDLE_SECONDS)
                idle.append((t0, time.time()))
            windows = [(r["started_ms"] / 1000, r["finished_ms"] / 1000) for r in rounds]
            during = [lat for wall, lat, _ in reader.samples
                      if any(a <= wall <= b for a, b in windows)]  # fmt: skip
            quiet = [lat for wall, lat, _ in reader.samples if any(a <= wall <= b for a, b in idle)]
            failed = sum(1 for _, _, ok in reader.samples if not ok)
            after = measure(cluster, [0, 1, 2, 3, 4, 5])
        finally:
            cluster.stop()
    mib = 1024 * 1024
    for r in rounds:
        seconds = max(1e-3, (r["finished_ms"] - r["started_ms"]) / 1000)
        r["seconds"] = round(seconds, 2)
        r["keys_per_second"] = round(r["keys_done"] / seconds)
        r["mib_per_second"] = round(r["bytes_done"] / mib / seconds, 1)
        r["reclaimed_mib_per_second"] = round(r["reclaimed_bytes"] / mib / seconds, 1)
        print(f"cleanup of {r['node']} after the join of {r['join']}: {r['keys_done']} keys, "
              f"{r['bytes_done'] / mib:.1f} MiB in {seconds:.2f} s = {r['keys_per_second']} "
              f"keys/s, {r['mib_per_second']} MiB/s (reclaimed {r['reclaimed_bytes'] / mib:.1f} "
              f"MiB on disk, {r['reclaimed_mib_per_second']} MiB/s); handed off "
              f"{r['keys_handed_off']}")  # fmt: skip
    without = sum(before.values()) + sum(after[n] for n in ("n4", "n5", "n6"))
    print("disk (RocksDB SST bytes after a full compaction):")
    for node_id in sorted(after):
        was = before.get(node_id)
        print(f"  {node_id}: {'-' if was is None else f'{was / mib:.1f} MiB'} -> "
              f"{after[node_id] / mib:.1f} MiB")  # fmt: skip
    print(f"  total: 3 nodes {sum(before.values()) / mib:.1f} MiB -> 6 nodes "
          f"{sum(after.values()) / mib:.1f} MiB "
          f"(without cleanup: {without / mib:.1f} MiB)")  # fmt: skip
    p = {name: {"reads": len(lat), "p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99)}
         for name, lat in (("idle", quiet), ("cleanup", during))}  # fmt: skip
    for name, row in p.items():
        for q in ("p50_ms", "p99_ms"):
            row[q] = None if row[q] is None else round(row[q] * 1000, 2)
        print(f"quorum GET while {name:8}: {row['reads']} reads, p50 {row['p50_ms']} ms, "
              f"p99 {row['p99_ms']} ms")  # fmt: skip
    print(f"failed reads: {failed} of {len(reader.samples)}")
    if rounds:
        print(f"cleanup median {statistics.median(r['keys_per_second'] for r in rounds)} keys/s")
    results.update(before=before, after=after, without_cleanup=without, rounds=rounds,
                   latency=p, failed_reads=failed)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
