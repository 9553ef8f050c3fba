"""Keys per second through the batch endpoints against single-key requests (a benchmark, not a
test).

Starts a real 3-node cluster (3 zones, N=3; ``tests.cluster.Cluster``) in a temporary directory,
preloads ``--keys`` keys of ``--value-bytes`` bytes, then measures, in interleaved rounds (every
round runs every mode once, the order rotating from round to round), how many keys per second
``--workers`` concurrent asyncio workers move with:

- ``single``: one key per request (``GET /v1/kv/{key}``, ``PUT`` with ``If-Match: *``);
- ``batch-1``, ``batch-10``, ``batch-100``: that many keys per ``POST /v1/batch/get`` /
  ``/v1/batch/put`` (with ``replace``).

Reads use R=quorum, writes W=quorum; keys are uniformly random among the preloaded ones and each
request goes to a random node. Each measurement lasts ``--duration`` seconds (and at most
``--max-requests`` requests per worker). Prints a markdown table of medians and min-max over the
rounds, and the machine's load averages before and after; ``--json`` stores every round.

Run (from the repository root, under the heavy-benchmark lock on shared machines):

    flock /tmp/ringkv-heavy.lock .venv/bin/python benchmarks/batch.py --rounds 5
    .venv/bin/python benchmarks/batch.py --quick          # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import Cluster

from ringkv.client import AsyncClient, GetResult, RingkvError

MODES = {"single": 0, "batch-1": 1, "batch-10": 10, "batch-100": 100}


async def measure(
    urls: list[str], mode: str, op: str, keys: list[str], value: bytes, args: argparse.Namespace
) -> dict[str, float]:
    size = MODES[mode]
    clients = [AsyncClient(url, timeout=30) for url in urls]
    moved = errors = 0
    deadline = time.monotonic() + args.duration

    async def worker(seed: int) -> None:
        nonlocal moved, errors
        rng = random.Random(seed)
        for _ in range(args.max_requests):
            if time.monotonic() >= deadline:
                return
            client = rng.choice(clients)
            chosen = [rng.choice(keys) for _ in range(max(1, size))]
            try:
                if size == 0 and op == "get":
                    result = await client.get(chosen[0], r="quorum")
                    ok = [result]
                elif size == 0:
                    await client.put(chosen[0], value, replace=True, w="quorum")
                    ok = [True]
                elif op == "get":
                    ok = list((await client.get_many(chosen, r="quorum")).values())
                else:
                    batch = {k: value for k in chosen}
                    ok = list((await client.put_many(batch, replace=True, w="quorum")).values())
            except RingkvError:
                errors += 1
                continue
            good = sum(1 for o in ok if not isinstance(o, RingkvError))
            if op == "get":
                good = sum(1 for o in ok if isinstance(o, GetResult) and o.found)
            moved += good
            errors += len(ok) - good

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(args.workers)))
    elapsed = time.monotonic() - started
    for client in clients:
        await client.close()
    return {"keys_per_s": moved / elapsed, "keys": moved, "errors": errors, "seconds": elapsed}


async def preload(urls: list[str], keys: list[str], value: bytes) -> None:
    async with AsyncClient(urls[0], timeout=60) as client:
        for i in range(0, len(keys), 100):
            answer = await client.put_many({k: value for k in keys[i : i + 100]}, w="all")
            failed = [k for k, v in answer.items() if isinstance(v, RingkvError)]
            if failed:
                raise SystemExit(f"preload failed for {len(failed)} keys")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--json", help="write every round's numbers here")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny and short")
    args = parser.parse_args()
    if args.quick:
        args.keys, args.duration, args.rounds, args.workers = 200, 0.5, 1, 2
    value = os.urandom(args.value_bytes)
    keys = [f"bench-{i}" for i in range(args.keys)]
    load_before = os.getloadavg()
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ringkv-batch-bench-") as tmp:
        cluster = Cluster(Path(tmp), nodes=3, zones=3, replication_factor=3).start()
        try:
            asyncio.run(preload(cluster.urls, keys, value))
            modes = list(MODES)
            for number in range(args.rounds):
                order = modes[number % len(modes) :] + modes[: number % len(modes)]
                for op in ("get", "put"):
                    for mode in order:
                        result = asyncio.run(measure(cluster.urls, mode, op, keys, value, args))
                        rounds.append({"round": number, "op": op, "mode": mode, **result})
                        print(f"round {number} {op} {mode}: {result['keys_per_s']:.0f} keys/s "
                              f"({result['errors']} errors)", flush=True)  # fmt: skip
        finally:
            cluster.stop()
    load_after = os.getloadavg()
    print()
    print("| operation | mode | keys/s median | min-max | vs single | errors |")
    print("|---|---|---:|---:|---:|---:|")
    for op in ("get", "put"):
        single = statistics.median(
            r["keys_per_s"] for r in rounds if r["op"] == op and r["mode"] == "single"
        )
        for mode in MODES:
            rates = [r["keys_per_s"] for r in rounds if r["op"] == op and r["mode"] == mode]
            errors = sum(r["errors"] for r in rounds if r["op"] == op and r["mode"] == mode)
            median = statistics.median(rates)
            print(f"| {op} | {mode} | {median:.0f} | {min(rates):.0f}-{max(rates):.0f} | "
                  f"{median / single:.2f}x | {errors} |")  # fmt: skip
    print(f"\nload average before {load_before}, after {load_after}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "load_before": load_before, "load_after": load_after,
             "rounds": rounds}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
