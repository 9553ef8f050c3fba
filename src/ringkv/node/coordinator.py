"""Coordinator: runs one client request across the key's replicas.

Writes are coordinated by a replica of the key (a node that holds none forwards the request to
one that does, over the peer connection): it creates the new version over the client's context,
stores it, sends it to the other replicas, and answers once W replicas (itself included) have
acknowledged. Reads can be coordinated by any node: ask R live replicas (the coordinator's own
copy first when it holds one), and the others only when one of those fails or has not answered
within ``--speculative-read-delay``; answer once R have replied, reconcile to a value or
siblings, and afterwards update any replica found stale (read repair). A fraction
``--read-repair-chance`` of reads asks every live replica, so that replicas a read does not need
are still compared and repaired in the background (as Cassandra's ``read_repair_chance``).

Every decision -- which replicas, how many must answer, whom to ask next, when it is over and
with which error, which replicas read repair updates -- is the request's round
(``ringkv.core.round``, pure); this module is its I/O shell: it sends what the round asks,
feeds it replies, failures and the loop's time, and stores, hints and repairs. Replica calls are
futures from ``MessagingService.call`` with done-callbacks (no task per replica): the
coordinator waits on one future per request that the callbacks resolve once the round is done.

Before anything is sent, a request that cannot reach its quorum among live replicas is refused
(``Unavailable``: nothing written). A quorum not reached in time is a ``QuorumTimeout``: the write
may be partly applied, as in Cassandra.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

from ringkv.core.errors import (
    QuorumTimeout,
    ReplicationMismatch,
    RequestFailure,
    TooManySiblings,
    from_peer,
    to_peer,
)
from ringkv.core.errors import Unavailable as Unavailable  # importers of this module
from ringkv.core.expiry import covering_expired, expires_at
from ringkv.core.placement import Replica
from ringkv.core.quorum import Quorum
from ringkv.core.ring import key_hash
from ringkv.core.round import (
    ReadRound,
    Step,
    Targets,
    WriteRound,
    agreed_digest,
    differs,
    forward_target,
    reconcile,
    stale_replicas,
    targets,
)
from ringkv.core.validators import digest_of_record, etag_of, has_value
from ringkv.core.versions import (
    HLC_LOGICAL_BITS,
    VClock,
    Version,
    context_of,
    decode_record,
    encode_record,
    hlc_now,
    hlc_observe,
    hlc_wall_ms,
    merge_siblings,
    new_version,
    version_from_wire,
    version_to_wire,
)
from ringkv.node.cleanup import Cleanup
from ringkv.node.disk_guard import DiskGuard
from ringkv.node.hints import HintStore
from ringkv.node.messaging import (
    QUORUM_FEATURE,
    READ_DIGEST_FEATURE,
    PeerError,
    PeerNotReached,
)
from ringkv.node.parts import NodePart, NodeParts

log = logging.getLogger(__name__)
T = TypeVar("T")
SIBLINGS_WARNING = 25  # as Riak's warn_siblings
#: A replica that failed a read or missed the speculative read delay is asked last for this long
#: (as Cassandra's dynamic snitch): one slow or unreachable replica -- a peer still dialled
#: at an address it left -- must not add the delay to every read.
SLOW_REPLICA_SECONDS = 5.0


def _decode_digest(raw: Any) -> tuple[str, bool]:
    etag, found = raw
    if type(etag) is not str or type(found) is not bool:
        raise ValueError("a digest is [etag, found]")
    return etag, found


_DIGEST_READ = ("read_digest", _decode_digest)


def _same(versions: tuple[Version, ...]) -> tuple[Version, ...]:
    return versions


def _decoded(record: bytes) -> tuple[Version, ...]:
    return decode_record(record) if record else ()


class NotReplica(Exception):
    """A replica write for a key this node does not replicate (its ring has moved on)."""


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Coordinator(NodePart):
    def __init__(self, parts: NodeParts, actor: str, hints: HintStore) -> None:
        super().__init__(parts)
        config = parts.config
        self.hints = hints
        self._slow: dict[str, float] = {}  # node -> monotonic time until it is asked last
        self.actor = actor
        self.n = config.replication_factor
        self.timeout = config.request_timeout
        self.read_repair_chance = config.read_repair_chance
        self.speculative_read_delay = config.speculative_read_delay
        self._hlc = 0
        self.cleanup: Cleanup | None = None  # set by the node: which keys this node replicates
        self.disk_guard: DiskGuard | None = None  # set by the node: peers whose disk is full
        self._background: set[asyncio.Future[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, looked up once (on Python 3.11 each lookup is a getpid() call)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    # -- placement ------------------------------------------------------------------------------

    def targets(
        self, key: bytes, strict: bool, reading: bool = False, down: frozenset[str] = frozenset()
    ) -> Targets:
        """(primaries, the live replicas to use, the pending replicas): see ``core.round``."""
        return self._targets(key_hash(key), strict, reading, down)

    def _targets(self, h: int, strict: bool, reading: bool, down: frozenset[str]) -> Targets:
        membership = self.membership
        up = membership.up_nodes()
        if down:
            up = up - down
        if reading and membership.unreadable:
            up = up - membership.unreadable  # nodes still being filled
        elif not reading and self.disk_guard is not None:
            up = self.disk_guard.writable(up)  # full disks: a fallback takes a hint instead
        return targets(membership.ring, membership.future_ring, h, self.n, up, strict, reading)

    def check_quorum(self, quorum: Quorum) -> None:
        """A round places the key with ``quorum.n``: it must be this node's N (a forwarded
        quorum from a peer configured otherwise is refused, not placed with two N)."""
        if quorum.n != self.n:
            raise ReplicationMismatch(self.n, quorum.n)

    def _tick(self) -> int:
        self._hlc = hlc_now(self._hlc, int(time.time() * 1000))
        return self._hlc

    # -- writes ---------------------------------------------------------------------------------

    async def put(
        self,
        key: bytes,
        value: bytes | None,
        context: VClock,
        quorum: Quorum,
        down: frozenset[str] = frozenset(),
        ttl: int = 0,
    ) -> VClock:
        """Write ``value`` (``None`` deletes) and return the context of the new version.

        ``down``: nodes to treat as down although the failure detector has not convicted them
        yet (a forward to them could not be sent). ``ttl``: seconds until the value expires
        (0: never), counted from this coordinator's clock."""
        if quorum.n != self.n:
            self.check_quorum(quorum)
        t = self._targets(key_hash(key), quorum.strict, False, down)
        me = next((r for r in t.live if r.node == self.node_id), None)
        if me is None:
            return await self._forward_put(key, value, context, quorum, t.live, down, ttl)
        round_ = WriteRound(quorum, me, t, self.membership.is_alive)
        if value is None and not context:
            # A delete without a context deletes what the replicas hold (as riak_client:delete
            # does): read at the write's quorum and delete over everything seen.
            context = context_of(await self.get(key, quorum))
        version, merged, record, synced = self.write_locally(key, value, context, ttl, me, round_)
        loop = self._event_loop()
        try:
            await self._write_round(round_, [
                self._replicate_call(r, key, record, merged)
                for r in round_.start(loop.time(), self.timeout)
            ])  # fmt: skip
        finally:
            if synced is not None:  # group commit (--fsync): our own copy must be on disk
                await synced
        round_.outcome()
        # What this client has seen: what it read (its context) plus its own write -- not the
        # siblings the coordinator holds, or a write with this context would erase them unseen.
        return version.clock()

    def write_locally(
        self,
        key: bytes,
        value: bytes | None,
        context: VClock,
        ttl: int,
        me: Replica,
        round_: WriteRound,
    ) -> tuple[Version, tuple[Version, ...], bytes, asyncio.Future[None] | None]:
        """The coordinator's half of a write: create the version over ``context``, store it
        (or, as a fallback, hint it) and keep hints for the replicas the round names
        (``hinted``). Returns (version, merged record, its encoding for the replicas, the
        group-commit future or None)."""
        # Observe the timestamps the new version will supersede, so that (with lww) a write
        # never loses to what it overwrites because this node's clock runs behind.
        seen = max((ts for _, ts in context.entries.values()), default=0) << HLC_LOGICAL_BITS
        self._hlc = max(self._hlc, seen)
        now = self._tick()
        expires = expires_at(hlc_wall_ms(now), ttl) if value is not None else 0
        if me.primary:
            current = self.storage.get(key)
            now = max(now, max((v.timestamp + 1 for v in current), default=0))
            self._hlc = now
            context = covering_expired(context, current, hlc_wall_ms(now), self.skew_ms)
            version = new_version(current, context, self.actor, value, now, expires=expires)
            merged = merge_siblings(current, [version], self.mode)
            self._check_siblings(key, merged)
            record = encode_record(merged)  # encoded once: stored here and sent to replicas
            self.storage.merge(
                key, merged, self.mode, current=current, deferred_sync=True, raw=record
            )
            synced = self.storage.durable() if self.storage.fsync else None
        else:
            synced = None
            target = me.hint_for or ""
            current = self.hints.get(target, key)
            context = covering_expired(context, current, hlc_wall_ms(now), self.skew_ms)
            version = new_version(current, context, self.actor, value, now, expires=expires)
            merged = merge_siblings(current, [version], self.mode)
            self._store_hint(target, key, merged)
            record = encode_record(merged)
        # Replicas get the whole record (see new_version), encoded once for all of them.
        for node in round_.hinted:
            self._store_hint(node, key, merged)
        return version, merged, record, synced

    def _check_siblings(self, key: bytes, merged: Sequence[Version]) -> None:
        limit = self.config.max_siblings
        if len(merged) > limit:
            raise TooManySiblings(len(merged), limit)
        if len(merged) >= SIBLINGS_WARNING:
            self.metrics.sibling_warnings.inc()
            log.warning("key %r has %d siblings; clients should resolve them", key[:64],
                        len(merged))  # fmt: skip

    async def _forward_put(
        self,
        key: bytes,
        value: bytes | None,
        context: VClock,
        quorum: Quorum,
        live: Sequence[Replica],
        down: frozenset[str],
        ttl: int = 0,
    ) -> VClock:
        target = forward_target(quorum, live, key_hash(key))
        address = self.membership.address_for(target, key) or ""
        self.metrics.forwarded.inc()
        body: dict[str, Any] = {"key": key, "value": value, "context": context.to_wire()}
        if self.messaging.supports(address, QUORUM_FEATURE):
            body["quorum"] = quorum.to_wire()
        else:  # a peer of an older version rebuilds it with its own N
            body["required"] = quorum.required
            body["strict"] = quorum.strict
        if ttl:
            body["ttl"] = ttl
        try:
            answer = await self.messaging.request(
                address, "coordinate_put", body, self.timeout + 1.0
            )
        except PeerNotReached as exc:
            # Not sent, so not applied: the node just died and the detector has not caught
            # up. Place the write again without it (a fallback takes it, with a hint).
            log.debug("cannot forward to %s (%s); placing the write without it", target, exc)
            return await self.put(key, value, context, quorum, down | {target}, ttl)
        except PeerError as exc:
            log.debug("forwarding to %s failed: %s", target, exc)
            raise QuorumTimeout(quorum.required, 0) from None
        if "error" in answer:
            raise from_peer(answer)
        return VClock.from_wire(answer["context"])

    def _store_hint(self, target: str, key: bytes, versions: Sequence[Version]) -> None:
        if self.hints.add(target, key, versions, int(time.time() * 1000)):
            self.metrics.hints_stored.inc()

    async def _replicate(
        self, replica: Replica, key: bytes, record: bytes, merged: Sequence[Version]
    ) -> bool:
        await self._replicate_call(replica, key, record, merged)
        return True

    def _replicate_call(
        self, replica: Replica, key: bytes, record: bytes, merged: Sequence[Version]
    ) -> asyncio.Future[Any]:
        """Send the record (``merged``, encoded as ``record``) to one replica; on failure keep
        a hint for it (as Cassandra does for replicas that time out), so the write still
        reaches it later. A peer of an older version gets the versions in wire form."""
        address = self.membership.address_for(replica.node, key) or ""
        body: dict[str, Any] = {"key": key}
        if self.messaging.supports(address, "record"):
            body["record"] = record
        else:
            body["versions"] = [version_to_wire(v) for v in merged]
        if replica.hint_for:
            body["hint_for"] = replica.hint_for
            self.metrics.fallback_writes.inc()
        self.metrics.replica_request("write", replica.primary).inc()
        started = time.perf_counter()
        future = self.messaging.call(address, "replicate", body, self.timeout)

        def done(f: asyncio.Future[Any]) -> None:
            if f.cancelled() or f.exception() is not None:
                self.metrics.replica_error("replicate").inc()
                self._store_hint(replica.hint_for or replica.node, key, merged)
            else:
                self.metrics.replica_latency_of("replicate").observe(time.perf_counter() - started)

        future.add_done_callback(done)
        return future

    async def send_records(
        self, node: str, items: Sequence[tuple[bytes, Sequence[Version]]]
    ) -> None:
        """Deliver whole records to a node (hint delivery, anti-entropy); raises on failure."""
        if self.membership.address_of(node) is None:
            raise PeerError(f"no address for {node}")
        # one message per shard of the node (one message for a node served by one process)
        per_address: dict[str, list[Any]] = {}
        for key, vs in items:
            address = self.membership.address_for(node, key) or ""
            per_address.setdefault(address, []).append([key, [version_to_wire(v) for v in vs]])
        for address, wire in per_address.items():
            body = {"items": wire}
            await self.messaging.request(address, "replicate_batch", body, self.timeout * 2)

    # -- reads ----------------------------------------------------------------------------------

    async def get(self, key: bytes, quorum: Quorum) -> tuple[Version, ...]:
        """Read at ``quorum``: the reconciled sibling set (possibly empty or all tombstones)."""
        if quorum.n != self.n:
            self.check_quorum(quorum)
        h = key_hash(key)
        round_ = self._read_round(h, quorum)
        local = round_.local
        if local is not None:
            round_.reply(self.node_id, self._local_read(key, local.hint_for))
        self._order(round_, h)
        # A share of reads asks every replica, to compare and repair them in the background.
        ask_all = round_.need < len(round_.remote) and random.random() < self.read_repair_chance
        calls = await self._run_read(key, round_, round_.start(ask_all))
        round_.outcome()
        answers = round_.answers
        result = reconcile(answers, self.mode)
        outstanding = [c for c in calls if not c.done()]
        if outstanding or differs(answers, result):
            self._spawn(self._read_repair(key, outstanding, round_))
        return result

    def _read_round(self, h: int, quorum: Quorum) -> ReadRound:
        return ReadRound(quorum, self.node_id, self._targets(h, quorum.strict, True, frozenset()),
                         self._event_loop().time(), self.timeout,
                         self.speculative_read_delay)  # fmt: skip

    def _order(self, round_: ReadRound, h: int) -> None:
        if round_.need < len(round_.remote):
            round_.order(h, time.monotonic(), self._slow, self._connected)

    def _connected(self, node: str) -> bool:
        return self.messaging.is_connected(self.membership.address_of(node) or "")

    async def get_digest(
        self, key: bytes, quorum: Quorum, now_ms: int
    ) -> tuple[str, bool, Callable[[], tuple[Version, ...]] | None]:
        """A revalidation read (``If-None-Match``): (entity tag, has a value, a function
        returning the versions, or None).

        R replicas are asked for the digest of their copy (``read_digest``: its entity tag)
        instead of the copy itself, as Cassandra's digest reads, so a value that has not changed
        crosses no link. When the R answers agree, that is the read's answer -- merging equal
        sets gives the same set -- and the versions can be had when the coordinator's own copy
        was one of them (decoded only when asked: a 304 never needs them). When they differ
        (or a replica does not know the verb) this is a full read, with its read repair.
        Expiry is judged at ``now_ms``, the coordinator's clock, on every replica alike."""
        if quorum.n != self.n:
            self.check_quorum(quorum)
        h = key_hash(key)
        round_ = self._read_round(h, quorum)
        local: Callable[[], tuple[Version, ...]] | None = None
        me = round_.local
        if me is not None and me.hint_for:
            versions = self._local_read(key, me.hint_for)
            round_.reply(self.node_id, (etag_of(versions, now_ms), has_value(versions, now_ms)))
            local = partial(_same, versions)
        elif me is not None:
            record = self.storage.get_raw(key) or b""
            round_.reply(self.node_id, digest_of_record(record, now_ms))
            local = partial(_decoded, record)
        self._order(round_, h)
        address_of, supports = self.membership.address_of, self.messaging.supports
        first = round_.remote[: round_.need]
        if all(supports(address_of(r.node) or "", READ_DIGEST_FEATURE) for r in first):
            await self._run_read(key, round_, round_.start(), _DIGEST_READ, {"now_ms": now_ms})
            round_.outcome()
            agreed = agreed_digest(round_.answers)
            if agreed is not None:
                self.metrics.digest_reads.labels("agreed").inc()
                return agreed[0], agreed[1], local
            self.metrics.digest_reads.labels("differed").inc()
        else:
            self.metrics.digest_reads.labels("unsupported").inc()
        versions = await self.get(key, quorum)
        return etag_of(versions, now_ms), has_value(versions, now_ms), partial(_same, versions)

    async def _run_read(
        self,
        key: bytes,
        round_: ReadRound,
        first: Sequence[Replica],
        read: tuple[str, Callable[[Any], Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> list[asyncio.Future[Any]]:
        """Send what the round asks, feed it the answers, failures and time until it is done;
        returns every call made (late answers still reach the round, for read repair).
        ``read``: another read verb and the decoder of its answers (default: the record)."""
        calls: list[asyncio.Future[Any]] = []
        if round_.done and not first:
            return calls
        loop = self._event_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer: list[asyncio.TimerHandle | None] = [None]

        def apply(step: Step) -> None:
            if step.slow:
                until = time.monotonic() + SLOW_REPLICA_SECONDS
                for node in step.slow:
                    self._slow[node] = until
            for replica in step.send:
                launch(replica)

        def launch(replica: Replica) -> None:
            started = time.perf_counter()
            self.metrics.replica_request("read", replica.primary).inc()
            address = self.membership.address_for(replica.node, key) or ""
            body: dict[str, Any] = {"key": key, "raw": True}
            if replica.hint_for:
                body["hint_for"] = replica.hint_for
            if extra:
                body.update(extra)
            call = self.messaging.call(address, read[0] if read else "read", body, self.timeout)
            calls.append(call)

            def done(f: asyncio.Future[Any]) -> None:
                try:
                    if f.cancelled():
                        raise PeerError("cancelled")
                    raw = f.result()
                    if read is not None:  # a digest: no clock to check
                        answer = read[1](raw)
                    else:
                        if isinstance(raw, bytes):  # the stored record as it is (handle_read)
                            answer = decode_record(raw) if raw else ()
                        else:
                            answer = tuple(version_from_wire(v) for v in raw)
                        self.clock_guard.check_versions(answer)
                except Exception as exc:
                    if not isinstance(exc, PeerError):
                        log.debug("bad read answer from %s: %r", replica.node, exc)
                    self.metrics.replica_error("read").inc()
                    apply(round_.fail(replica.node))
                else:
                    self.metrics.replica_latency_of("read").observe(time.perf_counter() - started)
                    if round_.reply(replica.node, answer) and not waiter.done():
                        waiter.set_result(None)
                    return
                if round_.done and not waiter.done():
                    waiter.set_result(None)

            call.add_done_callback(done)

        def tick() -> None:
            apply(round_.tick(loop.time()))
            if round_.done:
                _resolve(waiter)
            else:
                schedule()

        def schedule() -> None:
            when = round_.wakeup()
            timer[0] = loop.call_at(when, tick) if when is not None else None

        for replica in first:
            launch(replica)
        if round_.done:
            return calls
        schedule()
        try:
            await waiter
        finally:
            if timer[0] is not None:
                timer[0].cancel()
        return calls

    def _local_read(self, key: bytes, hint_for: str | None) -> tuple[Version, ...]:
        versions = self.storage.get(key)
        if hint_for:
            versions = merge_siblings(versions, self.hints.get(hint_for, key), self.mode)
        return versions

    async def _read_repair(
        self, key: bytes, tasks: Sequence[asyncio.Future[Any]], round_: ReadRound
    ) -> None:
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout)
            for task in tasks:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: a failed replica read is expected here
        answers = round_.answers
        final = reconcile(answers, self.mode)
        stale = stale_replicas(answers, final, round_.primaries)
        record = encode_record(final) if stale else b""
        for node in stale:
            self.metrics.read_repairs.inc()
            if node == self.node_id:
                self.storage.merge(key, final, self.mode)
            else:
                with contextlib.suppress(PeerError):
                    await self._replicate(Replica(node), key, record, final)

    # -- peer verbs -----------------------------------------------------------------------------

    def handle_replicate(self, body: dict[str, Any], deferred_sync: bool = False) -> bool:
        """Apply a replicated record. ``deferred_sync``: the caller awaits
        ``storage.durable()`` before answering (group commit)."""
        key = bytes(body["key"])
        record = body.get("record")
        if record is not None:  # the encoded record (the "record" feature): stored as it is
            record = bytes(record)
            versions: Sequence[Version] = decode_record(record)
        else:
            versions = [version_from_wire(v) for v in body["versions"]]
        self.clock_guard.check_versions(versions)
        wall = int(time.time() * 1000)
        for v in versions:
            self._hlc = hlc_observe(self._hlc, v.timestamp, wall)
        hint_for = body.get("hint_for")
        if hint_for:
            self._store_hint(str(hint_for), key, versions)
        else:
            self.refuse_foreign((key,))
            self.storage.merge(key, versions, self.mode, deferred_sync=deferred_sync, raw=record)
        return True

    def refuse_foreign(self, keys: Iterable[bytes]) -> None:
        """Raise ``NotReplica`` for a replica write of a key this node no longer replicates: a
        late write for a range it gave away. Refused, the coordinator does not count it and
        keeps a hint, which cleanup hands to the key's new replicas."""
        cleanup = self.cleanup
        if cleanup is not None and not all(cleanup.replicates(key_hash(bytes(k))) for k in keys):
            raise NotReplica(f"{self.node_id} does not replicate this key (the ring changed)")

    def handle_replicate_batch(self, body: dict[str, Any]) -> int:
        applied = 0
        cleanup = self.cleanup
        now_ms = int(time.time() * 1000)
        for key, wire in body["items"]:
            versions = [version_from_wire(v) for v in wire]
            if not self.clock_guard.admits(versions):
                continue  # poison: never stored, so a resent batch does not retry it forever
            if cleanup is not None and not cleanup.replicates(key_hash(bytes(key))):
                cleanup.redirect(bytes(key), versions, now_ms)  # a late hint or repair
                continue
            _, changed = self.storage.merge(bytes(key), versions, self.mode)
            applied += int(changed)
        return applied

    def handle_read(self, body: dict[str, Any]) -> list[Any] | bytes:
        """A replica's copy of a key: the versions in wire form, or -- when the caller asks
        for ``raw`` and no hint is involved -- the stored record as it is (saves decoding and
        re-encoding it here; ``b""`` means no record)."""
        hint_for = body.get("hint_for")
        if body.get("raw") and not hint_for:
            return self.storage.get_raw(bytes(body["key"])) or b""
        versions = self._local_read(bytes(body["key"]), str(hint_for) if hint_for else None)
        return [version_to_wire(v) for v in versions]

    def handle_read_digest(self, body: dict[str, Any]) -> list[Any]:
        """The digest of a replica's copy of a key: [entity tag, has a value], with expiry
        judged at the coordinator's ``now_ms`` (this node's clock if it sent none)."""
        hint_for = body.get("hint_for")
        now_ms = body.get("now_ms")
        if type(now_ms) is not int:
            now_ms = int(time.time() * 1000)
        if not hint_for:  # from the stored bytes, without decoding the versions
            record = self.storage.get_raw(bytes(body["key"])) or b""
            return list(digest_of_record(record, now_ms))
        versions = self._local_read(bytes(body["key"]), str(hint_for))
        return [etag_of(versions, now_ms), has_value(versions, now_ms)]

    async def handle_coordinate_put(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = body.get("quorum")
        if raw is not None:  # the sender's resolved quorum, used as it is
            quorum = Quorum.from_wire(raw)
        else:  # from a peer of an older version
            quorum = Quorum(self.n, int(body["required"]), bool(body.get("strict")))
        context = VClock.from_wire(body["context"])
        self.clock_guard.check_context(context, "peer")
        try:
            clock = await self.put(
                bytes(body["key"]), body["value"], context, quorum, ttl=int(body.get("ttl", 0))
            )
        except RequestFailure as exc:
            return to_peer(exc)
        return {"context": clock.to_wire()}

    # -- plumbing -------------------------------------------------------------------------------

    async def _write_round(self, round_: WriteRound, calls: Sequence[asyncio.Future[Any]]) -> None:
        """Feed the round the calls' outcomes and the time until it is done. The calls not
        finished by then go on in the background (fire and forget when W needs no other)."""
        if round_.done:
            for call in calls:  # the rest still reach their replicas
                self._track(call)
            return
        loop = self._event_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def done(f: asyncio.Future[Any]) -> None:
            failed = f.cancelled() or f.exception() is not None
            if (round_.fail() if failed else round_.ack()) and not waiter.done():
                waiter.set_result(None)

        timer: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal timer
            if round_.tick(loop.time()):
                _resolve(waiter)
            else:
                timer = loop.call_at(round_.deadline, tick)

        for call in calls:
            call.add_done_callback(done)
        timer = loop.call_at(round_.deadline, tick)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
        for call in calls:
            if not call.done():
                self._track(call)

    def _track(self, future: asyncio.Future[Any]) -> None:
        """Keep an unfinished replica call for ``drain`` (at shutdown)."""
        if not future.done():
            self._background.add(future)
            future.add_done_callback(self._background.discard)

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._background.add(task)
        task.add_done_callback(self._finish_background)

    def _finish_background(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("background replica call failed: %r", task.exception())

    async def drain(self, timeout: float) -> None:
        """Wait for background replication and repairs (at shutdown)."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)
