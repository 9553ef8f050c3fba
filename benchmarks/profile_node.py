"""Profile one ringkv node under the benchmarks/compare workload (wrk, 1 KiB values by default).

Starts the same cluster as benchmarks/compare (3 nodes/3 zones N=3, lww, no auth; or one node
with ``--single``), preloads the keys, runs wrk for ``--duration`` seconds and records node n1
with py-spy (``pip install py-spy``) meanwhile. Prints wrk's throughput, the nodes' CPU per
request, the nodes' own latency histograms over the run (request, replica call, GC pause,
event-loop lag: the bucket holding p50/p99/p99.9), and the hottest frames (self time and
inclusive time, as % of the non-idle samples).

    .venv/bin/python benchmarks/profile_node.py --workload mix --duration 15
    .venv/bin/python benchmarks/profile_node.py --workload write --no-profile   # CPU/op only
    .venv/bin/python benchmarks/profile_node.py --workload write --value-size 10240  # 10 KiB
"""

from __future__ import annotations

import argparse
import collections
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "compare_lib"))

import loaders
import procs
import systems
from prometheus_client.parser import text_string_to_metric_families

IDLE = ("epoll_wait", "select (selectors", "_run_once", "run_forever (")
# The nodes' own histograms read around each run: where a request's time goes inside them.
HISTOGRAMS = (
    "ringkv_request_duration_seconds",
    "ringkv_replica_rpc_duration_seconds",
    "ringkv_gc_pause_seconds",
    "ringkv_event_loop_lag_seconds",
)


def scrape(urls: list[str]) -> dict[tuple[str, str], dict[float, float]]:
    """Cumulative bucket counts of HISTOGRAMS, summed over the nodes: {(name, labels): {le: n}}."""
    out: dict[tuple[str, str], dict[float, float]] = {}
    for url in urls:
        _, body, _ = systems.http_call("GET", f"{url}/metrics")
        for family in text_string_to_metric_families(body.decode()):
            if family.name not in HISTOGRAMS:
                continue
            for sample in family.samples:
                if not sample.name.endswith("_bucket"):
                    continue
                labels = dict(sample.labels)
                le = float(labels.pop("le"))
                labels.pop("shard", None)
                key = (family.name, ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
                out.setdefault(key, {}).setdefault(le, 0.0)
                out[key][le] += sample.value
    return out


def quantile_bounds(buckets: dict[float, float], q: float) -> tuple[float, float]:
    """The bucket (lower, upper bound, seconds) holding quantile q of a cumulative histogram."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    lower = 0.0
    for le in bounds:
        if buckets[le] >= q * total:
            return lower, le
        lower = le
    return lower, math.inf


def report_histograms(before: dict[tuple[str, str], dict[float, float]],
                      after: dict[tuple[str, str], dict[float, float]]) -> None:  # fmt: skip
    for (name, labels), buckets in sorted(after.items()):
        delta = {le: n - before.get((name, labels), {}).get(le, 0.0) for le, n in buckets.items()}
        count = max(delta.values(), default=0)
        if count <= 0:
            continue
        cells = []
        for q in (0.5, 0.99, 0.999):
            lo, hi = quantile_bounds(delta, q)
            cells.append(f"p{q * 100:g} {lo * 1000:g}-{hi * 1000:g} ms")
        print(f"  nodes' {name}{{{labels}}}: {count:.0f} observed, " + ", ".join(cells))


def summarise(collapsed: Path, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        if any(word in leaf for word in IDLE) or ("poll" in leaf and "uvloop" in stack):
            idle += count
            continue
        own[leaf] += count
        for frame in set(frames):
            incl[frame] += count
    busy = max(1, total - idle)
    print(f"samples {total}, idle {idle} ({100 * idle / max(1, total):.0f}%), busy {busy}")
    print(f"-- self time, top {top} (% of busy samples)")
    for frame, count in own.most_common(top):
        print(f"{100 * count / busy:5.1f}%  {frame}")
    print(f"-- inclusive time, top {top}")
    for frame, count in incl.most_common(top):
        print(f"{100 * count / busy:5.1f}%  {frame}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workload", default="mix", help="write, read or mix; a comma-separated list runs each"
    )
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--connections", type=int, default=30)
    parser.add_argument("--keys", type=int, default=10000)
    parser.add_argument("--value-size", type=int, default=1024, help="value bytes")
    parser.add_argument("--single", action="store_true", help="1 node, --replication-factor 1")
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--no-profile", action="store_true", help="measure only")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("/tmp/ringkv-profile.txt"))
    args = parser.parse_args()

    procs.install_parent_death_signal()
    workdir = Path(tempfile.mkdtemp(prefix="ringkv-profile-"))
    keys = systems.make_keys(args.keys)
    value = b"v" * args.value_size
    cls = systems.RingkvSingle if args.single else (
        systems.RingkvFsync if args.fsync else systems.Ringkv
    )  # fmt: skip
    system = cls(workdir, keys, value, "lww")
    try:
        system.start()
        system.preload()
        files = {"keys": workdir / "keys.txt", "value": workdir / "value.bin"}
        files["keys"].write_text("\n".join(system.encoded_keys()) + "\n")
        files["value"].write_bytes(value)
        loaders.run_wrk(system, "mix", 3, args.connections, 10, files)  # warm-up
        spy = None
        if not args.no_profile:
            raw = args.out.with_suffix(".collapsed")
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                 str(system.pids()[0]), "--duration", str(int(args.duration) - 1), "--rate", "200",
                 "--format", "raw", "--output", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        for workload in args.workload.split(","):
            cpu0 = procs.cpu_seconds(system.pids())
            histograms = scrape(system.cluster.urls)
            result = loaders.run_wrk(system, workload, args.duration, args.connections, 10, files)
            cpu = procs.cpu_seconds(system.pids()) - cpu0
            requests = result["requests"]
            print(
                f"{workload}: {result['rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
                f"p99 {result['p99_ms']:.2f} ms, non-2xx {result['non_2xx']}, "
                f"node CPU {cpu / max(1, requests) * 1e6:.0f} us/op over {requests} requests",
                flush=True,
            )
            report_histograms(histograms, scrape(system.cluster.urls))
        if spy is not None:
            spy.wait(timeout=args.duration + 30)
            time.sleep(0.5)
            summarise(args.out.with_suffix(".collapsed"), args.top)
    finally:
        system.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
