"""Hints: hinted handoff (Dynamo 4.6, Cassandra's HintsService).

When a primary replica is down, a write goes to a fallback node together with a hint naming the
primary; when no fallback exists, or a replica did not acknowledge in time, the coordinator keeps
the hint itself. Hints live in their own RocksDB column family, keyed by target node and record
key, so they survive restarts, several hints for one key merge into one, and delivery scans one
target at a time. A delivery loop hands them over, throttled, when the target is seen alive
again, and deletes each hint only after the target acknowledged it, and only if it still holds
exactly what was sent (compare and delete: a write merged into the hint while the send was in
flight stays for the next round). Hints older than
``--hint-window`` are dropped and counted: anti-entropy repairs those keys instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import msgpack

from ringkv.core.ring import key_hash
from ringkv.core.versions import (
    ConflictMode,
    MalformedRecord,
    Version,
    merge_siblings,
    version_from_wire,
    version_to_wire,
)
from ringkv.node.storage import Storage, storage_key

log = logging.getLogger(__name__)

_SEP = b"\x00"


def hint_key(target: str, key: bytes) -> bytes:
    return target.encode() + _SEP + storage_key(key_hash(key), key)


class HintStore:
    def __init__(self, storage: Storage, mode: ConflictMode) -> None:
        self.storage = storage
        self.mode = mode
        self.pending: dict[str, int] = {}
        for raw_key in self.cf.keys():  # noqa: SIM118 (iterating an Rdict is not keys())
            target = bytes(raw_key).split(_SEP, 1)[0].decode()
            self.pending[target] = self.pending.get(target, 0) + 1

    @property
    def cf(self) -> Any:
        return self.storage.hints  # looked up each time: storage may reopen its database

    def total_pending(self) -> int:
        return sum(self.pending.values())

    def add(self, target: str, key: bytes, versions: Sequence[Version], now_ms: int) -> bool:
        """Store (merge) a hint; returns True when it is a new hint rather than a merge."""
        self.storage.ensure_writable()
        hk = hint_key(target, key)
        raw = self.cf.get(hk)
        created, current = now_ms, tuple[Version, ...]()
        if raw is not None:
            created, current = self._decode(raw)
        merged = merge_siblings(current, versions, self.mode)
        value = msgpack.packb([created, [version_to_wire(v) for v in merged]], use_bin_type=True)
        self.storage.put_into(self.cf, hk, value)
        if raw is None:
            self.pending[target] = self.pending.get(target, 0) + 1
        return raw is None

    def get(self, target: str, key: bytes) -> tuple[Version, ...]:
        raw = self.cf.get(hint_key(target, key))
        return () if raw is None else self._decode(raw)[1]

    def for_target(self, target: str) -> Iterator[tuple[bytes, bytes, int, tuple[Version, ...]]]:
        """(hint key, record key, created ms, versions) of every hint for ``target``."""
        prefix = target.encode() + _SEP
        for raw_key, raw in self.cf.items(from_key=prefix):
            hk = bytes(raw_key)
            if not hk.startswith(prefix):
                return
            try:
                created, versions = self._decode(raw)
            except (MalformedRecord, ValueError):
                self.remove(target, hk)
                continue
            yield hk, hk[len(prefix) + 8 :], created, versions

    def remove(self, target: str, hk: bytes) -> None:
        self.cf.delete(hk, self.storage.write_options)
        self.pending[target] = max(0, self.pending.get(target, 0) - 1)

    def remove_sent(self, target: str, hk: bytes, sent: Sequence[Version]) -> bool:
        """Delete the hint ``hk`` if it still holds exactly the versions ``sent`` (by dot);
        returns whether it was deleted. A newer version merged into it meanwhile keeps it."""
        raw = self.cf.get(hk)
        if raw is None:
            return False
        try:
            _, current = self._decode(raw)
        except (MalformedRecord, ValueError):
            current = ()
        if current and sorted(v.dot for v in current) != sorted(v.dot for v in sent):
            return False
        self.remove(target, hk)
        return True

    def targets(self) -> list[str]:
        return [t for t, count in self.pending.items() if count > 0]

    @staticmethod
    def _decode(raw: bytes) -> tuple[int, tuple[Version, ...]]:
        try:
            created, wire = msgpack.unpackb(raw, raw=False)
            if type(created) is not int or type(wire) is not list:
                raise TypeError("hint must be [created ms, versions]")
        except Exception as exc:  # msgpack raises many unrelated types on garbage
            raise MalformedRecord(f"undecodable hint: {exc!r}") from None
        return created, tuple(version_from_wire(v) for v in wire)


class HintedHandoff:
    """The delivery loop: hands hints to their targets when they are alive again."""

    def __init__(
        self,
        store: HintStore,
        is_alive: Any,
        send: Any,
        metrics: Any,
        window_seconds: float,
        rate_per_second: float,
    ) -> None:
        self.store = store
        self.is_alive = is_alive
        self.send = send  # async (target, [(key, versions)]) -> None, raises on failure
        self.metrics = metrics
        self.window_ms = int(window_seconds * 1000)
        self.rate = rate_per_second
        self.batch = max(1, min(100, int(rate_per_second / 10)))
        self.oldest_ms: int | None = None  # creation of the oldest hint kept by the last expiry

    def expire(self, now_ms: int) -> int:
        dropped, oldest = 0, None
        for target in list(self.store.pending):
            for hk, _key, created, _versions in list(self.store.for_target(target)):
                if now_ms - created > self.window_ms:
                    self.store.remove(target, hk)
                    dropped += 1
                elif oldest is None or created < oldest:
                    oldest = created
        self.oldest_ms = oldest
        if dropped:
            self.metrics.hints_dropped.inc(dropped)
            log.warning("dropped %d hints older than the hint window", dropped)
        return dropped

    async def deliver(self, target: str) -> int:
        """Deliver every hint for ``target``, throttled; returns how many were delivered."""
        delivered = 0
        while self.is_alive(target):
            batch = []
            now_ms = int(time.time() * 1000)
            for hk, key, created, versions in self.store.for_target(target):
                if now_ms - created > self.window_ms:  # too old: anti-entropy repairs it
                    self.store.remove(target, hk)
                    self.metrics.hints_dropped.inc()
                    continue
                batch.append((hk, key, versions))
                if len(batch) >= self.batch:
                    break
            if not batch:
                break
            started = time.monotonic()
            await self.send(target, [(key, versions) for _, key, versions in batch])
            for hk, _key, versions in batch:
                self.store.remove_sent(target, hk, versions)
            delivered += len(batch)
            self.metrics.hints_delivered.inc(len(batch))
            # throttle to `rate` hints per second
            await asyncio.sleep(max(0.0, len(batch) / self.rate - (time.monotonic() - started)))
        return delivered

    async def run(self, interval: float = 1.0) -> None:
        last_expiry = 0.0
        while True:
            try:
                now = time.time()
                if now - last_expiry > 10:
                    self.expire(int(now * 1000))
                    last_expiry = now
                for target in self.store.targets():
                    if self.is_alive(target):
                        count = await self.deliver(target)
                        if count:
                            log.info("delivered %d hints to %s", count, target)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed delivery is retried next round
                log.debug("hint delivery interrupted: %r", exc)
            await asyncio.sleep(interval)
