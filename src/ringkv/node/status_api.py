"""The node's own endpoints: probes (``/health/live``, ``/health/ready``), ``/v1/status``,
``/v1/ring``, ``/v1/anti-entropy/trees`` and ``/metrics``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import ringkv
from ringkv.node import shards, snapshot_api
from ringkv.node.http import Request, Response, error_response, json_response

if TYPE_CHECKING:
    from ringkv.node.node import Node


def status_of(node: Node) -> dict[str, Any]:
    """The ``/v1/status`` document: this node, the cluster's settings, members and progress."""
    members = node.membership.members()
    zones: dict[str, list[str]] = {}
    for member in members:
        zones.setdefault(str(member["zone"]), []).append(member["id"])
    ring = node.membership.ring
    return {
        "node": {
            "id": node.config.node_id,
            "zone": node.config.zone,
            "address": node.config.address,
            "peer_address": node.config.peer_address,
            "incarnation": node.incarnation,
            "state": node.membership.status_of(node.config.node_id),
            "ready": node.membership.ready,
            "writes_refused": node.disk_guard.reason,
            "in_flight": node.in_flight,
            "version": ringkv.__version__,
            "uptime_seconds": round(time.monotonic() - node.started, 3),
        },
        "cluster": {
            "replication_factor": node.config.replication_factor,
            "conflict_mode": node.config.conflict_mode,
            "default_consistency": node.config.default_consistency,
            "vnodes": node.config.vnodes,
            "ring_version": ring.version,
            "ring_nodes": len(ring),
            "balance": round(ring.balance(), 4) if len(ring) else None,
        },
        "members": members,
        "zones": zones,
        "hints": {"pending": node.hints.total_pending(), "by_target": dict(node.hints.pending)},
        "anti_entropy": node.anti_entropy.status(),
        "changes": node.changes.cluster_progress(),
        "cleanup": node.cleanup.status(),
        "snapshots": snapshot_api.status_of(node),
    }


async def handle_live(node: Node, request: Request) -> Response:
    return json_response({"status": "live"})


async def handle_ready(node: Node, request: Request) -> Response:
    if node.disk_guard.reason:  # the Service sends clients elsewhere; reads still work here
        return error_response(507, "insufficient_storage", node.disk_guard.reason)
    if node.layout is not None:
        missing = await shards.missing_shards(node.layout, node.messaging, node.membership)
        if missing:
            return error_response(503, "not_ready", f"shards {missing} of this node are not "
                                  "running or not ready")  # fmt: skip
    if node.membership.ready:
        return json_response({"status": "ready", "ring_nodes": len(node.membership.ring)})
    return error_response(503, "not_ready", "the node has not joined a settled ring yet")


async def handle_status(node: Node, request: Request) -> Response:
    status = status_of(node)
    if node.layout is not None:
        status["shards"] = await shards.status_of_shards(node)
        # the node's hints are those of all its shards
        by_target: dict[str, int] = {}
        for row in status["shards"]["per_shard"]:
            for target, count in dict(row.get("hints_by_target") or {}).items():
                by_target[target] = by_target.get(target, 0) + int(count)
        status["hints"] = {"pending": sum(by_target.values()), "by_target": by_target}
    return json_response(status)


async def handle_ring(node: Node, request: Request) -> Response:
    ring = node.membership.ring
    nodes = []
    for member in node.membership.members():
        state = node.membership.gossiper.states.get(member["id"])
        nodes.append({**member, "tokens": [str(t) for t in ring.tokens_of(member["id"])]
                      if member["id"] in ring else [],
                      **shards.ring_document(state)})  # fmt: skip
    return json_response(
        {
            "version": ring.version,
            "replication_factor": node.config.replication_factor,
            "hash": "blake2b-64",
            "nodes": nodes,
        }
    )


async def handle_trees(node: Node, request: Request) -> Response:
    """The Merkle tree roots of every range this node replicates (for operators and tests)."""
    if node.layout is not None:
        ranges = await shards.tree_roots_of_shards(node)
    else:
        node.anti_entropy.ensure_current()
        await node.anti_entropy.build_pending()
        ranges = node.anti_entropy.tree_roots()
    return json_response({"node": node.config.node_id, "ranges": ranges})


def metrics_text(node: Node) -> bytes:
    """This process's metrics in Prometheus text format."""
    members = node.membership.members()
    alive = sum(1 for m in members if m["alive"])
    node.metrics.members.labels("true").set(alive)
    node.metrics.members.labels("false").set(len(members) - alive)
    return generate_latest(node.metrics.registry)


async def handle_metrics(node: Node, request: Request) -> Response:
    if node.layout is not None:
        return Response(200, await shards.metrics_of_shards(node), (), CONTENT_TYPE_LATEST)
    return Response(200, metrics_text(node), (), CONTENT_TYPE_LATEST)
