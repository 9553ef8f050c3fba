"""Client-observed latency and throughput of a real ringkv cluster (a benchmark, not a test).

What it does, per run:

1. starts a cluster of real `ringkv node` processes on loopback with ``tests.cluster.Cluster``
   (default 3 nodes in 3 zones, N=3) in a temporary directory;
2. preloads K keys (default 2000) with random values of ``--value-bytes`` (default 1 KiB), W=all;
3. runs a closed-loop asyncio workload for D seconds (default 20, after a short warm-up that is
   not recorded) with C concurrent workers (default 16), each sending one request at a time:
   reads:writes 10:1, R=W=quorum, uniformly random keys among the preloaded ones, each request
   to a uniformly random live node. Writes send the context last seen for the key (as a
   read-modify-write client would), so values do not pile up as siblings;
4. reports throughput and p50/p90/p99/p99.9 latency per operation, error counts by kind, the
   nodes' counters of interest (read repairs, hints, anti-entropy) and any ERROR/WARNING or
   traceback the nodes logged.

``--anti-entropy-refill``: ``--refill-at`` seconds into the measurement, node n3 is killed, its
data directory deleted, and it is restarted with ``--anti-entropy-interval 0.5`` while the
workload goes on (requests skip n3 while it is down). The refill ends when every node reports
the same Merkle root for every range (``GET /v1/anti-entropy/trees``, compared "root" per
"end"); the report gives the refill time, the rate (preloaded keys / time from n3 ready to equal
roots) and latency separately for the phases before / n3 down / refilling / after. Since
commit 07a942c a node restarted with an empty disk under its old id is first refilled by range
streaming (a replace) before it reports ready, so on that code most of the refill happens in
the "down" phase and anti-entropy only moves what was written meanwhile; see
docs/performance.md.

Latencies are measured in the client, so they include the client's own (Python) overhead;
client and nodes share the machine. Only requests that succeeded count in the percentiles.

Run (from the repository root):

    .venv/bin/python benchmarks/latency.py                         # baseline, 1 KiB values
    .venv/bin/python benchmarks/latency.py --value-bytes 10240
    .venv/bin/python benchmarks/latency.py --fsync
    .venv/bin/python benchmarks/latency.py --keys 20000 --anti-entropy-refill
    .venv/bin/python benchmarks/latency.py --nodes 1 --replication-factor 1
    .venv/bin/python benchmarks/latency.py --runs 3 --json out.json  # median of 3 fresh clusters
    .venv/bin/python benchmarks/latency.py --quick                  # smoke run, < 15 s

Every loop is bounded: the workload by --duration and --max-ops, preload by --keys, the refill
poll by --refill-timeout. Results are noisy on a small shared machine; the load averages before
and after each run are printed and stored with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.cluster when run as a script

from tests.cluster import Cluster  # noqa: E402

import ringkv  # noqa: E402
from ringkv.client import AsyncClient, RingkvError  # noqa: E402

PERCENTILES = (50, 90, 99, 99.9)
VICTIM = 2  # node index killed and wiped by --anti-entropy-refill (n3)
LOG_PROBLEM = re.compile(r" (ERROR|WARNING|CRITICAL) |Traceback")
# Start-up warnings every node prints when run without credentials, as the harness runs them.
LOG_EXPECTED = re.compile(r"no --auth-tokens-file|no --cluster-secret-file")


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None if empty)."""
    if not sorted_values:
        return None
    rank = math.ceil(q / 100 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(rank, 1)) - 1]


def summarize(latencies_s: list[float], seconds: float) -> dict[str, Any]:
    values = sorted(x * 1000 for x in latencies_s)
    out: dict[str, Any] = {
        "count": len(values),
        "ops_per_s": round(len(values) / seconds, 1) if seconds > 0 else None,
        "mean_ms": round(statistics.fmean(values), 3) if values else None,
        "max_ms": round(values[-1], 3) if values else None,
    }
    for q in PERCENTILES:
        p = percentile(values, q)
        out[f"p{q:g}_ms"] = None if p is None else round(p, 3)
    return out


def cpu_seconds(pid: int | None = None) -> float | None:
    """CPU time (user + system) used so far by a process (default: this one), from /proc."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_cpu(cluster: Cluster) -> dict[str, tuple[int, float | None]]:
    return {
        n.node_id: (n.process.pid, cpu_seconds(n.process.pid))
        for n in cluster.nodes
        if n.process is not None and n.running
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- workload


@dataclass
class Workload:
    clients: list[AsyncClient]
    keys: list[str]
    values: list[bytes]
    write_fraction: float
    deadline: float  # monotonic time the workload stops
    record_from: float  # samples of requests started before this are warm-up
    max_ops: int
    up: list[int]  # node indexes requests may go to (the refill takes n3 out while it is down)
    contexts: dict[str, str] = field(default_factory=dict)  # last context seen per key
    issued: int = 0
    samples: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: {"read": [], "write": []}
    )  # op -> [(start, latency seconds)]
    errors: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # not-found reads, sibling reads


async def worker(load: Workload, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < load.deadline and load.issued < load.max_ops:
        load.issued += 1
        client = load.clients[rng.choice(load.up)]
        key = rng.choice(load.keys)
        op = "write" if rng.random() < load.write_fraction else "read"
        started = time.monotonic()
        t0 = time.perf_counter()
        try:
            if op == "write":
                value = rng.choice(load.values)
                ctx = await client.put(key, value, context=load.contexts.get(key), w="quorum")
                load.contexts[key] = ctx
            else:
                result = await client.get(key, r="quorum")
                if result.context:
                    load.contexts[key] = result.context
                if not result.found:
                    load.outcomes["read_not_found"] += 1
                elif result.value is None:
                    load.outcomes["read_siblings"] += 1
        except RingkvError as exc:
            load.errors[f"{op} {exc.status or ''} {exc.code}".replace("  ", " ")] += 1
            if exc.status == 0:  # connection failed: do not spin on a dead node
                await asyncio.sleep(0.01)
            continue
        elapsed = time.perf_counter() - t0
        if started >= load.record_from:
            load.samples[op].append((started, elapsed))


async def preload(
    clients: list[AsyncClient],
    keys: list[str],
    values: list[bytes],
    contexts: dict[str, str],
    concurrency: int = 32,
) -> float:
    """Write every key once (W=all); returns the seconds it took."""
    started = time.monotonic()
    queue = list(reversed(keys))

    async def loader(i: int) -> None:
        while queue:
            key = queue.pop()
            client = clients[hash(key) % len(clients)]
            contexts[key] = await client.put(key, values[i % len(values)], w="all")

    await asyncio.gather(*(loader(i) for i in range(concurrency)))
    return time.monotonic() - started


# --------------------------------------------------------------------------- anti-entropy refill


async def tree_roots(session: aiohttp.ClientSession, urls: list[str]) -> list[dict[str, Any]]:
    """Every node's /v1/anti-entropy/trees, fetched concurrently (a near-simultaneous view)."""

    async def fetch(url: str) -> dict[str, Any]:
        async with session.get(url + "/v1/anti-entropy/trees") as response:
            response.raise_for_status()
            document: dict[str, Any] = await response.json()
            return document

    return await asyncio.gather(*(fetch(u) for u in urls))


def roots_equal(documents: list[dict[str, Any]]) -> tuple[bool, int]:
    """(every range has one root on every node holding it, number of ranges that differ)."""
    by_end: dict[str, dict[str, str]] = {}
    for document in documents:
        if not document["ranges"]:
            return False, -1
        for entry in document["ranges"]:
            by_end.setdefault(entry["end"], {})[document["node"]] = entry["root"]
    differing = sum(1 for roots in by_end.values() if len(set(roots.values())) != 1)
    return differing == 0, differing


async def refill(cluster: Cluster, load: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """Kill n3, wipe it, restart it with fast anti-entropy, wait until all trees are equal."""
    victim = cluster.node(VICTIM)
    await asyncio.sleep(max(0.0, load.record_from + args.refill_at - time.monotonic()))
    load.up.remove(VICTIM)
    t_kill = time.monotonic()
    await asyncio.to_thread(victim.kill)
    await asyncio.to_thread(victim.wipe)
    victim.args += ["--anti-entropy-interval", "0.5"]  # argparse: the last occurrence wins
    await asyncio.to_thread(victim.start)
    await asyncio.to_thread(victim.wait_ready, 30)
    t_ready = time.monotonic()
    load.up.append(VICTIM)
    polls, differing, t_equal, t_almost = 0, -1, None, None
    trace = []  # (seconds since n3 ready, ranges whose roots differ), one per poll
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while polls < 100_000 and time.monotonic() < t_ready + args.refill_timeout:
            polls += 1
            try:
                documents = await tree_roots(session, cluster.urls)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.2)
                continue
            equal, differing = roots_equal(documents)
            now = time.monotonic()
            trace.append((round(now - t_ready, 2), differing))
            ranges = max(len(d["ranges"]) for d in documents)
            if t_almost is None and 0 <= differing <= ranges // 100:
                t_almost = now  # all but <= 1% of the ranges agree (writes in flight differ)
            if equal:
                t_equal = now
                break
            await asyncio.sleep(0.2)
    seconds = None if t_equal is None else t_equal - t_ready
    return {
        "t_kill": t_kill,
        "t_ready": t_ready,
        "t_equal": t_equal,
        "down_s": round(t_ready - t_kill, 3),
        "refill_s": None if seconds is None else round(seconds, 3),
        "refill_keys_per_s": None if not seconds else round(len(load.keys) / seconds, 1),
        "refill_99pct_ranges_s": None if t_almost is None else round(t_almost - t_ready, 3),
        "finished_during_workload": t_equal is not None and t_equal <= load.deadline,
        "polls": polls,
        "ranges_still_differing": None if t_equal is not None else differing,
        "trace": trace,
    }


# --------------------------------------------------------------------------- node observations


def scrape(url: str) -> dict[str, float]:
    """The node's interesting Prometheus counters, summed over labels we do not split."""
    import urllib.request

    wanted = {
        "ringkv_read_repairs_total": "read_repairs",
        "ringkv_hints_stored_total": "hints_stored",
        "ringkv_hints_delivered_total": "hints_delivered",
        "ringkv_replica_rpc_errors_total": "replica_rpc_errors",
        "ringkv_stored_keys": "stored_keys",
    }
    out: dict[str, float] = {}
    try:
        text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    except OSError as exc:
        return {"scrape_error": str(exc)}  # type: ignore[dict-item]
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        if name in wanted:
            out[wanted[name]] = out.get(wanted[name], 0) + float(value)
        elif name == "ringkv_anti_entropy_keys_total":
            direction = "fetched" if 'direction="fetched"' in name_labels else "pushed"
            out[f"ae_{direction}"] = out.get(f"ae_{direction}", 0) + float(value)
        elif name == "ringkv_requests_total" and 'outcome="5' in name_labels:
            out["server_5xx"] = out.get("server_5xx", 0) + float(value)
    return {k: int(v) for k, v in out.items()}


def log_problems(cluster: Cluster, limit: int = 8, context: int = 12) -> dict[str, Any]:
    """ERROR/WARNING lines and tracebacks in the node logs (except the expected start-up
    warnings): a count, and the first few with the lines that follow each (the traceback)."""
    found: dict[str, Any] = {}
    for node in cluster.nodes:
        try:
            lines = node.log_path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        bad = [
            i
            for i, line in enumerate(lines)
            if LOG_PROBLEM.search(line) and not LOG_EXPECTED.search(line)
        ]
        if bad:
            excerpts, shown_until = [], -1
            for i in bad:
                if i > shown_until and len(excerpts) < limit:
                    excerpts.append("\n".join(lines[i : i + context]))
                    shown_until = i + context
            found[node.node_id] = {"count": len(bad), "first": excerpts}
    return found


# --------------------------------------------------------------------------- one run


def node_args(args: argparse.Namespace) -> list[str]:
    extra = ["--fsync", "true"] if args.fsync else []
    for item in args.node_arg:
        extra += item.split("=", 1) if item.startswith("--") and "=" in item else [item]
    return extra


def start_cluster(args: argparse.Namespace, root: Path, attempts: int = 3) -> Cluster:
    """Start the nodes; retry with fresh ports if one fails (the harness picks free ports, and
    another process on the machine may take one before the node binds it)."""
    for attempt in range(1, attempts + 1):
        cluster = Cluster(
            root / f"attempt{attempt}",
            nodes=args.nodes,
            zones=min(args.nodes, 3),
            replication_factor=args.replication_factor,
            extra_args=node_args(args),
        )
        try:
            return cluster.start(deadline=60)
        except AssertionError as exc:
            cluster.stop()
            if attempt == attempts:
                raise
            print(f"cluster start failed (attempt {attempt}), retrying: {str(exc)[:300]}")
    raise AssertionError("unreachable")


async def run_once(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    load_before = loadavg()
    cluster = start_cluster(args, root)
    clients = [AsyncClient(url, timeout=args.timeout) for url in cluster.urls]
    rng = random.Random(args.seed)
    values = [rng.randbytes(args.value_bytes) for _ in range(16)]
    keys = [f"bench-{i:07d}" for i in range(args.keys)]
    contexts: dict[str, str] = {}
    try:
        preload_s = await preload(clients, keys, values, contexts)
        now = time.monotonic()
        load = Workload(
            clients=clients,
            keys=keys,
            values=values,
            write_fraction=1 / (1 + args.read_write_ratio),
            deadline=now + args.warmup + args.duration,
            record_from=now + args.warmup,
            max_ops=args.max_ops,
            up=list(range(args.nodes)),
            contexts=contexts,
        )
        cpu_before = cpu_seconds(), node_cpu(cluster)
        workers = [worker(load, args.seed * 1000 + i) for i in range(args.concurrency)]
        refill_task = (
            asyncio.ensure_future(refill(cluster, load, args)) if args.anti_entropy_refill else None
        )
        await asyncio.gather(*workers)
        ended = time.monotonic()
        cpu_after = cpu_seconds(), node_cpu(cluster)
        refill_info = await refill_task if refill_task is not None else None
        metrics = {n.node_id: scrape(n.url) for n in cluster.nodes if n.running}
    finally:
        for client in clients:
            await client.close()
        cluster.stop()
    measured = max(1e-9, min(ended, load.deadline) - load.record_from)
    result: dict[str, Any] = {
        "loadavg_before": load_before,
        "preload_s": round(preload_s, 2),
        "measured_s": round(measured, 2),
        "ops_issued": load.issued,
        "read": summarize([lat for _, lat in load.samples["read"]], measured),
        "write": summarize([lat for _, lat in load.samples["write"]], measured),
        "errors": dict(load.errors),
        "outcomes": dict(load.outcomes),
    }
    result["total_ops_per_s"] = round(
        (result["read"]["count"] + result["write"]["count"]) / measured, 1
    )
    # CPU used during warm-up + measurement, as a fraction of one core (2 cores = 2.0 total).
    wall = ended - (load.record_from - args.warmup)
    busy = {"client": round((cpu_after[0] - cpu_before[0]) / wall, 2)}  # type: ignore[operator]
    for node_id, (pid, used) in cpu_after[1].items():
        pid0, used0 = cpu_before[1].get(node_id, (None, None))
        if pid == pid0 and used is not None and used0 is not None:
            busy[node_id] = round((used - used0) / wall, 2)
    result["cpu_cores_busy"] = busy
    # CPU milliseconds per request (warm-up included): less sensitive to other load than latency.
    nodes_busy = [v for k, v in busy.items() if k != "client"]
    result["cpu_ms_per_op"] = {
        "client": round(busy["client"] * wall * 1000 / max(1, load.issued), 3),
        "nodes": round(sum(nodes_busy) * wall * 1000 / max(1, load.issued), 3)
        if len(nodes_busy) == args.nodes
        else None,
    }
    if refill_info is not None:
        result["refill"] = refill_info
        result["phases"] = phases(load, refill_info, ended)
    result["node_metrics"] = metrics
    result["node_log_problems"] = log_problems(cluster)
    result["loadavg_after"] = loadavg()
    return result


def phases(load: Workload, info: dict[str, Any], ended: float) -> dict[str, Any]:
    """Latency by phase of the refill: before the kill, n3 down, refilling, after."""
    t_equal = info["t_equal"] or ended
    bounds = {
        "before": (load.record_from, info["t_kill"]),
        "down": (info["t_kill"], info["t_ready"]),
        "refilling": (info["t_ready"], t_equal),
        "after": (t_equal, ended),
    }
    out: dict[str, Any] = {}
    for name, (lo, hi) in bounds.items():
        seconds = min(hi, ended) - lo
        if seconds <= 0:
            continue
        out[name] = {"seconds": round(seconds, 2)}
        for op in ("read", "write"):
            lats = [lat for start, lat in load.samples[op] if lo <= start < hi]
            s = summarize(lats, seconds)
            out[name][op] = {k: s[k] for k in ("count", "ops_per_s", "p50_ms", "p99_ms")}
    for key in ("t_kill", "t_ready", "t_equal"):
        info.pop(key)
    return out


# --------------------------------------------------------------------------- reporting


def fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def print_run(index: int, r: dict[str, Any]) -> None:
    print(
        f"\nrun {index}: preload {r['preload_s']} s, measured {r['measured_s']} s, "
        f"{r['total_ops_per_s']} ops/s, load average {r['loadavg_before']} -> "
        f"{r['loadavg_after']}"
    )
    cols = ["count", "ops_per_s", *[f"p{q:g}_ms" for q in PERCENTILES], "max_ms"]
    print(f"  {'op':<6}" + "".join(f"{c:>11}" for c in cols))
    for op in ("read", "write"):
        print(f"  {op:<6}" + "".join(f"{fmt(r[op][c]):>11}" for c in cols))
    print(f"  errors: {r['errors'] or 'none'}; outcomes: {r['outcomes'] or '-'}")
    print(f"  CPU, cores busy: {r['cpu_cores_busy']}; CPU ms per request: {r['cpu_ms_per_op']}")
    if "refill" in r:
        f = r["refill"]
        print(
            f"  refill: n3 down {f['down_s']} s, refilled {f['refill_s']} s after ready "
            f"({f['refill_keys_per_s']} keys/s; all but 1% of ranges equal after "
            f"{f['refill_99pct_ranges_s']} s), during workload: "
            f"{f['finished_during_workload']}"
        )
        sampled = f["trace"][:: max(1, len(f["trace"]) // 12)]
        print(f"    differing ranges by seconds since n3 ready: {sampled}")
        for name, p in r["phases"].items():
            print(
                f"    {name:<10} {p['seconds']:>6} s  read p50/p99 "
                f"{fmt(p['read']['p50_ms'])}/{fmt(p['read']['p99_ms'])} ms  write p50/p99 "
                f"{fmt(p['write']['p50_ms'])}/{fmt(p['write']['p99_ms'])} ms  "
                f"({p['read']['count']} reads, {p['write']['count']} writes)"
            )
    print(f"  node counters: {r['node_metrics']}")
    for node_id, problems in r["node_log_problems"].items():
        print(f"  {node_id} logged {problems['count']} ERROR/WARNING/traceback lines; first:")
        for excerpt in problems["first"]:
            print("    | " + excerpt.replace("\n", "\n    | "))


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over runs of every headline number."""

    def med(values: list[Any]) -> float | None:
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 3) if values else None

    out: dict[str, Any] = {
        "total_ops_per_s": med([r["total_ops_per_s"] for r in runs]),
        "cpu_ms_per_op_nodes": med([r["cpu_ms_per_op"]["nodes"] for r in runs]),
        "cpu_ms_per_op_client": med([r["cpu_ms_per_op"]["client"] for r in runs]),
    }
    for op in ("read", "write"):
        out[op] = {k: med([r[op][k] for r in runs]) for k in runs[0][op]}
    if "refill" in runs[0]:
        out["refill_s"] = med([r["refill"]["refill_s"] for r in runs])
        out["refill_keys_per_s"] = med([r["refill"]["refill_keys_per_s"] for r in runs])
        out["refill_99pct_ranges_s"] = med([r["refill"]["refill_99pct_ranges_s"] for r in runs])
        out["phases"] = {
            name: {
                op: {
                    k: med([r["phases"].get(name, {}).get(op, {}).get(k) for r in runs])
                    for k in ("ops_per_s", "p50_ms", "p99_ms")
                }
                for op in ("read", "write")
            }
            for name in ("before", "down", "refilling", "after")
        }
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--nodes", type=int, default=3, help="cluster size (default 3)")
    p.add_argument("--replication-factor", type=int, default=3, help="N (default 3)")
    p.add_argument("--keys", type=int, default=2000, help="keys preloaded (default 2000)")
    p.add_argument("--value-bytes", type=int, default=1024, help="value size (default 1024)")
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop workers (16)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds (20)")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds first (2)")
    p.add_argument("--max-ops", type=int, default=2_000_000, help="request bound per run")
    p.add_argument("--read-write-ratio", type=float, default=10.0, help="reads per write (10)")
    p.add_argument("--timeout", type=float, default=5.0, help="client timeout, seconds (5)")
    p.add_argument("--fsync", action="store_true", help="start nodes with --fsync true")
    p.add_argument(
        "--anti-entropy-refill",
        action="store_true",
        help="kill, wipe and restart n3 during the run; time the refill",
    )
    p.add_argument(
        "--refill-at", type=float, default=2.0, help="seconds into the measurement to kill n3 (2)"
    )
    p.add_argument(
        "--refill-timeout",
        type=float,
        default=120.0,
        help="give up waiting for equal trees after this many seconds (120)",
    )
    p.add_argument(
        "--node-arg",
        action="append",
        default=[],
        help="extra flag for every node, e.g. --node-arg=--anti-entropy-rate=20000",
    )
    p.add_argument("--runs", type=int, default=1, help="fresh clusters to run; medians reported")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep-dir", type=Path, help="put (and keep) node data and logs here")
    p.add_argument("--json", type=Path, help="write every run and the medians to this file")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 200 keys, 3 s, 1 run (finishes in well under 15 s)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.keys, args.duration, args.warmup, args.runs = 200, 3.0, 0.5, 1
        args.refill_at, args.refill_timeout, args.max_ops = 0.5, 8.0, 50_000
    if args.anti_entropy_refill and args.nodes < 3:
        p.error("--anti-entropy-refill needs at least 3 nodes")
    if args.replication_factor > args.nodes:
        p.error("--replication-factor cannot exceed --nodes")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    print(
        f"ringkv latency benchmark {started}; {os.cpu_count()} CPUs; "
        f"{' '.join(sys.argv[1:]) or '(defaults)'}"
    )
    print(f"ringkv {ringkv.__version__} from {Path(ringkv.__file__).parent}")
    print(
        f"{args.nodes} node(s), N={args.replication_factor}, {args.keys} keys x "
        f"{args.value_bytes} B, C={args.concurrency}, {args.duration} s, "
        f"reads:writes {args.read_write_ratio:g}:1, R=W=quorum, fsync={args.fsync}"
    )
    runs = []
    with tempfile.TemporaryDirectory(prefix="ringkv-bench-") as tmp:
        if args.keep_dir:
            args.keep_dir.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep_dir)  # node logs and data stay there
        for i in range(args.runs):
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                result = runner.run(run_once(args, Path(tmp) / f"run{i}"))
            runs.append(result)
            print_run(i + 1, result)
    summary = median_of(runs)
    if args.runs > 1:
        print(f"\nmedian of {args.runs} runs: {json.dumps(summary, indent=1)}")
    if args.json:
        document = {
            "started": started,
            "argv": sys.argv[1:],
            "cpus": os.cpu_count(),
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "median": summary,
            "runs": runs,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
