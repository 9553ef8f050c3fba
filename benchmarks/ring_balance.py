"""Replica-load balance of ringkv's token allocation, and the cost of placement (a report).

Joins nodes node-0000, node-0001, ... one at a time with ``allocate_tokens`` (128 tokens each;
zone and N passed as every node passes them) and prints, for each ring size: the zones' sizes,
the **bound** on replica-load max/mean that zone-aware placement itself imposes with those zones
(``replica_balance_bound``), the **measured** replica-load max/mean with N zone-aware replicas,
primary-ownership max/mean, the data the join moved against the ideal (what the newcomer must
own), and the time to allocate the newcomer's tokens.

Zones: ``--zones 3`` assigns them round-robin (equal zones at every multiple of 3);
``--zone-sizes 5,3,2`` fills zones in that proportion (unequal zones); ``--zones 1`` is a single
zone; ``--zones 2`` or ``--zones 4`` (N=3) are layouts where zones take an extra replica for
part of the ring, allocated over the whole ring (slower: about a second per join at 100+ nodes).
``--sizes 100,300,1000`` reports only those sizes (still joining one node at a time).
``--lookups`` times uncached ``preference_list`` at 10, 100, 1,000 and 10,000 members.
``--shards S`` joins every node as a node with ``--shards S`` does (its tokens allocated slice
by slice, ``allocate_tokens(..., slices=S)``; ``--unsliced``: over the whole ring, as before)
and also reports the load of each node's shards, the token space cut into S equal
contiguous slices as a node with ``--shards S`` cuts it: the busiest shard of any node over the
mean shard load (a shard is one process, so this is what its core carries), and ``within a
node``: the largest busiest shard over its own node's mean shard (how unevenly a node's load
falls into its slices, leaving out how the nodes differ).

Run: ``.venv/bin/python benchmarks/ring_balance.py [max_nodes]`` (default 24).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from ringkv.core.allocation import allocate_tokens
from ringkv.core.placement import (
    preference_list,
    replica_balance_bound,
    replica_loads,
    replicas_gained,
)
from ringkv.core.ring import DEFAULT_VNODES, RING_SIZE, Ring, key_hash


def zone_sequence(count: int, zones: int, sizes: list[int] | None) -> list[str]:
    """The zone of each joining node: round-robin, or in proportion to ``sizes``."""
    if not sizes:
        return [f"zone-{i % zones}" for i in range(count)]
    out: list[str] = []
    filled = [0] * len(sizes)
    for _ in range(count):
        # the zone furthest below its share (ties: first), so the proportion holds at every size
        z = min(range(len(sizes)), key=lambda k: (filled[k] / sizes[k], k))
        filled[z] += 1
        out.append(f"zone-{z}")
    return out


def grow(
    count: int,
    zones: int,
    sizes: list[int] | None,
    replicas: int,
    vnodes: int,
    report: set[int] | None,
    shards: int = 0,
    sliced: bool = True,
) -> list[dict[str, float]]:
    """Join ``count`` nodes one at a time; a row of measurements for each reported size."""
    ring = Ring.empty()
    rows = []
    for i, zone in enumerate(zone_sequence(count, zones, sizes)):
        node = f"node-{i:04d}"
        start = time.perf_counter()
        by_slice = {"slices": shards} if shards > 1 and sliced else {}
        tokens = allocate_tokens(ring, node, vnodes, zone=zone, replicas=replicas, **by_slice)
        alloc = time.perf_counter() - start
        grown = ring.with_node(node, zone, tokens)
        n = len(grown)
        if n >= replicas and (report is None or n in report):
            load = replica_loads(grown, replicas)
            mean = sum(load.values()) / n
            moved = sum(replicas_gained(ring, grown, replicas).values()) if len(ring) else 0
            rows.append(
                {
                    "nodes": n,
                    "zones": "/".join(str(v) for _, v in sorted(grown.zone_sizes().items())),
                    "bound": replica_balance_bound(grown.zone_sizes(), replicas),
                    "measured": max(load.values()) / mean,
                    "primary": grown.balance(),
                    "moved": moved / load[node] if load[node] else 0.0,
                    "alloc_ms": alloc * 1000,
                }
            )
            if shards:
                rows[-1]["shards"], rows[-1]["within"] = shard_balance(grown, replicas, shards)
        ring = grown
    return rows


def _split_range(start: int, end: int, shards: int) -> list[tuple[int, int, int]]:
    """The arc ``(start, end]`` cut at the shard slices: [(shard, piece start, piece end)]."""
    # As half-open linear intervals [a, b) of positions; slice k starts at ceil(k * RING / S).
    spans = [(start + 1, end + 1)] if start < end else [(start + 1, RING_SIZE), (0, end + 1)]
    pieces = []
    for a, b in spans:
        for shard in range((a * shards) >> 64, ((b - 1) * shards >> 64) + 1 if a < b else 0):
            lo = max(a, -((-shard * RING_SIZE) // shards))
            hi = min(b, -((-(shard + 1) * RING_SIZE) // shards))
            if lo < hi:
                pieces.append((shard, (lo - 1) % RING_SIZE, hi - 1))
    return pieces


try:  # the node's own cut, where this checkout's nodes have shards
    from ringkv.core.sharding import split_range
except ImportError:
    split_range = _split_range


def shard_balance(ring: Ring, replicas: int, shards: int) -> tuple[float, float]:
    """Max/mean of the replica load of every (node, shard): hash positions a shard stores; and
    the largest over the nodes of (busiest shard / the node's mean shard), which leaves out
    how the nodes differ."""
    assert RING_SIZE == 1 << 64
    load: dict[tuple[str, int], int] = {}
    for r in ring.ranges():
        pieces = split_range(r.start, r.end, shards)
        for replica in preference_list(ring, r.end, replicas):
            for shard, lo, hi in pieces:
                key = (replica.node, shard)
                load[key] = load.get(key, 0) + ((hi - lo) % RING_SIZE or RING_SIZE)
    cells = len(ring) * shards
    within = max(
        max(load.get((node, s), 0) for s in range(shards))
        * shards
        / sum(load.get((node, s), 0) for s in range(shards))
        for node in ring.nodes
    )
    return max(load.values()) * cells / sum(load.values()), within


def time_lookups(members: int, vnodes: int, zones: int, replicas: int) -> list[float]:
    """Microseconds per uncached preference_list, five runs over 20,000 random keys, on a ring
    of ``members`` nodes with random tokens (balance does not change the lookup's cost)."""
    rng = random.Random(members)
    tokens = {
        f"node-{i:05d}": [rng.randrange(RING_SIZE) for _ in range(vnodes)] for i in range(members)
    }
    ring = Ring(tokens, {node: f"zone-{i % zones}" for i, node in enumerate(tokens)})
    keys = [key_hash(f"key-{i}".encode()) for i in range(20_000)]
    preference_list(ring, keys[0], replicas)  # per-ring facts computed once
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for h in keys:
            preference_list(ring, h, replicas)
        runs.append((time.perf_counter() - start) / len(keys) * 1e6)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("max_nodes", type=int, nargs="?", default=24)
    parser.add_argument("--zones", type=int, default=3)
    parser.add_argument("--zone-sizes", default="", help="e.g. 5,3,2 for unequal zones")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--vnodes", type=int, default=DEFAULT_VNODES)
    parser.add_argument("--sizes", default="", help="report only these ring sizes, e.g. 100,300")
    parser.add_argument("--lookups", action="store_true", help="time preference_list instead")
    parser.add_argument("--max-members", type=int, default=10_000, help="largest ring timed")
    parser.add_argument("--shards", type=int, default=0, help="also the busiest shard's load")
    parser.add_argument(
        "--unsliced", action="store_true",
        help="with --shards: allocate over the whole ring (as before slices), for comparison",
    )  # fmt: skip
    args = parser.parse_args()

    if args.lookups:
        print(f"uncached preference_list(N={args.replicas}), {args.vnodes} tokens per member, "
              f"{args.zones} zones; microseconds, median [min-max] of 5 runs")  # fmt: skip
        for members in (m for m in (10, 100, 1_000, 10_000) if m <= args.max_members):
            runs = time_lookups(members, args.vnodes, args.zones, args.replicas)
            print(f"{members:>6} members: {statistics.median(runs):6.2f} us "
                  f"[{min(runs):.2f}-{max(runs):.2f}]")  # fmt: skip
        return

    sizes = [int(v) for v in args.zone_sizes.split(",") if v] or None
    report = {int(v) for v in args.sizes.split(",") if v} or None
    count = max(report) if report else args.max_nodes
    zones = len(sizes) if sizes else args.zones
    layout = f"sizes in proportion {args.zone_sizes}" if sizes else "round-robin"
    print(f"{args.vnodes} tokens per node, {zones} zones ({layout}), N={args.replicas}; "
          "replica load = what a node stores as one of N replicas\n")  # fmt: skip
    header = (
        f"{'nodes':>5} {'zones':>14} {'bound':>7} {'measured':>9} {'excess':>7} "
        f"{'primary':>8} {'moved/ideal':>11} {'alloc ms':>9}"
        + (f" {'shard max/mean':>15} {'within a node':>13}" if args.shards else "")
    )
    print(header)
    print("-" * len(header))
    rows = grow(count, args.zones, sizes, args.replicas, args.vnodes, report, args.shards,
                not args.unsliced)  # fmt: skip
    for row in rows:
        print(
            f"{row['nodes']:>5} {row['zones']:>14} {row['bound']:>7.4f} {row['measured']:>9.4f} "
            f"{row['measured'] - row['bound']:>+7.4f} {row['primary']:>8.4f} "
            f"{row['moved']:>11.4f} {row['alloc_ms']:>9.2f}"
            + (f" {row['shards']:>15.4f} {row['within']:>13.4f}" if args.shards else "")
        )
    worst = max(rows, key=lambda row: row["measured"] - row["bound"])
    excess = worst["measured"] - worst["bound"]
    print(f"\nlargest excess over the bound: {excess:+.4f} at {worst['nodes']} nodes "
          "(target: <= +0.05; <= 1.05 where the bound is 1)")  # fmt: skip
    print(f"largest moved/ideal: {max(row['moved'] for row in rows):.4f} (target: <= 1.10)")


if __name__ == "__main__":
    main()
