"""Same-moment A/B of two source trees: two 3-node clusters (one per tree, PYTHONPATH=TREE/src)
loaded at the same time by two `ringkv bench` processes, round after round, so that the
machine's drift (other load, the host's speed) hits both alike.

    flock /tmp/ringkv-heavy.lock .venv/bin/python benchmarks/same_moment_ab.py \\
        --a main=/work/main --b branch=. --rounds 5 --json /tmp/ab.json

Each round runs a 10:1 read/write mix and then writes only (closed loop, 8 in flight, 1 KiB
values, 5,000 keys); prints each round's throughput and p99 and the medians per side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster import Cluster  # noqa: E402 (the repository root is on the path now)

WORKLOADS = (("mix", "10"), ("writes", "0"))


def side(text: str) -> tuple[str, str]:
    name, _, tree = text.partition("=")
    if not tree:
        raise argparse.ArgumentTypeError("give NAME=PATH")
    return name, str(Path(tree).resolve() / "src")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=side, required=True, metavar="NAME=TREE")
    parser.add_argument("--b", type=side, required=True, metavar="NAME=TREE")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sides = dict([args.a, args.b])
    work = Path(tempfile.mkdtemp(prefix="ringkv-ab-"))
    clusters = {}
    try:
        for name, src in sides.items():
            os.environ["PYTHONPATH"] = src
            clusters[name] = Cluster(work / name, nodes=3, zones=3).start()
        os.environ.pop("PYTHONPATH")
        results: dict[str, dict[str, list[tuple[float, float]]]] = {
            name: {w: [] for w, _ in WORKLOADS} for name in sides
        }
        for round_ in range(args.rounds):
            for workload, ratio in WORKLOADS:
                running = {}
                for name, cluster in clusters.items():
                    out = work / f"{name}-{round_}-{workload}.json"
                    command = [
                        sys.executable, "-m", "ringkv", "bench",
                        "--endpoint", ",".join(n.url for n in cluster.nodes),
                        "--duration", str(args.duration), "--warmup", "3", "--concurrency", "8",
                        "--keys", "5000", "--value-bytes", "1024", "--read-write-ratio", ratio,
                        "--json", str(out), "--quiet",
                    ]  # fmt: skip
                    env = {**os.environ, "PYTHONPATH": sides[name]}
                    running[name] = (out, subprocess.Popen(command, env=env,
                                                           stdout=subprocess.DEVNULL))  # fmt: skip
                for name, (out, process) in running.items():
                    process.wait(timeout=args.duration * 4 + 60)
                    run = json.loads(out.read_text())["runs"][0]
                    results[name][workload].append((run["throughput"], run["latency_ms"]["p99"]))
                print(f"round {round_} {workload}: " + ", ".join(
                    f"{n} {r[workload][-1][0]:.0f} req/s p99 {r[workload][-1][1]:.1f} ms"
                    for n, r in results.items()), flush=True)  # fmt: skip
        for workload, _ in WORKLOADS:
            for name, r in results.items():
                rates = [t for t, _ in r[workload]]
                p99s = [p for _, p in r[workload]]
                print(f"{workload} {name}: median {statistics.median(rates):.0f} req/s "
                      f"(min {min(rates):.0f}, max {max(rates):.0f}), median p99 "
                      f"{statistics.median(p99s):.1f} ms")  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        for cluster in clusters.values():
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
