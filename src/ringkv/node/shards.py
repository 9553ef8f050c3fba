"""Shards: one ring member served by several worker processes, one per core.

``ringkv node --shards S`` (S > 1) runs a small supervisor (``supervise``) and S workers, each
a ``Node`` with its own event loop and its own RocksDB in ``DATA_DIR/shard-I``. Shard ``I``
holds the keys whose token ``ringkv.core.sharding.shard_of`` maps to it, listens for peers on
``--peer-port + I`` and for clients on its own port ``--peer-port + S + I`` (the shard-aware
port, as Scylla's) and, with SO_REUSEPORT, on the node's shared client port.

Gossip, membership and failure detection run once per node, in shard 0 (whose peer port is
the node's). The other shards follow its view (``FollowerMembership``: they fetch it over
loopback, verb ``shard_view``) and run no gossip, heartbeats or ring changes of their own. The
node publishes its shard count and shard ports in gossip (``SHARDS``), so a coordinator sends
each replica's message to that node's owning shard (``Membership.address_for``).

With S = 1 nothing here runs: no supervisor, no extra process, the data directory as before.

The data directory records S (file ``SHARDS``); a different S at start is refused: the way to
change it is to empty the data directory and let the node replace itself (see docs/api.md).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ctypes
import ctypes.util
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from ringkv.core import gossip as g
from ringkv.core.allocation import MIN_TOKENS_PER_SLICE, tokens_per_slice_suffice
from ringkv.core.batching import BatchError, check_keys
from ringkv.core.gossip import SHARDS, EndpointState
from ringkv.core.ring import key_hash
from ringkv.core.sharding import shard_of, slice_start
from ringkv.node import listing, snapshot_api, status_api
from ringkv.node.api_errors import ApiError
from ringkv.node.config import NodeConfig
from ringkv.node.http import Handler, Request, Response, json_response
from ringkv.node.kv_api import KV_PREFIX, _key
from ringkv.node.membership import Membership
from ringkv.node.messaging import DEFER, PeerError
from ringkv.node.snapshots import SHARD_DIR

if TYPE_CHECKING:
    from ringkv.node.http import _Connection
    from ringkv.node.messaging import MessagingService
    from ringkv.node.node import Node
    from ringkv.node.server import Api

log = logging.getLogger(__name__)

#: The environment variable the supervisor sets for each worker: its shard index.
SHARD_INDEX_ENV = "RINGKV_SHARD_INDEX"
#: The file in the data directory that records the node's shard count.
SHARDS_FILE = "SHARDS"
VIEW_VERB = "shard_view"
READY_VERB = "shard_ready"
STATUS_VERB = "shard_status"
TREES_VERB = "shard_trees"
CLEANUP_VERB = "shard_cleanup"
METRICS_VERB = "shard_metrics"
SNAPSHOT_VERB = "shard_snapshot"  # take this shard's part of the node's snapshot
#: Paths a shard other than 0 serves itself; the rest (status, admin...) are shard 0's.
SERVED_BY_EVERY_SHARD = ("/health/", "/v1/ring")
#: Paths not yet served by a node with several shards.
NOT_YET_SHARDED: tuple[str, ...] = ()
LIST_VERB = "shard_list_range"  # one shard's own keys for a list_range
BATCH_PREFIX = "/v1/batch/"
#: Peer verbs carrying many keys: a shard answers for its own and hands the rest to siblings
#: (a peer that addressed the node's shard 0 with keys of every shard).
MULTI_KEY_VERBS = ("read_batch", "replicate_many", "coordinate_batch", "replicate_batch")
#: How often a follower shard fetches shard 0's view (seconds).
FOLLOW_INTERVAL = 0.25
#: How often a worker checks whether its supervisor is stopped (``follow_pauses``).
PAUSE_POLL = 0.05
#: A worker that fails this soon after its first start is not restarted: the node stops.
START_GRACE = 10.0


class ShardCountChanged(Exception):
    """The data directory holds data written with another shard count."""


def available_cpus() -> int:
    """The CPUs this process may use: its CPU affinity, capped by the cgroup CPU quota
    (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, int(quota + 0.5)))
    return max(1, cpus)


def _cgroup_quota(root: str = "/sys/fs/cgroup") -> float | None:
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(root, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as f:
            quota_us = int(f.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as f:
            period_us = int(f.read())
        return None if quota_us <= 0 else quota_us / period_us
    return None


def shard_count(config: NodeConfig) -> int:
    """``--shards``, with 0 meaning the CPUs this process may use."""
    return config.shards or available_cpus()


def check_recorded(data_dir: str, shards: int) -> None:
    """Record the shard count in the data directory, or refuse one that differs from it."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, SHARDS_FILE)
    try:
        with open(path) as f:
            recorded = int(f.read().strip() or "0")
    except FileNotFoundError:
        recorded = 0
    except ValueError:
        recorded = -1
    if recorded == 0:
        # data from before the count was recorded was written by one process
        if shards > 1 and os.path.exists(os.path.join(data_dir, "CURRENT")):
            recorded = 1
        else:
            with open(path, "w") as f:
                f.write(f"{shards}\n")
            return
    if recorded != shards:
        raise ShardCountChanged(
            f"{data_dir} holds data written with --shards {recorded}, not {shards}: a node's "
            "keys are partitioned by its shard count. To change it, stop the node, move the "
            "data directory away and start it again with the new --shards: with an empty disk "
            "it replaces itself (same id and tokens) and streams its data back from the "
            f"replicas; or start it with --shards {recorded} again"
        )


def shard_data_dir(data_dir: str, shard: int) -> str:
    """Shard ``shard``'s own data directory, in the node's ``data_dir``."""
    return os.path.join(data_dir, SHARD_DIR.format(shard))


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """Where the shards of this node live: count, this process's index, their ports."""

    count: int
    index: int
    host: str
    peer_port: int
    data_dir: str = ""  # the node's (each shard's own is a directory in it)

    @classmethod
    def of(cls, config: NodeConfig, index: int | None = None) -> ShardLayout:
        if index is None:
            index = int(os.environ.get(SHARD_INDEX_ENV, "0"))
        return cls(
            shard_count(config), index, config.public_host, config.peer_port, config.data_dir
        )

    def peer_port_of(self, shard: int) -> int:
        return self.peer_port + shard

    def client_port_of(self, shard: int) -> int:
        return self.peer_port + self.count + shard

    def peer_address_of(self, shard: int) -> str:
        return f"{self.host}:{self.peer_port_of(shard)}"

    def client_address_of(self, shard: int) -> str:
        return f"{self.host}:{self.client_port_of(shard)}"

    def gossip_value(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "peer": [self.peer_address_of(i) for i in range(self.count)],
            "client": [self.client_address_of(i) for i in range(self.count)],
        }

    def worker_config(self, config: NodeConfig) -> NodeConfig:
        """The configuration of this shard's ``Node``: its own directory and peer port. The
        node's addresses in gossip stay those of shard 0."""
        return dataclasses.replace(
            config,
            data_dir=shard_data_dir(config.data_dir, self.index),
            peer_port=self.peer_port_of(self.index),
            peer_advertise="",
        )


def ring_document(state: EndpointState | None) -> dict[str, Any]:
    """What ``/v1/ring`` says about a member's shards: how many, the rule mapping a key's
    token to one, and each shard's own client port (empty for a node of one process)."""
    value = state.get(SHARDS) if state is not None else None
    if not isinstance(value, dict):
        return {"shards": 1, "shard_rule": SHARD_RULE, "shard_addresses": []}
    return {
        "shards": int(value["count"]),
        "shard_rule": SHARD_RULE,
        "shard_addresses": list(value["client"]),
    }


SHARD_RULE = "(token * shards) >> 64"


# -- the membership view, shared by the shards ---------------------------------------------------


def view_of(membership: Membership, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """Shard 0's answer to ``shard_view``: what of the members' states a follower lacks, given
    the digests it holds (``known``; ``core.gossip.view_changes``), who is down, whether
    ready."""
    states = membership.gossiper.states
    deltas, gone = g.view_changes(states, known or {})
    return {
        "states": deltas,
        "gone": gone,
        "down": [node for node in states if not membership.is_alive(node)],
        "ready": membership.ready,
    }


class FollowerMembership(Membership):
    """The membership of shards 1..S-1: shard 0's view, fetched over loopback. It gossips
    nothing and judges no one itself."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._mirror_down: frozenset[str] = frozenset()
        self._mirror_ready = False
        self._member_of: dict[str, str] = {}  # a shard's peer address -> its member
        self.followed = False
        self.followed_at = 0.0

    def is_alive(self, node: str) -> bool:
        """Alive in shard 0's view, and none of its shards this shard talked to is known
        unreachable (the view is up to ``FOLLOW_INTERVAL`` old)."""
        if node == self.node_id:
            return True
        if node not in self.gossiper.states or node in self._mirror_down:
            return False
        return not any(self.messaging.is_down(a) for a in self._peer_addresses(node))

    @property
    def ready(self) -> bool:
        return self._mirror_ready and self.node_id in self.ring

    def known(self) -> dict[str, Any]:
        """What this shard holds of the view: the body of its next ``shard_view``."""
        if not self.followed:
            return {}  # the whole view (our own start-up state is not shard 0's)
        return {node: list(state.digest()) for node, state in self.gossiper.states.items()}

    def follow(self, view: dict[str, Any]) -> None:
        states = dict(self.gossiper.states) if self.followed else {}
        placement = g.follow_view(states, dict(view["states"]), list(view.get("gone", ())))
        mine = states.get(self.node_id)
        if mine is None:
            return
        self.gossiper.states = states
        self.tokens = tuple(mine.get(g.TOKENS) or ())
        self._mirror_down = frozenset(str(n) for n in view["down"])
        self._mirror_ready = bool(view["ready"])
        self._up_at = 0.0  # recompute up_nodes
        first, self.followed = not self.followed, True
        self.followed_at = time.monotonic()
        if placement or first:
            # rebuilding the rings costs a sort of every token (a tenth of a second at a
            # thousand members): only when what places keys changed
            self._rebuild_ring()
            self._member_of = {
                address: node for node in states for address in self._peer_addresses(node)
            }
        # Shard 0 hears from these members (heartbeats): connections this shard made and lost
        # may be tried again, as shard 0's own are when a heartbeat arrives. Only those: a
        # pass over every shard of every member would cost O(members x shards) each poll.
        for address, connection in self.messaging.lost():
            node = self._member_of.get(address)
            if node is not None and node not in self._mirror_down:
                connection.reset_backoff()

    def _peer_addresses(self, node: str) -> list[str]:
        """The peer addresses of ``node``'s shards (its peer address for one process)."""
        if node == self.node_id:
            return []
        published = self.published_shards(node)
        addresses = published["peer"] if published else (self.address_of(node),)
        return [str(a) for a in addresses if a]

    def _adopt_removals(self) -> None:
        """Shard 0 adopts removals and records them; a follower only reads them."""

    async def run_following(self, leader: str) -> None:
        while True:
            try:
                answer = await to_sibling(self.messaging, leader, VIEW_VERB, self.known(), 2.0)
                self.follow(answer)
            except PeerError as exc:
                log.debug("cannot fetch the membership view from shard 0: %s", exc)
            except Exception:
                log.exception("cannot follow shard 0's membership view")
            await asyncio.sleep(FOLLOW_INTERVAL)


async def to_sibling(
    messaging: MessagingService, address: str, verb: str, body: Any, timeout: float
) -> Any:
    """A request to a sibling shard. A restarted sibling is tried at once, not after the
    reconnect backoff a remote peer gets (it is on this machine, and trying is cheap)."""
    messaging.peer(address).reset_backoff()
    return await messaging.request(address, verb, body, timeout)


def readiness(membership: Membership) -> dict[str, Any]:
    """A shard's answer to ``shard_ready``: ready, and the rings it places keys with."""
    return {
        "ready": membership.ready,
        "rings": [membership.ring.version, membership.future_ring.version],
    }


async def missing_shards(
    layout: ShardLayout, messaging: MessagingService, membership: Membership
) -> list[int]:
    """The shards that do not answer, are not ready, or place keys with other rings than
    shard 0 (a follower whose view lags would count a finished change as pending)."""

    async def ask(shard: int) -> dict[str, Any] | None:
        if shard == layout.index:
            return readiness(membership)
        try:
            return dict(await to_sibling(messaging, layout.peer_address_of(shard), READY_VERB,
                                         {}, 1.0))  # fmt: skip
        except PeerError:
            return None

    answers = await asyncio.gather(*(ask(i) for i in range(layout.count)))
    leader = answers[0]
    return [
        i for i, a in enumerate(answers)
        if a is None or not a.get("ready") or leader is None or a.get("rings") != leader["rings"]
    ]  # fmt: skip


# -- the supervisor --------------------------------------------------------------------------------


PR_SET_PDEATHSIG = 1


def _death_signal() -> Any:
    """A function to run in a worker before it starts: SIGKILL it when the supervisor dies,
    however it dies (a killed node must not leave workers holding its ports and RocksDB
    locks). Loaded before forking: only the system call runs in the child."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP; state ``T``), from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"T"


async def follow_pauses(interval: float = PAUSE_POLL) -> None:
    """A worker stops itself while its supervisor (its parent) is stopped, so that
    ``kill -STOP`` of the node's process pauses the whole node (as it pauses a node of one
    process); the supervisor continues its workers when it is continued (``supervise``)."""
    parent = os.getppid()
    while True:
        await asyncio.sleep(interval)
        if os.getppid() == parent and _stopped(parent):
            os.kill(os.getpid(), signal.SIGSTOP)


def supervise(config: NodeConfig, argv: Sequence[str]) -> int:
    """Run the node's S workers (``ringkv node`` with the same flags and ``SHARD_INDEX_ENV``),
    restart one that dies, and stop them all on SIGTERM/SIGINT."""
    shards = shard_count(config)
    if not tokens_per_slice_suffice(config.vnodes, shards):
        log.warning(
            "--vnodes %d is fewer than %d tokens for each of the %d shards: a joining node's "
            "tokens are then placed over the whole ring, not slice by slice, and its shards "
            "carry unequal loads (the busiest up to about twice the mean); a cluster created "
            "with --vnodes %d or more avoids it", config.vnodes, MIN_TOKENS_PER_SLICE, shards,
            MIN_TOKENS_PER_SLICE * shards,
        )  # fmt: skip
    try:
        check_recorded(config.data_dir, shards)
    except ShardCountChanged as exc:
        log.error("%s", exc)
        return 1
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    resumed = [0.0]

    def resume(signum: int, frame: Any) -> None:
        # the workers stopped themselves with this process (follow_pauses)
        resumed[0] = time.monotonic()
        for worker in workers.values():
            with contextlib.suppress(OSError):
                worker.send_signal(signal.SIGCONT)

    die_with_parent = _death_signal()

    def spawn(index: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, SHARD_INDEX_ENV: str(index), "RINGKV_SHARDS": str(shards)}
        args = [sys.executable, "-m", "ringkv.node", *argv]
        return subprocess.Popen(args, env=env, preexec_fn=die_with_parent)

    started = time.monotonic()
    workers = {i: spawn(i) for i in range(shards)}
    signal.signal(signal.SIGCONT, resume)
    restarts = dict.fromkeys(workers, 0)
    log.info("node %s: %d shards, workers %s", config.node_id, shards,
             [w.pid for w in workers.values()])  # fmt: skip
    code = 0
    while not stopping:
        time.sleep(0.1)
        if time.monotonic() - resumed[0] < 2 * PAUSE_POLL + 1.0:
            # again for a moment: a worker that saw this process stopped just before it was
            # continued stops itself after the first SIGCONT
            resume(signal.SIGCONT, None)
        for index, worker in list(workers.items()):
            rc = worker.poll()
            if rc is None or stopping:
                continue
            if rc > 0 and time.monotonic() - started < START_GRACE:
                log.error("shard %d failed at start (exit %d): stopping the node", index, rc)
                stopping, code = True, 1
                break
            restarts[index] += 1
            log.error("shard %d (pid %d) exited with %d: restarting it (restart %d)",
                      index, worker.pid, rc, restarts[index])  # fmt: skip
            time.sleep(min(5.0, 0.2 * restarts[index]))
            workers[index] = spawn(index)
    for worker in workers.values():
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers.values():
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return code


# -- client requests: each is served by the shard that owns its key -----------------------------


def shard_verbs(node: Node, sync: dict[str, Any], tasks: dict[str, Any]) -> None:
    """The peer verbs between the shards of one node."""
    sync[READY_VERB] = lambda body: readiness(node.membership)
    sync[STATUS_VERB] = lambda body: shard_status(node)
    tasks[TREES_VERB] = lambda body: tree_roots(node)
    sync[METRICS_VERB] = lambda body: status_api.metrics_text(node)
    tasks[SNAPSHOT_VERB] = partial(snapshot_api.take_part, node)
    route_peer_verbs(node, sync, tasks)
    sync[LIST_VERB] = node.lister.handle_list_range
    del sync["list_range"]
    tasks["list_range"] = node.lister.list_here = partial(list_shards, node)  # type: ignore[method-assign]
    cleanup, layout = node.cleanup, node.layout
    assert layout is not None
    if isinstance(node.membership, FollowerMembership):
        leader = layout.peer_address_of(0)

        def to_leader(report: dict[str, Any]) -> None:
            future = node.messaging.call(
                leader, CLEANUP_VERB, {"shard": layout.index, "report": report}, 5.0
            )
            future.add_done_callback(lambda f: f.cancelled() or f.exception())

        cleanup.publish_shards = to_leader  # type: ignore[method-assign]
        return
    sync[VIEW_VERB] = lambda body: view_of(node.membership, body if isinstance(body, dict) else {})
    reports: dict[int, dict[str, Any]] = {}
    own = [None]

    def publish(report: dict[str, Any]) -> None:
        own[0] = report  # type: ignore[call-overload]
        merged = combined_cleanup(report, reports, layout.count)
        node.membership.gossiper.set_app(g.CLEANUP, merged)

    def from_sibling(body: dict[str, Any]) -> bool:
        reports[int(body["shard"])] = dict(body["report"])
        if own[0] is not None:
            publish(own[0])
        return True

    cleanup.publish_shards = publish  # type: ignore[method-assign]
    sync[CLEANUP_VERB] = from_sibling
    run_here = sync["cleanup_run"]

    def run_everywhere(body: Any) -> Any:
        """``ringkv admin cleanup`` reaches shard 0: every shard cleans again."""
        for shard in range(1, layout.count):
            future = node.messaging.call(layout.peer_address_of(shard), "cleanup_run", {}, 5.0)
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return run_here(body)

    sync["cleanup_run"] = run_everywhere


#: The order of cleanup states, least advanced first: a node is as far as its slowest shard.
_CLEANUP_ORDER = ("held", "pending", "running", "done")


def combined_cleanup(
    own: dict[str, Any], siblings: dict[int, dict[str, Any]], count: int
) -> dict[str, Any]:
    """The node's cleanup report from shard 0's and its siblings': done for a ring only when
    every shard is done for it; counts add up."""
    reports = [own, *(siblings.get(i) for i in range(1, count))]
    merged = dict(own)
    ring = own.get("ring")
    for shard, report in enumerate(reports):
        if report is None or report.get("ring") != ring:
            merged["state"], merged["reason"] = "pending", f"shard {shard} has not reported"
            break
    else:
        slowest = min(reports, key=lambda r: _CLEANUP_ORDER.index(str(r.get("state")))
                      if r and r.get("state") in _CLEANUP_ORDER else 0)  # fmt: skip
        merged["state"] = slowest["state"] if slowest else "pending"
        if slowest and slowest.get("reason"):
            merged["reason"] = slowest["reason"]
    for name in ("ranges_total", "ranges_done", "keys_total", "bytes_total", "keys_done",
                 "bytes_done", "keys_handed_off", "hints_redirected", "reclaimed_bytes",
                 "disk_bytes"):  # fmt: skip
        merged[name] = sum(int((r or {}).get(name) or 0) for r in reports)
    return merged


def divert(api: Api, conn: _Connection, request: Request) -> bool:
    """Before a client request is routed: a key another shard owns is handed to that shard
    over the local channel, its answer written to ``conn`` as the sibling serialized it
    (True: taken). Everything else is routed here (``route``)."""
    if not request.path.startswith(KV_PREFIX):
        return False
    layout = api.node.layout
    assert layout is not None
    try:
        shard = shard_of(key_hash(_key(request)), layout.count)
    except ApiError:
        return False  # its error answer, here
    if shard == layout.index:
        return False
    api.node.metrics.shard_handovers.inc()
    assert api.channel is not None
    api.channel.hand_over_raw(conn, request, shard)
    return True


async def route(api: Api, request: Request, handler: Handler) -> Response:
    """The HTTP wrapper of a shard (after ``divert``: a key request here is this shard's): a
    batch is split by shard, and a node-wide request (status, admin) on a shard other than 0
    is handed to shard 0."""
    node = api.node
    layout = node.layout
    assert layout is not None
    path = request.path
    if path.startswith(BATCH_PREFIX):
        return await split_batch(api, request, handler)
    if path.startswith((KV_PREFIX, *SERVED_BY_EVERY_SHARD)) or layout.index == 0:
        return await api.wrap(request, handler)
    assert api.channel is not None
    return await api.channel.hand_over(request, 0)


def _batch_keys(request: Request) -> list[bytes] | None:
    """The keys of a batch request, in order (None: malformed; its handler says why)."""
    try:
        body = json.loads(request.body)
        base64_keys = body.get("encoding") == "base64"
        if _batch_field(request, body) == "keys":
            texts = list(body["keys"])
        else:
            texts = [item["key"] for item in body["items"]]
        return [base64.b64decode(t, validate=True) if base64_keys else str(t).encode()
                for t in texts]  # fmt: skip
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        return None


def _batch_field(request: Request, body: dict[str, Any]) -> str:
    """Where a batch lists its keys: ``keys`` (get, and the delete shorthand) or ``items``."""
    return "keys" if request.path.endswith("/get") or "keys" in body else "items"


async def split_batch(api: Api, request: Request, handler: Handler) -> Response:
    """A batch request on a node with shards: each shard serves the keys it owns (its part of
    the batch, handed to it), and the results are put back in request order."""
    node = api.node
    layout = node.layout
    assert layout is not None
    keys = _batch_keys(request)
    try:
        # a batch is judged whole (its size, a key written twice) before it is split
        check_keys(keys or [], unique=not request.path.endswith("/get"))
    except BatchError:
        keys = None
    if not keys:
        return await api.wrap(request, handler)
    channel = api.channel
    assert channel is not None
    by_shard: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_shard.setdefault(shard_of(key_hash(key), layout.count), []).append(i)
    if len(by_shard) == 1:
        (shard,) = by_shard
        if shard == layout.index:
            return await api.wrap(request, handler)
        node.metrics.shard_handovers.inc()
        return await channel.hand_over(request, shard)
    node.metrics.shard_handovers.inc()
    body = json.loads(request.body)
    field = _batch_field(request, body)

    async def part(shard: int, indexes: list[int]) -> Response:
        sub = Request(
            request.method, request.path, request.query_string, request.headers,
            request.repeated, json.dumps({**body, field: [body[field][i] for i in indexes]})
            .encode(), request.keep_alive,
        )  # fmt: skip
        if shard == layout.index:
            return await api.wrap(sub, handler)
        return await channel.hand_over(sub, shard)

    parts = list(by_shard.items())
    answers = await asyncio.gather(*(part(shard, indexes) for shard, indexes in parts))
    results: list[Any] = [None] * len(keys)
    for (_shard, indexes), answer in zip(parts, answers, strict=True):
        if answer.status != 200:
            return answer  # refused as a whole (authentication, overload, a bad request)
        for i, result in zip(indexes, json.loads(answer.body)["results"], strict=True):
            results[i] = result
    return json_response({"results": results})


async def list_shards(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """``list_range`` on a node of several shards: the keys of ``(after, hi]`` from each
    shard holding a part of it, in ring order, with the same limits and ``stop`` as one
    process answers."""
    layout = node.layout
    assert layout is not None
    after = (int(body["after"][0]), bytes(body["after"][1]))
    hi, limit = int(body["hi"]), int(body["limit"])
    first = max(after[0], 0)
    keys: list[Any] = []
    scanned = 0
    for shard in range(shard_of(first, layout.count), shard_of(hi, layout.count) + 1):
        lo = max(first, slice_start(shard, layout.count))
        top = min(hi, slice_start(shard + 1, layout.count) - 1)
        piece_after = list(after) if lo == first else [lo - 1, listing._AFTER_ALL]
        part = {**body, "after": piece_after, "hi": top, "limit": limit - len(keys)}
        if shard == layout.index:
            answer = node.lister.handle_list_range(part)
        else:
            answer = await to_sibling(node.messaging, layout.peer_address_of(shard), LIST_VERB,
                                                  part, node.config.request_timeout)  # fmt: skip
        keys.extend(answer["keys"])
        scanned += int(answer["scanned"])
        if answer["stop"] is not None:
            return {"keys": keys, "stop": answer["stop"], "scanned": scanned}
        if len(keys) >= limit:
            return {"keys": keys, "stop": keys[-1] if top < hi else None, "scanned": scanned}
    return {"keys": keys, "stop": None, "scanned": scanned}


def route_peer_verbs(node: Node, sync: dict[str, Any], tasks: dict[str, Any]) -> None:
    """The multi-key peer verbs of a shard: answered inline when every key is this shard's,
    else split, the sibling shards' parts sent to them, and the answers put back in order."""
    layout = node.layout
    assert layout is not None

    mine = partial(_all_mine, layout)
    for verb in MULTI_KEY_VERBS:
        inline, task = sync.get(verb), tasks.get(verb)
        local = task if task is not None else inline
        if local is None:
            continue
        if inline is not None:
            sync[verb] = partial(_inline_if_mine, mine, inline)
        tasks[verb] = partial(_split_items, node, verb, mine, local)


def _all_mine(layout: ShardLayout, body: Any) -> bool:
    return all(
        shard_of(key_hash(bytes(item[0])), layout.count) == layout.index for item in body["items"]
    )


async def replicate_batch_here(node: Node, body: dict[str, Any]) -> int:
    """Records this node holds (``replicate_batch``), each written by the shard holding its
    key; how many were applied."""
    layout, local = node.layout, node.coordinator.handle_replicate_batch
    if layout is None or layout.count == 1:
        return local(body)
    applied: int = await _split_items(
        node, "replicate_batch", partial(_all_mine, layout), local, body
    )
    return applied


def _inline_if_mine(mine: Any, inline: Any, body: Any) -> Any:
    return inline(body) if mine(body) else DEFER


async def _split_items(node: Node, verb: str, mine: Any, local: Any, body: Any) -> Any:
    layout = node.layout
    assert layout is not None

    async def run_local(part: Any) -> Any:
        result = local(part)
        return await result if asyncio.iscoroutine(result) else result

    if mine(body):
        return await run_local(body)
    by_shard: dict[int, list[int]] = {}
    items = body["items"]
    for i, item in enumerate(items):
        by_shard.setdefault(shard_of(key_hash(bytes(item[0])), layout.count), []).append(i)

    async def part(shard: int, indexes: list[int]) -> Any:
        sub = {**body, "items": [items[i] for i in indexes]}
        if shard == layout.index:
            return await run_local(sub)
        return await to_sibling(node.messaging, layout.peer_address_of(shard), verb, sub,
                                            node.config.request_timeout * 2 + 1.0)  # fmt: skip

    parts = list(by_shard.items())
    answers = await asyncio.gather(*(part(s, ix) for s, ix in parts))
    if all(isinstance(a, int) for a in answers):
        return sum(answers)  # how many applied
    out: list[Any] = [None] * len(items)
    for (_shard, indexes), answer in zip(parts, answers, strict=True):
        for i, one in zip(indexes, answer, strict=True):
            out[i] = one
    return out


def shard_status(node: Node) -> dict[str, Any]:
    """One shard's part of ``/v1/status``."""
    assert node.layout is not None and node.storage is not None
    membership = node.membership
    return {
        "shard": node.layout.index,
        "pid": os.getpid(),
        "ready": node.membership.ready,
        "in_flight": node.in_flight,
        "keys": node.storage.approximate_keys(),
        "bytes": node.storage.approximate_bytes(),
        "hints_pending": node.hints.total_pending(),
        "hints_by_target": dict(node.hints.pending),
        "anti_entropy_rounds": node.anti_entropy.completed_rounds,
        # how old the view a follower copies from shard 0 is (shard 0 holds its own)
        "view_age_seconds": round(time.monotonic() - membership.followed_at, 3)
        if isinstance(membership, FollowerMembership)
        else 0.0,
        "ring_version": membership.ring.version,
        "future_ring_version": membership.future_ring.version,
        "members_down": sorted(n for n in membership.gossiper.states if not membership.is_alive(n)),
    }


async def metrics_of_shards(node: Node) -> bytes:
    """``/metrics`` of a node of several shards: every shard's samples, each with a ``shard``
    label (a node's total is the sum over its shards)."""
    layout = node.layout
    assert layout is not None

    async def ask(shard: int) -> bytes:
        if shard == layout.index:
            return status_api.metrics_text(node)
        try:
            return bytes(await to_sibling(node.messaging, layout.peer_address_of(shard),
                                                      METRICS_VERB, {}, 5.0))  # fmt: skip
        except PeerError:
            return b""  # a missing shard: its samples are absent (readiness says why)

    texts = await asyncio.gather(*(ask(i) for i in range(layout.count)))
    return labelled_metrics([t.decode() for t in texts]).encode()


def labelled_metrics(texts: Sequence[str]) -> str:
    """Prometheus texts of the shards (by index) merged into one, each sample labelled with
    its shard; a family's samples stay together under one HELP and TYPE."""
    families: dict[str, tuple[str, str, list[str]]] = {}
    for shard, text in enumerate(texts):
        for family in text_string_to_metric_families(text):
            entry = families.setdefault(family.name, (family.type, family.documentation, []))
            for sample in family.samples:
                labels = {**sample.labels, "shard": str(shard)}
                rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                value = floatToGoString(sample.value)  # type: ignore[no-untyped-call]
                entry[2].append(f"{sample.name}{{{rendered}}} {value}")
    lines = []
    for name, (kind, documentation, samples) in families.items():
        if kind == "counter":
            name += "_total"  # as prometheus_client writes a counter's family
        lines.append(f"# HELP {name} {_escape_help(documentation)}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples)
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


async def tree_roots(node: Node) -> list[dict[str, Any]]:
    """This shard's Merkle tree roots (each shard keeps trees for its pieces of the ranges)."""
    node.anti_entropy.ensure_current()
    await node.anti_entropy.build_pending()
    return node.anti_entropy.tree_roots()


async def tree_roots_of_shards(node: Node) -> list[dict[str, Any]]:
    """Every shard's tree roots, for ``/v1/anti-entropy/trees`` of a node with shards."""
    layout = node.layout
    assert layout is not None

    async def ask(shard: int) -> list[dict[str, Any]]:
        if shard == layout.index:
            return await tree_roots(node)
        return list(await to_sibling(node.messaging, layout.peer_address_of(shard), TREES_VERB,
                                                 {}, 10.0))  # fmt: skip

    return [row for rows in await asyncio.gather(*map(ask, range(layout.count))) for row in rows]


async def status_of_shards(node: Node) -> dict[str, Any]:
    """Every shard's status and the totals, for ``/v1/status`` of a node with shards."""
    layout = node.layout
    assert layout is not None

    async def ask(shard: int) -> dict[str, Any]:
        if shard == layout.index:
            return shard_status(node)
        try:
            return dict(await to_sibling(node.messaging, layout.peer_address_of(shard),
                                                     STATUS_VERB, {}, 1.0))  # fmt: skip
        except PeerError as exc:
            return {"shard": shard, "ready": False, "error": str(exc)}

    rows = list(await asyncio.gather(*(ask(i) for i in range(layout.count))))
    totals = {
        name: sum(int(r.get(name, 0)) for r in rows)
        for name in ("in_flight", "keys", "bytes", "hints_pending", "anti_entropy_rounds")
    }
    return {"count": layout.count, "rule": SHARD_RULE, "per_shard": rows, "totals": totals}
