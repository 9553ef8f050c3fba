"""How many replicas a quorum read asks (--read-repair-chance) and when it asks the ones it
skipped (--speculative-read-delay), on a coordinator with stand-in peers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from ringkv.core.quorum import Quorum
from ringkv.node.coordinator import Coordinator
from tests.node.standins import coordinator

QUORUM = Quorum(3, 2, False)


class _Peers:
    """Answers every read with "no record" at once, except from ``silent`` peers (never)."""

    def __init__(self, silent: frozenset[str] = frozenset()) -> None:
        self.silent = silent
        self.reads: list[str] = []

    def is_connected(self, address: str) -> bool:
        return True

    def call(self, address: str, verb: str, body: Any, timeout: float) -> asyncio.Future[Any]:
        assert verb == "read"
        self.reads.append(address)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if address not in self.silent:
            future.set_result(b"")
        return future


def _coordinator(tmp_path: Path, peers: _Peers, *flags: str) -> Coordinator:
    return coordinator(tmp_path, "n1", peers, "--request-timeout", "5", *flags)


@pytest.mark.parametrize(("chance", "low", "high"), [("0", 100, 100), ("1", 200, 200),
                                                     ("0.5", 120, 180)])  # fmt: skip
def test_read_repair_chance_sets_how_many_replicas_a_read_asks(
    tmp_path: Path, chance: str, low: int, high: int
) -> None:
    peers = _Peers()
    coordinator = _coordinator(tmp_path, peers, "--read-repair-chance", chance)

    async def reads() -> None:
        for i in range(100):
            assert await coordinator.get(b"k%d" % i, QUORUM) == ()

    asyncio.run(reads())
    # n1 answers itself; R=2 needs one more: the rest are asked only for read repair
    assert low <= len(peers.reads) <= high


@pytest.mark.parametrize("delay", [0.05, 0.4])
def test_a_silent_replica_is_replaced_after_the_speculative_read_delay(
    tmp_path: Path, delay: float
) -> None:
    peers = _Peers(silent=frozenset({"addr-n2"}))  # n2 never answers
    coordinator = _coordinator(
        tmp_path, peers, "--read-repair-chance", "0", "--speculative-read-delay", str(delay)
    )

    async def read() -> float:
        for i in range(200):  # a key whose first remote replica asked is n2
            key = b"k%d" % i
            peers.reads.clear()
            coordinator._slow.clear()  # every read starts without a slow-replica history
            started = time.monotonic()
            assert await coordinator.get(key, QUORUM) == ()
            if peers.reads[0] == "addr-n2":
                assert peers.reads == ["addr-n2", "addr-n3"]
                return time.monotonic() - started
        raise AssertionError("no read asked n2 first")

    elapsed = asyncio.run(read())
    assert delay <= elapsed < delay + 1.0


class _DigestPeers:
    """Answers digest reads with ``digests[address]`` and full reads with ``records[address]``
    (encoded records), recording every (address, verb)."""

    def __init__(self, digests: dict[str, list[Any]], records: dict[str, bytes]) -> None:
        self.digests, self.records = digests, records
        self.calls: list[tuple[str, str]] = []

    def is_connected(self, address: str) -> bool:
        return True

    def supports(self, address: str, feature: str) -> bool:
        return feature == "digest"

    def call(self, address: str, verb: str, body: Any, timeout: float) -> asyncio.Future[Any]:
        self.calls.append((address, verb))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(self.digests[address] if verb == "read_digest" else self.records[address])
        return future


def test_a_revalidation_moves_digests_only_when_the_replicas_agree(tmp_path: Path) -> None:
    """The coordinator's own copy and n2's digest agree: no record crosses a link, and the
    answer is the coordinator's copy; when n2's digest differs it is a full read instead."""
    from ringkv.core.validators import etag_of
    from ringkv.core.versions import VClock, Version, encode_record

    mine = (Version("n1.1", 1, VClock.empty(), b"v1", 1),)
    newer = (Version("n2.1", 1, VClock({"n1.1": (1, 0)}), b"v2", 2),)
    everywhere = {f"addr-n{i}": encode_record(newer) for i in (2, 3)}
    agreeing = _DigestPeers({a: [etag_of(mine), True] for a in everywhere}, everywhere)
    coordinator = _coordinator(tmp_path, agreeing, "--read-repair-chance", "0")  # type: ignore[arg-type]
    coordinator.storage.merge(b"k", mine, "siblings")

    etag, found, load = asyncio.run(coordinator.get_digest(b"k", QUORUM, 0))
    assert load is not None and (etag, found, load()) == (etag_of(mine), True, mine)
    assert [verb for _, verb in agreeing.calls] == ["read_digest"]

    differing = _DigestPeers({a: [etag_of(newer), True] for a in everywhere}, everywhere)
    coordinator.messaging = differing  # type: ignore[assignment]
    etag, found, load = asyncio.run(coordinator.get_digest(b"k", QUORUM, 0))
    assert load is not None and (etag, found, load()) == (etag_of(newer), True, newer)
    assert [verb for _, verb in differing.calls][:2] == ["read_digest", "read"]
