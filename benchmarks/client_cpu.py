"""Client-side CPU per request of `ringkv.client` against one local node, optionally side by
side with another version of the client module (for example main's, to check that a change
of the client costs nothing).

    git show main:src/ringkv/client.py > /tmp/client_main.py
    flock /tmp/ringkv-heavy.lock .venv/bin/python benchmarks/client_cpu.py \\
        --baseline /tmp/client_main.py --rounds 3 --blocks 20

Each round is a fresh process holding one client of each variant; it measures
``time.process_time()`` over blocks of ``--requests`` sequential puts, then gets, of a sync
`Client` (then gets of an `AsyncClient`), the variants' blocks alternating so that a pair of
neighbouring blocks ran under the same machine load. The node runs in its own process, so
only the client's CPU is counted. Prints medians and quartiles in microseconds per request,
and the median ratio of paired blocks. ``--canned`` times only the sync client's own work
(encoding, routing, parsing) in process, with ``_send`` answering at once.
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


def worker(
    url: str, modules: list[str], blocks: int, size: int
) -> dict[str, dict[str, list[float]]]:
    """µs of this process's CPU per request, per variant, operation and block. The variants'
    blocks alternate (ABBA...), so that each pair of blocks ran under the same machine load."""
    clients = [load(module) for module in modules]
    value = b"x" * 100
    out = {module: {op: [] for op in OPS} for module in modules}

    def timed(run: Any) -> float:
        started = time.process_time()
        run()
        return (time.process_time() - started) / size * 1e6

    syncs = [module.Client(url, timeout=10) for module in clients]
    for client in syncs:  # warm-up: connections, caches, the node's first requests
        for i in range(100):
            client.put(f"k{i}", value, replace=True)
            client.get(f"k{i}")
    for block in range(blocks):
        order = list(zip(modules, syncs, strict=True))
        for module, client in order if block % 2 == 0 else order[::-1]:
            out[module]["sync_put"].append(
                timed(lambda c=client: [c.put(f"k{i}", value, replace=True) for i in range(size)])
            )
            out[module]["sync_get"].append(
                timed(lambda c=client: [c.get(f"k{i}") for i in range(size)])
            )
    for client in syncs:
        client.close()

    async def run_async() -> None:
        pairs = [
            (m, module.AsyncClient(url, timeout=10))
            for m, module in zip(modules, clients, strict=True)
        ]
        for _, client in pairs:
            for i in range(100):
                await client.get(f"k{i}")
        for block in range(blocks):
            for module, client in pairs if block % 2 == 0 else pairs[::-1]:
                started = time.process_time()
                for i in range(size):
                    await client.get(f"k{i}")
                out[module]["async_get"].append((time.process_time() - started) / size * 1e6)
        for _, client in pairs:
            await client.close()

    asyncio.run(run_async())
    return out


def canned(modules: list[str], calls: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """µs per call of the client's own Python work, without a network: ``_send`` (the sync
    client's one method that touches a connection) answers a canned reply at once."""
    answers = {"PUT": (204, {"x-ringkv-context": "c"}, b""),
               "GET": (200, {"x-ringkv-context": "c", "etag": '"e"'}, b"v" * 100)}  # fmt: skip
    clients = []
    for module in modules:

        class Canned(load(module).Client):  # type: ignore[misc,name-defined]
            def _send(self, endpoint: Any, method: str, *rest: Any) -> Any:
                return answers[method]

        clients.append((module, Canned("127.0.0.1:1")))
    out: dict[str, dict[str, list[float]]] = {m: {"put": [], "get": []} for m in modules}
    for round_number in range(rounds):
        for module, client in clients if round_number % 2 == 0 else clients[::-1]:
            started = time.perf_counter()
            for _ in range(calls):
                client.put("key", b"v" * 100)
            out[module]["put"].append((time.perf_counter() - started) / calls * 1e6)
            started = time.perf_counter()
            for _ in range(calls):
                client.get("key")
            out[module]["get"].append((time.perf_counter() - started) / calls * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="another client.py to compare with (its own file)")
    parser.add_argument("--rounds", type=int, default=3, help="worker processes, one by one")
    parser.add_argument("--blocks", type=int, default=20, help="blocks per variant and round")
    parser.add_argument("--requests", type=int, default=100, help="requests per block")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 blocks")
    parser.add_argument("--json", help="write the per-block numbers here")
    parser.add_argument("--worker", nargs="+", metavar="URL MODULE", help=argparse.SUPPRESS)
    parser.add_argument("--canned", action="store_true",
                        help="no node: the sync client's own work per call")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.blocks, args.requests = 1, 2, 50
    if args.canned:
        modules = [CURRENT] + ([str(Path(args.baseline).resolve())] if args.baseline else [])
        result = canned(modules, 200 * args.requests, 2 * args.rounds + 1)
        for module, ops in result.items():
            for op, values in ops.items():
                print(f"{'current' if module == CURRENT else 'baseline':>8} {op}: median "
                      f"{statistics.median(values):.2f} µs/call "
                      f"(min {min(values):.2f}, max {max(values):.2f})")  # fmt: skip
        return
    if args.worker:
        url, *modules = args.worker
        print(json.dumps(worker(url, modules, args.blocks, args.requests)))
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
                names = list(variants) if round_number % 2 == 0 else list(reversed(variants))
                command = [sys.executable, __file__, "--blocks", str(args.blocks),
                           "--requests", str(args.requests), "--worker",
                           cluster.nodes[0].url, *(variants[n] for n in names)]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
                if done.returncode != 0:
                    raise SystemExit(done.stderr[-2000:])
                result = json.loads(done.stdout)
                for name in names:
                    for op, values in result[variants[name]].items():
                        samples[name][op].extend(values)
        finally:
            cluster.stop()
    summary: dict[str, Any] = {}
    for name, ops in samples.items():
        for op, values in ops.items():
            median = statistics.median(values)
            summary[f"{name} {op}"] = median
            quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
            print(f"{name:>8} {op:<9}: median {median:7.1f} µs/request "
                  f"(quartiles {quartiles[0]:.1f}..{quartiles[2]:.1f}, {len(values)} blocks of "
                  f"{args.requests})")  # fmt: skip
    if args.baseline:
        for op in OPS:
            # each block of the current client against the baseline's block next to it
            ratios = [c / b for c, b in zip(samples[CURRENT][op], samples["baseline"][op],
                                           strict=True)]  # fmt: skip
            change = statistics.median(ratios) - 1
            summary[f"change {op}"] = change
            print(f"{op}: current vs baseline, median of paired blocks {change:+.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"samples": samples, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
