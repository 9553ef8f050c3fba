"""Client-side CPU per request of `ringkv.client` against one local node, optionally side by
side with another version of the client module (for example main's, to check that a change
of the client costs nothing).

    git show main:src/ringkv/client.py > /tmp/client_main.py
    flock /tmp/ringkv-heavy.lock .venv/bin/python benchmarks/client_cpu.py \\
        --baseline /tmp/client_main.py --rounds 7 --requests 2000

Each round runs every variant in a fresh process (the order alternates between rounds), which
measures ``time.process_time()`` over ``--requests`` sequential puts, then as many gets, of
one sync `Client` (and of one `AsyncClient`). The node runs in its own process, so only the
client's CPU is counted. Prints the median and the spread (min..max) in microseconds per
request.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.cluster when run as a script

CURRENT = "current"
OPS = ("sync_put", "sync_get", "async_get")


def load(module: str) -> ModuleType:
    if module == CURRENT:
        import ringkv.client

        return ringkv.client
    spec = importlib.util.spec_from_file_location("client_variant", module)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules["client_variant"] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def worker(url: str, module: str, requests: int) -> dict[str, float]:
    """µs of this process's CPU per request, per operation."""
    client_module = load(module)
    value = b"x" * 100
    out: dict[str, float] = {}
    with client_module.Client(url, timeout=10) as client:
        for i in range(200):  # warm-up: connections, caches, the node's first requests
            client.put(f"warm{i}", value)
            client.get(f"warm{i}")
        started = time.process_time()
        for i in range(requests):
            client.put(f"k{i % 500}", value)
        out["sync_put"] = (time.process_time() - started) / requests * 1e6
        started = time.process_time()
        for i in range(requests):
            client.get(f"k{i % 500}")
        out["sync_get"] = (time.process_time() - started) / requests * 1e6

    async def run_async() -> float:
        async with client_module.AsyncClient(url, timeout=10) as client:
            for i in range(200):
                await client.get(f"warm{i}")
            begun = time.process_time()
            for i in range(requests):
                await client.get(f"k{i % 500}")
            return (time.process_time() - begun) / requests * 1e6

    out["async_get"] = asyncio.run(run_async())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="another client.py to compare with (its own file)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="1 round of 100 requests")
    parser.add_argument("--json", help="write the per-round numbers here")
    parser.add_argument("--worker", nargs=2, metavar=("URL", "MODULE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 1, 100
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.requests)))
        return

    from tests.cluster import Cluster

    variants = {CURRENT: CURRENT}
    if args.baseline:
        variants = {"baseline": str(Path(args.baseline).resolve()), CURRENT: CURRENT}
    samples: dict[str, dict[str, list[float]]] = {v: {op: [] for op in OPS} for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), nodes=1, zones=1, replication_factor=1).start()
        try:
            for round_number in range(args.rounds):
                order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
                for name in order:
                    command = [sys.executable, __file__, "--requests", str(args.requests),
                               "--worker", cluster.nodes[0].url, variants[name]]  # fmt: skip
                    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
                    if done.returncode != 0:
                        raise SystemExit(done.stderr[-2000:])
                    for op, micros in json.loads(done.stdout).items():
                        samples[name][op].append(micros)
        finally:
            cluster.stop()
    summary: dict[str, Any] = {}
    for name, ops in samples.items():
        for op, values in ops.items():
            median = statistics.median(values)
            summary[f"{name} {op}"] = median
            spread = f"{min(values):.1f}..{max(values):.1f}"
            print(f"{name:>8} {op:<9}: median {median:7.1f} µs/request "
                  f"(spread {spread}, {len(values)} rounds)")  # fmt: skip
    if args.baseline:
        for op in OPS:
            change = (
                samples[CURRENT][op] and summary[f"{CURRENT} {op}"] / summary[f"baseline {op}"] - 1
            )
            print(f"{op}: current vs baseline {change:+.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"samples": samples, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
