"""Hinted handoff on a real RocksDB: a hint is deleted only if it still holds what was sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from ringkv.core.versions import VClock, Version, new_version
from ringkv.node.hints import HintedHandoff, HintStore
from ringkv.node.metrics import NodeMetrics
from ringkv.node.storage import Storage
from tests.node.conftest import Run

NOW = int(time.time() * 1000)  # hints older than the hint window are dropped, not sent


def _version(value: bytes, timestamp: int) -> Version:
    return new_version((), VClock.empty(), "n1#1", value, timestamp)


def test_a_write_racing_delivery_is_not_deleted_with_the_sent_hint(
    run: Run, tmp_path: Path
) -> None:
    """The target acknowledges the old version while a newer one is merged into the hint:
    the newer one stays and goes out in the next round (before, it was deleted unsent and
    waited for anti-entropy)."""
    storage = Storage(str(tmp_path / "db"))
    store = HintStore(storage, "lww")
    old = _version(b"old", 1 << 20)
    newer = _version(b"newer", 2 << 20)
    store.add("n2", b"k", [old], now_ms=NOW)
    received: list[list[tuple[bytes, Sequence[Version]]]] = []
    in_flight = asyncio.Event()
    release = asyncio.Event()

    async def send(target: str, items: list[tuple[bytes, Sequence[Version]]]) -> None:
        received.append(items)
        if len(received) == 1:
            in_flight.set()
            await release.wait()  # the send is on the wire: a write arrives meanwhile

    async def main() -> int:
        handoff = HintedHandoff(
            store, lambda node: True, send, NodeMetrics(), window_seconds=3600.0,
            rate_per_second=10_000.0,
        )  # fmt: skip
        delivery = asyncio.ensure_future(handoff.deliver("n2"))
        await asyncio.wait_for(in_flight.wait(), 5)
        store.add("n2", b"k", [newer], now_ms=NOW)  # the racing write, merged into the hint
        release.set()
        return await asyncio.wait_for(delivery, 5)

    try:
        run(main())  # deliver() runs until no hint is left for n2
        sent_values = [[v.value for _, vs in items for v in vs] for items in received]
        assert sent_values == [[b"old"], [b"newer"]]
        assert store.get("n2", b"k") == ()
        assert store.pending.get("n2", 0) == 0
    finally:
        storage.close()


def test_an_unchanged_hint_is_deleted_after_delivery(run: Run, tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "db"))
    store = HintStore(storage, "siblings")
    store.add("n3", b"k", [_version(b"v", 1 << 20)], now_ms=NOW)
    sent: list[object] = []

    async def send(target: str, items: list[tuple[bytes, Sequence[Version]]]) -> None:
        sent.append(items)

    async def main() -> int:
        handoff = HintedHandoff(store, lambda node: True, send, NodeMetrics(), 3600.0, 10_000.0)
        return await handoff.deliver("n3")

    try:
        assert run(main()) == 1
        assert len(sent) == 1 and store.get("n3", b"k") == ()
        assert store.total_pending() == 0
    finally:
        storage.close()


def test_a_corrupt_hint_is_dropped_not_raised(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "db"))
    store = HintStore(storage, "siblings")
    try:
        for i, garbage in enumerate([b"\x81\x91\x01\x02", b"\xc1", b"\x92\xa1x\x90", b""]):
            storage.put_into(storage.hints, b"n2\x00" + bytes(8) + bytes([i]), garbage)
        assert list(store.for_target("n2")) == []
    finally:
        storage.close()
