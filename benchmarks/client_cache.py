"""The client cache and conditional reads on a real cluster (a benchmark, not a test).

Two measurements on one 3-node loopback cluster (N=3, R=W=quorum), started with
``tests.cluster.Cluster``, after preloading ``--keys`` keys with ``--value-bytes`` random values:

1. **Workload**: ``--threads`` threads share one Python ``Client`` (the real one, pooled
   keep-alive connections) and run ``--read-write-ratio`` reads per write over zipfian keys
   (exponent ``--zipf``); a write sends the context last seen for its key. Three modes, run
   interleaved ``--rounds`` times, each on a fresh client with ``--warmup`` unmeasured seconds
   then ``--duration`` measured seconds: ``off`` (no cache), ``revalidate``
   (``ClientCache()``: every read asks, with If-None-Match) and ``stale`` (``max_staleness`` of
   ``--max-staleness`` seconds). Reported: reads/s, bytes received per read (status line,
   headers and body of read answers, counted in the client; a read served from the cache
   receives 0), and the cache's counters.
2. **Server CPU per read**: the same ``--hot-keys`` keys read ``--cpu-reads`` times, either as
   plain GETs (``full``: the value comes back) or revalidated with their current ETag
   (``304``), interleaved ``--cpu-rounds`` times; CPU = user+system time of the three node
   processes (``/proc/PID/stat``) over the batch, divided by the reads.

Medians over the rounds, with min-max spread. Run under the shared lock (see GUIDE):

    flock /tmp/ringkv-heavy.lock .venv/bin/python benchmarks/client_cache.py --json out.json
    .venv/bin/python benchmarks/client_cache.py --quick      # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.cluster when run as a script

from tests.cluster import Cluster  # noqa: E402

from ringkv.bench import ZipfSampler  # noqa: E402
from ringkv.client import Client, ClientCache  # noqa: E402

MODES = ("off", "revalidate", "stale")
_TICKS = os.sysconf("SC_CLK_TCK")


class CountingClient(Client):
    """A `Client` that counts the bytes of the GET answers it receives (status line, headers
    and body)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received = 0
        self._count_lock = threading.Lock()

    def _send(
        self, endpoint: Any, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        status, answer_headers, data = super()._send(endpoint, method, path, body, headers)
        if method == "GET":
            size = len(data) + 19 + sum(len(k) + len(v) + 4 for k, v in answer_headers.items())
            with self._count_lock:
                self.received += size
        return status, answer_headers, data


def workload(url: str, mode: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    cache = None
    if mode == "revalidate":
        cache = ClientCache()
    elif mode == "stale":
        cache = ClientCache(max_staleness=args.max_staleness)
    client = CountingClient(url, timeout=10, cache=cache)
    contexts: dict[int, str] = {}
    write_fraction = 1.0 / (args.read_write_ratio + 1)
    value = os.urandom(args.value_bytes)
    counts = {"reads": 0, "writes": 0, "read_bytes": 0, "errors": 0}
    lock = threading.Lock()
    measuring = threading.Event()

    def run(thread_seed: int, end: float) -> None:
        rng = random.Random(thread_seed)
        zipf = ZipfSampler(args.keys, args.zipf, rng)
        while time.monotonic() < end:
            key = zipf()
            name = f"cache:{key}"
            try:
                if rng.random() < write_fraction:
                    contexts[key] = client.put(name, value, context=contexts.get(key))
                    if measuring.is_set():
                        with lock:
                            counts["writes"] += 1
                    continue
                result = client.get(name)
                if result.context:
                    contexts[key] = result.context
                if measuring.is_set():
                    with lock:
                        counts["reads"] += 1
            except Exception:  # counted; the run goes on
                with lock:
                    counts["errors"] += 1

    # warm-up (not measured), then the measured window
    threads = [
        threading.Thread(target=run, args=(seed * 100 + i, time.monotonic() + args.warmup))
        for i in range(args.threads)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    measuring.set()
    metrics_before = cache.metrics.as_dict() if cache else {}
    received_before = client.received
    started = time.monotonic()
    end = started + args.duration
    threads = [
        threading.Thread(target=run, args=(seed * 100 + 50 + i, end)) for i in range(args.threads)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    read_bytes = client.received - received_before
    metrics = cache.metrics.as_dict() if cache else {}
    client.close()
    return {
        "mode": mode,
        "seconds": round(elapsed, 3),
        "reads": counts["reads"],
        "writes": counts["writes"],
        "errors": counts["errors"],
        "reads_per_second": round(counts["reads"] / elapsed, 1),
        "bytes_per_read": round(read_bytes / max(counts["reads"], 1), 1),
        "cache": {k: metrics[k] - metrics_before[k] for k in metrics},
    }


def node_cpu(cluster: Cluster) -> float:
    total = 0
    for node in cluster.nodes:
        assert node.process is not None
        fields = Path(f"/proc/{node.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICKS


def cpu_batch(cluster: Cluster, kind: str, tags: dict[str, str], args: argparse.Namespace) -> float:
    """Milliseconds of node CPU per read over one batch of ``--cpu-reads`` reads."""
    names = list(tags)
    per_thread = args.cpu_reads // args.threads
    clients = [Client(cluster.node(i % 3).url, timeout=10) for i in range(args.threads)]
    for c in clients:  # open the connections outside the measured batch
        c.health()

    done = [0] * len(clients)

    def run(client: Client, index: int) -> None:
        for i in range(per_thread):
            name = names[(index * 7 + i) % len(names)]
            if kind == "304":
                ok = client.get(name, if_none_match=tags[name]).not_modified
            else:
                ok = client.get(name).value is not None
            done[index] += ok

    threads = [threading.Thread(target=run, args=(c, i)) for i, c in enumerate(clients)]
    before = node_cpu(cluster)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent = node_cpu(cluster) - before
    for c in clients:
        c.close()
    if sum(done) != per_thread * len(clients):
        raise RuntimeError(
            f"{kind}: only {sum(done)} of {per_thread * len(clients)} reads as expected"
        )
    return 1000 * spent / sum(done)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--value-bytes", type=int, default=10240)
    parser.add_argument("--zipf", type=float, default=0.99)
    parser.add_argument("--read-write-ratio", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-staleness", type=float, default=1.0)
    parser.add_argument("--hot-keys", type=int, default=200)
    parser.add_argument("--cpu-reads", type=int, default=4000)
    parser.add_argument("--cpu-rounds", type=int, default=5)
    parser.add_argument(
        "--parts", default="workload,cpu", help="which measurements (default workload,cpu)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if args.quick:
        args.keys, args.warmup, args.duration, args.rounds = 50, 0.3, 0.7, 1
        args.hot_keys, args.cpu_reads, args.cpu_rounds = 20, 200, 1
    document: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": vars(args),
        "loadavg_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="ringkv-cache-bench-") as tmp:
        cluster = Cluster(Path(tmp), nodes=3, zones=3).start()
        try:
            with Client(cluster.urls, timeout=10) as kv:
                for key in range(args.keys):
                    kv.put(f"cache:{key}", os.urandom(args.value_bytes), w="all")
                url = cluster.node(0).url
                runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
                parts = set(args.parts.split(","))
                for round_ in range(args.rounds if "workload" in parts else 0):
                    for mode in MODES:
                        result = workload(url, mode, args, seed=round_)
                        runs[mode].append(result)
                        print(json.dumps(result), flush=True)
                tags = {}
                for key in range(args.hot_keys):
                    name = f"cpu:{key}"
                    kv.put(name, os.urandom(args.value_bytes), w="all")
                    tags[name] = kv.get(name, r="all").etag or ""
                cpu: dict[str, list[float]] = {"full": [], "304": []}
                for _ in range(args.cpu_rounds if "cpu" in parts else 0):
                    for kind in ("full", "304"):
                        cpu[kind].append(cpu_batch(cluster, kind, tags, args))
                print(json.dumps({"cpu_ms_per_read": cpu}), flush=True)
        finally:
            cluster.stop()
    summary: dict[str, Any] = {
        mode: {
            "reads_per_second": spread([r["reads_per_second"] for r in runs[mode]]),
            "bytes_per_read": spread([r["bytes_per_read"] for r in runs[mode]]),
        }
        for mode in MODES
        if runs[mode]
    }
    if cpu["full"]:
        summary["server_cpu_ms_per_read"] = {kind: spread(v) for kind, v in cpu.items()}
    document.update(runs=runs, cpu=cpu, summary=summary, loadavg_after=os.getloadavg())
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
