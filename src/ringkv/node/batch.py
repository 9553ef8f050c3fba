"""Batches: many keys per request, each with its own quorum, one message per peer.

``Batches.get_many`` reads every key at its quorum in rounds (``ringkv.core.batching``): each
round sends every node one ``read_batch`` message with all the keys it is asked for; a failed
replica, or the speculative read delay passing, starts the next round for the keys still short.
``Batches.put_many`` first runs one grouped read for the items that need one (conditions, and
deletes without a context), then groups the items by coordinator -- this node for the keys it
replicates, else each key's first live replica, sent one ``coordinate_batch`` message -- and
each coordinator creates its versions and sends every other replica one ``replicate_many``
message with all of that replica's records. Every key still gets its own outcome: a value,
an error as the single-key API would answer, never one failure for the whole batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ringkv.core.batching import coordinators, group_by_node, next_read_round
from ringkv.core.conditions import Condition, judge
from ringkv.core.errors import QuorumTimeout, RequestFailure, Unavailable, from_peer, to_peer
from ringkv.core.placement import Replica
from ringkv.core.quorum import Quorum
from ringkv.core.round import WriteRound, read_required
from ringkv.core.versions import (
    VClock,
    Version,
    context_of,
    decode_record,
    encode_record,
    merge_siblings,
    version_from_wire,
)
from ringkv.node.conditional import PreconditionFailed
from ringkv.node.coordinator import SLOW_REPLICA_SECONDS, Coordinator
from ringkv.node.messaging import QUORUM_FEATURE, PeerError, PeerNotReached

Outcome = Any  # a result, or the exception the single-key API would have raised
#: One record a coordinator sends one replica: (item index, key, replica, record, versions).
Outgoing = tuple[int, bytes, Replica, bytes, tuple[Version, ...]]


@dataclass(frozen=True)
class WriteItem:
    """One write of a batch: ``value`` None deletes; ``condition`` replaces ``context``."""

    key: bytes
    value: bytes | None
    context: VClock = field(default_factory=VClock.empty)
    condition: Condition | None = None
    ttl: int = 0


def _decode_answer(raw: Any) -> tuple[Version, ...]:
    """A replica's ``read`` answer: the stored record as it is, or versions in wire form."""
    if isinstance(raw, bytes):
        return decode_record(raw) if raw else ()
    return tuple(version_from_wire(v) for v in raw)


class Batches:
    def __init__(self, coordinator: Coordinator) -> None:
        self.c = coordinator

    # -- reads ----------------------------------------------------------------------------------

    async def get_many(self, keys: Sequence[bytes], quorum: Quorum) -> list[Outcome]:
        """Each key read at ``quorum``: its reconciled versions, or the exception."""
        c = self.c
        c.check_quorum(quorum)
        me = c.node_id
        results: list[Outcome] = [None] * len(keys)
        candidates: list[list[str]] = []
        need: list[int] = []
        replicas: list[dict[str, Replica]] = []
        connected = c.messaging.is_connected
        address_of = c.membership.address_of
        now = time.monotonic()
        for i, key in enumerate(keys):
            primaries, live, _ = c.targets(key, quorum.strict, reading=True)
            try:
                required = read_required(quorum, primaries, live)
            except Unavailable as exc:
                results[i] = exc
                live = []
            # our own copy first, then connected replicas that were not slow lately
            live.sort(key=lambda r: (
                r.node != me,
                c._slow.get(r.node, 0.0) > now,
                r.node != me and not connected(address_of(r.node) or ""),
            ))  # fmt: skip
            candidates.append([r.node for r in live])
            need.append(required if live else 0)
            replicas.append({r.node: r for r in live})
        answers: list[dict[str, tuple[Version, ...]]] = [{} for _ in keys]
        asked: list[set[str]] = [set() for _ in keys]
        replied = [0] * len(keys)
        in_flight = [0] * len(keys)
        pending: dict[asyncio.Future[Any], tuple[str, list[int]]] = {}

        def launch(counted: Sequence[int]) -> None:
            """The next round for the keys short of R when ``counted`` replies are counted."""
            for node, indexes in next_read_round(candidates, need, counted, asked).items():
                if node == me:
                    for i in indexes:
                        answers[i][me] = c._local_read(keys[i], replicas[i][me].hint_for)
                        replied[i] += 1
                    continue
                items = [[keys[i], replicas[i][node].hint_for] for i in indexes]
                c.metrics.replica_request("read", True).inc(len(items))
                call = c.messaging.call(address_of(node) or "", "read_batch", {"items": items},
                                        c.timeout)  # fmt: skip
                pending[call] = (node, indexes)
                for i in indexes:
                    in_flight[i] += 1

        def expected() -> list[int]:
            return [r + f for r, f in zip(replied, in_flight, strict=True)]

        launch(replied)
        loop_now = time.monotonic()
        deadline = loop_now + c.timeout
        speculate_at = loop_now + c.speculative_read_delay
        while pending and any(replied[i] < need[i] for i in range(len(keys))):
            wait = (speculate_at if speculate_at else deadline) - time.monotonic()
            done, _ = await asyncio.wait(
                list(pending), timeout=max(0.0, wait), return_when=asyncio.FIRST_COMPLETED
            )
            failed = False
            for call in done:
                node, indexes = pending.pop(call)
                for i in indexes:
                    in_flight[i] -= 1
                try:
                    decoded = [_decode_answer(raw) for raw in call.result()]
                    for versions in decoded:  # a peer's clocks are bounded like our own
                        c.clock_guard.check_versions(versions)
                except Exception:
                    c.metrics.replica_error("read").inc()
                    c._slow[node] = time.monotonic() + SLOW_REPLICA_SECONDS
                    failed = True
                    continue
                for i, versions in zip(indexes, decoded, strict=True):
                    answers[i][node] = versions
                    replied[i] += 1
            if failed:
                launch(expected())  # replace the failed replica(s) with the next ones
            now_ = time.monotonic()
            if speculate_at and now_ >= speculate_at:
                # Replicas that have not answered within --speculative-read-delay: also ask the
                # keys' other replicas, as a single-key read does.
                speculate_at = 0.0
                for node, _ in pending.values():
                    c._slow[node] = now_ + SLOW_REPLICA_SECONDS
                launch(replied)
            if now_ >= deadline:
                break
        for call in pending:
            c._track(call)
        stale: list[tuple[int, str, tuple[Version, ...]]] = []
        for i in range(len(keys)):
            if results[i] is not None:
                continue
            if replied[i] < need[i]:
                results[i] = QuorumTimeout(need[i], replied[i])
                continue
            merged = merge_siblings((), [v for vs in answers[i].values() for v in vs], c.mode)
            results[i] = merged
            dots = {v.dot for v in merged}
            for node, versions in answers[i].items():
                if replicas[i][node].primary and {v.dot for v in versions} != dots:
                    stale.append((i, node, merged))
        if stale:
            c._spawn(self._repair(keys, stale))
        return results

    async def _repair(
        self, keys: Sequence[bytes], stale: Sequence[tuple[int, str, tuple[Version, ...]]]
    ) -> None:
        """Read repair for a batch: each stale replica gets one message with its records."""
        c = self.c
        by_node = group_by_node((n, [node]) for n, (_, node, _) in enumerate(stale))
        for node, positions in by_node.items():
            c.metrics.read_repairs.inc(len(positions))
            if node == c.node_id:
                for p in positions:
                    i, _, merged = stale[p]
                    c.storage.merge(keys[i], merged, c.mode)
                continue
            items = [[keys[stale[p][0]], encode_record(stale[p][2]), None] for p in positions]
            with contextlib.suppress(PeerError):
                await c.messaging.request(c.membership.address_of(node) or "", "replicate_many",
                                          {"items": items}, c.timeout)  # fmt: skip

    # -- writes ---------------------------------------------------------------------------------

    async def put_many(self, items: Sequence[WriteItem], quorum: Quorum) -> list[Outcome]:
        """Each item written at ``quorum``: the new version's context, or the exception."""
        c = self.c
        c.check_quorum(quorum)
        results: list[Outcome] = [None] * len(items)
        work = list(items)
        reads = [
            i for i, item in enumerate(items)
            if item.condition is not None or (item.value is None and not item.context)
        ]  # fmt: skip
        if reads:
            read_quorum = Quorum(quorum.n, quorum.required, quorum.strict)
            seen = await self.get_many([items[i].key for i in reads], read_quorum)
            now_ms = int(time.time() * 1000)
            for i, versions in zip(reads, seen, strict=True):
                item = items[i]
                if isinstance(versions, Exception):
                    results[i] = versions
                    continue
                condition = item.condition or Condition("replace")
                context = judge(condition, versions, now_ms)
                if context is None:
                    results[i] = PreconditionFailed(condition, context_of(versions))
                else:
                    work[i] = WriteItem(item.key, item.value, context, None, item.ttl)
        todo = [i for i in range(len(items)) if results[i] is None]
        live = []
        for i in todo:
            _, replicas, _ = c.targets(work[i].key, quorum.strict)
            live.append([r.node for r in replicas])
            if not replicas:
                results[i] = Unavailable(quorum.required, 0)
        groups = coordinators(live, c.node_id)
        jobs = []
        for node, positions in groups.items():
            indexes = [todo[p] for p in positions]
            chosen = [work[i] for i in indexes]
            if node == c.node_id:
                jobs.append(self.coordinate_local(chosen, quorum))
            else:
                jobs.append(self._forward(node, chosen, quorum))
        for positions, outcomes in zip(groups.values(), await asyncio.gather(*jobs), strict=True):
            for p, outcome in zip(positions, outcomes, strict=True):
                results[todo[p]] = outcome
        return results

    async def _forward(
        self, node: str, items: Sequence[WriteItem], quorum: Quorum
    ) -> list[Outcome]:
        """One ``coordinate_batch`` message to the node that coordinates these keys."""
        c = self.c
        c.metrics.forwarded.inc(len(items))
        address = c.membership.address_of(node) or ""
        body: dict[str, Any] = {
            "items": [[it.key, it.value, it.context.to_wire(), it.ttl] for it in items]
        }
        if c.messaging.supports(address, QUORUM_FEATURE):
            body["quorum"] = quorum.to_wire()
        else:  # a peer of an older version rebuilds it with its own N
            body["required"], body["strict"] = quorum.required, quorum.strict
        try:
            answers = await c.messaging.request(address, "coordinate_batch", body, c.timeout + 1.0)
        except PeerNotReached:
            # Not sent, so not applied: place each write again without that node.
            return list(await asyncio.gather(*(self._single(it, quorum, node) for it in items)))
        except PeerError:
            return [QuorumTimeout(quorum.required, 0) for _ in items]
        return [VClock.from_wire(a["context"]) if "context" in a else from_peer(a) for a in answers]

    async def _single(self, item: WriteItem, quorum: Quorum, down: str) -> Outcome:
        try:
            return await self.c.put(item.key, item.value, item.context, quorum,
                                    frozenset({down}), item.ttl)  # fmt: skip
        except RequestFailure as exc:
            return exc

    async def coordinate_local(self, items: Sequence[WriteItem], quorum: Quorum) -> list[Outcome]:
        """Coordinate writes of keys this node replicates: create and store every version,
        then send each other replica one ``replicate_many`` message with all its records, and
        wait until every key has its W acknowledgements (or cannot get them)."""
        c = self.c
        try:
            c.check_quorum(quorum)
        except RequestFailure as exc:
            return [exc for _ in items]
        results: list[Outcome] = [None] * len(items)
        versions: dict[int, Version] = {}
        rounds: dict[int, WriteRound] = {}
        outgoing: dict[str, list[Outgoing]] = {}
        synced: list[asyncio.Future[None]] = []
        singles: list[tuple[int, Any]] = []
        now = time.monotonic()
        for i, item in enumerate(items):
            t = c.targets(item.key, quorum.strict)
            me = next((r for r in t.live if r.node == c.node_id), None)
            if me is None:  # the ring moved since the batch was grouped: the usual path
                singles.append((i, self._single(item, quorum, "")))
                continue
            try:
                round_ = WriteRound(quorum, me, t, c.membership.is_alive)
                version, merged, record, sync = c.write_locally(
                    item.key, item.value, item.context, item.ttl, me, round_
                )
            except RequestFailure as exc:
                results[i] = exc
                continue
            if sync is not None:
                synced.append(sync)
            versions[i], rounds[i] = version, round_
            for replica in round_.start(now, c.timeout):
                entry = (i, item.key, replica, record, merged)
                outgoing.setdefault(replica.node, []).append(entry)
        calls = {
            c.messaging.call(
                c.membership.address_of(node) or "", "replicate_many",
                {"items": [[key, record, replica.hint_for]
                           for _, key, replica, record, _ in entries]},
                c.timeout,
            ): entries
            for node, entries in outgoing.items()
        }  # fmt: skip
        for entries in outgoing.values():
            c.metrics.replica_request("write", True).inc(len(entries))

        def settled() -> bool:
            return all(r.done for r in rounds.values())

        waiting = set(calls)
        deadline = now + c.timeout
        while waiting and not settled():
            done, waiting = await asyncio.wait(
                waiting, timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
            if not done:
                break
            for call in done:
                ok = self._hint_failed(call, calls[call])
                for entry in calls[call]:
                    if ok:
                        rounds[entry[0]].ack()
                    else:
                        rounds[entry[0]].fail()
        for call in waiting:  # still running after the answer: hint its records if it fails
            c._track(call)
            call.add_done_callback(partial(self._hint_failed, entries=calls[call]))
        if synced:
            await asyncio.gather(*synced)
        for i, version in versions.items():
            try:
                rounds[i].outcome()
                results[i] = version.clock()
            except QuorumTimeout as exc:
                results[i] = exc
        for i, job in singles:
            results[i] = await job
        return results

    def _hint_failed(self, call: asyncio.Future[Any], entries: Sequence[Outgoing]) -> bool:
        """Keep hints for a replica message that failed (as a single write does); True when
        it succeeded."""
        if not call.cancelled() and call.exception() is None:
            return True
        self.c.metrics.replica_error("replicate").inc()
        for _, key, replica, _, merged in entries:
            self.c._store_hint(replica.hint_for or replica.node, key, merged)
        return False

    # -- peer verbs -----------------------------------------------------------------------------

    def handle_read_batch(self, body: dict[str, Any]) -> list[Any]:
        return [
            self.c.handle_read({"key": key, "raw": True, "hint_for": hint_for})
            for key, hint_for in body["items"]
        ]

    def handle_replicate_many(self, body: dict[str, Any], deferred_sync: bool = False) -> int:
        # A record for a range this node gave away refuses the whole message before any is
        # applied (the coordinator keeps hints for all of it, as for a failed single write).
        self.c.refuse_foreign(key for key, _record, hint_for in body["items"] if not hint_for)
        for key, record, hint_for in body["items"]:
            self.c.handle_replicate(
                {"key": key, "record": record, "hint_for": hint_for}, deferred_sync
            )
        return len(body["items"])

    async def handle_coordinate_batch(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        raw = body.get("quorum")
        if raw is not None:  # the sender's resolved quorum, used as it is
            quorum = Quorum.from_wire(raw)
        else:  # from a peer of an older version
            quorum = Quorum(self.c.n, int(body["required"]), bool(body.get("strict")))
        items = [
            WriteItem(bytes(key), value, VClock.from_wire(context), None, int(ttl))
            for key, value, context, ttl in body["items"]
        ]
        for item in items:  # the contexts came from clients through a peer
            self.c.clock_guard.check_context(item.context, "peer")
        outcomes = await self.coordinate_local(items, quorum)
        return [
            to_peer(o) if isinstance(o, Exception) else {"context": o.to_wire()} for o in outcomes
        ]
