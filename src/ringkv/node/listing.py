"""Key listing (``GET /v1/keys``): an administrative scan, a page at a time, in ring order.

The node serving the request walks the ring's pieces (``ringkv.core.listing.segments``) from the
cursor on, and asks *one* live, readable replica of each piece -- itself when it is one -- for
the keys there (peer verb ``list_range``), at most ``MAX_SCAN_PER_CALL`` records per call; when a
replica fails, the next replica of the piece continues from the same position. A replica lists
the keys it holds with a live value (not deleted, not expired by its clock) and the prefix.
One listing runs at a time per node, and the records examined are throttled to
``LIST_SCAN_RATE`` per second: listing is for operators and tools, not a query path.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ringkv.core.expiry import live_versions
from ringkv.core.listing import (
    LIST_SCAN_RATE,
    MAX_SCAN_PER_CALL,
    PAGE_SECONDS,
    Position,
    segments,
)
from ringkv.core.placement import preference_list
from ringkv.node.coordinator import Unavailable
from ringkv.node.membership import Membership
from ringkv.node.messaging import MessagingService, PeerError
from ringkv.node.storage import Storage


class KeyLister:
    def __init__(
        self,
        node_id: str,
        n: int,
        storage: Storage,
        membership: Membership,
        messaging: MessagingService,
        timeout: float,
    ) -> None:
        self.node_id = node_id
        self.n = n
        self.storage = storage
        self.membership = membership
        self.messaging = messaging
        self.timeout = timeout
        self._one_at_a_time = asyncio.Semaphore(1)
        self._budget = LIST_SCAN_RATE
        self._budget_at = time.monotonic()

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
        self, prefix: bytes, limit: int, cursor: Position
    ) -> tuple[list[bytes], Position | None]:
        """Up to ``limit`` keys after ``cursor``, and the cursor of the next page (None: the
        listing is complete). ``Unavailable`` when no replica of a piece answers."""
        async with self._one_at_a_time:
            return await self._page(prefix, limit, cursor)

    async def _page(
        self, prefix: bytes, limit: int, cursor: Position
    ) -> tuple[list[bytes], Position | None]:
        ring = self.membership.ring
        if not len(ring):
            raise Unavailable(1, 0)
        readable = self.membership.up_nodes() - self.membership.unreadable
        started = time.monotonic()
        found: list[bytes] = []
        position = cursor
        for piece in segments(ring, cursor[0] - 1 if cursor[1] else cursor[0]):
            if position < (piece.lo, b""):
                position = (piece.lo - 1, b"\xff" * 257)  # before every key at piece.lo
            replicas = [r.node for r in preference_list(ring, piece.token, self.n)]
            live = sorted((n for n in replicas if n in readable), key=lambda n: n != self.node_id)
            while True:
                answer = await self._ask(live, position, piece.hi, prefix, limit - len(found))
                found.extend(bytes(key) for _, key in answer["keys"])
                await self._throttle(int(answer["scanned"]))
                if answer["stop"] is None:
                    position = (piece.hi, b"\xff" * 257)  # the whole piece is done
                    break
                position = (int(answer["stop"][0]), bytes(answer["stop"][1]))
                if len(found) >= limit or time.monotonic() - started >= PAGE_SECONDS:
                    return found, position
            if len(found) >= limit or time.monotonic() - started >= PAGE_SECONDS:
                return found, (piece.hi, b"\xff" * 257) if piece.hi < (1 << 64) - 1 else None
        return found, None

    async def _ask(
        self, live: list[str], after: Position, hi: int, prefix: bytes, limit: int
    ) -> dict[str, Any]:
        body = {"after": [after[0], after[1]], "hi": hi, "prefix": prefix, "limit": limit}
        for node in live:
            if node == self.node_id:
                return self.handle_list_range(body)
            address = self.membership.address_of(node)
            if address is None:
                continue
            try:
                answer: dict[str, Any] = await self.messaging.request(
                    address, "list_range", body, self.timeout
                )
            except PeerError:
                continue  # the next replica of the piece continues from the same position
            return answer
        raise Unavailable(1, 0)

    async def _throttle(self, records: int) -> None:
        """Token bucket: at most ``LIST_SCAN_RATE`` records examined per second on average."""
        now = time.monotonic()
        self._budget = min(LIST_SCAN_RATE, self._budget + (now - self._budget_at) * LIST_SCAN_RATE)
        self._budget -= records
        self._budget_at = now
        if self._budget < 0:
            await asyncio.sleep(-self._budget / LIST_SCAN_RATE)
