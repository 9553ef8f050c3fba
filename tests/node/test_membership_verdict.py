"""A node's word on whether a member is alive (``/v1/ring``'s ``alive``, the coordinator's live
replicas, the operator's NodeDown) while the members it watches change: a member that just
became one of its heartbeat targets -- because another member joined -- is not called dead
before the node has heartbeated it once.

Real membership and real peer messaging on loopback; the peer holds its heartbeat answers to
keep the round open at the moment a join has changed the targets.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from ringkv.core import gossip as g
from ringkv.core.failure_detector import WATCHERS, watch_order
from ringkv.node.config import NodeConfig
from ringkv.node.membership import Membership
from ringkv.node.messaging import MessagingService
from ringkv.node.storage import Storage
from tests.node.conftest import Run
from tests.node.test_messaging import free_port

HEARTBEAT = 2.0  # the held round's heartbeats time out after this: the checks come first


def _member(node: str, address: str, tokens: list[int]) -> dict[str, Any]:
    peer = g.Gossiper(node, 1, {g.ZONE: "z", g.STATUS: g.NORMAL, g.PEER_ADDRESS: address,
                                g.TOKENS: tokens})  # fmt: skip
    return {node: peer.local.delta_since(-1)}


def test_a_member_that_just_became_a_target_is_not_called_dead(run: Run, tmp_path: Path) -> None:
    answer = asyncio.Event()

    async def peer_handler(verb: str, body: Any) -> Any:
        if verb == "heartbeat":
            await answer.wait()
        return {"ok": True}

    async def main() -> None:
        peer = MessagingService("peer", "127.0.0.1", free_port(), peer_handler)
        await peer.start()
        mine = MessagingService("a", "127.0.0.1", free_port(), peer_handler)
        storage = Storage(str(tmp_path / "db"))
        config = NodeConfig(node_id="a", data_dir=str(tmp_path), heartbeat_interval=HEARTBEAT)
        try:
            member = Membership(config, storage, mine, incarnation=1)
            address = f"127.0.0.1:{peer.port}"  # every member answers here
            others = [f"n{i}" for i in range(WATCHERS + 2)]
            for i, node in enumerate(others):
                member.gossiper.apply(_member(node, address, [1000 * (i + 1)]))
            answer.set()
            await member._heartbeat_round(time.monotonic())
            assert all(member.is_alive(n) for n in others)

            # A member joins; pick one whose arrival makes it (or a member it displaces)
            # a new target of ours.
            before = set(member._watching)
            order_with = lambda n: watch_order([*others, n, "a"])  # noqa: E731
            joiner = next(
                n
                for n in (f"j{i}" for i in range(1000))
                if set(member.watch.targets(order_with(n))) - before
            )
            member.watch.targets(member._watch_order)  # back to the current order
            member.gossiper.apply(_member(joiner, address, [99]))
            answer.clear()  # the next round's heartbeats wait: the round stays open
            round_ = asyncio.ensure_future(member._heartbeat_round(time.monotonic()))
            deadline = time.monotonic() + HEARTBEAT / 2
            while member._watching == before and time.monotonic() < deadline:
                await asyncio.sleep(0)
            new = set(member._watching) - before
            assert new, "the join changed our targets"
            # Nobody convicted anyone: the new targets are alive, as every other member.
            assert {n: member.is_alive(n) for n in [*others, joiner]} == {
                n: True for n in [*others, joiner]
            }
            answer.set()
            await round_
            assert all(member.is_alive(n) for n in [*others, joiner])
        finally:
            await mine.stop()
            await peer.stop()
            storage.close()

    run(main())
