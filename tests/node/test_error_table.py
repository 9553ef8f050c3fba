"""Every entry of the error table (ringkv.core.errors) through all four translations: exception
-> peer answer -> exception, and exception -> HTTP answer (as the node writes it) -> client
exception; and docs/api.md's error table agrees with it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import ringkv.client as client
from ringkv.core.errors import REASONS, RequestFailure, exception_class, from_peer, to_peer
from ringkv.core.versions import VClock
from ringkv.node.conditional import PreconditionFailed
from ringkv.node.http import error_response
from ringkv.node.server import api_error
from ringkv.node.storage import StorageFull

API = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()


def _example(code: str) -> RequestFailure:
    cls = exception_class(code)
    assert cls is not None, f"no exception declares {code!r}"
    if cls is StorageFull:
        return StorageFull(28, "storage cannot write: No space left on device")
    if cls is PreconditionFailed:
        exc = PreconditionFailed.from_fields("condition failed", {"context": ""})
        exc.seen = VClock({"n1.1": (3, 1700000000000)})
        return exc
    return cls(*range(2, 2 + len(cls.reason.fields)))  # type: ignore[arg-type]


RAISED = [r for r in REASONS if exception_class(r.code) is not None]


def test_http_only_reasons_are_the_bad_input_ones() -> None:
    assert {r.code for r in REASONS if exception_class(r.code) is None} == {
        "bad_request", "value_too_large", "key_too_long"}  # fmt: skip


@pytest.mark.parametrize("reason", RAISED, ids=lambda r: r.code)
def test_round_trip_through_peer_and_http(reason: object) -> None:
    exc = _example(reason.code)  # type: ignore[attr-defined]
    # exception -> peer answer -> exception
    back = from_peer(to_peer(exc))
    assert type(back) is type(exc)
    assert back.failure_fields() == exc.failure_fields()
    assert str(back) == str(exc)
    # exception -> HTTP answer -> client exception
    error = api_error(exc)
    response = error_response(error.status, error.code, error.message, **error.extra)
    raised = client.error_from_response(response.status, response.body)
    assert type(raised).__name__ == exc.reason.client
    assert (raised.status, raised.code) == (exc.reason.status, exc.reason.code)
    fields = exc.failure_fields()
    for name, http in zip(exc.reason.fields, exc.reason.http_fields, strict=True):
        assert raised.body[http] == fields[name]
    assert raised.message == (exc.reason.http_message or str(exc))


@pytest.mark.parametrize("reason", REASONS, ids=lambda r: r.code)
def test_http_answers_become_the_documented_client_exception(reason: object) -> None:
    body = json.dumps({"error": reason.code, "message": "m"}).encode()  # type: ignore[attr-defined]
    raised = client.error_from_response(reason.status, body)  # type: ignore[attr-defined]
    assert type(raised).__name__ == reason.client  # type: ignore[attr-defined]


@pytest.mark.parametrize("reason", REASONS, ids=lambda r: r.code)
def test_docs_error_table_matches(reason: object) -> None:
    code, status = reason.code, reason.status  # type: ignore[attr-defined]
    row = re.search(rf"^\| `{status}` \| `{code}` \|[^\n]*\|([^|\n]*)\|$", API, re.M)
    assert row is not None, f"docs/api.md has no row for {status} {code}"
    documented = re.findall(r"`(\w+)`", row.group(1))
    assert documented == list(reason.http_fields)  # type: ignore[attr-defined]
