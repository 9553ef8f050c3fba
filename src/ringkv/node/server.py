"""Server: the node's HTTP API, the routes and what wraps every handler call.

``Api`` maps each documented endpoint to its handler (``kv_api``, ``batch_api``, ``keys_api``,
``status_api``, ``admin_api``, ``snapshot_api``; each takes ``(node, request)``) and wraps
every call with authentication, the overload limit and the JSON error answer. It serves for
a ``Node`` (``ringkv.node.node``), which owns it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

from ringkv.core.versions import MAX_CONTEXT_CHARS
from ringkv.node import admin_api, batch_api, keys_api, shards, snapshot_api, status_api
from ringkv.node.admin_api import ADMIN_PREFIX
from ringkv.node.api_errors import ApiError
from ringkv.node.auth import METRICS_ROLE
from ringkv.node.http import Handler, HttpServer, Request, Response, Router, error_response
from ringkv.node.kv_api import KV_PREFIX, handle_delete, handle_get, handle_put
from ringkv.node.logs import REQUEST_ID, REQUEST_ID_HEADER, request_id_of
from ringkv.node.shard_channel import ShardChannel

if TYPE_CHECKING:
    from ringkv.node.node import Node

#: A handler before it is bound to its node: ``(node, request) -> response``.
NodeHandler = Callable[["Node", Request], Awaitable[Response]]

BATCH_PREFIX = "/v1/batch/"
BATCH_GET = BATCH_PREFIX + "get"
_REQUEST_ID = REQUEST_ID_HEADER.lower()


def required_role(request: Request) -> str | None:
    """The role a request needs (None: open, for probes)."""
    path = request.path
    if path.startswith("/health/"):
        return None
    if path == "/metrics":
        return METRICS_ROLE
    if path.startswith(ADMIN_PREFIX):
        return "read" if request.method == "GET" else "admin"
    if path.startswith(KV_PREFIX) and request.method not in ("GET", "HEAD"):
        return "readwrite"
    if path.startswith(BATCH_PREFIX) and path != BATCH_GET:
        return "readwrite"
    return "read"


def _check_access(request: Request, node: Node) -> Response | None:
    """An error response when the request may not proceed (auth), else None."""
    tokens = node.tokens
    needed = required_role(request) if tokens is not None else None
    if tokens is not None and needed is not None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            node.metrics.rejected.labels("unauthenticated").inc()
            return error_response(
                401, "unauthorized", "a bearer token is required (Authorization: Bearer ...)",
            )  # fmt: skip
        principal = tokens.authenticate(token.strip())
        if principal is None:
            node.metrics.rejected.labels("unauthenticated").inc()
            return error_response(401, "unauthorized", "the bearer token is not valid")
        if not principal.allows(needed):
            node.metrics.rejected.labels("forbidden").inc()
            return error_response(
                403, "forbidden", f"{principal.name} has role {principal.role}; this needs {needed}"
            )
    return None


def routes() -> list[tuple[str, str, NodeHandler]]:
    """Every exact route: (method, path, handler taking (node, request))."""
    return [
        ("GET", "/health/live", status_api.handle_live),
        ("GET", "/health/ready", status_api.handle_ready),
        ("GET", "/v1/status", status_api.handle_status),
        ("GET", "/v1/ring", status_api.handle_ring),
        ("GET", "/v1/anti-entropy/trees", status_api.handle_trees),
        ("GET", "/v1/admin/progress", admin_api.handle_progress),
        ("GET", "/metrics", status_api.handle_metrics),
        ("POST", "/v1/admin/plan", admin_api.handle_plan),
        ("POST", BATCH_GET, batch_api.handle_batch_get),
        ("POST", BATCH_PREFIX + "put", batch_api.handle_batch_put),
        ("POST", BATCH_PREFIX + "delete", batch_api.handle_batch_delete),
        ("GET", "/v1/keys", keys_api.handle_keys),
        ("POST", "/v1/admin/cleanup", admin_api.handle_cleanup),
    ]


class Api:
    """The node's HTTP API: the routes, and what wraps every handler call."""

    def __init__(self, node: Node) -> None:
        self.node = node
        config = node.config
        router = Router()
        key_routes: list[tuple[str, NodeHandler]] = [
            ("GET", handle_get), ("PUT", handle_put), ("DELETE", handle_delete),
        ]  # fmt: skip
        for method, handler in key_routes:
            router.add_prefix(method, KV_PREFIX, partial(handler, node))
        for method, path, route in routes():
            router.add(method, path, partial(route, node))
        snapshot_api.install(router, node)  # snapshots, restore (before the /v1/admin/ prefix)
        router.add_prefix("POST", ADMIN_PREFIX, partial(admin_api.handle_admin, node))
        self.router = router
        layout = node.layout
        # the shards of one node hand client requests to each other over a local channel
        self.channel = ShardChannel(self, layout.data_dir) if layout is not None else None
        self.server = HttpServer(
            router,
            # a shard of a node with several hands requests to the shard that serves them
            wrap=self.wrap if node.layout is None else partial(shards.route, self),
            max_body=config.max_value_bytes,
            # room for a 256-byte key percent-encoded and a context header up to
            # MAX_CONTEXT_CHARS, so oversized ones get our JSON error rather than the server's
            max_url=8190,
            max_header_bytes=2 * MAX_CONTEXT_CHARS + 16384,
            body_timeout=config.client_timeout,
            keepalive_timeout=75.0,  # idle keep-alive connections are closed after this
            max_connections=config.max_client_connections,
            on_refused=node.metrics.rejected.labels("connections").inc,
            divert=partial(shards.divert, self) if layout is not None else None,
        )

    async def wrap(self, request: Request, handler: Handler) -> Response:
        """Authentication, the overload limit and error answers."""
        node = self.node
        request_id = request_id_of(request.headers.get(_REQUEST_ID))
        token = REQUEST_ID.set(request_id) if request_id is not None else None
        try:
            refused = _check_access(request, node)
            if refused is not None:
                return refused
            if not request.path.startswith((KV_PREFIX, BATCH_PREFIX)):
                return await handler(request)  # status, metrics and admin work under overload
            limit = node.config.max_concurrent_requests
            if node.in_flight >= limit:
                node.metrics.rejected.labels("overloaded").inc()
                response = error_response(
                    503, "overloaded", f"{node.in_flight} requests in flight (limit {limit})"
                )
                response.headers.append(("Retry-After", "1"))
                return response
            node.in_flight += 1
            try:
                return await handler(request)
            finally:
                node.in_flight -= 1
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, **exc.extra)
        finally:
            if token is not None:
                REQUEST_ID.reset(token)
