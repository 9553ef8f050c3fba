"""Key listing (``GET /v1/keys``): an administrative scan, a page at a time, in ring order.

The node serving the request walks the ring's pieces (``ringkv.core.listing.segments``) from the
cursor on, and asks *one* live, readable replica of each piece -- itself when it is one -- for
the keys there (peer verb ``list_range``), at most ``MAX_SCAN_PER_CALL`` records per call; when a
replica fails, the next replica of the piece continues from the same position. Asked for
(``r=``), it asks R replicas of each piece, merges their keys (``merge_listings``) and keeps
those a batch read at R finds live. A replica lists
the keys it holds with a live value (not deleted, not expired by its clock) and the prefix.
One listing runs at a time per node, and the records examined are throttled to
``LIST_SCAN_RATE`` per second: listing is for operators and tools, not a query path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ringkv.core.errors import Unavailable
from ringkv.core.expiry import live_versions
from ringkv.core.listing import (
    LIST_SCAN_RATE,
    MAX_SCAN_PER_CALL,
    PAGE_SECONDS,
    Position,
    merge_listings,
    segments,
)
from ringkv.core.placement import preference_list
from ringkv.core.quorum import Quorum
from ringkv.core.ring import RING_SIZE
from ringkv.node.messaging import PeerError
from ringkv.node.parts import NodePart, NodeParts
from ringkv.node.throttle import Throttle

#: Comes after every key at a position (keys are at most 256 bytes).
_AFTER_ALL = b"\xff" * 257
#: Reads many keys at a quorum: ``Batches.get_many``.
ReadMany = Callable[[Sequence[bytes], Quorum], Awaitable[list[Any]]]


class KeyLister(NodePart):
    def __init__(self, parts: NodeParts, read_many: ReadMany) -> None:
        super().__init__(parts)
        self.read_many = read_many
        self.n = self.config.replication_factor
        self.timeout = self.config.request_timeout
        self._one_at_a_time = asyncio.Semaphore(1)
        self._throttle = Throttle(lambda: LIST_SCAN_RATE, full=True)

    async def list_here(self, body: dict[str, Any]) -> dict[str, Any]:
        """This node's keys for a ``list_range`` (a node of several shards asks them all)."""
        return self.handle_list_range(body)

    # -- the replica's side ---------------------------------------------------------------------

    def handle_list_range(self, body: dict[str, Any]) -> dict[str, Any]:
        """Keys with a live value in ``(after, hi]`` (ring order) starting with ``prefix``:
        at most ``limit`` keys and ``MAX_SCAN_PER_CALL`` records examined. ``stop``: the
        last position examined when the call stopped before ``hi``, else None."""
        after: Position = (int(body["after"][0]), bytes(body["after"][1]))
        hi, limit = int(body["hi"]), int(body["limit"])
        prefix = bytes(body.get("prefix") or b"")
        now_ms = int(time.time() * 1000)
        keys: list[list[Any]] = []
        scanned = 0
        for h, key, versions in self.storage.scan(max(after[0], 0) - 1, hi):
            if (h, key) <= after:
                continue
            scanned += 1
            if key.startswith(prefix) and live_versions(versions, now_ms):
                keys.append([h, key])
            if len(keys) >= limit or scanned >= MAX_SCAN_PER_CALL:
                return {"keys": keys, "stop": [h, key], "scanned": scanned}
        return {"keys": keys, "stop": None, "scanned": scanned}

    # -- the coordinator's side -----------------------------------------------------------------

    async def page(
        self, prefix: bytes, limit: int, cursor: Position, quorum: Quorum | None = None
    ) -> tuple[list[bytes], Position | None]:
        """Up to ``limit`` keys after ``cursor``, and the cursor of the next page (None: the
        listing is complete). With ``quorum`` (``r=``): ask R replicas of each range and merge
        their keys, then keep only the keys a batch read at R finds a live value for.
        ``Unavailable`` when too few replicas of a range answer."""
        async with self._one_at_a_time:
            return await self._page(prefix, limit, cursor, quorum)

    async def _page(
        self, prefix: bytes, limit: int, cursor: Position, quorum: Quorum | None
    ) -> tuple[list[bytes], Position | None]:
        ring = self.membership.ring
        if not len(ring):
            raise Unavailable(1, 0)
        readable = self.membership.up_nodes() - self.membership.unreadable
        started = time.monotonic()
        found: list[bytes] = []
        position = cursor
        for piece in segments(ring, cursor[0] if cursor[1] == _AFTER_ALL else cursor[0] - 1):
            if position < (piece.lo, b""):
                position = (piece.lo - 1, _AFTER_ALL)  # before every key at piece.lo
            replicas = [r.node for r in preference_list(ring, piece.token, self.n)]
            live = sorted((n for n in replicas if n in readable), key=lambda n: n != self.node_id)
            wanted = min(quorum.required, len(replicas)) if quorum is not None else 1
            while True:
                body = {"after": list(position), "hi": piece.hi, "prefix": prefix,
                        "limit": limit - len(found)}  # fmt: skip
                answers = await self._ask(live, wanted, body)
                await self._throttle(sum(int(a["scanned"]) for a in answers))
                keys, stop = merge_listings(
                    [([(int(h), bytes(k)) for h, k in a["keys"]],
                      None if a["stop"] is None else (int(a["stop"][0]), bytes(a["stop"][1])))
                     for a in answers],
                    limit - len(found),
                )  # fmt: skip
                found.extend(await self._live(keys, quorum))
                if stop is None:
                    position = (piece.hi, _AFTER_ALL)  # the whole piece is done
                    break
                position = stop
                if len(found) >= limit or time.monotonic() - started >= PAGE_SECONDS:
                    return found, position
            if len(found) >= limit or time.monotonic() - started >= PAGE_SECONDS:
                return found, position if piece.hi < RING_SIZE - 1 else None
        return found, None

    async def _live(self, keys: list[Position], quorum: Quorum | None) -> list[bytes]:
        """The keys a read at ``quorum`` finds live (all of them without a quorum)."""
        if quorum is None or not keys:
            return [key for _, key in keys]
        outcomes = await self.read_many([key for _, key in keys], quorum)
        live = []
        now_ms = int(time.time() * 1000)
        for (_, key), versions in zip(keys, outcomes, strict=True):
            if isinstance(versions, Exception):
                raise versions  # the page fails; the client retries it with the same cursor
            if live_versions(versions, now_ms):
                live.append(key)
        return live

    async def _ask(self, live: list[str], wanted: int, body: dict[str, Any]) -> list[Any]:
        """``list_range`` answers from ``wanted`` of the ``live`` replicas (asked at once; one
        that fails is replaced by the next), else ``Unavailable``."""
        answers: list[Any] = []
        candidates = list(live)
        while len(answers) < wanted and candidates:
            batch, candidates = (
                candidates[: wanted - len(answers)],
                candidates[wanted - len(answers) :],
            )
            results = await asyncio.gather(*(self._ask_one(n, body) for n in batch))
            answers.extend(a for a in results if a is not None)
        if len(answers) < wanted:
            raise Unavailable(wanted, len(answers))
        return answers

    async def _ask_one(self, node: str, body: dict[str, Any]) -> Any:
        if node == self.node_id:
            return await self.list_here(body)
        address = self.membership.address_of(node)
        if address is None:
            return None
        try:
            return await self.messaging.request(address, "list_range", body, self.timeout)
        except PeerError:
            return None  # another replica of the range continues from the same position
