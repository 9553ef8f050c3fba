"""Medians over several ``benchmarks/compare`` result files (every round of every run).

Run: ``.venv/bin/python benchmarks/compare_medians.py benchmarks/compare_lib/results/A.json B.json``

Prints one markdown row per system, value size and workload (rounds, median req/s, min-max,
median p50, p99 and server CPU per op, non-2xx answers and socket errors), then for each value
size and workload the ringkv/etcd throughput ratio of the medians, the etcd/ringkv CPU-per-op
ratio, and the spread of the same-round ratios.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any


def errors(run: dict[str, Any]) -> int:
    socket_errors = run.get("socket_errors") or {}
    return int(run["non_2xx"]) + (
        sum(socket_errors.values()) if isinstance(socket_errors, dict) else 0
    )


def size_of(run: dict[str, Any]) -> int:
    return int(run.get("value_size", 1024))  # files from before value sizes were recorded


def main(paths: list[str]) -> None:
    files = [json.loads(Path(p).read_text()) for p in paths]
    by: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for data in files:
        for run in data["runs"]:
            by.setdefault((run["system"], size_of(run), run["workload"]), []).append(run)
    medians: dict[tuple[str, int, str], dict[str, float]] = {}
    print("| system | value bytes | workload | rounds | req/s (median) | req/s min-max | p50 ms | "
          "p99 ms | server CPU µs/op | non-2xx / errors |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for (system, size, workload), runs in sorted(by.items()):
        m = {
            key: statistics.median(r[key] for r in runs)
            for key in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_op")
        }
        medians[(system, size, workload)] = m
        low, high = min(r["rps"] for r in runs), max(r["rps"] for r in runs)
        print(f"| {system} | {size} | {workload} | {len(runs)} | {m['rps']:,.0f} | "
              f"{low:,.0f}-{high:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
              f"{m['server_cpu_us_per_op']:.0f} | {sum(errors(r) for r in runs)} |")  # fmt: skip
    for size in sorted({k[1] for k in by}):
        for workload in ("write", "read", "mix"):
            ours = medians.get(("ringkv", size, workload))
            theirs = medians.get(("etcd", size, workload))
            if not ours or not theirs:
                continue
            same_round = []
            for data in files:
                for rep in sorted({r["rep"] for r in data["runs"]}):
                    rps = {
                        r["system"]: r["rps"]
                        for r in data["runs"]
                        if r["rep"] == rep and r["workload"] == workload and size_of(r) == size
                    }
                    if "ringkv" in rps and "etcd" in rps:
                        same_round.append(rps["ringkv"] / rps["etcd"])
            cpu = theirs["server_cpu_us_per_op"] / ours["server_cpu_us_per_op"]
            p99 = max(r["p99_ms"] for r in by[("ringkv", size, workload)])
            print(
                f"{workload}, {size} B values: ringkv/etcd {ours['rps'] / theirs['rps']:.2f}x "
                f"(medians), CPU per op etcd/ringkv {cpu:.2f}x, "
                f"same-round ratios {min(same_round):.2f}-{max(same_round):.2f} "
                f"(median {statistics.median(same_round):.2f}, {len(same_round)} rounds), "
                f"ringkv p99 max {p99:.2f} ms"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
