"""Streaming: membership changes that move only the data that changes owner.

One node drives each change (the joining node, the leaving node, the replacement, or the node
that was asked to remove a dead one), announces it through gossip (status ``joining``,
``leaving``, ``replacing``, or a ``removing`` marker), waits until every live member sees the
announcement -- from then on writes also reach the future replicas -- and then executes the
``ringkv.core.streaming`` plan: for every transfer it pulls batches of records from the source
and pushes them to the target, throttled by ``--stream-rate``, saving its position after every
batch so a restarted driver resumes where it stopped. When every transfer is done it completes
the change (``normal``, ``left``, or a permanent ``removed`` marker).

Only one change runs at a time in the cluster (as far as gossip can tell: a best-effort lock,
not consensus); a second request gets 409, and a running change can be cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ringkv.core import gossip as g
from ringkv.core.allocation import allocate_tokens
from ringkv.core.ring import Ring
from ringkv.core.streaming import Transfer, moved_fraction, plan_rebuild, plan_transfers
from ringkv.core.versions import version_from_wire, version_to_wire
from ringkv.node.messaging import PeerError
from ringkv.node.parts import NodePart, NodeParts
from ringkv.node.throttle import Throttle

log = logging.getLogger(__name__)

BATCH_RECORDS = 500
BATCH_BYTES = 1024 * 1024
VIEW_DEADLINE = 20.0


class ChangeError(Exception):
    """A change request that cannot be carried out; ``status`` is the HTTP answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _tkey(t: Transfer) -> str:
    return f"{t.start}:{t.end}:{t.source}:{t.target}"


class RingChanges(NodePart):
    def __init__(self, parts: NodeParts) -> None:
        super().__init__(parts)
        self.progress: dict[str, Any] | None = None
        self.detail: list[dict[str, Any]] = []  # per-transfer progress of the change we drive
        self._cancel = False
        self._driving = False
        self._throttle = Throttle(lambda: self.config.stream_rate)

    # -- planning -------------------------------------------------------------------------------

    def _state(self, node: str) -> g.EndpointState:
        state = self.membership.gossiper.states.get(node)
        if state is None:
            raise ChangeError(404, "unknown_node", f"no member named {node!r}")
        return state

    def plan(self, op: str, node: str) -> tuple[Ring, Ring, list[Transfer]]:
        """(ring now, ring after, transfers) for a change; raises ChangeError when invalid."""
        m = self.membership
        n = self.config.replication_factor
        ring = m.ring
        alive = {x for x in ring.nodes if m.is_alive(x)} | {self.node_id}
        state = self._state(node)
        if op == "join":
            if node in ring:
                raise ChangeError(409, "conflict", f"{node} is already a ring member")
            zone = str(state.get(g.ZONE))
            tokens = state.get(g.TOKENS) or allocate_tokens(
                ring, node, self.config.vnodes, zone=zone, replicas=n,
                slices=m.shard_count_of(node),
            )  # fmt: skip
            future = ring.with_node(node, zone, tokens)
            return ring, future, plan_transfers(ring, future, n, alive)
        if op == "decommission":
            if node not in ring:
                raise ChangeError(409, "conflict", f"{node} is not a ring member")
            if len(ring) - 1 < n:
                raise ChangeError(
                    409, "conflict",
                    f"decommissioning {node} would leave {len(ring) - 1} nodes for "
                    f"replication factor {n}",
                )  # fmt: skip
            future = ring.without_node(node)
            return ring, future, plan_transfers(ring, future, n, alive, prefer_source=node)
        if op == "remove":
            tokens = state.get(g.TOKENS)
            if not tokens:
                raise ChangeError(409, "conflict", f"{node} holds no tokens")
            before = ring if node in ring else ring.with_node(node, str(state.get(g.ZONE)), tokens)
            future = before.without_node(node)
            return before, future, plan_transfers(before, future, n, alive - {node})
        if op == "replace":
            if node not in ring:
                raise ChangeError(409, "conflict", f"{node} holds no tokens to take over")
            return ring, ring, plan_rebuild(ring, n, node, alive - {node})
        raise ChangeError(400, "bad_request", f"unknown operation {op!r}")

    async def describe(self, op: str, node: str) -> dict[str, Any]:
        """The plan of a change, with key and byte counts from the sources (Riak's plan)."""
        ring, future, transfers = self.plan(op, node)
        rows = []
        for t in transfers:
            keys = size = None
            if t.source is not None:
                with contextlib.suppress(PeerError):
                    keys, size = await self._range_stats(t.source, t.start, t.end)
            rows.append(
                {"start": str(t.start), "end": str(t.end), "source": t.source,
                 "target": t.target, "keys": keys, "bytes": size}
            )  # fmt: skip
        return {
            "op": op,
            "node": node,
            "ring_nodes_before": len(ring),
            "ring_nodes_after": len(future),
            "transfers": rows,
            "unsourced": sum(1 for t in transfers if t.source is None),
            "keys": sum(r["keys"] or 0 for r in rows),
            "bytes": sum(r["bytes"] or 0 for r in rows),
            "moved_fraction_of_one_copy": round(moved_fraction(transfers), 4),
        }

    async def _range_stats(self, node: str, start: int, end: int) -> tuple[int, int]:
        if not self.membership.sharded(node):
            return await self._piece_stats(node, start, end)
        keys = size = 0  # a node served by several shards: the sum over its shards' pieces
        for address, s, e in self.membership.pieces_of(node, start, end):
            if address == self.config.peer_address:
                answer: Any = self.range_stats(s, e)
            else:
                answer = await self.messaging.request(
                    address, "range_stats", {"start": s, "end": e}, 30.0
                )
            keys, size = keys + int(answer[0]), size + int(answer[1])
        return keys, size

    async def _piece_stats(self, node: str, start: int, end: int) -> tuple[int, int]:
        if node == self.node_id:
            return self.range_stats(start, end)
        address = self.membership.address_of(node) or ""
        answer = await self.messaging.request(
            address, "range_stats", {"start": start, "end": end}, 30.0
        )
        return int(answer[0]), int(answer[1])

    def range_stats(self, start: int, end: int) -> tuple[int, int]:
        keys = size = 0
        for _h, key, versions in self.storage.scan(start, end):
            keys += 1
            size += len(key) + sum(v.size() for v in versions)
        return keys, size

    # -- requests (on the node the change is about) -------------------------------------------

    def request(self, action: str, node: str) -> dict[str, Any]:
        m = self.membership
        if action == "cancel":
            return self._request_cancel()
        busy = m.change_in_progress()
        if busy is not None:
            raise ChangeError(409, "change_in_progress", f"a ring change is running: {busy}")
        if action == "remove":
            if node == self.node_id or m.is_alive(node):
                raise ChangeError(
                    409, "conflict", f"{node} is alive: decommission it instead of removing it"
                )
            self.plan("remove", node)  # validates
            state = self._state(node)
            m.set_removing({"node": node, "generation": state.generation})
            return {"accepted": True, "driver": self.node_id}
        if node != self.node_id:
            raise ChangeError(400, "bad_request", f"{action} must be sent to {node} itself")
        status = m.status_of(self.node_id)
        if action == "join":
            if m.tokens:
                raise ChangeError(409, "conflict", f"{node} is already {status}")
            m.claim(g.JOINING if len(m.ring) else g.NORMAL)
        elif action == "decommission":
            if status != g.NORMAL:
                raise ChangeError(409, "conflict", f"{node} is {status}, not normal")
            self.plan("decommission", node)  # validates
            m.set_status(g.LEAVING)
        elif action == "replace":
            try:
                m.replace()
            except ValueError as exc:
                raise ChangeError(409, "conflict", str(exc)) from None
        else:
            raise ChangeError(400, "bad_request", f"unknown action {action!r}")
        return {"accepted": True, "driver": self.node_id}

    def _request_cancel(self) -> dict[str, Any]:
        status = self.membership.status_of(self.node_id)
        removing = self.membership.gossiper.local.get(g.REMOVING)
        if status == g.REPLACING:
            raise ChangeError(
                409, "conflict", "a replacement cannot be cancelled: the node has no data yet"
            )
        if status not in (g.JOINING, g.LEAVING) and not removing:
            raise ChangeError(409, "conflict", "no change driven by this node is running")
        self._cancel = True
        if not self._driving:  # the driver has not picked the change up yet: undo right away
            self._undo()
        return {"cancelled": True, "driver": self.node_id}

    def _undo(self) -> None:
        m = self.membership
        status = m.status_of(self.node_id)
        if status == g.JOINING:
            m.release_tokens()
        elif status == g.LEAVING:
            m.set_status(g.NORMAL)
        if m.gossiper.local.get(g.REMOVING):
            m.set_removing(None)
        self.storage.put_meta("stream_positions", {})
        self._cancel = False
        self._publish("cancelled")

    # -- driving --------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                op = self._my_change()
                if op is not None:
                    await self.drive(op)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ring change failed; retrying")
                self._publish("failed")
                await asyncio.sleep(2.0)
            await asyncio.sleep(0.5)

    def _my_change(self) -> str | None:
        status = self.membership.status_of(self.node_id)
        if status == g.JOINING:
            return "join"
        if status == g.LEAVING:
            return "decommission"
        if status == g.REPLACING:
            return "replace"
        if self.membership.gossiper.local.get(g.REMOVING):
            return "remove"
        return None

    async def drive(self, op: str) -> None:
        self._driving = True
        try:
            await self._drive(op)
        finally:
            self._driving = False

    async def _drive(self, op: str) -> None:
        m = self.membership
        removing = m.gossiper.local.get(g.REMOVING)
        subject = removing["node"] if op == "remove" else self.node_id
        await self._wait_for_views(op, subject)
        if self._cancel:
            self._undo()
            return
        _before, _after, transfers = self.plan(op, subject)
        if op == "join":
            transfers = [t for t in transfers if t.target == self.node_id]
        saved = self.storage.get_meta("stream_positions")
        positions: dict[str, int] = dict(saved) if isinstance(saved, dict) else {}
        self.progress = {
            "op": op,
            "node": subject,
            "driver": self.node_id,
            "state": "running",
            "transfers": len(transfers),
            "transfers_done": 0,
            "unsourced": sum(1 for t in transfers if t.source is None),
            "keys_sent": 0,
            "bytes_sent": 0,
            "keys_total": None,
            "bytes_total": None,
            "started_ms": int(time.time() * 1000),
            "rate_bytes_per_second": 0.0,
            "eta_seconds": None,
        }
        totals = [0, 0]
        self.detail = []
        for t in transfers:
            keys = size = None
            if t.source is not None:
                try:
                    keys, size = await self._range_stats(t.source, t.start, t.end)
                    totals[0] += keys
                    totals[1] += size
                except PeerError:
                    pass
            self.detail.append(
                {"start": str(t.start), "end": str(t.end), "source": t.source,
                 "target": t.target, "state": "pending" if t.source else "unsourced",
                 "keys_sent": 0, "bytes_sent": 0, "keys_total": keys, "bytes_total": size}
            )  # fmt: skip
        self.progress["keys_total"], self.progress["bytes_total"] = totals
        self._publish("running")
        started = time.monotonic()
        for t, row in zip(transfers, self.detail, strict=True):
            if self._cancel:
                break
            if t.source is None:
                log.warning("no live replica holds (%d, %d] for %s", t.start, t.end, t.target)
                self.progress["transfers_done"] += 1
                continue
            row["state"] = "running"
            await self._execute(t, positions, started, row)
            row["state"] = "done" if not self._cancel else "cancelled"
            self.progress["transfers_done"] += 1
            self._publish("running")
        if self._cancel:
            self.progress = None
            self._undo()
            return
        self.storage.put_meta("stream_positions", {})
        self._complete(op, subject)
        self._publish("done")
        self.progress = None

    async def _wait_for_views(self, op: str, subject: str) -> None:
        """Until every live member sees the change (so their writes reach the new replicas)."""
        deadline = time.monotonic() + VIEW_DEADLINE
        expected = {
            "join": g.JOINING, "decommission": g.LEAVING, "replace": g.REPLACING,
        }.get(op)  # fmt: skip
        while time.monotonic() < deadline and not self._cancel:
            peers = [n for n in self.membership.gossiper.states if n != self.node_id
                     and self.membership.is_alive(n)]  # fmt: skip
            views = await asyncio.gather(
                *(self._view_of(peer, subject) for peer in peers), return_exceptions=True
            )
            if op == "remove":
                ok = all(isinstance(v, dict) and v.get("in_ring") is False for v in views)
            else:
                ok = all(isinstance(v, dict) and v.get("status") == expected for v in views)
            if ok:
                return
            await asyncio.sleep(0.2)
        log.warning(
            "not every member confirmed the %s of %s in time; streaming anyway", op, subject
        )

    async def _view_of(self, peer: str, subject: str) -> dict[str, Any]:
        address = self.membership.address_of(peer) or ""
        answer: dict[str, Any] = await self.messaging.request(
            address, "member_view", {"node": subject}, 2.0
        )
        return answer

    def member_view(self, node: str) -> dict[str, Any]:
        return {"status": self.membership.status_of(node), "in_ring": node in self.membership.ring}

    def _complete(self, op: str, subject: str) -> None:
        m = self.membership
        if op in ("join", "replace"):
            m.set_status(g.NORMAL)
        elif op == "decommission":
            m.set_status(g.LEFT)
        elif op == "remove":
            state = m.gossiper.states.get(subject)
            removed = dict(m.gossiper.local.get(g.REMOVED) or {})
            removed[subject] = state.generation if state is not None else 0
            m.storage.put_meta("removed", removed)
            m.gossiper.set_app(g.REMOVED, removed)
            m.set_removing(None)
        log.info("%s of %s complete", op, subject)

    async def _execute(
        self, t: Transfer, positions: dict[str, int], started: float, row: dict[str, Any]
    ) -> None:
        assert self.progress is not None and t.source is not None
        key = _tkey(t)
        after = positions.get(key, t.start)
        while after != t.end and not self._cancel:
            records, last = await self._fetch(t.source, after, t.end)
            if records:
                await self._push(t.target, records)
                size = sum(len(k) + sum(len(v[4] or b"") for v in w) for k, w in records)
                self.progress["keys_sent"] += len(records)
                self.progress["bytes_sent"] += size
                row["keys_sent"] += len(records)
                row["bytes_sent"] += size
                self.metrics.stream_keys.inc(len(records))
                self.metrics.stream_bytes.inc(size)
                elapsed = max(time.monotonic() - started, 1e-6)
                rate = self.progress["bytes_sent"] / elapsed
                self.progress["rate_bytes_per_second"] = round(rate, 1)
                remaining = max(
                    0, (self.progress["bytes_total"] or 0) - self.progress["bytes_sent"]
                )
                self.progress["eta_seconds"] = round(remaining / rate, 1) if rate > 0 else None
                await self._throttle(size)
            after = last
            positions[key] = after
            self.storage.put_meta("stream_positions", positions)
            self._publish("running")

    async def _fetch(self, source: str, after: int, end: int) -> tuple[list[Any], int]:
        """A batch of ``source``'s records after ``after``. From a node served by several
        shards, from the shard holding the first piece of ``(after, end]``: the position
        then moves to that piece's end, and the next batch comes from the next shard."""
        if self.membership.sharded(source):
            address, piece_start, piece_end = self.membership.pieces_of(source, after, end)[0]
            if address == self.config.peer_address:
                return self.stream_batch(piece_start, piece_end)
            answer = await self.messaging.request(
                address, "stream_batch", {"after": piece_start, "end": piece_end}, 30.0
            )
            return answer[0], int(answer[1])
        if source == self.node_id:
            return self.stream_batch(after, end)
        address = self.membership.address_of(source) or ""
        answer = await self.messaging.request(
            address, "stream_batch", {"after": after, "end": end}, 30.0
        )
        return answer[0], int(answer[1])

    def stream_batch(self, after: int, end: int) -> tuple[list[Any], int]:
        """Up to one batch of records in (after, end]; returns (records, last position read)."""
        records: list[Any] = []
        size = 0
        last = end
        for h, key, versions in self.storage.scan(after, end):
            records.append([key, [version_to_wire(v) for v in versions]])
            size += len(key) + sum(v.size() for v in versions)
            if len(records) >= BATCH_RECORDS or size >= BATCH_BYTES:
                last = h
                break
        return records, last

    async def _push(self, target: str, records: list[Any]) -> None:
        if self.membership.sharded(target):
            # each record to the shard of the target that holds it (this one, or a sibling)
            per_address: dict[str, list[Any]] = {}
            for record in records:
                address = self.membership.address_for(target, bytes(record[0])) or ""
                per_address.setdefault(address, []).append(record)
            for address, items in per_address.items():
                if address == self.config.peer_address:
                    self._merge_here(items)
                else:
                    await self.messaging.request(address, "replicate_batch", {"items": items},
                                                 30.0)  # fmt: skip
            return
        if target == self.node_id:
            for key, wire in records:
                versions = [version_from_wire(v) for v in wire]
                if self.clock_guard.admits(versions):  # (to a peer: its replicate_batch checks)
                    self.storage.merge(bytes(key), versions, self.mode)
            return
        address = self.membership.address_of(target) or ""
        await self.messaging.request(address, "replicate_batch", {"items": records}, 30.0)

    def _merge_here(self, records: list[Any]) -> None:
        for key, wire in records:
            versions = [version_from_wire(v) for v in wire]
            if self.clock_guard.admits(versions):
                self.storage.merge(bytes(key), versions, self.mode)

    def _publish(self, state: str) -> None:
        progress = dict(self.progress or {})
        progress["state"] = state
        progress["updated_ms"] = int(time.time() * 1000)
        if state != "running":
            progress["finished_ms"] = progress["updated_ms"]
        self.membership.gossiper.set_app(g.CHANGE, progress)

    def remaining(self) -> tuple[int, int]:
        """(keys, bytes) the change this node drives has still to stream (for metrics)."""
        p = self.progress
        if not p or p.get("keys_total") is None:
            return 0, 0
        return (
            max(0, p["keys_total"] - p["keys_sent"]),
            max(0, p["bytes_total"] - p["bytes_sent"]),
        )

    def cluster_progress(self) -> list[dict[str, Any]]:
        """The change reports every member publishes (running first, newest first)."""
        reports = []
        for node, state in self.membership.gossiper.states.items():
            change = state.get(g.CHANGE)
            if change:
                reports.append({"reported_by": node, **change})
        reports.sort(key=lambda r: (r.get("state") != "running", -int(r.get("updated_ms", 0))))
        return reports
