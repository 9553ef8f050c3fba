"""Node: the wiring that owns the node's parts and runs them.

``Node`` builds the parts (storage, messaging, membership, coordinator, batches, listing,
hinted handoff, anti-entropy, ring changes, cleanup, metrics), wires them to each other, starts
their background loops, answers peer messages through one table (verb -> the part's handler)
and owns the HTTP API (``ringkv.node.server.Api``). ``Node.serve`` runs it all, so SIGTERM
drains in-flight requests, then flushes and closes RocksDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ringkv.core.gossip import SHARDS
from ringkv.core.versions import make_actor
from ringkv.node import absence
from ringkv.node.anti_entropy import AntiEntropy
from ringkv.node.auth import TokenStore, load_secret
from ringkv.node.batch import Batches
from ringkv.node.cleanup import Cleanup
from ringkv.node.config import NodeConfig
from ringkv.node.coordinator import Coordinator
from ringkv.node.disk_guard import DiskGuard
from ringkv.node.hints import HintedHandoff, HintStore
from ringkv.node.listing import KeyLister
from ringkv.node.membership import Membership
from ringkv.node.messaging import DEFER, MessagingService
from ringkv.node.metrics import NodeMetrics
from ringkv.node.observability import watch
from ringkv.node.parts import NodeParts
from ringkv.node.server import Api
from ringkv.node.shards import FollowerMembership, ShardLayout, follow_pauses, shard_verbs
from ringkv.node.storage import Storage
from ringkv.node.streaming import ChangeError, RingChanges
from ringkv.node.tls import TlsConfig

log = logging.getLogger(__name__)

#: A peer verb answered inline by the messaging layer, and one answered in a task.
SyncVerb = Callable[[Any], Any]
AsyncVerb = Callable[[Any], Awaitable[Any]]


class Node:
    def __init__(self, config: NodeConfig, layout: ShardLayout | None = None) -> None:
        """``layout``: this process is one shard of a node served by several (``config`` is
        then the shard's own, ``ShardLayout.worker_config``)."""
        self.config = config
        self.layout = layout
        self.metrics = NodeMetrics()
        self.tokens = TokenStore(config.auth_tokens_file) if config.auth_tokens_file else None
        if self.tokens is None:
            log.warning("no --auth-tokens-file: the client API is open to anyone who reaches it")
        self.in_flight = 0
        self.tls = (
            TlsConfig(config.tls_cert_file, config.tls_key_file, config.tls_ca_file)
            if config.tls_cert_file
            else None
        )
        self.started = time.monotonic()
        self.storage: Storage | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._sync_verbs: dict[str, SyncVerb] = {}
        self._async_verbs: dict[str, AsyncVerb] = {}
        self.api = Api(self)

    def _open_storage(self) -> Storage:
        config = self.config
        return Storage(
            config.data_dir,
            fsync=config.fsync,
            min_free_bytes=config.min_free_bytes,
            block_cache_mb=config.block_cache_mb,
        )

    async def start(self) -> None:
        config = self.config
        self.storage = self._open_storage()
        secret = load_secret(config.cluster_secret_file) if config.cluster_secret_file else None
        if secret is None:
            log.warning("no --cluster-secret-file: peer traffic is NOT authenticated")
        self.messaging = MessagingService(
            config.node_id,
            config.host,
            config.peer_port,
            self._peer,
            secret=secret,
            server_ssl=self.tls.peer_server_context() if self.tls else None,
            client_ssl=self.tls.client if self.tls else None,
            sync_handler=self._peer_sync,
            on_refused=lambda reason: self.metrics.refused_input.labels("peer", reason).inc(),
        )
        await self.messaging.start()
        try:
            await absence.check_at_start(config, self.storage, self.messaging)
        except absence.AwayTooLong as exc:
            if not config.replace_when_away_too_long:
                raise
            log.error("%s --replace-when-away-too-long: wiping it now", exc)
            self.storage.close()
            absence.wipe(config.data_dir)
            self.storage = self._open_storage()
        incarnation = self.storage.get_meta("incarnation")
        if not isinstance(incarnation, int):
            # A fresh (or wiped) disk: a new incarnation, so our new dots never collide with
            # versions an earlier life of this id created.
            incarnation = int(time.time() * 1000)
            self.storage.put_meta("incarnation", incarnation)
        self.incarnation = incarnation
        self.actor = make_actor(config.node_id, incarnation)
        layout = self.layout
        follower = layout is not None and layout.index > 0
        member_type = FollowerMembership if follower else Membership
        self.membership = member_type(
            config, self.storage, self.messaging, incarnation,
            shards=layout.count if layout is not None else 1,
        )  # fmt: skip
        if layout is not None and layout.index == 0:
            self.membership.gossiper.set_app(SHARDS, layout.gossip_value())
        self.hints = HintStore(self.storage, config.mode)
        parts = NodeParts(
            config, self.storage, self.membership, self.messaging, self.metrics, layout
        )
        self.coordinator = Coordinator(parts, self.actor, self.hints)
        self.disk_guard = self.coordinator.disk_guard = DiskGuard(
            self.storage, self.membership.gossiper
        )
        self.batches = Batches(self.coordinator)
        self.lister = KeyLister(parts, self.batches.get_many)
        self.handoff = HintedHandoff(
            self.hints,
            self.membership.is_alive,
            self.coordinator.send_records,
            self.metrics,
            window_seconds=config.hint_window,
            rate_per_second=config.hint_rate,
        )
        self.anti_entropy = AntiEntropy(parts)
        self.changes = RingChanges(parts)
        self.cleanup = Cleanup(parts, self.hints)
        self.coordinator.cleanup = self.cleanup
        self.anti_entropy.may_purge = self.cleanup.cluster_clean
        self.metrics.watch_storage(self.storage.approximate_keys, self.storage.approximate_bytes)
        self.metrics.watch_hints(self.hints.total_pending)
        self.metrics.watch_streaming(
            lambda: self.changes.remaining()[0], lambda: self.changes.remaining()[1]
        )
        self._sync_verbs, self._async_verbs = self._peer_verbs()
        if layout is not None:
            shard_verbs(self, self._sync_verbs, self._async_verbs)
        if isinstance(self.membership, FollowerMembership):
            assert layout is not None
            # membership and ring changes run once per node, in shard 0
            self._loops = [
                asyncio.create_task(self.membership.run_following(layout.peer_address_of(0))),
                asyncio.create_task(self.handoff.run()),
                asyncio.create_task(self.cleanup.run()),  # each shard cleans its own data
                asyncio.create_task(self.disk_guard.run()),
                watch(self),
            ]
        else:
            await self.membership.bootstrap()
            self._loops = [
                asyncio.create_task(self.membership.run_heartbeats()),
                asyncio.create_task(self.membership.run_gossip()),
                asyncio.create_task(self.handoff.run()),
                asyncio.create_task(self.changes.run()),
                asyncio.create_task(self.cleanup.run()),
                asyncio.create_task(self.disk_guard.run()),
                watch(self),
            ]
        if layout is not None:
            self._loops.append(asyncio.create_task(follow_pauses()))
        self._loops.append(asyncio.create_task(absence.keep_recording(config, self.storage)))
        if config.anti_entropy_interval > 0:
            self._loops.append(asyncio.create_task(self.anti_entropy.run()))
        if self.tls is not None:
            self._loops.append(asyncio.create_task(self.tls.watch()))
        log.info(
            "node %s (zone %s, incarnation %s) serving %s, peers on %s",
            config.node_id, config.zone, incarnation, config.address, config.peer_address,
        )  # fmt: skip

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if hasattr(self, "coordinator"):
            await self.coordinator.drain(timeout=self.config.request_timeout)
        if hasattr(self, "messaging"):
            await self.messaging.stop()
        if self.storage is not None:
            if self._loops:  # it ran: it was alive until now
                absence.record_alive(self.storage)
            self.storage.close()
        log.info("node %s stopped; storage flushed and closed", self.config.node_id)

    def _peer_verbs(self) -> tuple[dict[str, SyncVerb], dict[str, AsyncVerb]]:
        """Which part answers each peer verb: inline (no task per request), or in a task.

        With ``--fsync`` a replica write is acknowledged only once it is durable (group
        commit), so ``replicate`` and ``replicate_many`` then run in a task."""
        changes, cleanup, ae = self.changes, self.cleanup, self.anti_entropy
        sync: dict[str, SyncVerb] = {
            "replicate": self.coordinator.handle_replicate,
            "read": self.coordinator.handle_read,
            "read_digest": self.coordinator.handle_read_digest,
            "replicate_batch": self.coordinator.handle_replicate_batch,
            "heartbeat": self.membership.handle_heartbeat,
            "gossip_syn": self.membership.handle_syn,
            "gossip_ack2": self.membership.handle_ack2,
            "ae_roots": self._ae_roots,
            "ae_leaves": ae.handle_leaves,
            "ae_fetch": ae.handle_fetch,
            "stream_batch": lambda b: changes.stream_batch(int(b["after"]), int(b["end"])),
            "range_stats": lambda b: changes.range_stats(int(b["start"]), int(b["end"])),
            "cleanup_check": cleanup.handle_check,
            "cleanup_run": lambda b: cleanup.request_run(),
            "member_view": lambda b: changes.member_view(str(b["node"])),
            "admin": self._admin,
            "lookup_node": self.membership.handle_lookup,
            "list_range": self.lister.handle_list_range,
            "read_batch": self.batches.handle_read_batch,
            "replicate_many": self.batches.handle_replicate_many,
            absence.UPTIME_VERB: lambda b: {"uptime_seconds": time.monotonic() - self.started},
        }
        tasks: dict[str, AsyncVerb] = {
            "coordinate_put": self.coordinator.handle_coordinate_put,
            "coordinate_batch": self.batches.handle_coordinate_batch,
            "ping_req": self.membership.handle_ping_req,
        }
        if self.config.fsync:
            del sync["replicate"], sync["replicate_many"]
            tasks["replicate"] = self._replicate_durably
            tasks["replicate_many"] = self._replicate_many_durably
        return sync, tasks

    def _ae_roots(self, body: Any) -> Any:
        self.anti_entropy.ensure_current()
        return self.anti_entropy.handle_roots(body)

    def _admin(self, body: Any) -> Any:
        try:
            return self.changes.request(str(body["action"]), str(body["node"]))
        except ChangeError as exc:
            return {"error": exc.code, "status": exc.status, "message": exc.message}

    async def _replicate_durably(self, body: Any) -> Any:
        result = self.coordinator.handle_replicate(body, deferred_sync=True)
        assert self.storage is not None
        await self.storage.durable()
        return result

    async def _replicate_many_durably(self, body: Any) -> Any:
        count = self.batches.handle_replicate_many(body, deferred_sync=True)
        assert self.storage is not None
        await self.storage.durable()
        return count

    def _peer_sync(self, verb: str, body: Any) -> Any:
        """Peer verbs answered inline by the messaging layer (``DEFER``: run ``_peer``)."""
        handler = self._sync_verbs.get(verb)
        return DEFER if handler is None else handler(body)

    async def _peer(self, verb: str, body: Any) -> Any:
        task = self._async_verbs.get(verb)
        if task is not None:
            return await task(body)
        handler = self._sync_verbs.get(verb)
        if handler is None:
            raise ValueError(f"unknown verb {verb!r}")
        return handler(body)

    async def serve(self, stop: asyncio.Event, shutdown_timeout: float = 10.0) -> None:
        """Start the node, serve until ``stop`` is set, then drain and stop (SIGTERM)."""
        config = self.config
        await self.start()
        _tune_gc()
        try:
            tls = self.tls
            layout = self.layout
            channel = self.api.channel
            if channel is not None:
                await channel.start()
            await self.api.server.start(
                config.host, config.port, ssl=tls.server if tls is not None else None,
                reuse_port=layout is not None,
                also=(layout.client_port_of(layout.index),) if layout is not None else (),
            )  # fmt: skip
            await stop.wait()
            await self.api.server.shutdown(shutdown_timeout)
            if channel is not None:
                # what siblings handed here finishes (their clients wait for it), then closes
                await channel.close(shutdown_timeout)
        finally:
            await self.stop()


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the request path's tail.

    Everything built at start (modules, the ring, membership, metrics) lives as long as the
    process: freezing it takes it out of every later collection, so a full collection no longer
    walks it while requests wait. A larger first-generation threshold makes young collections
    less frequent (the measurements are in docs/performance.md, "GC: the start-up heap is
    frozen")."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)
