"""Open-loop latency of a 3-node, N=3, quorum cluster at 50 % and 80 % of its measured
closed-loop capacity, so that the p99 targets are judged at a stated load, not at saturation.

    flock /tmp/ringkv-heavy.lock nice .venv/bin/python benchmarks/open_loop.py \
        [--rounds 3] [--duration 15] [--fractions 0.5,0.8] [--workloads read,write] \
        [--value-bytes 1024] [--generators 2] [--generator bench|paced] [--json out.json]
    .venv/bin/python benchmarks/open_loop.py --quick        # smoke run

One cluster (``tests.cluster.Cluster``: 3 nodes in 3 zones, N=3, real ``ringkv node``
processes on loopback), ``--keys`` keys preloaded, then two phases, both driven by
``ringkv bench`` (R=W=quorum; reads only, or writes only, per workload):

1. **Capacity**: for ``--rounds`` rounds, each workload in turn (rotated), a closed loop with
   ``--concurrency`` requests in flight. The capacity of a workload is the median throughput.
2. **Open loop**: for ``--rounds`` rounds, every (workload, fraction) in turn (rotated),
   ``ringkv bench --rate`` at fraction x capacity. Latency counts from each request's due
   time (no coordinated omission). Per run: p50/p99/p99.9 of the workload's operation, the
   rate actually sent, requests never sent, errors, and the nodes' CPU per request.

The load comes from ``--generators`` ``ringkv bench`` processes at once (each with its share of
the concurrency or the rate, starting at a different node); their histograms are merged before
quantiles are taken. One Python generator tops out near the cluster's own throughput on this
machine (docs/performance.md, "The generator's ceiling"), so the capacity measured here is that
of the cluster and its generators sharing the machine's cores, the load the open loop can
actually offer. The report gives medians and min-max over rounds.

``--generator paced`` drives both phases with ``benchmarks/paced`` instead (a Go program, built
once into ``~/.cache/ringkv/tools``), which costs a fraction of ringkv bench's CPU per request:
the capacity is a closed loop of ``--concurrency`` keep-alive connections, the open loop sends
at the rate over ``--connections`` of them, latency counted from each request's due time.
It sends no causal context (as wrk), so the cluster then runs ``--conflict-mode lww``.

A benchmark, not a test (tests/test_benchmarks_smoke.py runs it tiny). Every run is bounded
by ``--duration`` and ``ringkv bench``'s ``--timeout``; the subprocesses by a timeout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.cluster
sys.path.insert(0, str(ROOT / "benchmarks" / "compare_lib"))  # procs

import paced  # noqa: E402
import procs  # noqa: E402
from tests.cluster import Cluster  # noqa: E402

from ringkv.bench import Histogram, iter_buckets  # noqa: E402

RATIO = {"read": "inf", "write": "0", "mix": "10"}  # --read-write-ratio per workload
OPS = {"read": ("read",), "write": ("write",), "mix": ("read", "write")}
QUANTILES = (50.0, 99.0, 99.9)


def log(message: str) -> None:
    print(f"[open_loop {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def bench(
    urls: list[str], args: argparse.Namespace, workload: str, out: Path, *,
    rate: float | None = None, concurrency: int | None = None, preload: bool = False,
    duration: float | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """``--generators`` ``ringkv bench`` processes at once, each with its share of the rate
    (or the concurrency); their JSON documents."""
    duration = args.duration if duration is None else duration
    count = 1 if preload else args.generators
    started = []
    for g in range(count):
        endpoints = urls[g % len(urls) :] + urls[: g % len(urls)]
        cmd = [
            sys.executable, "-m", "ringkv", "bench", "--endpoint", ",".join(endpoints),
            "--duration", str(duration), "--warmup", str(args.warmup),
            "--keys", str(args.keys), "--value-bytes", str(args.value_bytes),
            "--read-write-ratio", RATIO[workload], "--r", "quorum", "--w", "quorum",
            "--seed", str(1000 + g), "--timeout", str(args.timeout),
            "--json", str(out.with_suffix(f".g{g}.json")), "--quiet",
        ]  # fmt: skip
        if preload:
            cmd += ["--preload", "--concurrency", "32"]
        elif rate is not None:
            cmd += ["--rate", f"{rate / count:.3f}"]
        else:
            assert concurrency is not None
            cmd += ["--concurrency", str(max(1, concurrency // count))]
        started.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
    limit = duration + args.warmup + args.timeout + (args.preload_timeout if preload else 60)
    documents = []
    for g, proc in enumerate(started):
        code = proc.wait(timeout=limit)
        if code != 0:
            raise RuntimeError(f"ringkv bench exited with {code} ({workload})")
        documents.append(json.loads(out.with_suffix(f".g{g}.json").read_text()))
    return documents


def merged(documents: list[dict[str, Any]], workload: str, key: str = "histogram") -> Histogram:
    """The workload's operations' latency histograms of every generator, as one."""
    total = Histogram()
    for document in documents:
        for op in OPS[workload]:
            for low, _high, count in iter_buckets(document["runs"][0]["ops"][op][key]):
                total.hdr.record_value(low, count)  # lands in the same bucket
    return total


def run_paced(
    cluster: Cluster, args: argparse.Namespace, workload: str, out: Path, *,
    rate: float | None = None, concurrency: int | None = None,
) -> tuple[dict[str, Any], float]:  # fmt: skip
    """One run of benchmarks/paced (open loop at ``rate``, or a closed loop of ``concurrency``
    connections): its figures, and the requests the nodes' CPU is spread over."""
    write = workload == "write"
    r = paced.run(
        args.paced, cluster.urls, method="PUT" if write else "GET",
        query="w=quorum" if write else "r=quorum", keys=args.keys,
        value_bytes=args.value_bytes, rate=rate or 0, connections=concurrency or args.connections,
        duration=args.duration, warmup=args.warmup, timeout=args.timeout,
        out=out.with_suffix(".json"),
    )  # fmt: skip
    period = args.warmup + args.duration
    result: dict[str, Any] = {
        "throughput": round(r["ok"] / r["seconds"], 1),
        "sent_per_s": round(r["requests"] / r["seconds"], 1),
        "requests": r["requests"],
        "errors": r["errors"],
        "statuses": r["statuses"],
        "unsent": r["unsent"],
        "generator_cpu_share": round(r["cpu_seconds"] / period, 2),
    }
    for q in QUANTILES:
        result[f"p{q:g}_ms"] = round(r["latency_us"][f"p{q:g}"] / 1000, 3)
    if rate:
        result["service_p99_ms"] = round(r["service_us"]["p99"] / 1000, 3)
    # paced counts only the measured requests; the CPU covers the warm-up too, at that rate
    return result, r["requests"] * period / args.duration


def run_bench(
    cluster: Cluster, args: argparse.Namespace, workload: str, out: Path, **kw: Any
) -> tuple[dict[str, Any], float]:
    """One run of ``--generators`` ringkv bench processes: their merged figures, and the
    requests the nodes' CPU is spread over (the measured ones: the warm-up's CPU is
    included, so it is an upper bound of their own cost)."""
    documents = bench(cluster.urls, args, workload, out, **kw)
    runs = [d["runs"][0] for d in documents]
    seconds = statistics.mean(r["seconds"] for r in runs)
    requests = sum(r["requests"] for r in runs)
    latency = merged(documents, workload)
    result: dict[str, Any] = {
        "throughput": round(sum(r["ok"] for r in runs) / seconds, 1),
        "sent_per_s": round(requests / seconds, 1),
        "requests": requests,
        "errors": sum(r["error_count"] for r in runs),
        "unsent": sum(r.get("unsent") or 0 for r in runs),
        "max_in_flight": max(r.get("max_in_flight") or 0 for r in runs),
        "generator_cpu_share": round(sum(r["generator_cpu_share"] for r in runs), 2),
    }
    for q in QUANTILES:
        result[f"p{q:g}_ms"] = round(latency.quantile(q) / 1000, 3)
    if kw.get("rate"):
        service = merged(documents, workload, "service_histogram")
        result["service_p99_ms"] = round(service.quantile(99.0) / 1000, 3)
    return result, requests


def measure(
    cluster: Cluster, args: argparse.Namespace, workload: str, out: Path, **kw: Any
) -> dict[str, Any]:
    """One run of the chosen generator, with the nodes' CPU and the machine's load around it."""
    pids = [n.process.pid for n in cluster.nodes if n.process is not None]
    uptime = procs.uptime_line()
    cpu0 = procs.cpu_seconds(pids)
    generator = run_paced if args.generator == "paced" else run_bench
    figures, spread_over = generator(cluster, args, workload, out, **kw)
    node_cpu = procs.cpu_seconds(pids) - cpu0
    result: dict[str, Any] = {"workload": workload, **figures}
    result["node_cpu_ms_per_request"] = round(1000 * node_cpu / max(spread_over, 1), 3)
    result["uptime"] = uptime
    if kw.get("rate"):
        result["target_rate"] = round(kw["rate"], 1)
    return result


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    # paced, like wrk, sends no causal context: under dotted version vectors its overwrites
    # would pile up siblings, so its cluster resolves by last write, as benchmarks/compare's.
    extra = ("--conflict-mode", "lww") if args.generator == "paced" else ()
    cluster = Cluster(root / "cluster", nodes=3, zones=3, replication_factor=3, extra_args=extra)
    cluster.start(deadline=60)
    try:
        log(f"preloading {args.keys} keys of {args.value_bytes} bytes")
        bench(cluster.urls, args, "write", root / "preload", preload=True, duration=0.1)
        capacity_runs: list[dict[str, Any]] = []
        for rnd in range(args.rounds):
            shift = rnd % len(args.workloads)
            for workload in args.workloads[shift:] + args.workloads[:shift]:
                r = measure(cluster, args, workload, root / f"cap-{workload}-{rnd}",
                            concurrency=args.concurrency)  # fmt: skip
                r["round"] = rnd + 1
                capacity_runs.append(r)
                log(f"capacity round {rnd + 1} {workload}: {r['throughput']:,.0f} req/s, "
                    f"p99 {r['p99_ms']} ms ({r['uptime']})")  # fmt: skip
        capacity = {
            w: statistics.median(r["throughput"] for r in capacity_runs if r["workload"] == w)
            for w in args.workloads
        }
        units = [(w, f) for w in args.workloads for f in args.fractions]
        open_runs: list[dict[str, Any]] = []
        for rnd in range(args.rounds):
            shift = rnd % len(units)
            for workload, fraction in units[shift:] + units[:shift]:
                rate = fraction * capacity[workload]
                r = measure(cluster, args, workload, root / f"open-{workload}-{fraction}-{rnd}",
                            rate=rate)  # fmt: skip
                r.update(round=rnd + 1, fraction=fraction)
                open_runs.append(r)
                log(f"open round {rnd + 1} {workload} at {fraction:.0%} ({rate:,.0f}/s): "
                    f"sent {r['sent_per_s']:,.0f}/s, p50 {r['p50_ms']} p99 {r['p99_ms']} "
                    f"p99.9 {r['p99.9_ms']} ms, errors {r['errors']}, unsent {r['unsent']}, "
                    f"node {r['node_cpu_ms_per_request']} ms/req, "
                    f"generator {r['generator_cpu_share']} cores "
                    f"({r['uptime']})")  # fmt: skip
    finally:
        cluster.stop()
    summary = []
    for workload, fraction in units:
        sample = [r for r in open_runs if r["workload"] == workload and r["fraction"] == fraction]
        row: dict[str, Any] = {"workload": workload, "fraction": fraction,
                               "capacity": round(capacity[workload], 1),
                               "target_rate": round(fraction * capacity[workload], 1),
                               "rounds": len(sample)}  # fmt: skip
        for key in ("sent_per_s", "p50_ms", "p99_ms", "p99.9_ms", "service_p99_ms",
                    "node_cpu_ms_per_request", "generator_cpu_share"):  # fmt: skip
            row[key] = spread([r[key] for r in sample])
        row["errors"] = sum(r["errors"] for r in sample)
        row["unsent"] = sum(r["unsent"] for r in sample)
        summary.append(row)
    caps = {
        w: spread([r["throughput"] for r in capacity_runs if r["workload"] == w])
        for w in args.workloads
    }
    return {"capacity": caps, "capacity_runs": capacity_runs, "open_runs": open_runs,
            "summary": summary}  # fmt: skip


def render(result: dict[str, Any], args: argparse.Namespace) -> str:
    def cell(s: dict[str, float], digits: int = 2) -> str:
        return (f"**{s['median']:,.{digits}f}** ({s['min']:,.{digits}f}-"
                f"{s['max']:,.{digits}f})")  # fmt: skip

    lines = [
        f"| workload | capacity, closed loop C={args.concurrency} (req/s, median, min-max) "
        "| load | offered req/s | sent req/s | p50 ms | p99 ms | p99.9 ms "
        "| service p99 ms | node CPU ms/req | generator cores | errors / unsent |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["summary"]:
        cap = result["capacity"][row["workload"]]
        lines.append(
            f"| {row['workload']} | {cell(cap, 0)} | {row['fraction']:.0%} "
            f"| {row['target_rate']:,.0f} | {cell(row['sent_per_s'], 0)} | {cell(row['p50_ms'])} "
            f"| {cell(row['p99_ms'])} | {cell(row['p99.9_ms'])} | {cell(row['service_p99_ms'])} "
            f"| {cell(row['node_cpu_ms_per_request'], 3)} | {cell(row['generator_cpu_share'])} "
            f"| {row['errors']} / {row['unsent']} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=15.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each")
    p.add_argument("--workloads", default="read,write", help="of read, write, mix (10:1)")
    p.add_argument("--fractions", default="0.5,0.8", help="of the closed-loop capacity")
    p.add_argument("--concurrency", type=int, default=64,
                   help="requests in flight in the capacity runs (all generators)")  # fmt: skip
    p.add_argument("--generators", type=int, default=2, help="ringkv bench processes at once")
    p.add_argument("--generator", choices=("bench", "paced"), default="bench",
                   help="the load generator of both phases: ringkv bench (Python), or "
                   "benchmarks/paced (Go, built once into ~/.cache/ringkv/tools)")  # fmt: skip
    p.add_argument("--connections", type=int, default=64,
                   help="paced: connections of the open loop")  # fmt: skip
    p.add_argument("--keys", type=int, default=10000)
    p.add_argument("--value-bytes", type=int, default=1024)
    p.add_argument("--timeout", type=float, default=5.0, help="per request")
    p.add_argument("--preload-timeout", type=float, default=600.0)
    p.add_argument("--json", type=Path, help="write every run and the summary here")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s, 300 keys")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup, args.keys = 1, 1.0, 0.2, 300
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.fractions = [float(f) for f in args.fractions.split(",") if f]
    if not args.workloads or set(args.workloads) - set(RATIO):
        p.error(f"--workloads: a comma-separated subset of {','.join(RATIO)}")
    if not args.fractions or not all(0 < f <= 1 for f in args.fractions):
        p.error("--fractions: comma-separated numbers in (0, 1]")
    if min(args.rounds, args.generators, args.keys, args.concurrency) < 1 or args.duration <= 0:
        p.error("--rounds, --generators, --keys, --concurrency and --duration must be positive")
    if args.generator == "paced":
        args.paced = paced.ensure()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    procs.install_parent_death_signal()  # the nodes and generators die with us
    started = dt.datetime.now(dt.UTC)
    command = "benchmarks/open_loop.py " + " ".join(sys.argv[1:] if argv is None else argv)
    uptime_before = procs.uptime_line()
    with tempfile.TemporaryDirectory(prefix="ringkv-open-loop-") as tmp:
        result = run(args, Path(tmp))
    result.update(
        command=command,
        started_utc=started.isoformat(timespec="seconds"),
        minutes=round((dt.datetime.now(dt.UTC) - started).total_seconds() / 60, 1),
        uptime_before=uptime_before,
        uptime_after=procs.uptime_line(),
        cpus=os.cpu_count(),
        settings={k: v for k, v in vars(args).items() if k != "json"} | {"json": str(args.json)},
    )
    table = render(result, args)
    result["table_markdown"] = table
    procs.finish_report(result, table, args.json, command, uptime_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
