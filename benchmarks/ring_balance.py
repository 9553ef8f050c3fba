"""Ownership balance and timings of ringkv's token allocation (a report, not a test).

Joins nodes node-00, node-01, ... one at a time with ``allocate_tokens`` (128 tokens each, zones
assigned round-robin over 3 zones) and prints, for each ring size: max/mean and min/mean primary
ownership, max/mean replica load with N=3 zone-aware placement, the fraction of the hash space
that moved to the joining node against the fair 1/n, the time to allocate the joining node's
tokens and to build the ring, and for comparison the max/mean of random tokens (median and worst
of several seeds). Then it times preference-list lookups.

Run: ``.venv/bin/python benchmarks/ring_balance.py [max_nodes]`` (default 24).
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from ringkv.core.placement import preference_list
from ringkv.core.ring import DEFAULT_VNODES, RING_SIZE, Ring, allocate_tokens, key_hash

ZONES = 3
REPLICAS = 3
RANDOM_SEEDS = 20


def random_ring_balance(nodes: int, seed: int) -> float:
    """max/mean ownership of a ring whose nodes took DEFAULT_VNODES uniformly random tokens."""
    rng = random.Random(seed)
    tokens = {
        f"node-{i:02d}": [rng.randrange(RING_SIZE) for _ in range(DEFAULT_VNODES)]
        for i in range(nodes)
    }
    return Ring(tokens, dict.fromkeys(tokens, "z")).balance()


def replica_balance(ring: Ring, n: int) -> float:
    """max/mean of the hash space each node stores as one of the n replicas."""
    load = dict.fromkeys(ring.nodes, 0)
    for r in ring.ranges():
        for replica in preference_list(ring, r.end, n):
            load[replica.node] += r.size()
    return max(load.values()) / (sum(load.values()) / len(load))


def main(max_nodes: int = 24) -> None:
    print(f"{DEFAULT_VNODES} tokens per node, {ZONES} zones round-robin, N={REPLICAS} replicas\n")
    header = (
        f"{'nodes':>5} {'max/mean':>9} {'min/mean':>9} {'repl max/mean':>13} "
        f"{'moved':>8} {'fair 1/n':>8} {'alloc ms':>9} {'build ms':>9} "
        f"{'random med':>10} {'random max':>10}"
    )
    print(header)
    print("-" * len(header))
    ring = Ring.empty()
    worst = 1.0
    alloc_times = []
    for i in range(max_nodes):
        node = f"node-{i:02d}"
        start = time.perf_counter()
        tokens = allocate_tokens(ring, node)
        alloc = time.perf_counter() - start
        start = time.perf_counter()
        grown = ring.with_node(node, f"zone-{i % ZONES}", tokens)
        build = time.perf_counter() - start
        moved = grown.ownership()[node]
        ring = grown
        n = len(ring)
        if n < 3:
            continue
        alloc_times.append(alloc)
        own = ring.ownership().values()
        worst = max(worst, ring.balance())
        randoms = [random_ring_balance(n, seed) for seed in range(RANDOM_SEEDS)]
        print(
            f"{n:>5} {ring.balance():>9.4f} {min(own) * n:>9.4f} "
            f"{replica_balance(ring, REPLICAS):>13.4f} {moved:>8.4f} {1 / n:>8.4f} "
            f"{alloc * 1000:>9.2f} {build * 1000:>9.2f} "
            f"{statistics.median(randoms):>10.4f} {max(randoms):>10.4f}"
        )
    print(f"\nworst max/mean for 3..{max_nodes} nodes: {worst:.4f} (requirement: <= 1.15)")
    print(
        f"allocation time: median {statistics.median(alloc_times) * 1000:.2f} ms, "
        f"max {max(alloc_times) * 1000:.2f} ms"
    )

    fresh = Ring(
        {node: ring.tokens_of(node) for node in ring.nodes},
        {n: ring.zone_of(n) for n in ring.nodes},
    )
    start = time.perf_counter()
    for token in fresh.sorted_tokens:  # every lookup misses the cache
        preference_list(fresh, token, REPLICAS)
    miss = (time.perf_counter() - start) / len(fresh.sorted_tokens)
    keys = [key_hash(f"key-{i}".encode()) for i in range(100_000)]
    start = time.perf_counter()
    for h in keys:
        preference_list(fresh, h, REPLICAS)
    hit = (time.perf_counter() - start) / len(keys)
    print(
        f"preference_list(N={REPLICAS}) on {len(ring)} nodes: "
        f"{miss * 1e6:.2f} us uncached, {hit * 1e6:.2f} us cached (bisect + dict lookup)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 24)
