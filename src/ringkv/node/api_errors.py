"""Errors as HTTP answers: ``ApiError`` (status, code, message and extra fields of the
documented JSON error body) and the translation of request failures (the table in
``ringkv.core.errors``) into it (``api_error``, ``_call``), shared by every handler module;
``json_object``, a request's JSON object body or the 400 that refuses it."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from ringkv.core.errors import RequestFailure, to_http
from ringkv.node.http import Request


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


#: Every failure of the table in ``core.errors`` (the four write errors, a failed condition...).
_WRITE_ERRORS = (RequestFailure,)


def api_error(exc: Exception) -> ApiError:
    """The answer for a request (or one key of a batch) that failed with ``exc``."""
    status, code, message, extra = to_http(exc)
    return ApiError(status, code, message, **extra)


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
