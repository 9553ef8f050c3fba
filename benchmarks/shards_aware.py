"""What a shard handover costs: one node with ``--shards 1``, with ``--shards 2`` under a load
that is not shard-aware (about half of the requests handed to the other shard), and with
``--shards 2`` under a shard-aware load (each request sent to the port of the shard that owns
its key: no handover at all), side by side, interleaved.

    flock /tmp/ringkv-heavy.lock nice -n 10 .venv/bin/python benchmarks/shards_aware.py \
        [--rounds 3] [--duration 10] [--connections 30] [--workloads read,write] [--json out.json]

The third arm is the floor a cheaper handover could reach: what two processes on this
machine cost per request with no handover. wrk cannot pick a port by key, so every arm runs
two wrk processes side by side (3 threads and ``--connections``/2 connections each, so the
load generator is the same in every arm): for the first two arms both on the node's client
port with all keys, for the shard-aware arm wrk ``i`` on shard ``i``'s own port with the
keys that shard owns. Each round starts a fresh node per arm (as benchmarks/shards.py: N=1,
lww, no auth, 10,000 keys of 1 KiB preloaded, 3 s of reads to warm up), arms in the order
ABC, then CBA. Node CPU is its whole process tree's, from /proc.

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "compare_lib"))

import loaders  # noqa: E402
import procs  # noqa: E402
import systems  # noqa: E402
from shards import ShardedNode  # noqa: E402

from ringkv.core.ring import key_hash  # noqa: E402
from ringkv.core.sharding import shard_of  # noqa: E402

ARMS = ("shards=1", "shards=2", "shards=2 shard-aware")


def log(message: str) -> None:
    print(f"[shards_aware {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def one_arm(args: argparse.Namespace, arm: str, rnd: int, keys: list[str], value: bytes,
            workdir: Path) -> list[dict[str, Any]]:  # fmt: skip
    count = 1 if arm == "shards=1" else 2
    node = ShardedNode(workdir / f"round{rnd}-{ARMS.index(arm)}", keys, value, count)
    runs = []
    try:
        node.start()
        node.preload()
        base = workdir / f"load-{ARMS.index(arm)}"
        base.mkdir(exist_ok=True)
        value_file = base / "value.bin"
        value_file.write_bytes(node.wrk_value())
        encoded = node.encoded_keys()
        every_key = base / "keys.txt"
        every_key.write_text("\n".join(encoded) + "\n")
        if arm.endswith("shard-aware"):
            with urllib.request.urlopen(node.cluster.urls[0] + "/v1/ring", timeout=10) as answer:
                ring = json.loads(answer.read())
            addresses = ring["nodes"][0]["shard_addresses"]
            loads = []
            for shard, address in enumerate(addresses):
                mine = [e for k, e in zip(keys, encoded, strict=True)
                        if shard_of(key_hash(k.encode()), count) == shard]  # fmt: skip
                path = base / f"keys-{shard}.txt"
                path.write_text("\n".join(mine) + "\n")
                loads.append((address, path))
        else:
            loads = [(node.targets[0], every_key)] * 2
        # warm-up: every key, on the node's client port
        loaders.run_wrk(node, "read", args.warmup, args.connections, 10,
                        {"keys": every_key, "value": value_file})  # fmt: skip
        shift = rnd % len(args.workloads)
        for workload in args.workloads[shift:] + args.workloads[:shift]:
            pids = node.pids()
            cpu0 = procs.cpu_seconds(pids)
            uptime = procs.uptime_line()

            def wrk(load: tuple[str, Path], workload: str = workload) -> dict[str, Any]:
                target = SimpleNamespace(targets=[load[0]], wrk_script=node.wrk_script)
                return loaders.run_wrk(target, workload, args.duration, args.connections // 2,
                                       10, {"keys": load[1], "value": value_file})  # fmt: skip

            with ThreadPoolExecutor(2) as pool:
                results = list(pool.map(wrk, loads))
            cpu = procs.cpu_seconds(pids) - cpu0
            node.check_alive()
            requests = sum(r["requests"] for r in results)
            run = {
                "arm": arm, "workload": workload, "round": rnd + 1, "uptime": uptime,
                "rps": sum(r["rps"] for r in results),
                "p50_ms": max(r["p50_ms"] for r in results),
                "p99_ms": max(r["p99_ms"] for r in results),
                "cpu_us_per_request": round(cpu / requests * 1e6, 1) if requests else None,
                "errors": sum(r["non_2xx"] + sum(r["socket_errors"].values()) for r in results),
                "wrk": results,
            }  # fmt: skip
            runs.append(run)
            log(f"round {rnd + 1} {arm} {workload}: {run['rps']:,.0f} req/s, p50 "
                f"{run['p50_ms']:.2f} ms, CPU {run['cpu_us_per_request']} us/req, errors "
                f"{run['errors']} ({uptime})")  # fmt: skip
    finally:
        node.stop()
        shutil.rmtree(node.root, ignore_errors=True)
    return runs


def spread(values: list[float]) -> str:
    return f"**{statistics.median(values):,.0f}** ({min(values):,.0f}-{max(values):,.0f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--connections", type=int, default=30, help="in all (half per wrk)")
    p.add_argument("--workloads", default="read,write")
    p.add_argument("--keys", type=int, default=10000)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    args.workloads = [w for w in args.workloads.split(",") if w]
    procs.install_parent_death_signal()
    if not procs.require({"wrk": "wrk"}):
        return 2
    started = dt.datetime.now(dt.UTC)
    uptime_before = procs.uptime_line()
    rng = random.Random(7)
    value = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(1024))
    keys = systems.make_keys(args.keys)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ringkv-shards-aware-") as tmp:
        for rnd in range(args.rounds):
            for arm in ARMS if rnd % 2 == 0 else ARMS[::-1]:
                runs += one_arm(args, arm, rnd, keys, value, Path(tmp))
    lines = ["| arm | workload | req/s (median, min-max) | p50 ms | node CPU µs/request | errors |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for workload in args.workloads:
        for arm in ARMS:
            sample = [r for r in runs if r["arm"] == arm and r["workload"] == workload]
            lines.append(
                f"| {arm} | {workload} | {spread([r['rps'] for r in sample])} "
                f"| {statistics.median(r['p50_ms'] for r in sample):.2f} "
                f"| {spread([r['cpu_us_per_request'] for r in sample])} "
                f"| {sum(r['errors'] for r in sample)} |"
            )
    table = "\n".join(lines)
    command = "benchmarks/shards_aware.py " + " ".join(sys.argv[1:])
    result = {
        "command": command,
        "started_utc": started.isoformat(timespec="seconds"),
        "uptime_before": uptime_before,
        "uptime_after": procs.uptime_line(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "runs": runs,
        "table_markdown": table,
    }
    print(table)
    print(f"{command}: {started:%Y-%m-%d %H:%M} UTC; before: {uptime_before}; "
          f"after: {result['uptime_after']}")  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
