"""Every bad input gets a clear JSON error, never a 500, and never changes stored data."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from urllib.parse import quote

import msgpack
import pytest

from tests.cluster import Cluster, wait_until

SENTINEL = "sentinel"
SENTINEL_VALUE = b"precious \x00 bytes"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("api-errors"), extra_args=["--max-value-bytes", "65536"]
    ).start()
    c.client(0).put(SENTINEL, SENTINEL_VALUE)
    yield c
    c.stop()


def request(
    cluster: Cluster,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    node: int = 0,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.node(node).port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def assert_error(
    result: tuple[int, dict[str, str], bytes], status: int, code: str
) -> dict[str, object]:
    got_status, headers, body = result
    assert got_status == status, (got_status, body)
    assert headers.get("Content-Type", "").startswith("application/json")
    document = json.loads(body)
    assert document["error"] == code, document
    assert isinstance(document["message"], str) and document["message"]
    return document  # type: ignore[no-any-return]


def assert_unchanged(cluster: Cluster, untouched_key: str | None = None) -> None:
    for i in range(3):
        got = cluster.client(i).get(SENTINEL, r="all")
        assert got.value == SENTINEL_VALUE and got.siblings == [SENTINEL_VALUE]
    if untouched_key is not None:
        assert not cluster.client(1).get(untouched_key, r="all").found


def test_empty_key(cluster: Cluster) -> None:
    for method in ("GET", "PUT", "DELETE"):
        assert_error(request(cluster, method, "/v1/kv/", b"x"), 400, "bad_request")
    assert_unchanged(cluster)


def test_key_length_limit_is_256_bytes_after_decoding(cluster: Cluster) -> None:
    longest = "é" * 128  # 256 bytes in UTF-8, 768 characters percent-encoded
    assert request(cluster, "PUT", "/v1/kv/" + quote(longest), b"ok")[0] == 204
    assert request(cluster, "GET", "/v1/kv/" + quote(longest))[2] == b"ok"
    too_long = quote("k" * 257)
    for method in ("GET", "PUT", "DELETE"):
        assert_error(request(cluster, method, "/v1/kv/" + too_long, b"x"), 414, "key_too_long")
    assert not cluster.client(0).get("k" * 256).found
    assert_unchanged(cluster)


def test_any_bytes_work_as_a_key(cluster: Cluster) -> None:
    for key in (b"a/b", b"\x00\xff\xfe", b"%2F", b" spaced ?&=#", "ключ".encode()):
        path = "/v1/kv/" + quote(key, safe="")
        assert request(cluster, "PUT", path, key + b"-value")[0] == 204
        status, _, body = request(cluster, "GET", path, node=2)
        assert (status, body) == (200, key + b"-value"), key
    # "%2F" and "/" are different keys
    assert request(cluster, "GET", "/v1/kv/" + quote(b"a/b", safe=""))[2] == b"a/b-value"


def test_value_too_large(cluster: Cluster) -> None:
    assert request(cluster, "PUT", "/v1/kv/big-ok", b"v" * 65536)[0] == 204
    assert_error(request(cluster, "PUT", "/v1/kv/big", b"v" * 65537), 413, "value_too_large")

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"v" * 1024

    conn = http.client.HTTPConnection("127.0.0.1", cluster.node(1).port, timeout=10)
    conn.request("PUT", "/v1/kv/big", body=chunks(), encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"] == "value_too_large"
    conn.close()
    assert_unchanged(cluster, "big")


@pytest.mark.parametrize(
    "context",
    [
        "!!!not-base64!!!",
        base64.urlsafe_b64encode(b"\xc1\xc1\xc1 garbage").decode(),
        base64.urlsafe_b64encode(msgpack.packb([1, 2, 3])).decode(),
        base64.urlsafe_b64encode(msgpack.packb({"a": "b"})).decode(),
        base64.urlsafe_b64encode(msgpack.packb({"a": [-1, 0]})).decode(),
        base64.urlsafe_b64encode(msgpack.packb({"": [1, 0]})).decode(),
        "A" * 20000,
    ],
    ids=["not-base64", "not-msgpack", "list", "bad-entry", "negative", "empty-actor", "huge"],
)
def test_malformed_context(cluster: Cluster, context: str) -> None:
    for method in ("PUT", "DELETE"):
        result = request(
            cluster, method, "/v1/kv/" + SENTINEL, b"overwrite", {"X-Ringkv-Context": context}
        )
        assert_error(result, 400, "bad_request")
    assert_unchanged(cluster)


@pytest.mark.parametrize(
    ("method", "query"),
    [
        ("GET", "r=0"),
        ("GET", "r=4"),
        ("GET", "r=-1"),
        ("GET", "r=most"),
        ("GET", "consistency=linearizable"),
        ("GET", "r=one&consistency=eventual"),
        ("GET", "w=one"),
        ("GET", "r=one&r=all"),
        ("GET", "strict=maybe"),
        ("GET", "consistency=strong&strict=false"),
        ("GET", "color=blue"),
        ("PUT", "w=0"),
        ("PUT", "w=4"),
        ("PUT", "r=one"),
        ("PUT", "w=all&consistency=strong"),
        ("DELETE", "w=twelve"),
        ("DELETE", "consistency="),
    ],
)
def test_bad_parameters(cluster: Cluster, method: str, query: str) -> None:
    assert_error(request(cluster, method, f"/v1/kv/{SENTINEL}?{query}", b"x"), 400, "bad_request")
    assert_unchanged(cluster)


def test_unknown_endpoint_and_method(cluster: Cluster) -> None:
    assert_error(request(cluster, "GET", "/v2/nothing"), 404, "not_found")
    assert_error(request(cluster, "POST", "/v1/kv/" + SENTINEL, b"x"), 405, "method_not_allowed")
    assert_unchanged(cluster)


def test_absent_key_is_404_json(cluster: Cluster) -> None:
    assert_error(request(cluster, "GET", "/v1/kv/never-written"), 404, "not_found")


def test_health_and_status_after_all_that(cluster: Cluster) -> None:
    for i in range(3):
        assert request(cluster, "GET", "/health/live", node=i)[0] == 200
        assert request(cluster, "GET", "/health/ready", node=i)[0] == 200
        status = json.loads(request(cluster, "GET", "/v1/status", node=i)[2])
        assert status["node"]["id"] == f"n{i + 1}"
        assert len(status["members"]) == 3
    metrics = request(cluster, "GET", "/metrics")[2].decode()
    assert "ringkv_requests_total" in metrics
    assert 'outcome="400"' in metrics
    assert 'outcome="500"' not in metrics


def test_timeout_504_when_a_replica_hangs(tmp_path_factory: pytest.TempPathFactory) -> None:
    # A huge phi threshold keeps the paused node "alive", so the write is attempted and times out.
    c = Cluster(
        tmp_path_factory.mktemp("timeout"),
        extra_args=["--phi-threshold", "1000000", "--request-timeout", "0.5"],
    ).start()
    try:
        c.node(2).pause()
        document = assert_error(request(c, "PUT", "/v1/kv/t?w=all", b"v"), 504, "timeout")
        assert document["required"] == 3 and document["acks"] == 2
        # quorum still works
        assert request(c, "PUT", "/v1/kv/t2?w=quorum", b"v")[0] == 204
        c.node(2).resume()
        wait_until(lambda: c.client(0).get("t2", r="all").found, 10, message="n3 answers again")
    finally:
        c.stop()
