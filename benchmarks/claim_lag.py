"""Event-loop lag while a node allocates its tokens: inline against a worker thread (a report).

A node claims its tokens with ``allocate_tokens``, which on a large ring, or with zones that
take an extra replica for part of the ring (4 zones, N=3), costs seconds of CPU. This runs that
allocation for a ring of random tokens beside an asyncio loop that wakes every 10 ms, once
inline (the loop stalls) and once in a worker thread as the node does it (the loop shares the
GIL), alternately, and prints the allocation time and how late the loop's wake-ups came.

Run: ``.venv/bin/python benchmarks/claim_lag.py [members] [--zones 4] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from ringkv.core.allocation import allocate_tokens
from ringkv.core.ring import RING_SIZE, Ring

TICK = 0.01


def random_ring(members: int, zones: int) -> Ring:
    rng = random.Random(7)
    tokens = {f"m{i:04d}": [rng.randrange(RING_SIZE) for _ in range(128)] for i in range(members)}
    return Ring(tokens, {node: f"zone-{i % zones}" for i, node in enumerate(tokens)})


async def measure(ring: Ring, threaded: bool) -> tuple[float, list[float]]:
    """(allocation seconds, lateness of each 10 ms wake-up meanwhile)."""
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(TICK)
            lags.append(time.perf_counter() - start - TICK)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(5 * TICK)
    lags.clear()
    start = time.perf_counter()
    if threaded:
        await asyncio.to_thread(allocate_tokens, ring, "new", zone="zone-1", replicas=3)
    else:
        allocate_tokens(ring, "new", zone="zone-1", replicas=3)
    took = time.perf_counter() - start
    done.set()
    await task
    return took, lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("members", type=int, nargs="?", default=24)
    parser.add_argument("--zones", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ring = random_ring(args.members, args.zones)
    print(f"{args.members} members, {args.zones} zones, 128 random tokens each, N=3")
    for _ in range(args.rounds):
        for threaded in (False, True):
            took, lags = asyncio.run(measure(ring, threaded))
            how = "worker thread" if threaded else "inline"
            print(
                f"{how:>13}: allocation {took * 1000:6.0f} ms;"
                f" loop wake-ups late by median {statistics.median(lags) * 1000:6.1f} ms,"
                f" max {max(lags) * 1000:6.0f} ms ({len(lags)} wake-ups)"
            )


if __name__ == "__main__":
    main()
