"""Membership: gossip, heartbeats, failure detection and the ring they agree on.

The single interface the rest of the node uses to ask "who is in the cluster, where, and alive?":
``ring``, ``is_alive``, ``address_of``, ``members``. It drives the pure ``Gossiper``, ``Watch``
and ``PhiAccrualFailureDetector`` with real time and the messaging service.

Liveness scales with the cluster: every heartbeat interval a node heartbeats only the few
members its ``Watch`` assigns it (not every member), judges them by phi accrual, asks a few
others to probe a suspect (``ping_req``) before convicting it, and publishes its convictions
in gossip (``DOWN``). A member it does not watch is alive unless convicted that way (or its
connection is down). A convicted member that is in fact alive refutes by bumping its ``ALIVE``
counter. Gossip rounds exchange bucket summaries, then digests and deltas of what differs.
Members that left or were removed are dropped from gossip state a hint window after they
departed, and quarantined for the tombstone grace (``gossip.departure_periods`` says why).

Token claim (formation and later joins): a node that has no tokens yet waits until it has talked
to its seeds, then takes its turn -- the lowest id among live tokenless nodes claims first, against
the ring it sees -- using the deterministic, balanced ``allocate_tokens`` (in a worker thread: it
can take seconds of CPU on a large ring, which the event loop must not); the tokens are persisted
in the data directory and published through gossip, and never change afterwards. A node that
finds its own id already holding tokens in gossip (a replacement with an empty disk) adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

from ringkv.core import gossip as g
from ringkv.core.allocation import allocate_tokens
from ringkv.core.failure_detector import (
    INDIRECT_PROBES,
    PhiAccrualFailureDetector,
    Watch,
    watch_order,
)
from ringkv.core.ring import Ring, key_hash
from ringkv.core.sharding import owning_peer, split_range
from ringkv.node.config import NodeConfig
from ringkv.node.messaging import MessagingService, PeerError
from ringkv.node.storage import Storage

log = logging.getLogger(__name__)

SEED_SETTLE_SECONDS = 3.0
NEWS_PUSH_GAP = 0.5


class Membership:
    def __init__(
        self,
        config: NodeConfig,
        storage: Storage,
        messaging: MessagingService,
        incarnation: int,
        shards: int = 1,
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self.shards = shards  # this node's shard count: its tokens are claimed per slice
        self.storage = storage
        self.messaging = messaging
        self.incarnation = incarnation
        self.detector = PhiAccrualFailureDetector(
            threshold=config.phi_threshold, first_interval=config.heartbeat_interval
        )
        self.watch = Watch(self.node_id, self.detector, confirm=config.heartbeat_interval)
        self._watching: frozenset[str] = frozenset()
        self._watch_members: set[str] = set()
        self._watch_order: tuple[str, ...] = ()
        self._gossip_down: set[str] = set()  # convicted by the members that watch them
        self._departed: dict[str, float] = {}  # member -> when we saw it leave or removed
        self.keep_departed, self.quarantine = g.departure_periods(
            config.hint_window, config.tombstone_grace, config.gossip_interval
        )
        self._last_push = 0.0
        self._claiming: asyncio.Task[None] | None = None  # allocate_tokens, in a worker thread
        tokens = storage.get_meta("tokens")
        self.tokens: tuple[int, ...] = tuple(tokens) if isinstance(tokens, list) else ()
        saved_status = storage.get_meta("status")
        if not self.tokens:
            status = g.STARTING
        elif saved_status in (g.JOINING, g.LEAVING, g.REPLACING, g.LEFT):
            status = str(saved_status)  # resume an interrupted change
        else:
            status = g.NORMAL
        self.gossiper = g.Gossiper(
            self.node_id,
            generation=int(time.time() * 1000),
            app={
                g.ZONE: config.zone,
                g.ADDRESS: config.address,
                g.PEER_ADDRESS: config.peer_address,
                g.INCARNATION: incarnation,
                g.STATUS: status,
                g.TOKENS: list(self.tokens),
            },
        )
        removed = storage.get_meta("removed")
        if isinstance(removed, dict) and removed:
            self.gossiper.set_app(g.REMOVED, removed)
        removing = storage.get_meta("removing")
        if isinstance(removing, dict) and removing:
            self.gossiper.set_app(g.REMOVING, removing)  # resume an interrupted removal
        self.ring = Ring({}, {})
        self.future_ring = self.ring
        self.unreadable: frozenset[str] = frozenset()
        self.replace_tokens: tuple[int, ...] = ()  # set when waiting for an admin replace
        # off after a cancelled join (remembered across restarts): wait to be asked
        self.auto_join = config.auto_join and storage.get_meta("auto_join") is not False
        self._seed_contacted = False
        self._started_at = time.monotonic()
        self._ring_listeners: list[Any] = []
        self._up: frozenset[str] = frozenset()
        self._up_at = 0.0
        self._up_ring: Ring | None = None
        self._sharded: dict[str, dict[str, Any]] = {}  # members served by several shards
        self._rebuild_ring()

    # -- queries ------------------------------------------------------------------------------

    def is_alive(self, node: str) -> bool:
        if node == self.node_id:
            return True
        address = self.address_of(node)
        if address is None:
            return False
        conn = self.messaging.peer(address)
        if conn.down:
            return False
        if node in self._watching:
            # A member that just became our target (the members changed: a join) is judged
            # by what its watchers gossip until our first tick on it; a phi from no history,
            # or from when we last watched it, would call a live member dead for a round.
            verdict = self.watch.alive(node, time.monotonic())
            if verdict is not None:
                return verdict
        return node not in self._gossip_down

    def up_nodes(self) -> frozenset[str]:
        """Ring members currently considered alive (cached for a few milliseconds: it is asked
        on every request)."""
        now = time.monotonic()
        if now - self._up_at > 0.02 or self._up_ring is not self.ring:
            self._up = frozenset(n for n in self.ring.nodes if self.is_alive(n))
            self._up_at, self._up_ring = now, self.ring
        return self._up

    def watched_phi(self, now: float) -> dict[str, float]:
        """Phi of each member this node watches (its heartbeat targets); it measures no other."""
        return {node: self.detector.phi(node, now) for node in sorted(self._watching)}

    def phi(self, node: str) -> float | None:
        """Phi of a member this node watches (None for the others: it does not judge them)."""
        if node == self.node_id or node not in self._watching:
            return None
        value = self.detector.phi(node, time.monotonic())
        return None if value == float("inf") else round(value, 3)

    def address_of(self, node: str) -> str | None:
        state = self.gossiper.states.get(node)
        return None if state is None else state.get(g.PEER_ADDRESS)

    def pieces_of(self, node: str, start: int, end: int) -> list[tuple[str, int, int]]:
        """The arc ``(start, end]`` cut at ``node``'s shard slices: ``[(peer address of the
        shard holding the piece, piece start, piece end)]`` in ring order (one piece, the
        node's address, for a node served by one process)."""
        published = self._sharded.get(node)
        if published is None:
            return [(self.address_of(node) or "", start, end)]
        peers = published["peer"]
        return [(str(peers[shard]), s, e) for shard, s, e in
                split_range(start, end, int(published["count"]))]  # fmt: skip

    def sharded(self, node: str) -> bool:
        """Whether ``node`` is served by several shards (it published them)."""
        return node in self._sharded

    def published_shards(self, node: str) -> dict[str, Any] | None:
        """What ``node`` published about its shards (None: one process)."""
        return self._sharded.get(node)

    def shard_count_of(self, node: str) -> int:
        """How many shards serve ``node``: ours, or what it published (1: one process)."""
        if node == self.node_id:
            return self.shards
        published = self._sharded.get(node)
        return int(published["count"]) if published is not None else 1

    def address_for(self, node: str, key: bytes) -> str | None:
        """The peer address of the shard of ``node`` that holds ``key`` (``address_of`` for a
        node served by one process)."""
        if self._sharded:
            published = self._sharded.get(node)
            if published is not None:
                return owning_peer(published, key_hash(key))
        return self.address_of(node)

    def status_of(self, node: str) -> str:
        state = self.gossiper.states.get(node)
        return g.STARTING if state is None else str(state.get(g.STATUS, g.STARTING))

    @property
    def ready(self) -> bool:
        """Tokens claimed and serving reads (in the ring, not still being filled)."""
        me = self.node_id
        return bool(self.tokens) and me in self.ring and me not in self.unreadable

    def members(self) -> list[dict[str, Any]]:
        ownership = self.ring.ownership() if len(self.ring) else {}
        out = []
        for node in sorted(self.gossiper.states):
            state = self.gossiper.states[node]
            out.append(
                {
                    "id": node,
                    "zone": state.get(g.ZONE),
                    "address": state.get(g.ADDRESS),
                    "peer_address": state.get(g.PEER_ADDRESS),
                    "state": state.get(g.STATUS, g.STARTING),
                    "alive": self.is_alive(node),
                    "ownership": round(ownership.get(node, 0.0), 4),
                    "phi": self.phi(node),
                    "incarnation": state.get(g.INCARNATION),
                    "writes_refused": state.get(g.WRITES_REFUSED) or "",
                    "generation": state.generation,
                }
            )
        return out

    def on_ring_change(self, callback: Any) -> None:
        self._ring_listeners.append(callback)

    # -- peer verbs ---------------------------------------------------------------------------

    def handle_heartbeat(self, body: dict[str, Any]) -> dict[str, Any]:
        node = str(body.get("node"))
        if node != self.node_id:
            self.detector.heartbeat(node, time.monotonic())
            address = self.address_of(node)
            if address is not None:
                self.messaging.peer(address).reset_backoff()
        return {"node": self.node_id}

    def handle_syn(self, body: dict[str, Any]) -> dict[str, Any]:
        if "summary" in body:
            buckets = self.gossiper.differing(body["summary"])
            return {"buckets": buckets, "digests": self.gossiper.digests_in(buckets)}
        # The earlier exchange, from a member running older code: every digest.
        deltas, requests = self.gossiper.handle_syn(body.get("digests", {}))
        return {"deltas": deltas, "requests": requests}

    def handle_ack2(self, body: dict[str, Any]) -> dict[str, Any]:
        self._apply(body.get("deltas", {}))
        requests = body.get("requests")
        return {"deltas": self.gossiper.deltas_for(requests)} if requests else {}

    async def handle_ping_req(self, body: dict[str, Any]) -> dict[str, Any]:
        """Probe a member for another one that suspects it (SWIM's ping-req)."""
        address = self.address_of(str(body.get("node")))
        if address is None:
            return {"ok": False}
        try:
            await self.messaging.request(
                address, "heartbeat", {"node": self.node_id}, self.config.heartbeat_interval
            )
        except PeerError:
            return {"ok": False}
        return {"ok": True}

    # -- loops ------------------------------------------------------------------------------

    async def run_heartbeats(self) -> None:
        while True:
            now = time.monotonic()
            await self._heartbeat_round(now)
            await asyncio.sleep(max(0.0, self.config.heartbeat_interval - (time.monotonic() - now)))

    def _watchable(self) -> list[str]:
        """Members to keep an eye on: all but ourselves and those that left or were removed."""
        removed = self.removed_nodes()
        return [
            node
            for node, state in self.gossiper.states.items()
            if node != self.node_id
            and state.get(g.STATUS) != g.LEFT
            and not (node in removed and state.generation <= removed[node])
            and state.get(g.PEER_ADDRESS)
        ]

    async def _heartbeat_round(self, now: float) -> None:
        watchable = self._watchable()
        if set(watchable) != self._watch_members:
            self._watch_members = set(watchable)
            self._watch_order = watch_order([*watchable, self.node_id])
        targets = self.watch.targets(self._watch_order, self._gossip_down)
        self._watching = frozenset(targets)
        await asyncio.gather(*(self._heartbeat(node) for node in targets))
        now = time.monotonic()
        for suspect in self.watch.tick(now, targets):
            helpers = [n for n in watchable if n != suspect and n not in self._gossip_down]
            for helper in random.sample(helpers, min(INDIRECT_PROBES, len(helpers))):
                asyncio.get_running_loop().create_task(self._indirect(helper, suspect))
        self._publish_convictions()

    def _publish_convictions(self) -> None:
        states = self.gossiper.states
        down = {
            node: [states[node].generation, states[node].max_version]
            for node in sorted(self.watch.convicted)
            if node in states
        }
        if down != self.gossiper.local.get(g.DOWN, {}):
            self.gossiper.set_app(g.DOWN, down)
            self._refresh_convictions()
            self._push_news()

    async def _heartbeat(self, node: str) -> None:
        address = self.address_of(node)
        if address is None:
            return
        try:
            await self.messaging.request(
                address, "heartbeat", {"node": self.node_id}, self.config.heartbeat_interval
            )
            self.watch.heard(node, time.monotonic())
        except PeerError:
            pass

    async def _indirect(self, helper: str, suspect: str) -> None:
        address = self.address_of(helper)
        if address is None:
            return
        try:
            answer = await self.messaging.request(
                address, "ping_req", {"node": suspect}, 2 * self.config.heartbeat_interval
            )
        except PeerError:
            return
        if isinstance(answer, dict) and answer.get("ok"):
            self.watch.heard(suspect, time.monotonic())

    async def run_gossip(self) -> None:
        while True:
            await self._gossip_round()
            self._evict_departed(time.monotonic())
            self._maybe_claim_tokens()
            await asyncio.sleep(self.config.gossip_interval * random.uniform(0.8, 1.2))

    async def bootstrap(self) -> None:
        """Before gossiping our own state: if the cluster already knows our id with tokens (we
        are a replacement, or our disk was wiped), adopt those tokens; then meet the seeds."""
        if not self.tokens:
            seeds = [s for s in self.config.seeds if s != self.config.peer_address]
            deadline = time.monotonic() + SEED_SETTLE_SECONDS
            while seeds and time.monotonic() < deadline:
                answers = await asyncio.gather(
                    *(self._lookup_self(seed) for seed in seeds), return_exceptions=True
                )
                found = [a for a in answers if isinstance(a, list) and a]
                if found and not self.auto_join:
                    # Keep the dead node's place (its tokens, unreadable) until told to refill.
                    self.replace_tokens = tuple(found[0])
                    self.gossiper.set_app(g.TOKENS, list(self.replace_tokens))
                    self._rebuild_ring()
                    log.info("this id holds tokens in the cluster; waiting for admin replace")
                    break
                if found:
                    # A replacement (or a wiped disk): same id and tokens, new incarnation;
                    # it takes writes at once but answers reads only once refilled.
                    self._adopt_tokens(tuple(found[0]), g.REPLACING)
                    log.info("adopted this id's existing tokens from the cluster")
                    break
                if any(a == [] for a in answers):
                    break  # a seed answered and does not know us: a new node
                await asyncio.sleep(0.2)
        await self._gossip_round()
        self._maybe_claim_tokens()
        if self._claiming is not None:
            await self._claiming  # a node forming a cluster starts with its tokens

    async def _lookup_self(self, seed: str) -> list[int]:
        answer = await self.messaging.request(seed, "lookup_node", {"node": self.node_id}, 1.0)
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        return [int(t) for t in tokens] if tokens else []

    def handle_lookup(self, body: dict[str, Any]) -> dict[str, Any]:
        state = self.gossiper.states.get(str(body.get("node")))
        if (
            state is None
            or state.get(g.STATUS) == g.LEFT
            or body.get("node") in self.removed_nodes()
        ):
            return {"tokens": None}  # a node that left (or was removed) is not replaced
        return {"tokens": state.get(g.TOKENS)}

    async def _gossip_round(self) -> None:
        live = [n for n in self.gossiper.states if n != self.node_id and self.is_alive(n)]
        dead = [n for n in self.gossiper.states if n != self.node_id and n not in live]
        targets: list[str] = []
        if live:
            address = self.address_of(random.choice(live))
            if address:
                targets.append(address)
        if dead and random.random() < len(dead) / (len(live) + 1):
            address = self.address_of(random.choice(dead))
            if address:
                targets.append(address)
        seeds = [s for s in self.config.seeds if s != self.config.peer_address]
        if seeds and (not self._seed_contacted or not live or random.random() < 0.1):
            targets.extend(seeds if not self._seed_contacted else [random.choice(seeds)])
        await asyncio.gather(*(self._exchange(address) for address in dict.fromkeys(targets)))

    async def _exchange(self, address: str) -> None:
        timeout = max(self.config.gossip_interval, 0.5)
        try:
            ack = await self.messaging.request(
                address, "gossip_syn", {"summary": self.gossiper.summary()}, timeout
            )
            if "deltas" in ack:  # a member running older code answered with every delta
                self._apply(ack.get("deltas", {}))
            elif ack.get("buckets"):
                deltas, requests = self.gossiper.reconcile(ack.get("digests", {}), ack["buckets"])
                if deltas or requests:
                    reply = await self.messaging.request(
                        address, "gossip_ack2", {"deltas": deltas, "requests": requests}, timeout
                    )
                    self._apply(reply.get("deltas", {}) if isinstance(reply, dict) else {})
            if address in self.config.seeds:
                self._seed_contacted = True
        except PeerError as exc:
            log.debug("gossip with %s failed: %s", address, exc)

    def _apply(self, deltas: dict[str, Any]) -> None:
        changed = self.gossiper.apply(deltas)
        now = time.monotonic()
        for node in changed:
            if not self.detector.known(node):
                self.detector.heartbeat(node, now)
        if changed:
            self._refresh_convictions()
            if g.places_keys(deltas, changed):
                self._rebuild_ring()
            self._push_news()

    def _push_news(self) -> None:
        """Pass news on at once to a random live member instead of at the next round (at most
        every ``NEWS_PUSH_GAP`` s): a conviction or a join reaches 1,000 members in a few
        seconds instead of about ten rounds."""
        now = time.monotonic()
        if now - self._last_push < NEWS_PUSH_GAP:
            return
        live = [n for n in self._watch_members if self.is_alive(n)]
        address = self.address_of(random.choice(live)) if live else None
        if address is None:
            return
        self._last_push = now
        with contextlib.suppress(RuntimeError):  # not in an event loop: a unit test
            asyncio.get_running_loop().create_task(self._exchange(address))

    def _refresh_convictions(self) -> None:
        """Who the members watching them convict; refute a conviction of ourselves."""
        down = g.convicted(self.gossiper.states)
        if self.node_id in down:
            self.gossiper.set_app(g.ALIVE, int(self.gossiper.local.get(g.ALIVE, 0)) + 1)
            log.info("refuted a conviction of this node")
            down.discard(self.node_id)
        self._gossip_down = down

    def _evict_departed(self, now: float) -> None:
        """Drop members that left or were removed ``keep_departed`` after we saw them go, and
        quarantine them (``gossip.departure_periods``)."""
        removed = self.removed_nodes()
        gone = {
            node
            for node, state in self.gossiper.states.items()
            if node != self.node_id
            and (
                state.get(g.STATUS) == g.LEFT
                or (node in removed and state.generation <= removed[node])
            )
        }
        for node in list(self._departed):
            if node not in gone:
                del self._departed[node]
        for node in gone:
            since = self._departed.setdefault(node, now)
            if now - since >= self.keep_departed:
                self.gossiper.evict(node, now + self.quarantine)
                self.detector.forget(node)
                del self._departed[node]
                log.info("dropped %s from gossip state (departed)", node)
        self.gossiper.expire(now)

    # -- tokens and the ring ------------------------------------------------------------------

    def removed_nodes(self) -> dict[str, int]:
        """Nodes some member has removed (force), with the generation they had then."""
        removed: dict[str, int] = {}
        for state in self.gossiper.states.values():
            for node, generation in dict(state.get(g.REMOVED) or {}).items():
                removed[node] = max(removed.get(node, 0), int(generation))
            removing = state.get(g.REMOVING)
            if removing:
                node, generation = removing["node"], int(removing["generation"])
                removed[node] = max(removed.get(node, 0), generation)
        return removed

    def _ring_for(self, statuses: tuple[str, ...], removed: dict[str, int]) -> Ring | None:
        tokens: dict[str, list[int]] = {}
        zones: dict[str, str] = {}
        for node, state in self.gossiper.states.items():
            node_tokens = state.get(g.TOKENS)
            if not node_tokens or state.get(g.STATUS) not in statuses:
                continue
            if node in removed and state.generation <= removed[node]:
                continue
            tokens[node] = node_tokens
            zones[node] = str(state.get(g.ZONE))
        try:
            return Ring(tokens, zones)
        except ValueError as exc:
            log.error("ignoring inconsistent ring update: %s", exc)
            return None

    def set_removing(self, marker: dict[str, Any] | None) -> None:
        self.storage.put_meta("removing", marker or {})
        self.gossiper.set_app(g.REMOVING, marker)
        self._rebuild_ring()

    def _adopt_removals(self) -> None:
        """Make every completed removal we hear of our own (and durable), so a removed node
        stays out of the ring even after the node that removed it restarts or leaves."""
        mine = dict(self.gossiper.local.get(g.REMOVED) or {})
        merged = dict(mine)
        for state in self.gossiper.states.values():
            for node, generation in dict(state.get(g.REMOVED) or {}).items():
                if int(generation) > int(merged.get(node, -1)):
                    merged[node] = int(generation)
        if merged != mine:
            self.storage.put_meta("removed", merged)
            self.gossiper.set_app(g.REMOVED, merged)

    def _rebuild_ring(self) -> None:
        self._adopt_removals()
        self._sharded = {
            node: state.get(g.SHARDS)
            for node, state in self.gossiper.states.items()
            if isinstance(state.get(g.SHARDS), dict)
        }
        removed = self.removed_nodes()
        ring = self._ring_for(g.CURRENT_STATUSES, removed)
        future = self._ring_for(g.FUTURE_STATUSES, removed)
        if ring is None or future is None:
            return
        self.unreadable = frozenset(
            node
            for node, state in self.gossiper.states.items()
            if state.get(g.STATUS) in g.UNREADABLE_STATUSES
        )
        changed = ring != self.ring
        if changed:
            self.ring = ring
        # When no change is under way the future ring *is* the ring (an identity check is
        # then enough on the hot path).
        self.future_ring = self.ring if future == self.ring else future
        if changed:
            for callback in self._ring_listeners:
                callback(ring)

    def change_in_progress(self) -> str | None:
        """A description of the membership change under way anywhere, or None."""
        for node, state in sorted(self.gossiper.states.items()):
            status = state.get(g.STATUS)
            if status in g.CHANGE_STATUSES and self.is_alive(node):
                return f"{node} is {status}"
            removing = state.get(g.REMOVING)
            if removing and self.is_alive(node):
                return f"{node} is removing {removing['node']}"
        return None

    def set_status(self, status: str) -> None:
        self.storage.put_meta("status", status)
        self.gossiper.set_app(g.STATUS, status)
        self._rebuild_ring()
        log.info("status is now %s", status)

    def _maybe_claim_tokens(self) -> None:
        if self.tokens or self.replace_tokens or self.claiming:
            return
        settled = self._seed_contacted or (
            time.monotonic() - self._started_at > SEED_SETTLE_SECONDS
        )
        if not settled and any(s != self.config.peer_address for s in self.config.seeds):
            return
        tokenless_alive = sorted(
            node
            for node, state in self.gossiper.states.items()
            if not state.get(g.TOKENS) and self.is_alive(node) and state.get(g.STATUS) != g.LEFT
        )
        if tokenless_alive and tokenless_alive[0] != self.node_id:
            return  # a lower id claims first; we see its tokens through gossip
        if not len(self.ring):
            # Forming a new cluster: nobody holds data, so there is nothing to stream.
            self.claim(g.NORMAL)
        elif self.auto_join and self.change_in_progress() is None:
            self.claim(g.JOINING)

    @property
    def claiming(self) -> bool:
        """True while a claim's tokens are being allocated."""
        return self._claiming is not None and not self._claiming.done()

    def claim(self, status: str) -> asyncio.Task[None]:
        """Take tokens against the current ring and enter ``status`` (normal or joining).

        The allocation (up to a second or two of CPU on a large ring, or with zones that take
        an extra replica for part of the ring) runs in a worker thread, so the event loop keeps
        serving requests and heartbeats meanwhile; the claim completes in the returned task.
        """
        if self.claiming:
            assert self._claiming is not None
            return self._claiming
        self.storage.put_meta("auto_join", None)
        ring = self.ring
        self._claiming = asyncio.get_running_loop().create_task(self._claim(ring, status))
        return self._claiming

    async def _claim(self, ring: Ring, status: str) -> None:
        try:
            tokens = await asyncio.to_thread(
                allocate_tokens,
                ring,
                self.node_id,
                self.config.vnodes,
                zone=self.config.zone,
                replicas=self.config.replication_factor,
                slices=self.shards,
            )
        except ValueError:
            log.exception("could not allocate tokens against a ring of %d nodes", len(ring))
            return
        if self.tokens or self.replace_tokens:
            return  # took tokens another way meanwhile (an adopted replacement)
        self._adopt_tokens(tokens, status)

    def replace(self) -> None:
        """Take over this id's tokens (held back by --auto-join false) and refill."""
        if not self.replace_tokens:
            raise ValueError("this node does not stand in for a dead node")
        tokens, self.replace_tokens = self.replace_tokens, ()
        self._adopt_tokens(tokens, g.REPLACING)

    def release_tokens(self) -> None:
        """Leave the future ring (a cancelled join): forget our tokens."""
        self.storage.put_meta("tokens", [])
        self.storage.put_meta("auto_join", False)
        self.tokens = ()
        self.auto_join = False
        self.gossiper.set_app(g.TOKENS, [])
        self.set_status(g.STARTING)

    def _adopt_tokens(self, tokens: tuple[int, ...], status: str) -> None:
        self.storage.put_meta("tokens", list(tokens))
        self.tokens = tokens
        self.gossiper.set_app(g.TOKENS, list(tokens))
        self.set_status(status)
        log.info("claimed %d tokens (%s); ring has %d nodes", len(tokens), status, len(self.ring))
