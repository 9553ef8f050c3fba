"""Cleanup: deletes the data of token ranges this node no longer replicates, once a ring change
is over (the rules are ``ringkv.core.cleanup``; this is the I/O around them).

Every second the loop publishes the ring version this node sees (gossip key ``cleanup``) and,
when its ring differs from the last one it finished cleaning for (or an operator asked with
``POST /v1/admin/cleanup``), asks ``cleanup_plan`` what it may clean. For each ready range it
works in batches, throttled by ``--cleanup-rate``:

1. read a batch of records (ring order) from where it stopped;
2. hand them off: send each current replica of the range the records' digests
   (``cleanup_check``) and push the records a replica holds differently (``replicate_batch``:
   a merge, harmless when the replica's copy is newer) -- so nothing acknowledged only here is
   lost, whatever the change's streaming did;
3. read the batch's span again and, if nothing changed meanwhile (no ``await`` in between, so
   no write can slip in), delete it with one RocksDB range delete;
4. save the position in the ``meta`` column family, so a restart resumes there.

Then hints this node holds for a node that no longer replicates their key are handed to the
key's current replicas (as new hints, keeping their age), the records are compacted (range
deletes free space only then), and the ring version is saved as cleaned.

Merkle trees: anti-entropy keeps trees only for ranges the node replicates in its current ring
(rebuilt when the ring changes), so cleaned ranges have none to update.

Deletes stay deleted: a late write for a range given away is refused by the replica
(``Coordinator.handle_replicate``; the coordinator keeps a hint, which this loop redirects to the
new replicas) or, when it comes as a batch, kept as hints for the new replicas (``redirect``).
And anti-entropy purges tombstones only while ``cluster_clean`` holds -- every ring member has
finished cleaning for the current ring -- because a stale copy on an old owner could otherwise
bring back a deleted value once its tombstone is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from ringkv.core import gossip as g
from ringkv.core.cleanup import (
    CleanupPlan,
    MemberInfo,
    cleanup_plan,
    hold_reason,
    range_bounds,
    records_to_hand_off,
)
from ringkv.core.merkle import record_digest
from ringkv.core.placement import preference_list
from ringkv.core.ring import Ring, key_hash
from ringkv.core.versions import Version, version_to_wire
from ringkv.node.hints import HintStore
from ringkv.node.parts import NodePart, NodeParts
from ringkv.node.throttle import Throttle

log = logging.getLogger(__name__)

# Small batches: each one is read, checked by every replica and deleted without yielding the
# event loop (here and on the replicas), so its size bounds the pause a request may see.
BATCH_RECORDS = 100
BATCH_BYTES = 256 * 1024
LOOP_SECONDS = 1.0
META_KEY = "cleanup"
PUBLISH_SECONDS = 1.0  # progress goes to gossip at most this often while running
REFRESH_SECONDS = 30.0  # an unchanged report (its disk_bytes) is published again this often

Batch = list[tuple[int, bytes, tuple[Version, ...]]]


class Interrupted(Exception):
    """The ring or the members changed under a running cleanup: start over from the plan."""


def _rkey(start: int, end: int) -> str:
    return f"{start}:{end}"


class Cleanup(NodePart):
    def __init__(self, parts: NodeParts, hints: HintStore) -> None:
        super().__init__(parts)
        self.n = self.config.replication_factor
        self.hints = hints
        saved = self.storage.get_meta(META_KEY)
        self._saved: dict[str, Any] = dict(saved) if isinstance(saved, dict) else {}
        self.cleaned_ring: str | None = self._saved.get("cleaned_ring")
        self.report: dict[str, Any] = {
            "state": "pending",
            "reason": None,
            "ranges_total": 0,
            "ranges_done": 0,
            "keys_total": 0,
            "bytes_total": 0,
            "keys_done": 0,
            "bytes_done": 0,
            "keys_handed_off": 0,
            "hints_redirected": 0,
            "reclaimed_bytes": int(self._saved.get("reclaimed_bytes") or 0),
            "cleaned_ring": self.cleaned_ring,
        }
        self._forced = False
        self._started_ms = int(time.time() * 1000)
        self._wake: asyncio.Event | None = None
        self._published_at = 0.0
        self._throttle = Throttle(lambda: self.config.cleanup_rate)
        self.keys_removed = self.metrics.cleanup_keys
        self.bytes_removed = self.metrics.cleanup_bytes
        self.metrics.watch_cleanup(self.remaining, self.storage.disk_bytes)

    # -- what others ask ------------------------------------------------------------------------

    def request_run(self) -> dict[str, Any]:
        """Clean again now, even if this ring was cleaned already (``ringkv admin cleanup``)."""
        self._forced = True
        requested = int(time.time() * 1000)
        if self.report["state"] != "running":
            self._set("pending", reason="asked to run")
        if self._wake is not None:
            self._wake.set()
        return {
            "accepted": True, "node": self.node_id, "state": self.report["state"],
            "requested_ms": requested,
        }  # fmt: skip

    def status(self) -> dict[str, Any]:
        return {
            **self.report,
            "ring": self.membership.ring.version,
            "disk_bytes": self.storage.disk_bytes(),
        }

    def remaining(self) -> tuple[int, int, int]:
        """(ranges, keys, bytes) still to clean in the running or planned round."""
        r = self.report
        if r["state"] not in ("running", "held", "pending"):
            return 0, 0, 0
        return (
            max(0, r["ranges_total"] - r["ranges_done"]),
            max(0, r["keys_total"] - r["keys_done"]),
            max(0, r["bytes_total"] - r["bytes_done"]),
        )

    def cluster_reports(self) -> list[dict[str, Any]]:
        """Every ring member's cleanup report; ``pending`` when it has not seen our ring yet."""
        ring = self.membership.ring
        out = []
        for node in ring.nodes:
            state = self.membership.gossiper.states.get(node)
            report = dict((state.get(g.CLEANUP) if state is not None else None) or {})
            if not report:
                # a member that publishes no cleanup (an older version, mid-upgrade)
                report.update(state="unknown", reason="reports no cleanup")
            elif report.get("ring") != ring.version:
                report["state"] = "pending"
            report["node"] = node
            report["alive"] = self.membership.is_alive(node)
            out.append(report)
        return out

    def cluster_pending(self) -> list[str]:
        """Ring members whose cleanup for the current ring is not done (dead ones included;
        not those that report no cleanup at all, or a rolling upgrade would wait on them)."""
        return [r["node"] for r in self.cluster_reports() if r["state"] not in ("done", "unknown")]

    def cluster_clean(self) -> bool:
        """No change pending and every ring member done cleaning for the current ring: the
        condition for purging tombstones (see the module docstring)."""
        m = self.membership
        reports = self.cluster_reports()
        return m.future_ring == m.ring and all(r["state"] == "done" for r in reports)

    # -- peer verbs -----------------------------------------------------------------------------

    def handle_check(self, body: dict[str, Any]) -> list[int]:
        """Indexes of the (key, digest) items whose record here differs (or is missing)."""
        out = []
        for i, (key, digest) in enumerate(body["items"]):
            if record_digest(self.storage.get(bytes(key))) != bytes(digest):
                out.append(i)
        return out

    def replicates(self, h: int) -> bool:
        """Whether this node replicates ring position ``h`` now or once the change under way
        completes (an empty ring: a forming cluster accepts everything)."""
        m = self.membership
        ring, future = m.ring, m.future_ring
        if not len(ring):
            return True
        if any(r.node == self.node_id for r in preference_list(ring, h, self.n)):
            return True
        return (
            future is not ring
            and bool(len(future))
            and any(r.node == self.node_id for r in preference_list(future, h, self.n))
        )

    def redirect(self, key: bytes, versions: Sequence[Version], created_ms: int) -> None:
        """Keep a record this node does not replicate as hints for the key's replicas (the
        handoff loop delivers them), instead of storing it where cleanup would delete it."""
        ring = self.membership.ring
        for replica in preference_list(ring, key_hash(key), self.n):
            if replica.node == self.node_id:
                self.storage.merge(key, versions, self.config.mode)
            elif self.hints.add(replica.node, key, versions, created_ms):
                self.metrics.hints_stored.inc()

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        self._wake = asyncio.Event()
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Interrupted as exc:
                log.info("cleanup interrupted: %s", exc)
                self._set("pending", reason=str(exc))
            except Exception as exc:
                log.warning("cleanup round failed (retrying): %r", exc)
                self._set("held", reason=f"round failed: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), LOOP_SECONDS)
            self._wake.clear()

    def _members(self) -> dict[str, MemberInfo]:
        m = self.membership
        removed = m.removed_nodes()
        out: dict[str, MemberInfo] = {}
        for node, state in m.gossiper.states.items():
            if node in removed and state.generation <= removed[node]:
                continue
            change = state.get(g.CHANGE) or {}
            cleanup = state.get(g.CLEANUP) or {}
            removing = state.get(g.REMOVING)
            out[node] = MemberInfo(
                status=str(state.get(g.STATUS, g.STARTING)),
                alive=m.is_alive(node),
                has_tokens=bool(state.get(g.TOKENS)),
                removing=str(removing["node"]) if removing else None,
                ring_version=cleanup.get("ring"),
                change_state=change.get("state"),
                change_updated_ms=int(change.get("updated_ms") or 0),
            )
        return out

    def _plan(self, ring: Ring) -> CleanupPlan:
        m = self.membership
        now = int(time.time() * 1000)
        return cleanup_plan(
            self.node_id, ring, m.future_ring, self.n, self._members(), now, self._started_ms
        )

    async def step(self) -> None:
        ring = self.membership.ring
        if not len(ring):
            return
        if self.cleaned_ring == ring.version and not self._forced:
            self._set("done", reason=None)
            return
        if self.report["state"] == "done":
            self._set("pending", reason="asked to run" if self._forced else "the ring changed")
        else:
            self._publish()  # the ring we see (at once when new), so others can tell we agree
        plan = self._plan(ring)
        if plan.hold is not None:
            self._set("held", reason=plan.hold)
            return
        self._forced = False
        await self._clean(ring, plan.ready, plan.waiting)

    def _check(self, ring: Ring, replicas: Sequence[str]) -> None:
        """Raise ``Interrupted`` unless the ring is unchanged, nothing holds cleanup back and
        the range's replicas are still up and normal."""
        m = self.membership
        if m.ring != ring:
            raise Interrupted("the ring changed")
        now = int(time.time() * 1000)
        hold = hold_reason(
            self.node_id, ring, m.future_ring, self._members(), now, self._started_ms
        )
        if hold is not None:
            raise Interrupted(hold)
        for node in replicas:
            if not m.is_alive(node) or m.status_of(node) != g.NORMAL:
                raise Interrupted(f"replica {node} is not up and normal")

    async def _clean(
        self,
        ring: Ring,
        ready: Sequence[tuple[int, int]],
        waiting: Sequence[tuple[tuple[int, int], str]],
    ) -> None:
        saved = self._saved
        positions: dict[str, int] = (
            dict(saved.get("positions") or {}) if saved.get("ring") == ring.version else {}
        )
        r = self.report
        r.update(
            state="running", reason=None, ranges_total=len(ready), ranges_done=0,
            keys_total=0, bytes_total=0, keys_done=0, bytes_done=0, keys_handed_off=0,
            hints_redirected=0, started_ms=int(time.time() * 1000),
            # ranges picked up where an earlier run (before a restart) stopped
            ranges_resumed=sum(1 for s, e in ready if _rkey(s, e) in positions),
        )  # fmt: skip
        for start, end in ready:
            keys, size = await self._stats(positions.get(_rkey(start, end), start), end)
            r["keys_total"] += keys
            r["bytes_total"] += size
        self._publish(force=True)
        loop = asyncio.get_running_loop()
        if r["keys_total"]:
            await loop.run_in_executor(None, self.storage.flush)  # "before" without memtables
        disk_before = self.storage.sst_bytes()
        for start, end in ready:
            replicas = [
                x.node for x in preference_list(ring, end, self.n) if x.node != self.node_id
            ]
            after = positions.get(_rkey(start, end), start)
            while after != end:
                self._check(ring, replicas)
                batch, last = self._batch(after, end)
                if batch:
                    confirmed = await self._hand_off(replicas, batch)
                    self._check(ring, replicas)
                    deleted = self._delete_if_unchanged(after, last, confirmed)
                    if deleted is None:
                        continue  # written to meanwhile: hand the span off again
                    r["keys_done"] += len(batch)
                    r["bytes_done"] += deleted
                    self.keys_removed.inc(len(batch))
                    self.bytes_removed.inc(deleted)
                    await self._throttle(deleted)
                after = last
                positions[_rkey(start, end)] = after
                # not synced: after a power loss a few batches are handed off again, harmless
                self._save(ring.version, positions, sync=False)
                self._publish()
            r["ranges_done"] += 1
            self.metrics.cleanup_ranges.inc()
            self._publish()
        r["hints_redirected"] = await self._redirect_hints(ring)
        if r["keys_done"]:
            await loop.run_in_executor(None, self.storage.compact)
            r["reclaimed_bytes"] = max(0, disk_before - self.storage.sst_bytes())
        r["finished_ms"] = int(time.time() * 1000)
        if waiting:
            (span, why), more = waiting[0], len(waiting) - 1
            self._save(ring.version, positions)
            self._set("held", reason=f"{why} (range {span[0]}:{span[1]}"
                      + (f" and {more} more)" if more else ")"))  # fmt: skip
            return
        self.cleaned_ring = ring.version
        self._save(ring.version, {}, cleaned=ring.version)
        self._set("done", reason=None)
        log.info(
            "cleanup for ring %s done: %d keys, %d bytes removed, %d bytes of disk reclaimed",
            ring.version, r["keys_done"], r["bytes_done"], r["reclaimed_bytes"],
        )  # fmt: skip

    async def _stats(self, after: int, end: int) -> tuple[int, int]:
        keys = size = 0
        if after == end:
            return 0, 0
        for stored in self.storage.sizes(after, end):
            keys += 1
            size += stored
            if keys % 1000 == 0:
                await asyncio.sleep(0)
        return keys, size

    def _batch(self, after: int, end: int) -> tuple[Batch, int]:
        """Up to one batch of records in (after, end] and the last position it covers (a cut
        never splits the records of one position)."""
        batch: Batch = []
        size = 0
        for h, key, versions in self.storage.scan(after, end):
            if (len(batch) >= BATCH_RECORDS or size >= BATCH_BYTES) and h != batch[-1][0]:
                return batch, batch[-1][0]
            batch.append((h, key, versions))
            size += len(key) + sum(v.size() for v in versions)
        return batch, end

    async def _hand_off(self, replicas: Sequence[str], batch: Batch) -> list[tuple[bytes, bytes]]:
        """Make sure every replica holds each record of ``batch``; returns what was confirmed."""
        ours = [(key, record_digest(versions)) for _h, key, versions in batch]
        by_key = {key: versions for _h, key, versions in batch}
        timeout = max(self.config.request_timeout * 5, 10.0)
        for node in replicas:
            # one check per shard of the replica holding the keys (one for a single process)
            per_address: dict[str, list[tuple[bytes, bytes]]] = {}
            for key, digest in ours:
                address = self.membership.address_for(node, key) or ""
                per_address.setdefault(address, []).append((key, digest))
            for address, mine in per_address.items():
                differing = await self.messaging.request(
                    address, "cleanup_check", {"items": [[k, d] for k, d in mine]}, timeout
                )
                keys = records_to_hand_off(mine, differing)
                if keys:
                    push = [[k, [version_to_wire(v) for v in by_key[k]]] for k in keys]
                    await self.messaging.request(address, "replicate_batch", {"items": push},
                                                 timeout)  # fmt: skip
                    self.report["keys_handed_off"] += len(keys)
        return ours

    def _delete_if_unchanged(
        self, after: int, last: int, confirmed: list[tuple[bytes, bytes]]
    ) -> int | None:
        """Range-delete (after, last] if it holds exactly the ``confirmed`` records; returns
        the bytes deleted, or None when it changed (nothing deleted)."""
        now = [(key, record_digest(vs)) for _h, key, vs in self.storage.scan(after, last)]
        if now != confirmed:
            return None
        size = sum(self.storage.sizes(after, last))
        for lo, hi in range_bounds(after, last):
            self.storage.delete_range(lo, hi)
        return size

    async def _redirect_hints(self, ring: Ring) -> int:
        """Hints for a node that no longer replicates their key go to the key's replicas."""
        moved = 0
        for target in list(self.hints.targets()):
            stale = []
            for hk, key, created, versions in self.hints.for_target(target):
                replicas = preference_list(ring, key_hash(key), self.n)
                if all(x.node != target for x in replicas):
                    stale.append((hk, key, created, versions))
            for count, (hk, key, created, versions) in enumerate(stale, 1):
                self.redirect(key, versions, created)
                self.hints.remove(target, hk)
                moved += 1
                if count % 500 == 0:
                    await asyncio.sleep(0)
        if moved:
            log.info("redirected %d hints to their keys' current replicas", moved)
        return moved

    # -- state ----------------------------------------------------------------------------------

    def _save(
        self,
        ring: str,
        positions: dict[str, int],
        cleaned: str | None = None,
        sync: bool = True,
    ) -> None:
        self._saved = {
            "ring": ring,
            "positions": positions,
            "cleaned_ring": cleaned or self.cleaned_ring,
            "reclaimed_bytes": self.report["reclaimed_bytes"],
        }
        self.storage.put_meta(META_KEY, self._saved, sync=sync)

    def _set(self, state: str, reason: str | None) -> None:
        changed = (self.report["state"], self.report["reason"]) != (state, reason)
        self.report["state"] = state
        self.report["reason"] = reason
        self.report["cleaned_ring"] = self.cleaned_ring
        self._publish(force=changed)

    def _publish(self, force: bool = False) -> None:
        """Put the report in gossip: at most every ``PUBLISH_SECONDS`` while it changes, and
        only every ``REFRESH_SECONDS`` (for ``disk_bytes``) while it does not."""
        now = time.monotonic()
        ring = self.membership.ring.version
        report = {k: v for k, v in self.report.items() if k != "reason" or v}
        report["ring"] = ring
        local = self.membership.gossiper.local.get(g.CLEANUP) or {}
        same = {k: v for k, v in local.items() if k not in ("disk_bytes", "updated_ms")} == report
        wait = REFRESH_SECONDS if same else PUBLISH_SECONDS
        if not force and local.get("ring") == ring and now - self._published_at < wait:
            return
        self._published_at = now
        report["disk_bytes"] = self.storage.disk_bytes()
        report["updated_ms"] = int(time.time() * 1000)
        if self.layout is not None:  # one report per node: shard 0 publishes all shards'
            self.publish_shards(report)
            return
        self.membership.gossiper.set_app(g.CLEANUP, report)

    def publish_shards(self, report: dict[str, Any]) -> None:
        """Set by a node served by several shards (``ringkv.node.shards``)."""
