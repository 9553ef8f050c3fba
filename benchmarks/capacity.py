"""Ring balance and data movement at cluster scale, for docs/capacity.md (a report, not a test).

Uses the real ring code only: nodes ``node-0000, node-0001, ...`` join one at a time, each taking
its tokens from ``allocate_tokens`` (128 per node) against the ring as it stands, zones assigned
round-robin over 3 zones. At each reported size n it prints:

* primary ownership max/mean and min/mean (``Ring.ownership()``; max/mean is ``Ring.balance()``);
* replica load max/mean with N=3 zone-aware placement, estimated by sending ``--samples`` random
  hash positions through ``preference_list`` (and, as a check, computed exactly over every token
  range: the share of the hash space each node stores as one of the 3 replicas);
* the data moved by one more join and by one decommission: ``moved_fraction(plan_transfers(...))``
  in copies of the whole ring, against the ideal N/(n+1) for a join (the newcomer's fair share of
  N copies) and the leaving node's own replica load for a decommission (ideal N/n);
* how long the joins and the plans took.

Run: ``.venv/bin/python benchmarks/capacity.py`` (100, 250, 500, 1000 nodes; a few minutes),
``--quick`` (30 and 100 nodes, fewer samples; under 20 s), or ``--sizes 100,250 --samples N``.
"""

from __future__ import annotations

import argparse
import random
import time

from ringkv.core.allocation import allocate_tokens
from ringkv.core.placement import preference_list
from ringkv.core.ring import DEFAULT_VNODES, RING_SIZE, Ring
from ringkv.core.streaming import moved_fraction, plan_transfers

ZONES = 3
N = 3


def node_name(i: int) -> str:
    return f"node-{i:04d}"


def join(ring: Ring, i: int) -> Ring:
    node = node_name(i)
    zone = f"zone-{i % ZONES}"
    tokens = allocate_tokens(ring, node, DEFAULT_VNODES, zone=zone, replicas=N)
    return ring.with_node(node, zone, tokens)


def sampled_replica_load(ring: Ring, samples: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    load = dict.fromkeys(ring.nodes, 0)
    for _ in range(samples):
        for replica in preference_list(ring, rng.randrange(RING_SIZE), N):
            load[replica.node] += 1
    return load


def exact_replica_load(ring: Ring) -> dict[str, int]:
    load = dict.fromkeys(ring.nodes, 0)
    for r in ring.ranges():
        for replica in preference_list(ring, r.end, N):
            load[replica.node] += r.size()
    return load


def max_over_mean(values: dict[str, int]) -> float:
    return max(values.values()) / (sum(values.values()) / len(values))


def report(ring: Ring, samples: int, seed: int) -> dict[str, float]:
    n = len(ring)
    own = ring.ownership()
    t0 = time.perf_counter()
    sampled = sampled_replica_load(ring, samples, seed)
    exact = exact_replica_load(ring)
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    grown = join(ring, n)
    join_moved = moved_fraction(plan_transfers(ring, grown, N, set(grown.nodes)))
    t_join_plan = time.perf_counter() - t0

    # Decommission a node from the middle of the join order, streaming its own data first.
    victim = node_name(n // 2)
    t0 = time.perf_counter()
    shrunk = ring.without_node(victim)
    dec_moved = moved_fraction(
        plan_transfers(ring, shrunk, N, set(ring.nodes), prefer_source=victim)
    )
    t_dec_plan = time.perf_counter() - t0
    victim_load = exact[victim] / RING_SIZE  # copies of the ring the victim held
    return {
        "n": n,
        "own_max": ring.balance(),
        "own_min": min(own.values()) * n,
        "repl_sampled": max_over_mean(sampled),
        "repl_exact": max_over_mean(exact),
        "join_moved": join_moved,
        "join_ideal": N / (n + 1),
        "dec_moved": dec_moved,
        "dec_victim": victim_load,
        "dec_ideal": N / n,
        "t_load": t_load,
        "t_join_plan": t_join_plan,
        "t_dec_plan": t_dec_plan,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 and 100 nodes, 50k samples")
    parser.add_argument("--sizes", default="100,250,500,1000")
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sizes = [30, 100] if args.quick else sorted(int(s) for s in args.sizes.split(","))
    samples = 50_000 if args.quick else args.samples

    print(
        f"{DEFAULT_VNODES} tokens per node (allocate_tokens, one join at a time), {ZONES} zones "
        f"round-robin, N={N} zone-aware; replica load from {samples} random positions "
        f"(sampled) and over every token range (exact)\n"
    )
    rows = []
    ring = Ring.empty()
    build_start = time.perf_counter()
    build_time = 0.0
    for target in sizes:
        t0 = time.perf_counter()
        while len(ring) < target:
            ring = join(ring, len(ring))
        build_time += time.perf_counter() - t0
        print(
            f"  built {target} nodes ({len(ring.sorted_tokens)} tokens), "
            f"{build_time:.1f} s of joins so far; measuring...",
            flush=True,
        )
        rows.append(report(ring, samples, args.seed))
    total = time.perf_counter() - build_start

    header = (
        f"{'nodes':>5} | {'own max/mean':>12} {'own min/mean':>12} | {'repl max/mean':>13} "
        f"{'(exact)':>8} | {'join moved':>10} {'ideal N/(n+1)':>13} {'ratio':>6} | "
        f"{'decom moved':>11} {'victim held':>11} {'ideal N/n':>9}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['n']:>5} | {r['own_max']:>12.4f} {r['own_min']:>12.4f} | "
            f"{r['repl_sampled']:>13.4f} {r['repl_exact']:>8.4f} | "
            f"{r['join_moved']:>10.5f} {r['join_ideal']:>13.5f} "
            f"{r['join_moved'] / r['join_ideal']:>6.3f} | "
            f"{r['dec_moved']:>11.5f} {r['dec_victim']:>11.5f} {r['dec_ideal']:>9.5f}"
        )
    print("\n(moved: copies of the whole ring; 1.0 = one full replica of all data)")
    print("timings (s): ", end="")
    print(
        "; ".join(
            f"{r['n']}: load {r['t_load']:.1f}, join plan {r['t_join_plan']:.1f}, "
            f"decom plan {r['t_dec_plan']:.1f}"
            for r in rows
        )
    )
    print(f"joins to {sizes[-1]} nodes: {build_time:.1f} s; whole run {total:.1f} s")


if __name__ == "__main__":
    main()
