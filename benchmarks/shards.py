"""One node with ``--shards 1`` against the same node with ``--shards 2``: requests/s and CPU
per request (every process of the node), reads and writes, 1 KiB values, wrk at a fixed
connection count, interleaved rounds. With ``--nodes 3``: a 3-node, N=3, quorum cluster per
arm instead (benchmarks/compare's ringkv), its CPU summed over the three nodes, against the
target that shards must not tax the small case (``--shards 1`` at most 1.05x the CPU per
request of the code before shards).

    flock /tmp/ringkv-heavy.lock nice .venv/bin/python benchmarks/shards.py \
        [--arms 1,2] [--rounds 5] [--duration 15] [--connections 30] [--json out.json]
    .venv/bin/python benchmarks/shards.py --quick --arms default,default   # smoke, any node
    .venv/bin/python benchmarks/shards.py --arms 2@/tmp/shards-before,2    # old code beside new
    .venv/bin/python benchmarks/shards.py --nodes 3 --arms default@/tmp/before-shards,1

Each arm is a shard count, or ``default`` for the node's default without a ``--shards`` flag (a
node that predates the flag takes no other); ``COUNT@CHECKOUT`` runs that arm's node from the
source tree of another checkout of ringkv (its ``src`` first on ``PYTHONPATH``; the same
interpreter and installed dependencies, this checkout's harness), to set a change beside the
code before it. A round starts one fresh node (N=1,
``--conflict-mode lww``, no auth, as benchmarks/compare's ringkv-single) per arm, the arms in
alternating order (ABBA), preloads ``--keys`` keys, warms up with ``--warmup`` s of reads, and
runs every workload (rotated) with wrk (``benchmarks/wrk/ringkv.lua``, R=W=quorum of N=1) at
``--connections`` connections on the node's client port. The node's CPU is that of its whole
process tree (the supervisor and its shard workers, and workers that ended), from /proc.

The report: per arm and workload the median requests/s (min-max), p50/p99 and CPU µs per
request; per workload the ratio of the second arm to the first (throughput and CPU per
request, of the medians and the spread of the same-round ratios), against the targets
(throughput >= 1.5x, CPU per request at most 1.15x).

A benchmark, not a test (tests/test_benchmarks_smoke.py runs it tiny).
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.cluster
sys.path.insert(0, str(ROOT / "benchmarks" / "compare_lib"))

import loaders  # noqa: E402
import procs  # noqa: E402
import systems  # noqa: E402

WORKLOADS = ("read", "write")
# The second arm against the first, by --nodes: (requests/s at least, CPU per request at most).
# One node: 2 shards against 1 on two cores. Three nodes: --shards 1 against the code before
# shards, which must cost no more than 5 % more CPU per request (no throughput target).
TARGETS: dict[int, tuple[float | None, float]] = {1: (1.5, 1.15), 3: (None, 1.05)}


def log(message: str) -> None:
    print(f"[shards {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class ShardedNode(systems.Ringkv):
    """benchmarks/compare's one-node N=1 ringkv (or, with ``nodes=3``, its 3-node N=3 quorum
    cluster), run with ``--shards`` (when given)."""

    name = "ringkv-shards"

    def __init__(
        self, root: Path, keys: list[str], value: bytes, shards: int | None,
        checkout: Path | None = None, nodes: int = 1,
    ) -> None:  # fmt: skip
        self.nodes = nodes
        self.replication_factor = 1 if nodes == 1 else 3
        super().__init__(root, keys, value, "lww")
        self.shards = shards
        self.checkout = checkout
        shape = "1 node N=1" if nodes == 1 else f"{nodes} nodes N=3 quorum"
        self.label = f"ringkv {shape}, --shards {shards if shards is not None else '(none)'}"

    def start(self) -> None:
        if self.checkout is None:
            super().start()
            return
        # the node processes inherit the environment: their ringkv is the other checkout's
        before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(self.checkout / "src"), *([before] if before else [])]
        )
        try:
            super().start()
        finally:
            if before is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = before

    def cluster_options(self) -> dict[str, Any]:
        from tests.cluster import Cluster

        if self.shards is None:  # no --shards flag: the node's default, or a node before it
            return {"shards": None} if "shards" in inspect.signature(Cluster).parameters else {}

        # The harness gives a node with shards the runs of ports its workers use.
        if "shards" not in inspect.signature(Cluster).parameters:
            raise SystemExit(
                "tests/cluster.py of this checkout has no shards= (nodes without --shards): "
                "give the arms as default to run the node's default"
            )
        return {"shards": self.shards}


def arm_name(index: int, shards: int | None, checkout: Path | None = None) -> str:
    """``A shards=1``, ``B shards=2``, ``A default``, ``A shards=2@c21d1f5``: arms are told
    apart by position."""
    name = f"{'AB'[index]} " + (f"shards={shards}" if shards is not None else "default")
    return name + (f"@{checkout_label(checkout)}" if checkout is not None else "")


def checkout_label(checkout: Path) -> str:
    """The other checkout's commit (short), or its directory's name."""
    try:
        return subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return checkout.name


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def one_arm(
    args: argparse.Namespace, index: int, rnd: int, keys: list[str], value: bytes,
    workdir: Path,
) -> list[dict[str, Any]]:  # fmt: skip
    """A fresh node, preloaded and warmed up, then every workload once."""
    shards, checkout = args.arms[index], args.checkouts[index]
    name = arm_name(index, shards, checkout)
    node = ShardedNode(workdir / f"round{rnd}-{'AB'[index]}", keys, value, shards, checkout,
                       args.nodes)  # fmt: skip
    runs = []
    try:
        node.start()
        node.preload()
        node.verify()
        base = workdir / f"load-{'AB'[index]}"
        base.mkdir(exist_ok=True)
        files = {"keys": base / "keys.txt", "value": base / "value.bin"}
        files["keys"].write_text("\n".join(node.encoded_keys()) + "\n")
        files["value"].write_bytes(node.wrk_value())
        if args.warmup > 0:
            loaders.run_wrk(node, "read", args.warmup, args.connections, 10, files)
        shift = rnd % len(args.workloads)
        for workload in args.workloads[shift:] + args.workloads[:shift]:
            uptime = procs.uptime_line()
            pids = node.pids()
            cpu0 = procs.cpu_seconds(pids)
            busy0, total0, steal0 = procs.machine_cpu()
            result = loaders.run_wrk(node, workload, args.duration, args.connections, 10, files)
            cpu = procs.cpu_seconds(pids) - cpu0
            busy1, total1, steal1 = procs.machine_cpu()
            node.check_alive()
            requests = result["requests"] or 0
            result.update(
                arm=name,
                shards=shards,
                workload=workload,
                round=rnd + 1,
                uptime=uptime,
                node_processes=len(procs.process_tree(pids)),
                node_cpu_s=round(cpu, 3),
                node_cores=round(cpu / result["duration_s"], 2) if result["duration_s"] else 0,
                cpu_us_per_request=round(cpu / requests * 1e6, 1) if requests else None,
                machine_busy_pct=round(100 * (busy1 - busy0) / max(1, total1 - total0), 1),
                machine_steal_pct=round(100 * (steal1 - steal0) / max(1, total1 - total0), 1),
            )
            runs.append(result)
            log(f"round {rnd + 1} {name} {workload}: {result['rps']:,.0f} req/s, p50 "
                f"{result['p50_ms']:.2f} p99 {result['p99_ms']:.2f} ms, CPU "
                f"{result['cpu_us_per_request']} us/req on {result['node_processes']} "
                f"processes, non-2xx {result['non_2xx']} ({uptime})")  # fmt: skip
        node.verify(after_load=True)
    finally:
        node.stop()
        shutil.rmtree(node.root, ignore_errors=True)
    return runs


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    names = [arm_name(i, s, c) for i, (s, c) in enumerate(zip(args.arms, args.checkouts,
                                                               strict=True))]  # fmt: skip
    rows = []
    for workload in args.workloads:
        for name in names:
            sample = [r for r in runs if r["arm"] == name and r["workload"] == workload]
            rows.append({
                "arm": name, "workload": workload, "runs": len(sample),
                "rps": spread([r["rps"] for r in sample]),
                "p50_ms": spread([r["p50_ms"] for r in sample]),
                "p99_ms": spread([r["p99_ms"] for r in sample]),
                "cpu_us_per_request": spread([r["cpu_us_per_request"] for r in sample]),
                "node_processes": max(r["node_processes"] for r in sample),
                "errors": sum(r["non_2xx"] + sum(r["socket_errors"].values()) for r in sample),
            })  # fmt: skip
    ratios = {}
    throughput_target, cpu_target = TARGETS[args.nodes]
    first, second = names
    by = {(r["arm"], r["workload"]): r for r in rows}
    for workload in args.workloads:
        a, b = by[(first, workload)], by[(second, workload)]
        same_round: dict[str, list[float]] = {"rps": [], "cpu": []}
        for rnd in sorted({r["round"] for r in runs}):
            pair = {r["arm"]: r for r in runs if r["round"] == rnd and r["workload"] == workload}
            if first in pair and second in pair:
                same_round["rps"].append(pair[second]["rps"] / pair[first]["rps"])
                same_round["cpu"].append(
                    pair[second]["cpu_us_per_request"] / pair[first]["cpu_us_per_request"]
                )
        rps = b["rps"]["median"] / a["rps"]["median"]
        cpu = b["cpu_us_per_request"]["median"] / a["cpu_us_per_request"]["median"]
        ratios[workload] = {
            "rps": round(rps, 3),
            "rps_same_round": spread(same_round["rps"]),
            "rps_target_met": None if throughput_target is None else rps >= throughput_target,
            "cpu_per_request": round(cpu, 3),
            "cpu_same_round": spread(same_round["cpu"]),
            "cpu_target_met": cpu <= cpu_target,
        }
    return {"rows": rows, "ratios": ratios, "first": first, "second": second}


def render(summary: dict[str, Any], args: argparse.Namespace) -> str:
    def cell(s: dict[str, float], digits: int = 0) -> str:
        return f"**{s['median']:,.{digits}f}** ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"

    lines = [
        "| arm | workload | rounds | node processes | req/s (median, min-max) | p50 ms | p99 ms "
        "| node CPU µs/request | non-2xx / errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['arm']} | {r['workload']} | {r['runs']} | {r['node_processes']} "
            f"| {cell(r['rps'])} | {cell(r['p50_ms'], 2)} | {cell(r['p99_ms'], 2)} "
            f"| {cell(r['cpu_us_per_request'])} | {r['errors']} |"
        )
    throughput_target, cpu_target = TARGETS[args.nodes]
    wanted = f">= {throughput_target}x" if throughput_target is not None else "none"
    lines += [
        "",
        f"| {summary['second']} / {summary['first']} | req/s (of medians) | same-round "
        f"| target {wanted} | CPU per request (of medians) | same-round "
        f"| target <= {cpu_target}x |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    verdict = {True: "yes", False: "**no**", None: "-"}
    for workload, q in summary["ratios"].items():
        rr, cr = q["rps_same_round"], q["cpu_same_round"]
        lines.append(
            f"| {workload} | {q['rps']:.2f}x | {rr['min']:.2f}-{rr['max']:.2f} "
            f"| {verdict[q['rps_target_met']]} | {q['cpu_per_request']:.2f}x "
            f"| {cr['min']:.2f}-{cr['max']:.2f} | {verdict[q['cpu_target_met']]} |"
        )
    return "\n".join(lines)


def parse_arm(text: str) -> tuple[int | None, Path | None]:
    """``2``, ``default`` or ``2@/path/to/another/checkout``."""
    text, at, where = text.strip().partition("@")
    checkout = Path(where).resolve() if at else None
    if checkout is not None and not (checkout / "src" / "ringkv").is_dir():
        raise ValueError(f"{where}: no src/ringkv there")
    if text == "default":
        return None, checkout
    count = int(text)
    if count < 1:
        raise ValueError(text)
    return count, checkout


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", default="1,2",
                   help="two shard counts compared, 'default' for the node's default without "
                   "the flag (1,2)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--nodes", type=int, choices=sorted(TARGETS), default=1,
                   help="1: one node, N=1 (the shards target); 3: a 3-node N=3 quorum cluster "
                   "per arm (the small-case target)")  # fmt: skip
    p.add_argument("--duration", type=float, default=15.0, help="seconds per wrk run")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of reads per fresh node")
    p.add_argument("--connections", type=int, default=30,
                   help="wrk connections, fixed (wrk runs 3 threads)")  # fmt: skip
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="read,write")
    p.add_argument("--keys", type=int, default=10000)
    p.add_argument("--value-size", type=int, default=1024)
    p.add_argument("--json", type=Path)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s, 500 keys")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup, args.keys = 1, 1.0, 0.0, 500
    try:
        parsed = [parse_arm(a) for a in args.arms.split(",")]
    except ValueError as exc:
        p.error(f"--arms: two shard counts (positive) or 'default', each optionally "
                f"@CHECKOUT, comma-separated ({exc})")  # fmt: skip
    args.arms = [count for count, _ in parsed]
    args.checkouts = [checkout for _, checkout in parsed]
    if len(args.arms) != 2:
        p.error("--arms: exactly two, e.g. 1,2")
    args.workloads = [w for w in args.workloads.split(",") if w]
    if not args.workloads or set(args.workloads) - set(WORKLOADS):
        p.error("--workloads: read, write or both")
    if args.connections < 3 or args.rounds < 1 or args.duration <= 0 or args.keys < 1:
        p.error("--connections >= 3; --rounds, --duration and --keys positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    procs.install_parent_death_signal()
    if not procs.require({"wrk": "wrk"}):
        return 2
    started = dt.datetime.now(dt.UTC)
    command = "benchmarks/shards.py " + " ".join(sys.argv[1:] if argv is None else argv)
    uptime_before = procs.uptime_line()
    rng = random.Random(7)
    value = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in
                  range(args.value_size))  # fmt: skip
    keys = systems.make_keys(args.keys)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ringkv-shards-") as tmp:
        for rnd in range(args.rounds):
            for index in (0, 1) if rnd % 2 == 0 else (1, 0):  # ABBA
                runs += one_arm(args, index, rnd, keys, value, Path(tmp))
    summary = summarise(runs, args)
    table = render(summary, args)
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    settings["checkouts"] = [str(c) if c is not None else None for c in args.checkouts]
    result = {
        "command": command,
        "started_utc": started.isoformat(timespec="seconds"),
        "minutes": round((dt.datetime.now(dt.UTC) - started).total_seconds() / 60, 1),
        "uptime_before": uptime_before,
        "uptime_after": procs.uptime_line(),
        "cpus": os.cpu_count(),
        "settings": settings,
        "runs": runs,
        "summary": summary,
        "table_markdown": table,
    }
    procs.finish_report(result, table, args.json, command, uptime_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
