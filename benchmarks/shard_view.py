"""What a follower shard pays to follow its node's membership view (a report).

The shards 1..S-1 of a node copy shard 0's view of the members every ``FOLLOW_INTERVAL``
(``ringkv.node.shards``). This times one poll at 100, 1,000 and 5,000 members (``--tokens``
each, 128 by default, with the application states a member publishes), with synthetic states
and the real code:

- **whole view**: what every poll cost before a follower asked only for changes: shard 0
  builds and encodes every member's state, the follower decodes it and rebuilds both rings;
- **steady poll**: a follower that holds the view asks with its digests; nothing changed, so
  the answer is empty and the rings are not rebuilt (``core.gossip.view_changes`` /
  ``follow_view``);
- **one member changed** (its status): the answer carries that member, and the rings are
  rebuilt (a change that places keys).

CPU time per poll (both sides, msgpack as on the wire), median of ``--repeat``; for the
whole view and the steady poll also the share of a core at ``1 / FOLLOW_INTERVAL`` polls a
second (what each follower shard and shard 0 together spend, all the time).

Run: ``.venv/bin/python benchmarks/shard_view.py [--members 100,1000,5000] [--repeat 5]
[--tokens 128]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

import msgpack

from ringkv.core import gossip as g
from ringkv.core.ring import Ring
from ringkv.node.shards import FOLLOW_INTERVAL


def member_state(i: int, rng: random.Random, tokens: int = 128) -> g.EndpointState:
    host = f"10.0.{i // 250}.{i % 250}"
    app: dict[str, tuple[Any, int]] = {
        g.ZONE: (f"zone-{i % 3}", 1),
        g.ADDRESS: (f"{host}:7000", 2),
        g.PEER_ADDRESS: (f"{host}:7100", 3),
        g.STATUS: (g.NORMAL, 4),
        g.TOKENS: (sorted(rng.getrandbits(63) for _ in range(tokens)), 5),
        g.INCARNATION: (1_700_000_000_000 + i, 6),
        g.SHARDS: (
            {
                "count": 8,
                "peer": [f"{host}:{7100 + j}" for j in range(8)],
                "client": [f"{host}:{7108 + j}" for j in range(8)],
            },
            7,
        ),
        g.CLEANUP: ({"ring": "0123456789abcdef", "done": True}, 8),
    }
    return g.EndpointState(1_700_000_000 + i, 0, app)


def rings_of(states: dict[str, g.EndpointState]) -> None:
    """What a follower's ``_rebuild_ring`` costs: the ring and the future ring."""
    tokens = {n: s.get(g.TOKENS) for n, s in states.items()}
    zones = {n: s.get(g.ZONE) for n, s in states.items()}
    Ring(tokens, zones)
    Ring(tokens, zones)


def poll(leader: dict[str, g.EndpointState], follower: dict[str, g.EndpointState] | None) -> None:
    """One poll, both sides: None is the whole view, as every poll was before."""
    known = {} if follower is None else {n: list(s.digest()) for n, s in follower.items()}
    request = msgpack.unpackb(msgpack.packb(known))
    deltas, gone = g.view_changes(leader, request)
    answer = msgpack.unpackb(msgpack.packb({"states": deltas, "gone": gone}))
    held: dict[str, g.EndpointState] = {} if follower is None else follower
    if g.follow_view(held, answer["states"], answer["gone"]) or follower is None:
        rings_of(held)


def timed(run: Any, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.process_time()
        run()
        samples.append(time.process_time() - started)
    return statistics.median(samples)


def measure(count: int, repeat: int, tokens: int = 128) -> tuple[float, float, float]:
    """(whole view, steady poll, one member changed): CPU seconds of one poll."""
    rng = random.Random(count)
    leader = {f"node-{i:05d}": member_state(i, rng, tokens) for i in range(count)}
    follower: dict[str, g.EndpointState] = {}
    poll(leader, follower)  # the first poll copies everything
    whole = timed(lambda: poll(leader, None), repeat)
    steady = timed(lambda: poll(leader, follower), repeat)
    changed = leader["node-00000"]

    def one_changed() -> None:
        status = g.LEAVING if changed.get(g.STATUS) == g.NORMAL else g.NORMAL
        changed.app[g.STATUS] = (status, changed.max_version + 1)
        poll(leader, follower)

    return whole, steady, timed(one_changed, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", default="100,1000,5000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128, help="tokens per member")
    args = parser.parse_args()
    per_second = 1 / FOLLOW_INTERVAL
    print(f"CPU ms per poll (median of {args.repeat}); % of a core at {per_second:g} polls/s")
    print(f"{'members':>8} {'whole view':>18} {'steady poll':>18} {'one changed':>12}")
    for count in (int(n) for n in args.members.split(",")):
        whole, steady, one = measure(count, args.repeat, args.tokens)
        cells = [f"{t * 1e3:8.2f} ({t * per_second * 100:5.1f} %)" for t in (whole, steady)]
        print(f"{count:>8} {cells[0]:>18} {cells[1]:>18} {one * 1e3:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
