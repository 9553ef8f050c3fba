"""Snapshot and restore endpoints (admin role to change anything, read role to look):

- ``POST /v1/admin/snapshot`` ``{"name": optional}``: checkpoint this node's database
  (``ringkv.node.snapshots``); ``201`` with the snapshot's description. A node of several
  shards checkpoints every shard's database under that name (``take_part`` in each shard's
  process) and shows them as one snapshot (``shards``; files ``shard-I/<path>``).
- ``GET /v1/admin/snapshots``: this node's snapshots and their disk use.
- ``GET /v1/admin/snapshots/{name}``: one snapshot, with every file's size and SHA-256.
- ``GET /v1/admin/snapshots/{name}/files/{path}?offset=&length=``: a file's bytes (at most
  ``MAX_READ`` per request), for a backup to copy out.
- ``DELETE /v1/admin/snapshots/{name}``: delete it.
- ``POST /v1/admin/restore`` (``application/msgpack`` ``{"items": [[key, [version...]]...]}``,
  versions in the peer wire form): write backed-up records through the ring. Each record goes
  to every replica of its key on the current ring (and the pending replicas of a ring change),
  which merge it with what they hold exactly as anti-entropy does: clocks and siblings are
  kept, tombstones delete what they cover, and a newer version is never overwritten. The batch
  is refused (``503``, nothing new is acknowledged) unless every replica is up; resending it is
  harmless (merging is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import msgpack
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ringkv.core.versions import MalformedRecord, Version, version_from_wire, version_to_wire
from ringkv.node import shards
from ringkv.node.api_errors import ApiError
from ringkv.node.http import Request, Response, Router, json_response
from ringkv.node.messaging import PeerError
from ringkv.node.snapshots import ShardedSnapshots, SnapshotError, Snapshots

if TYPE_CHECKING:
    from ringkv.node.node import Node

SNAPSHOT_PATH = "/v1/admin/snapshot"
SNAPSHOTS_PREFIX = "/v1/admin/snapshots"
RESTORE_PATH = "/v1/admin/restore"
#: The most one file read answers. The event loop writes the answer out, and a large one
#: keeps it busy (and the backup reading it bursty): 1 MiB kept a quorum workload's p99
#: lower than 8 MiB beside throttled backups.
MAX_READ = 1024 * 1024
MSGPACK = "application/msgpack"


#: How long a shard may take to checkpoint its part of a snapshot (a memtable flush).
PART_TIMEOUT = 60.0


def snapshots_of(node: Node) -> Snapshots | ShardedSnapshots:
    """This node's snapshots: of its database, or (shard 0 of a node of several shards, which
    answers the node's admin requests) of every shard's."""
    found: Snapshots | ShardedSnapshots | None = getattr(node, "_snapshots", None)
    if found is None:
        layout = node.layout
        if layout is not None and layout.count > 1 and layout.index == 0:
            found = ShardedSnapshots(
                [shards.shard_data_dir(layout.data_dir, i) for i in range(layout.count)]
            )
        else:
            found = Snapshots(node.config.data_dir)
        node._snapshots = found  # type: ignore[attr-defined]
    return found


def _own(node: Node) -> Snapshots:
    """The snapshots of this process's own database."""
    snaps = snapshots_of(node)
    return snaps.shards[0] if isinstance(snaps, ShardedSnapshots) else snaps


async def take_part(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    """``shard_snapshot``: checkpoint this shard's database as its part of the node's
    snapshot; the description, or the error that refused it."""
    if node.storage is None:
        return {"error": [503, "unavailable", "the shard is starting"]}
    try:
        return await asyncio.to_thread(
            _own(node).create, node.storage, str(body["name"]), dict(body["info"])
        )
    except SnapshotError as exc:
        return {"error": [exc.status, exc.code, exc.message]}


async def _run(call: Any, *args: Any) -> Any:
    """File work off the event loop; a ``SnapshotError`` becomes the API's error answer."""
    try:
        return await asyncio.to_thread(call, *args)
    except SnapshotError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


async def handle_create(node: Node, request: Request) -> Response:
    try:
        body = request.json() if request.body else {}
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "body must be a JSON object") from None
    if not isinstance(body, dict) or set(body) - {"name"}:
        raise ApiError(400, "bad_request", 'body must be {} or {"name": "..."}')
    storage = node.storage
    if storage is None:
        raise ApiError(503, "unavailable", "the node is starting")
    ring = node.membership.ring
    me = node.config.node_id
    now = time.time()
    name = body.get("name") or time.strftime("snap-%Y%m%dT%H%M%S", time.gmtime(now)) + (
        f"-{int(now * 1000) % 1000:03d}"
    )
    info = {
        "node": me,
        "zone": node.config.zone,
        "ring_version": ring.version,
        "tokens": [str(t) for t in ring.tokens_of(me)] if me in ring else [],
        "replication_factor": node.config.replication_factor,
        "conflict_mode": node.config.conflict_mode,
    }
    snaps = snapshots_of(node)
    if isinstance(snaps, Snapshots):
        return json_response(await _run(snaps.create, storage, name, info), 201)
    return json_response(await _create_every_part(node, snaps, name, info), 201)


async def _create_every_part(
    node: Node, snaps: ShardedSnapshots, name: str, info: dict[str, Any]
) -> dict[str, Any]:
    """Every shard checkpoints its part at once; if one cannot, none is kept."""
    layout = node.layout
    assert layout is not None
    if await _run(snaps.exists_anywhere, name):  # (a bad name is refused here)
        raise ApiError(409, "conflict", f"snapshot {name!r} already exists")
    body = {"name": name, "info": info}

    async def part(shard: int) -> dict[str, Any]:
        if shard == layout.index:
            return await take_part(node, body)
        address = layout.peer_address_of(shard)
        try:
            answer = await shards.to_sibling(
                node.messaging, address, shards.SNAPSHOT_VERB, body, PART_TIMEOUT
            )
        except PeerError as exc:
            return {"error": [503, "unavailable", f"not running or not answering ({exc})"]}
        return dict(answer)

    answers = await asyncio.gather(*(part(i) for i in range(layout.count)))
    failed = [(i, a["error"]) for i, a in enumerate(answers) if "error" in a]
    if failed:
        with contextlib.suppress(SnapshotError):
            await asyncio.to_thread(snaps.delete, name)
        status, code, _ = failed[0][1]
        reasons = "; ".join(f"shard {i}: {error[2]}" for i, error in failed)
        raise ApiError(status, code, f"snapshot {name!r} not taken: {reasons}")
    described: dict[str, Any] = await _run(snaps.describe, name)
    return described


async def handle_list(node: Node, request: Request) -> Response:
    listed = await _run(snapshots_of(node).list)
    return json_response(
        {
            "node": node.config.node_id,
            "snapshots": listed,
            "bytes": sum(s["bytes"] for s in listed),
            "exclusive_bytes": sum(s["exclusive_bytes"] for s in listed),
        }
    )


def _query(request: Request) -> dict[str, int]:
    out = {}
    for name, raw in parse_qsl(request.query_string, keep_blank_values=True):
        if name not in ("offset", "length"):
            raise ApiError(400, "bad_request", f"unknown parameter {name!r}")
        if not raw.isdigit():
            raise ApiError(400, "bad_request", f"{name} must be a non-negative integer")
        out[name] = int(raw)
    return out


async def handle_snapshot(node: Node, request: Request) -> Response:
    """GET or DELETE /v1/admin/snapshots/{name}, GET .../{name}/files/{path}."""
    rest = request.path[len(SNAPSHOTS_PREFIX) + 1 :]
    name, _, tail = rest.partition("/")
    name = unquote(name)
    snaps = snapshots_of(node)
    if request.method == "DELETE":
        if tail:
            raise ApiError(404, "not_found", "DELETE /v1/admin/snapshots/{name}")
        await _run(snaps.delete, name)
        return json_response({"deleted": name})
    if not tail:
        return json_response(await _run(snaps.describe, name, True))
    if not tail.startswith("files/"):
        raise ApiError(404, "not_found", f"no such endpoint: {request.path}")
    query = _query(request)
    length = min(query.get("length", MAX_READ), MAX_READ)
    data, size = await _run(snaps.read, name, unquote(tail[6:]), query.get("offset", 0), length)
    return Response(200, data, [("X-File-Size", str(size))], "application/octet-stream")


def _records(request: Request) -> list[tuple[bytes, list[Version]]]:
    try:
        body = msgpack.unpackb(request.body, raw=False, strict_map_key=True)
    except Exception:
        raise ApiError(400, "bad_request", "the body must be msgpack") from None
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise ApiError(400, "bad_request", 'the body must be {"items": [[key, versions], ...]}')
    out = []
    for i, item in enumerate(items):
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], bytes)
            and item[0]
            and isinstance(item[1], list)
            and item[1]
        ):
            raise ApiError(400, "bad_request", f"item {i} must be [key bytes, [version, ...]]")
        try:
            out.append((item[0], [version_from_wire(v) for v in item[1]]))
        except MalformedRecord as exc:
            raise ApiError(400, "bad_request", f"item {i}: {exc}") from None
    return out


async def handle_restore(node: Node, request: Request) -> Response:
    """POST /v1/admin/restore: merge backed-up records into every replica of their keys."""
    records = _records(request)
    coordinator = node.coordinator
    by_node: dict[str, list[tuple[bytes, list[Version]]]] = {}
    for key, versions in records:
        primaries, live, pending = coordinator.targets(key, strict=True)
        up = {r.node for r in live}
        down = [r.node for r in primaries if r.node not in up]
        down += [r.node for r in pending if not node.membership.is_alive(r.node)]
        if not primaries or down:
            raise ApiError(
                503,
                "unavailable",
                f"every replica must be up to restore; down: {sorted(set(down))}",
            )
        for replica in (*primaries, *pending):
            by_node.setdefault(replica.node, []).append((key, versions))
    me = node.config.node_id
    applied = 0
    if me in by_node:
        wire = [[k, [version_to_wire(v) for v in vs]] for k, vs in by_node.pop(me)]
        applied = await shards.replicate_batch_here(node, {"items": wire})
    sends = [coordinator.send_records(n, items) for n, items in by_node.items()]
    results = await asyncio.gather(*sends, return_exceptions=True)
    failed = [n for n, r in zip(by_node, results, strict=True) if isinstance(r, BaseException)]
    if failed:
        raise ApiError(503, "unavailable", f"replicas did not acknowledge: {sorted(failed)}")
    return json_response(
        {"records": len(records), "applied_here": applied, "replicas": sorted({me, *by_node})}
    )


class _SnapshotCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterable[GaugeMetricFamily]:
        # Each shard its own part, so that the node's bytes are the sum over ``shard``; the
        # count is the node's, from shard 0 alone (the others say 0), so that it adds up too.
        count, size, exclusive = _own(self.node).usage()
        layout = self.node.layout
        if layout is not None and layout.count > 1:
            count = len(snapshots_of(self.node).names()) if layout.index == 0 else 0
        yield GaugeMetricFamily(
            "ringkv_snapshots",
            "Snapshots this node keeps (with shards: counted by shard 0, 0 on the others)",
            value=count,
        )
        yield GaugeMetricFamily(
            "ringkv_snapshot_bytes", "Size of every file of this node's snapshots", value=size
        )
        yield GaugeMetricFamily(
            "ringkv_snapshot_exclusive_bytes",
            "Bytes only the snapshots hold (what deleting them frees)",
            value=exclusive,
        )


def status_of(node: Node) -> dict[str, int]:
    """The ``snapshots`` part of ``/v1/status``."""
    count, size, exclusive = snapshots_of(node).usage()
    return {"count": count, "bytes": size, "exclusive_bytes": exclusive}


def install(router: Router, node: Node) -> None:
    """Add the routes (before the generic ``/v1/admin/`` prefix) and the metrics."""
    from functools import partial

    router.add("POST", SNAPSHOT_PATH, partial(handle_create, node))
    router.add("GET", SNAPSHOTS_PREFIX, partial(handle_list, node))
    router.add("POST", RESTORE_PATH, partial(handle_restore, node))
    for method in ("GET", "DELETE"):
        router.add_prefix(method, SNAPSHOTS_PREFIX + "/", partial(handle_snapshot, node))
    node.metrics.registry.register(_SnapshotCollector(node))
