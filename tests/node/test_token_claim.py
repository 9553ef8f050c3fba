"""A node's token claim allocates off the event loop: on a large ring, or with zones that take
an extra replica for part of the ring, ``allocate_tokens`` costs up to a second or two of CPU,
and the loop must keep serving requests and heartbeats meanwhile."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from ringkv.core import gossip as g
from ringkv.core.allocation import allocate_tokens
from ringkv.core.ring import RING_SIZE, Ring
from ringkv.node.config import NodeConfig
from ringkv.node.membership import Membership
from ringkv.node.storage import Storage


def four_zone_ring(members: int) -> Ring:
    """Random tokens over 4 zones: with N=3 the allocator works over the whole ring."""
    rng = random.Random(7)
    tokens = {f"m{i:03d}": [rng.randrange(RING_SIZE) for _ in range(128)] for i in range(members)}
    return Ring(tokens, {node: f"zone-{i % 4}" for i, node in enumerate(tokens)})


def test_a_claim_allocates_in_a_worker_thread(tmp_path: Path) -> None:
    config = NodeConfig(node_id="new", data_dir=str(tmp_path), zone="zone-1")
    storage = Storage(str(tmp_path / "db"))
    ring = four_zone_ring(12)
    try:
        member = Membership(config, storage, messaging=None, incarnation=1)  # type: ignore[arg-type]
        member.ring = ring

        async def scenario() -> int:
            task = member.claim(g.JOINING)
            assert member.claiming and not member.tokens
            assert member.claim(g.JOINING) is task  # a second request joins the same claim
            ticks = 0
            while not task.done():
                ticks += 1
                await asyncio.sleep(0)
            await task
            return ticks

        ticks = asyncio.run(scenario())
        assert ticks > 0  # the loop ran while the tokens were being allocated
        assert not member.claiming
        assert member.tokens == allocate_tokens(ring, "new", zone="zone-1", replicas=3)
        assert member.status_of("new") == g.JOINING
        assert storage.get_meta("tokens") == list(member.tokens)
    finally:
        storage.close()
