"""Backup and restore throughput, the incremental saving, and what a backup costs a quorum
workload's tail latency.

    flock /tmp/ringkv-heavy.lock .venv/bin/python benchmarks/backup.py \
        [--keys 50000] [--value-bytes 1024] [--rounds 3] [--rate 300] [--backup-rate MB_S]
        [--under backup,reads,snapshots,backup+idle@1] [--split-cpus] [--skip-restore]
        [--json out.json]

A 3-node cluster (N=3) and the Versity S3 Gateway (tests/s3server.py) on loopback. Preload
``--keys`` values, then for each round: an open-loop quorum workload (`ringkv bench --rate
--consistency balanced`) runs for the same time once alone and once beside each ``--under``
arm (by default full backups, each to a new prefix so nothing is referenced, back to back),
the phases in alternating order; p99 of each is recorded, with where the phase's CPU went (the
nodes, the S3 gateway, the backup client, the load generator) and how often the nodes' event
loops ran a 100 ms timer late (their ``ringkv_event_loop_lag_seconds``). Then: a second
backup after rewriting 1 % of the keys (the incremental saving), and a restore into a fresh
4-node cluster (MB/s, keys/s). Reports medians and spread over rounds.

A benchmark, not a test (tests/test_benchmarks_smoke.py runs it tiny).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import Cluster
from tests.s3server import S3Server

import ringkv.backup as backup_module
from ringkv.backup import RateLimit, Store, _call, _node_clients, run_backup, run_restore
from ringkv.client import AsyncClient, Client, RingkvError

BUCKET = "bench-backups"


class _Done(Exception):
    """--skip-restore: the loaded rounds are all that was asked for."""


async def preload(urls: list[str], keys: int, value_bytes: int, prefix: str = "k") -> None:
    client = AsyncClient(urls)
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with gate:
            for attempt in range(5):  # a loaded machine may time a write out: write it again
                try:
                    await client.put(f"{prefix}{i}", os.urandom(value_bytes), w="quorum")
                    return
                except RingkvError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.5)

    await asyncio.gather(*(one(i) for i in range(keys)))
    await client.close()


def readable(urls: list[str], keys: int) -> int:
    """How many of the preloaded keys the restored cluster serves. The restore sends one
    record per distinct replica copy, more than ``keys`` when a backup caught replicas apart
    (a write the third replica had not applied yet), so the count of keys read back is
    what shows nothing was lost."""
    client = Client(urls)
    try:
        names = [f"k{i}" for i in range(keys)]
        answers = client.get_many(names, consistency="strong")
        return sum(1 for a in answers.values() if not isinstance(a, Exception) and a.found)
    finally:
        client.close()


def workload(
    urls: list[str], args: argparse.Namespace, seconds: float, out: Path
) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "ringkv", "bench", "--endpoint", ",".join(urls),
        "--rate", str(args.rate), "--duration", str(seconds), "--warmup", "0.5",
        "--keys", str(args.keys), "--key-prefix", "k", "--value-bytes", str(args.value_bytes),
        "--consistency", "balanced", "--json", str(out), "--quiet",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=seconds + 120)
    run = json.loads(out.read_text())["runs"][0]
    return {"p99_ms": run["latency_ms"]["p99"], "p50_ms": run["latency_ms"]["p50"],
            "throughput": run["throughput"], "errors": run["error_count"]}  # fmt: skip


def node_side_only(endpoint: str, reads: bool, rate: float, stop: threading.Event) -> int:
    """What a backup asks of the nodes, without the upload: snapshot and checksum listing on
    every node, then (``reads``) every file read through the API at ``rate``; snapshots
    deleted. Returns the bytes read. Attributes a backup's cost to the nodes or the rest.
    Without ``reads`` it still waits as long as reading the files at ``rate`` would take, so
    snapshots come at a backup's pace, not back to back."""
    entry, ring = _node_clients(endpoint, None, 30.0)
    members = [m for m in ring["nodes"] if m.get("tokens")]
    name = f"attr-{time.monotonic_ns()}"
    limit, done = RateLimit(rate), 0
    with contextlib.ExitStack() as stack:
        stack.callback(entry.close)
        for m in members:
            c = Client(f"http://{m['address']}", timeout=30.0)
            stack.callback(c.close)
            _call(c, "POST", "/v1/admin/snapshot", json.dumps({"name": name}).encode(),
                  {"Content-Type": "application/json"})  # fmt: skip
            _, _, data = _call(c, "GET", f"/v1/admin/snapshots/{name}")
            listed = json.loads(data)["file_list"]
            if not reads and rate > 0:
                stop.wait(sum(f["size"] for f in listed) / rate)
            for f in listed if reads else []:
                offset, path = 0, f"/v1/admin/snapshots/{name}/files/{quote(f['path'])}"
                while offset < f["size"]:  # a node may answer less than asked
                    length = min(backup_module.CHUNK, f["size"] - offset)
                    got = len(_call(c, "GET", f"{path}?offset={offset}&length={length}")[2])
                    if not got:
                        break
                    limit.take(got)
                    offset += got
                done += offset
            _call(c, "DELETE", f"/v1/admin/snapshots/{name}")
    return done


BASELINE = " (baseline)"  # the suffix of the phases run on the --baseline-src cluster
LAG_OVER = ("0.005", "0.025")  # event-loop lag bucket bounds reported (seconds, as scraped)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, every thread (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lag_counts(url: str) -> dict[str, float]:
    """The node's event-loop lag histogram (its 100 ms timer probes): the count, and how many
    were late by more than each of ``LAG_OVER``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("ringkv_event_loop_lag_seconds_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            out[bound] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("ringkv_event_loop_lag_seconds_count"):
            out["count"] = float(line.rsplit(" ", 1)[1])
    return out


def probe(nodes: list[Any], gateways: list[Any]) -> dict[str, Any]:
    """Counters read around a phase: each node's CPU and loop lag, the S3 gateways' CPU, and
    this process's own (the backup client's thread; the workload runs in a child)."""
    return {
        "nodes": [(_cpu_seconds(n.process.pid), _lag_counts(n.url)) for n in nodes],
        "gateway": sum(_cpu_seconds(g.process.pid) for g in gateways if g is not None),
        "client": time.process_time(),
        "workload": sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]),
        "at": time.monotonic(),
    }


def cost(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Where a phase's CPU went (seconds) and how often the nodes' loops were late."""
    pairs = list(zip(before["nodes"], after["nodes"], strict=True))
    out: dict[str, Any] = {
        "seconds": round(after["at"] - before["at"], 2),
        "cpu_nodes_s": round(sum(a[0] - b[0] for b, a in pairs), 2),
        "cpu_gateway_s": round(after["gateway"] - before["gateway"], 2),
        "cpu_client_s": round(after["client"] - before["client"], 2),
        "cpu_workload_s": round(after["workload"] - before["workload"], 2),
    }
    probes = sum(a[1]["count"] - b[1]["count"] for b, a in pairs)
    out["loop_probes"] = int(probes)
    for bound in LAG_OVER:
        within = sum(a[1][bound] - b[1][bound] for b, a in pairs)
        out[f"loop_late_over_{float(bound) * 1000:g}ms"] = int(probes - within)
    return out


@dataclass(frozen=True)
class Arm:
    """What runs beside the workload in one loaded phase (see ``--under``)."""

    name: str
    kind: str
    idle: bool
    chunk: int


def parse_arm(text: str, default_chunk: int) -> Arm:
    spec, _, chunk_mb = text.partition("@")
    kind, _, flag = spec.partition("+")
    if kind not in ("backup", "snapshots", "reads") or flag not in ("", "idle"):
        raise SystemExit(f"--under: cannot read {text!r} (KIND[+idle][@CHUNK_MB])")
    chunk = int(float(chunk_mb) * 1024 * 1024) if chunk_mb else default_chunk
    return Arm(text, kind, flag == "idle", chunk)


def backup_loop(
    arm: Arm,
    endpoint: str,
    store: Store,
    args: argparse.Namespace,
    stop: threading.Event,
    done: list[dict[str, Any]],
) -> None:
    """Back up (or do an arm's part of it) back to back until ``stop``; one entry in ``done``
    per run. Runs in its own thread, whose priority the arm sets."""
    # per thread on Linux, and inherited by the threads boto3 starts
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), args.nice)
    if arm.idle:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
    backup_module.CHUNK = arm.chunk  # one backup at a time: the global is this arm's
    rate = args.backup_rate * 1e6
    prefix, n = store.prefix, 0
    while not stop.is_set():
        t0 = time.monotonic()
        if arm.kind != "backup":
            read = node_side_only(endpoint, arm.kind == "reads", rate, stop)
            done.append({"seconds": time.monotonic() - t0, "bytes": read})
        else:
            store.prefix = f"{prefix}-{n}"  # a new prefix: every backup is a full one
            m = run_backup(endpoint, store, backup_id=f"r{n}", rate=rate)
            done.append({"seconds": time.monotonic() - t0, "bytes": m["bytes"]})
        n += 1


def summarize(rounds: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Per phase: p99 and p50 over rounds, the p99 slowdown against the same round's quiet
    phase, and the median CPU seconds and loop lag counts."""
    out: dict[str, Any] = {}
    for name in names:
        rows = [r[name] for r in rounds]
        entry: dict[str, Any] = {
            "p99_ms": spread([r["p99_ms"] for r in rows]),
            "p50_ms": spread([r["p50_ms"] for r in rows]),
            "errors": sum(r["errors"] for r in rows),
        }
        quiet = "quiet" + name[len(name.split(BASELINE)[0]) :]  # the same cluster's
        if name != quiet:
            entry["p99_slowdown"] = spread(
                [r[name]["p99_ms"] / r[quiet]["p99_ms"] - 1 for r in rounds]
            )
        for key in rows[0]:
            if key.startswith(("cpu_", "loop_")) or key in ("seconds", "runs"):
                entry[key] = statistics.median(r[key] for r in rows)
        out[name] = entry
    return out


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}  # fmt: skip


def start_on(cluster: Cluster, cpus: set[int] | None) -> None:
    """Start ``cluster``; with ``cpus``, its processes (which inherit the mask) run there."""
    if cpus is None:
        cluster.start(60)
        return
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        cluster.start(60)
    finally:
        os.sched_setaffinity(0, mine)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=50000)
    parser.add_argument("--value-bytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=300.0, help="workload requests/s")
    parser.add_argument(
        "--backup-rate",
        type=float,
        default=0.0,
        help="MB/s the backups under load read at (0: unlimited)",
    )
    parser.add_argument(
        "--under",
        default="backup",
        help="what runs beside the workload, as arms compared with the same round's quiet "
        "phase, comma-separated, each KIND[+idle][@CHUNK_MB]. KIND: backup (whole backups, "
        "the default), snapshots (only their node side: snapshots with checksum listings), "
        "reads (those plus reading every file through the node API, no upload; snapshots "
        "alone wait as long as the reads would take at --backup-rate). +idle: the "
        "backup thread and the S3 gateway under SCHED_IDLE, so they get only CPU time the "
        "nodes and the workload leave unused -- standing in for a deployment where they run on "
        "other machines; the nodes' own part of a backup is still measured in full. @CHUNK_MB: "
        "bytes per file read (default: --chunk-mb, else as built)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the S3 gateway and the backup thread (they share the nodes' cores "
        "here; in a deployment they run elsewhere)",
    )
    parser.add_argument(
        "--chunk-mb", type=float, default=0, help="bytes per file read of a backup (0: as built)"
    )
    parser.add_argument(
        "--baseline-src",
        help="also run every phase, interleaved, on a second 3-node cluster whose nodes import "
        "ringkv from this directory (e.g. an earlier commit's src/, from git archive): before "
        "and after a change to the node, in one run. Its phases are named with a "
        f"{BASELINE.strip()!r} suffix; the backup client is this checkout's for both",
    )
    parser.add_argument(
        "--split-cpus",
        action="store_true",
        help="run the nodes on CPU 0 only and everything else (the S3 gateways, the backup "
        "client, the load generator) on the other CPUs, in every phase: the nodes' machine "
        "apart from the clients' and the object store's, as in a deployment",
    )
    parser.add_argument("--skip-restore", action="store_true", help="only the loaded rounds")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.chunk_mb:
        backup_module.CHUNK = int(args.chunk_mb * 1024 * 1024)
    default_chunk = backup_module.CHUNK
    arms = [parse_arm(a, default_chunk) for a in args.under.split(",") if a]
    result: dict[str, Any] = {"keys": args.keys, "value_bytes": args.value_bytes,
                              "rate": args.rate, "backup_rate_mb": args.backup_rate,
                              "under": args.under, "nice": args.nice, "chunk_mb": args.chunk_mb,
                              "uptime_before": os.getloadavg()}  # fmt: skip
    node_cpus: set[int] | None = None
    if args.split_cpus:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--split-cpus needs at least 2 CPUs")
        node_cpus = {cpus[0]}
        # this process and what it starts from now on (gateways, client threads, the load
        # generator) keep off the nodes' CPU; the nodes are started on it (start_on)
        os.sched_setaffinity(0, set(cpus[1:]))
    result["split_cpus"] = args.split_cpus
    with tempfile.TemporaryDirectory(prefix="ringkv-backup-bench-") as tmp:
        root = Path(tmp)
        s3 = S3Server(root / "s3", nice=args.nice).start()
        s3_idle = S3Server(root / "s3-idle", idle=True) if any(a.idle for a in arms) else None
        source = Cluster(root / "src", nodes=3, zones=3)
        clusters = [("", source)]
        if args.baseline_src:
            base = Cluster(root / "base", nodes=3, zones=3)
            for node in base.nodes:  # ahead of the editable install on the path
                node.env = {**(node.env or {}), "PYTHONPATH": args.baseline_src}
            clusters.append((BASELINE, base))
        target = Cluster(root / "dst", nodes=4, zones=2)
        try:
            s3.create_bucket(BUCKET)
            os.environ.update(s3.env())
            if s3_idle is not None:  # same keys: one environment serves both
                s3_idle.access_key, s3_idle.secret_key = s3.access_key, s3.secret_key
                s3_idle.start().create_bucket(BUCKET)
            for _, cluster in clusters:
                start_on(cluster, node_cpus)
                started = time.monotonic()
                asyncio.run(preload(cluster.urls, args.keys, args.value_bytes))
                print(f"preloaded {args.keys} keys in {time.monotonic() - started:.1f} s",
                      flush=True)  # fmt: skip
            endpoint = source.urls[0]
            rounds = []
            for i in range(args.rounds):
                # one full backup alone first: how long the loaded phases must be
                t0 = time.monotonic()
                alone = run_backup(endpoint, Store(BUCKET, f"alone{i}", endpoint=s3.endpoint),
                                   backup_id="a")  # fmt: skip
                alone_seconds = time.monotonic() - t0
                seconds = max(10.0, 1.5 * alone_seconds)
                phases = [(suffix, cluster, arm) for arm in [None, *arms]
                          for suffix, cluster in clusters]  # fmt: skip
                if i % 2:
                    phases.reverse()
                row: dict[str, Any] = {"backup_alone_seconds": round(alone_seconds, 2),
                                       "backup_bytes": alone["bytes"]}  # fmt: skip
                for suffix, cluster, arm in phases:
                    name = (arm.name if arm else "quiet") + suffix
                    out = root / f"bench-{i}-{len(row)}.json"
                    before = probe(cluster.nodes, [s3, s3_idle])
                    if arm is None:
                        row[name] = workload(cluster.urls, args, seconds, out)
                    else:
                        gateway = s3_idle if arm.idle and s3_idle else s3
                        store = Store(BUCKET, f"r{i}-{len(row)}", endpoint=gateway.endpoint)
                        stop, done = threading.Event(), list[dict[str, Any]]()
                        worker = threading.Thread(
                            target=backup_loop,
                            args=(arm, cluster.urls[0], store, args, stop, done),
                        )
                        worker.start()
                        row[name] = workload(cluster.urls, args, seconds, out)
                        stop.set()
                        worker.join()
                        backup_module.CHUNK = default_chunk
                        row[name]["runs"] = len(done)
                        row[name]["run_seconds"] = spread([d["seconds"] for d in done])
                    row[name].update(cost(before, probe(cluster.nodes, [s3, s3_idle])))
                print(json.dumps(row), flush=True)
                rounds.append(row)
            result["rounds"] = rounds
            result["phases"] = summarize(
                rounds, [(a.name if a else "quiet") + x for a in [None, *arms] for x, _ in clusters]
            )
            mbps = [r["backup_bytes"] / r["backup_alone_seconds"] / 1e6 for r in rounds]
            keys_s = [args.keys / r["backup_alone_seconds"] for r in rounds]
            result["backup_mb_per_s"] = spread(mbps)
            result["backup_keys_per_s"] = spread(keys_s)
            if args.skip_restore:
                raise _Done
            for _, cluster in clusters[1:]:
                cluster.stop()
            # incremental: rewrite 1 % of the keys, back up again under the same prefix
            store = Store(BUCKET, "incremental", endpoint=s3.endpoint)
            first = run_backup(endpoint, store, backup_id="i1")
            asyncio.run(preload(source.urls, max(1, args.keys // 100), args.value_bytes))
            second = run_backup(endpoint, store, backup_id="i2")
            result["incremental"] = {
                "full_bytes": first["bytes_uploaded"], "second_bytes": second["bytes"],
                "second_uploaded": second["bytes_uploaded"],
                "saving": round(1 - second["bytes_uploaded"] / second["bytes"], 4),
            }  # fmt: skip
            print(json.dumps(result["incremental"]), flush=True)
            source.stop()
            start_on(target, node_cpus)
            report = run_restore(target.urls[0], store, "i2", workdir=tmp)
            result["restore"] = {
                "seconds": report["elapsed_seconds"], "bytes": report["bytes_total"],
                "records_read": report["keys_done"], "records_sent": report["records_sent"],
                "mb_per_s": round(report["bytes_total"] / report["elapsed_seconds"] / 1e6, 2),
                "keys_per_s": round(args.keys / report["elapsed_seconds"], 1),
                "keys_readable": readable(target.urls, args.keys),
            }  # fmt: skip
            print(json.dumps(result["restore"]), flush=True)
        except _Done:
            pass
        finally:
            for _, cluster in clusters:
                cluster.stop()
            target.stop()
            s3.stop()
            if s3_idle is not None:
                s3_idle.stop()
    result["uptime_after"] = os.getloadavg()
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
