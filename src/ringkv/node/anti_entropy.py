"""Anti-entropy: Merkle-tree exchanges that converge replicas in the background (Dynamo 4.7).

The node keeps one ``MerkleTree`` per token range it replicates. Trees are built by one scan of
that range when the ring changes (or at start), then kept current by every write: the storage
change hook XORs the old record out of its leaf and the new one in. Ranges are cut at the slice
boundaries of every shard count in the ring (``core.sharding.cut_at_slices``): each shard keeps
the trees of the pieces its slice holds, and nodes of different shard counts hold trees of the
same pieces, compared shard to shard.

Every ``--anti-entropy-interval`` the node exchanges with the next live peer in turn, over every
range both replicate: compare roots (one message for all ranges), then the leaves of the ranges
that differ, then fetch the peer's records of the differing leaves, merge them locally with the
usual clock rules, and push back our records the peer lacks or holds differently. Records moved
are throttled by ``--anti-entropy-rate`` so foreground latency does not suffer.

Tombstone purge rides on the exchanges: a tombstone-only record is removed once it is older
than ``--tombstone-grace`` and an exchange that started after it was written has completed with
every other replica of its range -- so every replica holds the tombstone, and deleted data
cannot come back from one that missed the delete -- and, through ``may_purge``, only once every
ring member has cleaned the ranges it gave away (``ringkv.node.cleanup``), so no stale copy on
an old owner can bring it back either. Expired values (TTL) are purged the same way, counted as
tombstones written at their expiry (``ringkv.core.expiry``).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ringkv.core.expiry import purgeable
from ringkv.core.merkle import MerkleTree, record_digest
from ringkv.core.placement import preference_list
from ringkv.core.ring import Ring, TokenRange
from ringkv.core.sharding import cut_at_slices, owning_peer, shard_of, slice_ends
from ringkv.core.versions import Version, version_from_wire, version_to_wire
from ringkv.node.parts import NodePart, NodeParts
from ringkv.node.throttle import Throttle

log = logging.getLogger(__name__)

LEAVES = 64


def expired_tombstones(
    versions: Sequence[Version], horizon_ms: int, skew_ms: int = 0, now_ms: int | None = None
) -> bool:
    """A record holding only tombstones and expired values, all dead before ``horizon_ms``, or
    only expired values written over nothing (``ringkv.core.expiry.purgeable``; ``skew_ms``:
    ``--max-clock-skew``)."""
    return purgeable(versions, horizon_ms, skew_ms, now_ms)


class AntiEntropy(NodePart):
    def __init__(self, parts: NodeParts) -> None:
        super().__init__(parts)
        self.trees: dict[int, MerkleTree] = {}  # range end token -> tree
        self.replicas: dict[int, tuple[str, ...]] = {}  # range end token -> replica nodes
        self._ends: list[int] = []
        self._to_build: list[TokenRange] = []
        self._ring: Ring | None = None
        self._counts: frozenset[int] = frozenset()  # the shard counts the trees are cut for
        self._peer_turn = 0
        self.last_exchange: dict[tuple[int, str], int] = {}  # (range end, peer) -> wall ms
        self.last_result: dict[tuple[int, str], str] = {}  # (range end, peer) -> equal/repaired
        self.tombstones_pending = 0  # tombstone-only records kept, at the last purge pass
        self._throttle = Throttle(lambda: self.config.anti_entropy_rate)
        self.completed_rounds = 0
        # Purging scans every replicated range: do it rarely (every quarter of the grace period,
        # but at least once a minute) and in slices, so that it never stalls foreground requests.
        config = self.config
        self._purge_every = max(config.anti_entropy_interval, min(config.tombstone_grace / 4, 60))
        self._purged_at = time.monotonic()
        # Set by the node: False while some ring member may still hold stale copies of ranges
        # it gave away (cleanup not finished), whose deleted values a purge would let return.
        self.may_purge: Callable[[], bool] = lambda: True
        self.storage.on_change(self._on_change)

    # -- trees ----------------------------------------------------------------------------------

    def _shard_counts(self, ring: Ring) -> frozenset[int]:
        """This node's shard count and every ring member's: trees are cut at all their slice
        boundaries, so that nodes of different counts hold trees of the same pieces."""
        nodes = (self.node_id, *ring.nodes)
        return frozenset(self.membership.shard_count_of(node) for node in nodes)

    def _plan(self, ring: Ring, counts: frozenset[int]) -> None:
        """Decide which ranges we replicate, cut for the shard counts ``counts``; their trees
        are (re)built by ``build_pending``."""
        self._ring = ring
        self._counts = counts
        self.trees = {}
        self.replicas = {}
        self._to_build = []
        n = self.config.replication_factor
        layout = self.layout
        for token_range in ring.ranges():
            nodes = tuple(r.node for r in preference_list(ring, token_range.end, n))
            if self.node_id not in nodes:
                continue
            # a shard keeps trees for the pieces of the range its slice holds
            for start, end in cut_at_slices(token_range.start, token_range.end, counts):
                if layout is None or shard_of(end, layout.count) == layout.index:
                    self.replicas[end] = nodes
                    self._to_build.append(TokenRange(start, end, token_range.owner))
        self._ends = sorted(set(ring.sorted_tokens) | slice_ends(counts))
        self.last_exchange = {k: v for k, v in self.last_exchange.items() if k[0] in self.replicas}
        self.last_result = {k: v for k, v in self.last_result.items() if k[0] in self.replicas}

    async def build_pending(self) -> None:
        """Build trees for planned ranges, one range per event-loop turn."""
        while self._to_build:
            token_range = self._to_build.pop()
            tree = MerkleTree(token_range.start, token_range.end, LEAVES)
            for h, key, versions in self.storage.scan(token_range.start, token_range.end):
                tree.update(h, key, None, record_digest(versions))
            self.trees[token_range.end] = tree
            await asyncio.sleep(0)

    def _range_end(self, h: int) -> int | None:
        if not self._ends:
            return None
        i = bisect.bisect_left(self._ends, h)
        return self._ends[i] if i < len(self._ends) else self._ends[0]

    def _on_change(
        self, h: int, key: bytes, old: Sequence[Version], new: Sequence[Version]
    ) -> None:
        end = self._range_end(h)
        tree = self.trees.get(end) if end is not None else None
        if tree is not None:
            tree.update(
                h, key, record_digest(old) if old else None, record_digest(new) if new else None
            )

    def ensure_current(self) -> None:
        ring = self.membership.ring
        counts = self._shard_counts(ring)
        if (ring is not self._ring and ring != self._ring) or counts != self._counts:
            self._plan(ring, counts)
        elif ring is not self._ring:
            self._ring = ring

    # -- peer verbs ---------------------------------------------------------------------------

    def handle_roots(self, body: dict[str, Any]) -> list[int | None]:
        out: list[int | None] = []
        for start, end in body["ranges"]:
            tree = self.trees.get(end)
            out.append(tree.root() if tree is not None and tree.start == start else None)
        return out

    def handle_leaves(self, body: dict[str, Any]) -> list[int] | None:
        tree = self.trees.get(body["end"])
        if tree is None or tree.start != body["start"]:
            return None
        return list(tree.leaves)

    def handle_fetch(self, body: dict[str, Any]) -> list[Any]:
        lo, hi = int(body["lo"]), int(body["hi"])
        return [
            [key, [version_to_wire(v) for v in versions]]
            for _h, key, versions in self.storage.scan(lo, hi)
        ]

    # -- exchanges ----------------------------------------------------------------------------

    async def run(self) -> None:
        interval = self.config.anti_entropy_interval
        while True:
            await asyncio.sleep(interval)
            try:
                self.ensure_current()
                await self.build_pending()
                await self.exchange_with_next_peer()
                now = time.monotonic()
                if now - self._purged_at >= self._purge_every:
                    self._purged_at = now
                    await self.purge_tombstones(int(time.time() * 1000))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("anti-entropy round failed")

    def _peers(self) -> list[str]:
        peers = sorted({n for nodes in self.replicas.values() for n in nodes} - {self.node_id})
        return [p for p in peers if self.membership.is_alive(p)]

    async def exchange_with_next_peer(self) -> int:
        peers = self._peers()
        if not peers:
            return 0
        peer = peers[self._peer_turn % len(peers)]
        self._peer_turn += 1
        return await self.exchange(peer)

    async def exchange(self, peer: str) -> int:
        """Compare and repair every range shared with ``peer``; returns records moved."""
        started_ms = int(time.time() * 1000)
        by_address: dict[str, list[MerkleTree]] = {}
        for end, tree in self.trees.items():
            if peer in self.replicas.get(end, ()):
                address = self._peer_address(peer, end)
                if address is not None:
                    by_address.setdefault(address, []).append(tree)
        if not by_address:
            return 0
        moved = 0
        for address, shared in by_address.items():
            moved += await self._exchange_trees(peer, address, shared, started_ms)
        self.completed_rounds += 1
        return moved

    async def _exchange_trees(
        self, peer: str, address: str, shared: list[MerkleTree], started_ms: int
    ) -> int:
        """Compare and repair ``shared`` with the peer's process at ``address``."""
        timeout = max(self.config.request_timeout, 5.0)
        roots = await self.messaging.request(
            address, "ae_roots", {"ranges": [[t.start, t.end] for t in shared]}, timeout
        )
        moved = 0
        for tree, root in zip(shared, roots, strict=True):
            if root is None:
                self.metrics.anti_entropy_exchanges.labels("skipped").inc()
                continue  # the peer does not (yet) see this range as we do
            if root != tree.root():
                leaves = await self.messaging.request(
                    address, "ae_leaves", {"start": tree.start, "end": tree.end}, timeout
                )
                if leaves is None:
                    continue
                for index in tree.differing_leaves(leaves):
                    lo, hi = tree.leaf_range(index)
                    if lo == hi:
                        continue  # an empty slice of a tiny range
                    moved += await self._repair_leaf(address, lo, hi, timeout)
                self.metrics.anti_entropy_exchanges.labels("repaired").inc()
                self.last_result[(tree.end, peer)] = "repaired"
            else:
                self.metrics.anti_entropy_exchanges.labels("equal").inc()
                self.last_result[(tree.end, peer)] = "equal"
            self.last_exchange[(tree.end, peer)] = started_ms
        return moved

    def _peer_address(self, peer: str, end: int) -> str | None:
        """Where to compare the tree of the piece ending at ``end`` with ``peer``: its address,
        or for a node served by several shards the shard holding the piece (trees are cut at
        every member's slice boundaries, so one shard of the peer holds each whole piece)."""
        published = self.membership.published_shards(peer)
        if published is None:
            return self.membership.address_of(peer)
        return owning_peer(published, end)

    async def _repair_leaf(self, address: str, lo: int, hi: int, timeout: float) -> int:
        remote = await self.messaging.request(address, "ae_fetch", {"lo": lo, "hi": hi}, timeout)
        remote_digests: dict[bytes, bytes] = {}
        fetched = 0
        now_ms = int(time.time() * 1000)
        horizon = now_ms - int(self.config.tombstone_grace * 1000)
        for key, wire in remote:
            key = bytes(key)
            versions = [version_from_wire(v) for v in wire]
            if not self.clock_guard.admits(versions):
                continue  # from too far in the future: neither stored nor pushed back
            if expired_tombstones(versions, horizon, self.skew_ms, now_ms):
                # Past the grace period tombstones are being purged everywhere: copying them
                # back and forth would only resurrect what the other side just removed.
                remote_digests[key] = b"expired"
                continue
            _, changed = self.storage.merge(key, versions, self.mode)
            remote_digests[key] = record_digest(versions)
            if changed:
                fetched += 1
        push = [
            [key, [version_to_wire(v) for v in versions]]
            for _h, key, versions in self.storage.scan(lo, hi)
            if remote_digests.get(key) not in (record_digest(versions), b"expired")
            and not expired_tombstones(versions, horizon, self.skew_ms, now_ms)
        ]
        if push:
            await self.messaging.request(address, "replicate_batch", {"items": push}, timeout)
        self.metrics.anti_entropy_keys.labels("fetched").inc(fetched)
        self.metrics.anti_entropy_keys.labels("pushed").inc(len(push))
        await self._throttle(fetched + len(push))
        return fetched + len(push)

    # -- tombstones -----------------------------------------------------------------------------

    async def purge_tombstones(self, now_ms: int) -> int:
        grace_ms = int(self.config.tombstone_grace * 1000)
        purged = kept = 0
        # While a ring member still holds ranges it gave away, nothing is purged (its stale
        # copies could come back), but tombstones are still counted as pending.
        allowed = self.may_purge()
        for end, tree in list(self.trees.items()):
            others = [n for n in self.replicas.get(end, ()) if n != self.node_id]
            covered = min(
                (self.last_exchange.get((end, peer), 0) for peer in others), default=now_ms
            )
            # (no exchange with every replica yet: only write-once expired values can go)
            horizon = max(0, min(covered, now_ms - grace_ms))
            expired = []
            for scanned, (_h, key, versions) in enumerate(self.storage.scan(tree.start, tree.end)):
                if allowed and expired_tombstones(versions, horizon, self.skew_ms, now_ms):
                    expired.append((key, versions))
                elif all(v.is_tombstone for v in versions):
                    kept += 1  # still within the grace period or not yet exchanged everywhere
                if scanned % 512 == 511:
                    await asyncio.sleep(0)  # let requests run between slices
            for key, versions in expired:
                if self.storage.remove(key, versions):  # unless it changed meanwhile
                    purged += 1
                else:
                    kept += 1
            await asyncio.sleep(0)
        self.tombstones_pending = kept
        if purged:
            self.metrics.tombstones_purged.inc(purged)
        return purged

    def status(self) -> dict[str, Any]:
        return {
            "ranges": len(self.replicas),
            "trees_built": len(self.trees),
            "completed_rounds": self.completed_rounds,
        }

    def tree_roots(self) -> list[dict[str, Any]]:
        return [
            {
                "start": str(tree.start),
                "end": str(end),
                "root": f"{tree.root():016x}",
                "replicas": list(self.replicas.get(end, ())),
            }
            for end, tree in sorted(self.trees.items())
        ]
