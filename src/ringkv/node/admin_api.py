"""The ring-change endpoints under ``/v1/admin/``: ``POST /v1/admin/{join,decommission,replace,
remove,cancel}`` (start or cancel a change, on the node that drives it), ``POST
/v1/admin/plan`` (what a change would move), ``GET /v1/admin/progress`` and ``POST
/v1/admin/cleanup``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ringkv.node.api_errors import ApiError, json_object
from ringkv.node.http import Request, Response, json_response
from ringkv.node.messaging import PeerError
from ringkv.node.streaming import ChangeError

if TYPE_CHECKING:
    from ringkv.node.node import Node

ADMIN_PREFIX = "/v1/admin/"
ADMIN_ACTIONS = ("join", "decommission", "replace", "remove", "cancel")


def _admin_body(request: Request) -> dict[str, Any]:
    return json_object(request, "body must be a JSON object")


async def handle_admin(node: Node, request: Request) -> Response:
    """POST /v1/admin/{action} {"node": id}: start (or cancel) a ring change on that node."""
    action = request.path[len(ADMIN_PREFIX) :]
    if action not in ADMIN_ACTIONS:
        raise ApiError(404, "not_found", f"unknown admin action {action!r}")
    body = _admin_body(request)
    target = body.get("node")
    if action == "cancel" and target is None:
        running = [r for r in node.changes.cluster_progress() if r.get("state") == "running"]
        if not running:
            raise ApiError(409, "conflict", "no ring change is running")
        target = running[0]["driver"]
    if not isinstance(target, str) or not target:
        raise ApiError(400, "bad_request", 'body must name the node: {"node": "n4"}')
    # remove is driven by the node that receives it; everything else by the node itself
    driver = node.config.node_id if action == "remove" else target
    if driver == node.config.node_id:
        try:
            result = node.changes.request(action, target)
        except ChangeError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
    else:
        address = node.membership.address_of(driver)
        if address is None:
            raise ApiError(404, "unknown_node", f"no member named {driver!r}")
        try:
            result = await node.messaging.request(
                address, "admin", {"action": action, "node": target}, 10.0
            )
        except PeerError as exc:
            raise ApiError(503, "unavailable", f"{driver} did not answer: {exc}") from None
        if "error" in result:
            raise ApiError(int(result["status"]), result["error"], result["message"])
    return json_response(result, 202)


async def handle_plan(node: Node, request: Request) -> Response:
    """POST /v1/admin/plan {"op": ..., "node": id}: what a change would move (nothing runs)."""
    body = _admin_body(request)
    op, target = body.get("op"), body.get("node")
    if op not in ("join", "decommission", "replace", "remove"):
        raise ApiError(400, "bad_request", "op must be join, decommission, replace or remove")
    if not isinstance(target, str) or not target:
        raise ApiError(400, "bad_request", 'body must name the node: {"node": "n4"}')
    try:
        return json_response(await node.changes.describe(op, target))
    except ChangeError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


async def handle_progress(node: Node, request: Request) -> Response:
    return json_response(
        {
            "in_progress": node.membership.change_in_progress(),
            "changes": node.changes.cluster_progress(),
            # per-transfer detail of the change this node drives (the other drivers' detail is
            # on their own /v1/admin/progress)
            "transfers": node.changes.detail,
            # every ring member's cleanup of the ranges it gave away (ringkv.node.cleanup)
            "cleanup": node.cleanup.cluster_reports(),
            "cleanup_pending": node.cleanup.cluster_pending(),
        }
    )


async def handle_cleanup(node: Node, request: Request) -> Response:
    """POST /v1/admin/cleanup {"node": id} (or {} for every ring member): clean now."""
    body = _admin_body(request)
    target = body.get("node")
    if target is not None and (not isinstance(target, str) or not target):
        raise ApiError(400, "bad_request", 'node must be a node id: {"node": "n1"}')
    targets = [target] if target is not None else list(node.membership.ring.nodes)
    results = []
    for name in targets:
        if name == node.config.node_id:
            results.append(node.cleanup.request_run())
            continue
        address = node.membership.address_of(name)
        if address is None:
            raise ApiError(404, "unknown_node", f"no member named {name!r}")
        try:
            results.append(await node.messaging.request(address, "cleanup_run", {}, 10.0))
        except PeerError as exc:
            if target is not None:
                raise ApiError(503, "unavailable", f"{name} did not answer: {exc}") from None
            results.append({"accepted": False, "node": name, "error": str(exc)})
    return json_response({"nodes": results}, 202)
