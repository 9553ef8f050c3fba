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

Replica calls are futures from ``MessagingService.call`` with done-callbacks (no task per
replica): the coordinator waits on one future per request that the callbacks resolve once the
quorum is reached or can no longer be.

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

from ringkv.core.expiry import covering_expired, expires_at
from ringkv.core.placement import Replica, preference_list, sloppy_preference_list
from ringkv.core.quorum import Quorum
from ringkv.core.ring import key_hash
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
from ringkv.node.config import NodeConfig
from ringkv.node.guards import clock_guard
from ringkv.node.hints import HintStore
from ringkv.node.membership import Membership
from ringkv.node.messaging import (
    READ_DIGEST_FEATURE,
    MessagingService,
    PeerError,
    PeerNotReached,
)
from ringkv.node.metrics import NodeMetrics
from ringkv.node.storage import Storage, StorageFull

log = logging.getLogger(__name__)
T = TypeVar("T")
SIBLINGS_WARNING = 25  # as Riak's warn_siblings
#: Defaults of --read-repair-chance (share of reads that ask every live replica, for background
#: read repair, as Cassandra's read_repair_chance; the others ask only R replicas) and
#: --speculative-read-delay (a read asks the remaining replicas when the first ones have not
#: answered within this many seconds).
READ_REPAIR_CHANCE = 0.1
SPECULATIVE_READ_DELAY = 0.1
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


class Unavailable(Exception):
    def __init__(self, required: int, alive: int) -> None:
        super().__init__(f"{required} replicas required but only {alive} reachable")
        self.required = required
        self.alive = alive


class TooManySiblings(Exception):
    def __init__(self, count: int, limit: int) -> None:
        super().__init__(
            f"the write would leave {count} siblings (limit {limit}); read the key and write "
            "back with its context to resolve them"
        )
        self.count = count
        self.limit = limit


class NotReplica(Exception):
    """A replica write for a key this node does not replicate (its ring has moved on)."""


class QuorumTimeout(Exception):
    def __init__(self, required: int, acks: int) -> None:
        super().__init__(f"{required} replicas required but only {acks} answered in time")
        self.required = required
        self.acks = acks


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Coordinator:
    def __init__(
        self,
        config: NodeConfig,
        storage: Storage,
        membership: Membership,
        messaging: MessagingService,
        metrics: NodeMetrics,
        actor: str,
        hints: HintStore,
    ) -> None:
        self.hints = hints
        self._slow: dict[str, float] = {}  # node -> monotonic time until it is asked last
        self.config = config
        self.node_id = config.node_id
        self.storage = storage
        self.membership = membership
        self.messaging = messaging
        self.metrics = metrics
        self.actor = actor
        self.mode = config.mode
        self.n = config.replication_factor
        self.timeout = config.request_timeout
        self.read_repair_chance = config.read_repair_chance
        self.speculative_read_delay = config.speculative_read_delay
        self._hlc = 0
        self.cleanup: Cleanup | None = None  # set by the node: which keys this node replicates
        # Clocks from clients and peers are bounded before this node observes or stores them.
        self.clock_guard = clock_guard(config.max_clock_skew, metrics)
        self.skew_ms = int(config.max_clock_skew * 1000)  # expired values: see core.expiry
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
    ) -> tuple[tuple[Replica, ...], list[Replica], list[Replica]]:
        """(primaries, the live replicas to use, the pending replicas).

        Live primaries, plus a fallback for each down primary unless the request is strict.
        While the ring changes, writes also go to the key's pending replicas (nodes that will
        replicate it once the change completes; they must ack too, as in Cassandra), and reads
        skip nodes that are still being filled.
        """
        membership = self.membership
        ring = membership.ring
        if not len(ring):
            return (), [], []
        h = key_hash(key)
        primaries = preference_list(ring, h, self.n)
        up = membership.up_nodes()
        if down:
            up = up - down
        if reading and membership.unreadable:
            up = up - membership.unreadable
        if strict:
            live = [r for r in primaries if r.node in up]
        else:
            live = list(sloppy_preference_list(ring, h, self.n, up))
        pending: list[Replica] = []
        future = membership.future_ring
        if not reading and future is not ring and len(future):
            current = {r.node for r in primaries}
            pending = [r for r in preference_list(future, h, self.n) if r.node not in current]
        return primaries, live, pending

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
        primaries, live, pending = self.targets(key, quorum.strict, down=down)
        me = next((r for r in live if r.node == self.node_id), None)
        if me is None:
            return await self._forward_put(key, value, context, quorum, live, down, ttl)
        # Pending replicas (a ring change in progress) must acknowledge as well; a ring still
        # smaller than N (a forming cluster) cannot demand more than it has.
        required = min(quorum.required, len(primaries)) + len(pending)
        live_pending = [r for r in pending if self.membership.is_alive(r.node)]
        if len(live) + len(live_pending) < required:
            raise Unavailable(required, len(live) + len(live_pending))
        if value is None and not context:
            # A delete without a context deletes what the replicas hold (as riak_client:delete
            # does): read at the write's quorum and delete over everything seen.
            context = context_of(await self.get(key, quorum))
        version, merged, record, synced = self.write_locally(
            key, value, context, ttl, me, (*primaries, *pending), live, live_pending
        )
        others = [r for r in live if r.node != self.node_id] + live_pending
        try:
            acks = 1 + await self._quorum(
                [self._replicate_call(r, key, record, merged) for r in others], required - 1
            )
        finally:
            if synced is not None:  # group commit (--fsync): our own copy must be on disk
                await synced
        if acks < required:
            raise QuorumTimeout(required, acks)
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
        replicas: Sequence[Replica],
        live: Sequence[Replica],
        live_pending: Sequence[Replica],
    ) -> tuple[Version, tuple[Version, ...], bytes, asyncio.Future[None] | None]:
        """The coordinator's half of a write: create the version over ``context``, store it
        (or, as a fallback, hint it) and keep hints for the primaries and pending replicas
        (``replicas``) that neither ``live`` nor ``live_pending`` covers. Returns (version,
        merged record, its encoding for the replicas, the group-commit future or None)."""
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
        # Primaries that are down and got no fallback: the coordinator keeps their hint.
        covered = {r.node for r in live} | {r.hint_for for r in live if r.hint_for}
        for replica in replicas:
            if replica.node not in covered and replica not in live_pending:
                self._store_hint(replica.node, key, merged)
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
        if len(live) < quorum.required or not live:
            raise Unavailable(quorum.required, len(live))
        # Each key's writes go to one of its live primaries chosen by the key's hash, so that
        # coordinating writes is spread like the replica load, not like primary ownership.
        primaries = [r for r in live if r.primary] or list(live)
        target = primaries[key_hash(key) % len(primaries)].node
        address = self.membership.address_of(target)
        self.metrics.forwarded.inc()
        body = {
            "key": key,
            "value": value,
            "context": context.to_wire(),
            "required": quorum.required,
            "strict": quorum.strict,
        }
        if ttl:
            body["ttl"] = ttl
        try:
            answer = await self.messaging.request(
                address or "", "coordinate_put", body, self.timeout + 1.0
            )
        except PeerNotReached as exc:
            # Not sent, so not applied: the node just died and the detector has not caught
            # up. Place the write again without it (a fallback takes it, with a hint).
            log.debug("cannot forward to %s (%s); placing the write without it", target, exc)
            return await self.put(key, value, context, quorum, down | {target}, ttl)
        except PeerError as exc:
            log.debug("forwarding to %s failed: %s", target, exc)
            raise QuorumTimeout(quorum.required, 0) from None
        if answer.get("error") == "unavailable":
            raise Unavailable(int(answer["required"]), int(answer["alive"]))
        if answer.get("error") == "timeout":
            raise QuorumTimeout(int(answer["required"]), int(answer["acks"]))
        if answer.get("error") == "too_many_siblings":
            raise TooManySiblings(int(answer["count"]), int(answer["limit"]))
        if answer.get("error") == "insufficient_storage":
            raise StorageFull(28, str(answer.get("message")))
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
        address = self.membership.address_of(replica.node) or ""
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
        address = self.membership.address_of(node)
        if address is None:
            raise PeerError(f"no address for {node}")
        body = {"items": [[key, [version_to_wire(v) for v in vs]] for key, vs in items]}
        await self.messaging.request(address, "replicate_batch", body, self.timeout * 2)

    # -- reads ----------------------------------------------------------------------------------

    async def get(self, key: bytes, quorum: Quorum) -> tuple[Version, ...]:
        """Read at ``quorum``: the reconciled sibling set (possibly empty or all tombstones)."""
        replicas, live, _ = self.targets(key, quorum.strict, reading=True)
        if len(replicas) < quorum.required:  # a ring smaller than N
            quorum = Quorum(quorum.n, len(replicas), quorum.strict)
        if len(live) < quorum.required or not live:
            raise Unavailable(quorum.required, len(live))
        answers: dict[str, tuple[Version, ...]] = {}
        remote: list[Replica] = []
        for replica in live:
            if replica.node == self.node_id:
                answers[self.node_id] = self._local_read(key, replica.hint_for)
            else:
                remote.append(replica)
        need = quorum.required - len(answers)
        if need < len(remote):
            self._order(remote, key)
        if need >= len(remote) or random.random() < self.read_repair_chance:
            first, spare = remote, []
        else:
            first, spare = remote[:need], remote[need:]
        got, calls = await self._read_quorum(key, first, spare, need, answers)
        if got < need:
            raise QuorumTimeout(quorum.required, got + quorum.required - need)
        result = merge_siblings((), [v for vs in answers.values() for v in vs], self.mode)
        outstanding = [c for c in calls if not c.done()]
        final_dots = {v.dot for v in result}
        if outstanding or any({v.dot for v in vs} != final_dots for vs in answers.values()):
            primaries = {r.node for r in live if r.primary}
            self._spawn(self._read_repair(key, outstanding, answers, primaries))
        return result

    def _order(self, remote: list[Replica], key: bytes) -> None:
        """Start at a replica chosen by the key's hash, so that reads are spread like the
        replica load rather than falling on the first replicas of each list. Ask connected
        replicas first: one still being reconnected to would only be slow. Ask replicas that
        were slow lately last, then ones still being reconnected to."""
        turn = key_hash(key) % len(remote)
        remote[:] = remote[turn:] + remote[:turn]
        connected = self.messaging.is_connected
        address_of = self.membership.address_of
        now, slow = time.monotonic(), self._slow
        remote.sort(
            key=lambda r: (slow.get(r.node, 0.0) > now, not connected(address_of(r.node) or ""))
        )

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
        replicas, live, _ = self.targets(key, quorum.strict, reading=True)
        if len(replicas) < quorum.required:  # a ring smaller than N
            quorum = Quorum(quorum.n, len(replicas), quorum.strict)
        if len(live) < quorum.required or not live:
            raise Unavailable(quorum.required, len(live))
        local: Callable[[], tuple[Version, ...]] | None = None
        digests: dict[str, tuple[str, bool]] = {}
        remote: list[Replica] = []
        for replica in live:
            if replica.node != self.node_id:
                remote.append(replica)
            elif replica.hint_for:
                versions = self._local_read(key, replica.hint_for)
                digests[self.node_id] = (etag_of(versions, now_ms), has_value(versions, now_ms))
                local = partial(_same, versions)
            else:
                record = self.storage.get_raw(key) or b""
                digests[self.node_id] = digest_of_record(record, now_ms)
                local = partial(_decoded, record)
        need = quorum.required - len(digests)
        if need < len(remote):
            self._order(remote, key)
        address_of, supports = self.membership.address_of, self.messaging.supports
        if all(supports(address_of(r.node) or "", READ_DIGEST_FEATURE) for r in remote[:need]):
            got, _ = await self._read_quorum(
                key,
                remote[:need],
                remote[need:],
                need,
                digests,
                _DIGEST_READ,
                {"now_ms": now_ms},
            )
            if got < need:
                raise QuorumTimeout(quorum.required, got + quorum.required - need)
            if len(set(digests.values())) == 1:
                self.metrics.digest_reads.labels("agreed").inc()
                etag, found = next(iter(digests.values()))
                return etag, found, local
            self.metrics.digest_reads.labels("differed").inc()
        else:
            self.metrics.digest_reads.labels("unsupported").inc()
        versions = await self.get(key, quorum)
        return etag_of(versions, now_ms), has_value(versions, now_ms), partial(_same, versions)

    async def _read_quorum(
        self,
        key: bytes,
        first: Sequence[Replica],
        spare: Sequence[Replica],
        need: int,
        answers: dict[str, Any],
        read: tuple[str, Callable[[Any], Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[int, list[asyncio.Future[Any]]]:
        """Read ``first``; also ``spare`` once one fails or after the speculative read delay.
        Returns (replies received, every call made) once ``need`` replied or cannot.
        ``read``: another read verb and the decoder of its answers (default: the record)."""
        calls: list[asyncio.Future[Any]] = []
        if need <= 0 and not first:
            return 0, calls
        loop = self._event_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        spares = list(spare)
        state = [0, 0]  # replies, failures

        def settle() -> None:
            ok, failed = state
            if not waiter.done() and (ok >= need or ok + len(calls) - ok - failed < need):
                waiter.set_result(None)

        def launch(replica: Replica) -> None:
            started = time.perf_counter()
            self.metrics.replica_request("read", replica.primary).inc()
            address = self.membership.address_of(replica.node) or ""
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
                        answers[replica.node] = read[1](raw)
                    else:
                        if isinstance(raw, bytes):  # the stored record as it is (handle_read)
                            versions = decode_record(raw) if raw else ()
                        else:
                            versions = tuple(version_from_wire(v) for v in raw)
                        self.clock_guard.check_versions(versions)
                        answers[replica.node] = versions
                except Exception as exc:
                    if not isinstance(exc, PeerError):
                        log.debug("bad read answer from %s: %r", replica.node, exc)
                    self.metrics.replica_error("read").inc()
                    self._slow[replica.node] = time.monotonic() + SLOW_REPLICA_SECONDS
                    state[1] += 1
                    if spares and not waiter.done():
                        launch(spares.pop(0))
                else:
                    self.metrics.replica_latency_of("read").observe(time.perf_counter() - started)
                    state[0] += 1
                settle()

            call.add_done_callback(done)

        def speculate() -> None:
            if spares and not waiter.done():
                until = time.monotonic() + SLOW_REPLICA_SECONDS
                for replica in first:
                    if replica.node not in answers:
                        self._slow[replica.node] = until
            while spares and not waiter.done():
                launch(spares.pop(0))

        for replica in first:
            launch(replica)
        settle()
        timers = [loop.call_later(self.timeout, lambda: _resolve(waiter))]
        if spares:
            timers.append(loop.call_later(self.speculative_read_delay, speculate))
        try:
            if need > 0:
                await waiter
        finally:
            for timer in timers:
                timer.cancel()
        return state[0], calls

    def _local_read(self, key: bytes, hint_for: str | None) -> tuple[Version, ...]:
        versions = self.storage.get(key)
        if hint_for:
            versions = merge_siblings(versions, self.hints.get(hint_for, key), self.mode)
        return versions

    async def _read_repair(
        self,
        key: bytes,
        tasks: Sequence[asyncio.Future[bool]],
        answers: dict[str, Any],
        primaries: set[str],
    ) -> None:
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout)
            for task in tasks:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: a failed replica read is expected here
        everything = [v for vs in answers.values() for v in vs]
        final = merge_siblings((), everything, self.mode)
        final_dots = {v.dot for v in final}
        record = encode_record(final)
        for node, versions in list(answers.items()):
            if node not in primaries or {v.dot for v in versions} == final_dots:
                continue
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
        quorum = Quorum(self.n, int(body["required"]), bool(body.get("strict")))
        context = VClock.from_wire(body["context"])
        self.clock_guard.check_context(context, "peer")
        try:
            clock = await self.put(
                bytes(body["key"]), body["value"], context, quorum, ttl=int(body.get("ttl", 0))
            )
        except Unavailable as exc:
            return {"error": "unavailable", "required": exc.required, "alive": exc.alive}
        except QuorumTimeout as exc:
            return {"error": "timeout", "required": exc.required, "acks": exc.acks}
        except TooManySiblings as exc:
            return {"error": "too_many_siblings", "count": exc.count, "limit": exc.limit}
        except StorageFull as exc:
            return {"error": "insufficient_storage", "message": str(exc)}
        return {"context": clock.to_wire()}

    # -- plumbing -------------------------------------------------------------------------------

    async def _quorum(self, calls: Sequence[asyncio.Future[Any]], need: int) -> int:
        """Wait until ``need`` of the calls succeeded (or can no longer, or the request timeout
        passed); return how many succeeded. The others go on in the background."""
        if need <= 0:
            for call in calls:  # fire and forget: the rest still reach their replicas
                self._track(call)
            return 0
        loop = self._event_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        state = [0, 0]  # successes, failures
        total = len(calls)

        def done(f: asyncio.Future[Any]) -> None:
            if f.cancelled() or f.exception() is not None:
                state[1] += 1
            else:
                state[0] += 1
            ok, failed = state
            if not waiter.done() and (ok >= need or total - failed < need):
                waiter.set_result(None)

        for call in calls:
            call.add_done_callback(done)
        if total < need:
            return 0
        timer = loop.call_later(self.timeout, lambda: _resolve(waiter))
        try:
            await waiter
        finally:
            timer.cancel()
        for call in calls:
            if not call.done():
                self._track(call)
        return state[0]

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
