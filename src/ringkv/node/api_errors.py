"""Errors as HTTP answers: ``ApiError`` (status, code, message and extra fields of the
documented JSON error body) and the translation of the coordinator's and storage's exceptions
into it (``api_error``, ``_call``), shared by every handler module; ``json_object``, a
request's JSON object body or the 400 that refuses it."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from ringkv.core.conditions import PRECONDITION_FAILED
from ringkv.core.versions import encode_context
from ringkv.node.conditional import PreconditionFailed
from ringkv.node.coordinator import QuorumTimeout, TooManySiblings, Unavailable
from ringkv.node.http import Request
from ringkv.node.storage import StorageFull


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


_WRITE_ERRORS = (PreconditionFailed, TooManySiblings, StorageFull, Unavailable, QuorumTimeout)


def api_error(exc: Exception) -> ApiError:
    """The answer for a request (or one key of a batch) that failed with ``exc``."""
    if isinstance(exc, PreconditionFailed):
        return ApiError(412, PRECONDITION_FAILED, str(exc), context=encode_context(exc.seen))
    if isinstance(exc, TooManySiblings):
        return ApiError(409, "too_many_siblings", str(exc), siblings=exc.count, limit=exc.limit)
    if isinstance(exc, StorageFull):
        return ApiError(507, "insufficient_storage", "the node's disk is full; nothing was written")
    if isinstance(exc, Unavailable):
        return ApiError(503, "unavailable", str(exc), required=exc.required, alive=exc.alive)
    if isinstance(exc, QuorumTimeout):
        return ApiError(504, "timeout", str(exc), required=exc.required, acks=exc.acks)
    raise exc


async def _call(awaitable: Awaitable[Any]) -> Any:
    try:
        return await awaitable
    except _WRITE_ERRORS as exc:
        raise api_error(exc) from None


def json_object(request: Request, message: str) -> dict[str, Any]:
    """The request's body as a JSON object, or a 400 ``bad_request`` with ``message``."""
    try:
        body = request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", message) from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", message)
    return body
