"""Hostile input against a real 3-node cluster with auth and peer auth on, over raw sockets:
forged contexts, protocol upgrades, chunked trailers, deeply nested admin JSON and undecodable
peer frames. Each gets a clear 4xx (or, on the peer port, a closed connection), the node keeps
serving, and no stored value changes."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from ringkv.client import Client
from tests.cluster import Cluster, wait_until

WRITE = "w-token-0123456789abcdef"
ADMIN = "a-token-0123456789abcdef"
SENTINEL = "sentinel"
SENTINEL_VALUE = b"precious bytes"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("hardening")
    secret = tmp / "secret"
    secret.write_bytes(os.urandom(32).hex().encode())
    tokens = tmp / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [
        {"token": WRITE, "role": "readwrite", "name": "writer"},
        {"token": ADMIN, "role": "admin", "name": "ops"},
    ]}))  # fmt: skip
    old = os.environ.get("RINGKV_TOKEN")
    os.environ["RINGKV_TOKEN"] = ADMIN  # the harness's own status polling
    cluster = Cluster(
        tmp / "c",
        extra_args=["--cluster-secret-file", str(secret), "--auth-tokens-file", str(tokens)],
    ).start()
    Client(cluster.node(0).url, token=WRITE).put(SENTINEL, SENTINEL_VALUE, w="all")
    yield cluster
    cluster.stop()
    if old is None:
        os.environ.pop("RINGKV_TOKEN", None)
    else:
        os.environ["RINGKV_TOKEN"] = old


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to a node's client port; everything it answers until it closes (or goes
    quiet for a second after answering)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(1.0 if received else max(0.1, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
        return received


def answers(raw: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of every HTTP answer in ``raw``."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        out.append((status, rest[:length]))
        raw = rest[length:]
    return out


def read_value(cluster: Cluster, key: str, node: int = 0) -> bytes | None:
    result = Client(cluster.node(node).url, token=WRITE).get(key, r="all")
    return result.value if result.found else None


def assert_serving(cluster: Cluster) -> None:
    """Every node still reads the sentinel and takes a write (and its read-modify-write)."""
    for i in range(3):
        client = Client(cluster.node(i).url, token=WRITE)
        assert client.get(SENTINEL, r="all").value == SENTINEL_VALUE
        context = client.put(f"alive-{i}", b"yes")
        client.put(f"alive-{i}", b"still", context=context)  # the context it handed out decodes
        assert client.get(f"alive-{i}").value == b"still"


def put_request(key: str, body: bytes, *extra: str, token: str | None = WRITE) -> bytes:
    lines = [f"PUT /v1/kv/{key} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *extra]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def context_token(clock: dict[str, list[int]]) -> str:
    packed = msgpack.packb(clock, use_bin_type=True)
    return base64.urlsafe_b64encode(packed).rstrip(b"=").decode()


# -- 1: a forged context cannot move a node's clock --------------------------------------------


@pytest.mark.parametrize(
    "context",
    [
        "gaF4kgHPf_________8",  # {"x": [1, 2**63 - 1]}: the timestamp overflowed the HLC
        "gaF4kgHPAACAAAAAAAA",  # {"x": [1, 2**47]}: accepted, then spread an unusable clock
        "an hour ahead",
        "own actor's counter",
    ],
)
def test_forged_context_is_refused_and_the_clock_stays_sane(secured: Cluster, context: str) -> None:
    port = secured.node(0).port
    if context == "an hour ahead":
        context = context_token({"x": [1, int(time.time() * 1000) + 3600_000]})
    elif context == "own actor's counter":
        me = Client(secured.node(0).url, token=ADMIN).status()["node"]
        context = context_token({f"{me['id']}#{me['incarnation']}": [2**62, 1]})
    key = f"forged-{abs(hash(context))}"
    Client(secured.node(0).url, token=WRITE).put(key, b"before", w="all")
    got = answers(exchange(port, put_request(key, b"evil", f"X-Ringkv-Context: {context}")))
    assert got[0][0] == 400, got
    document = json.loads(got[0][1])
    assert document["error"] == "bad_request"
    assert "X-Ringkv-Context" in document["message"]
    for i in range(3):
        assert read_value(secured, key, i) == b"before"
    assert_serving(secured)


def test_context_clocks_a_node_hands_out_stay_within_the_bound(secured: Cluster) -> None:
    client = Client(secured.node(1).url, token=WRITE)
    context = client.put("bounded", b"v")
    clock = msgpack.unpackb(base64.urlsafe_b64decode(context + "=" * (-len(context) % 4)))
    now_ms = int(time.time() * 1000)
    for counter, ts in clock.values():
        assert ts <= now_ms + 5000
        assert counter <= (now_ms + 5000) << 16


# -- 2: an upgrade request is applied whole or not at all --------------------------------------


@pytest.mark.parametrize(
    "upgrade",
    [
        ("Connection: Upgrade", "Upgrade: h2c"),
        ("Connection: keep-alive", "Connection: Upgrade", "Upgrade: websocket"),
        ("Upgrade: h2c",),
    ],
)
def test_upgrade_request_changes_nothing(secured: Cluster, upgrade: tuple[str, ...]) -> None:
    key = f"upgrade-{len(upgrade)}-{upgrade[-1].split()[-1]}"
    Client(secured.node(0).url, token=WRITE).put(key, b"original", w="all")
    got = answers(exchange(secured.node(0).port, put_request(key, b"hi", *upgrade)))
    assert [status for status, _ in got] == [400], got
    assert json.loads(got[0][1])["error"] == "bad_request"
    for i in range(3):
        assert read_value(secured, key, i) == b"original"
    assert_serving(secured)


# -- 3: chunked trailers are never header fields -----------------------------------------------


def test_trailer_authorization_does_not_authenticate(secured: Cluster) -> None:
    request = (
        "PUT /v1/kv/trailer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Trailer: Authorization\r\n\r\n"
        f"4\r\nevil\r\n0\r\nAuthorization: Bearer {WRITE}\r\n\r\n"
    ).encode()
    got = answers(exchange(secured.node(0).port, request))
    assert got[0][0] == 401, got
    assert read_value(secured, "trailer") is None


def test_trailer_cannot_replace_a_header(secured: Cluster) -> None:
    """A trailer naming a header the head also has (here the context) changes nothing."""
    client = Client(secured.node(0).url, token=WRITE)
    client.put("trailer-ctx", b"one")
    client.put("trailer-ctx", b"two")  # blind: siblings "one" and "two"
    forged = "gaF4kgHPf_________8"
    request = (
        "PUT /v1/kv/trailer-ctx HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        f"Authorization: Bearer {WRITE}\r\n\r\n"
        f"5\r\nthree\r\n0\r\nX-Ringkv-Context: {forged}\r\n\r\n"
    ).encode()
    got = answers(exchange(secured.node(0).port, request))
    assert got[0][0] == 204, got  # the trailer's forged context was not read
    assert sorted(client.get("trailer-ctx", r="all").siblings) == [b"one", b"three", b"two"]


# -- 4: deeply nested JSON is a 400 ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/admin/plan", "/v1/admin/join", "/v1/admin/cancel"])
def test_deeply_nested_admin_json_is_a_400(secured: Cluster, path: str) -> None:
    body = b"[" * 5000
    request = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"Authorization: Bearer {ADMIN}\r\n\r\n"
    ).encode() + body
    got = answers(exchange(secured.node(0).port, request))
    assert got[0][0] == 400, got
    assert json.loads(got[0][1])["error"] == "bad_request"
    nested = b'{"op": "join", "node": ' + b'{"a": ' * 100 + b"1" + b"}" * 100 + b"}"
    request = (
        f"POST /v1/admin/plan HTTP/1.1\r\nHost: x\r\nContent-Length: {len(nested)}\r\n"
        f"Authorization: Bearer {ADMIN}\r\n\r\n"
    ).encode() + nested
    assert answers(exchange(secured.node(0).port, request))[0][0] == 400
    assert_serving(secured)


# -- 5: undecodable peer frames close the connection, quietly ----------------------------------


def _peer_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


@pytest.mark.parametrize(
    "payload",
    [
        bytes.fromhex("81910102"),  # a map keyed by a list
        bytes.fromhex("c1"),  # a reserved byte
        b"\x91" * 2000,  # nested arrays
        msgpack.packb([0, 0, "hello", {"node": ["x"], "nonce": {"a": 1}}]),  # wrong types
    ],
)
def test_undecodable_peer_frames_close_quietly(secured: Cluster, payload: bytes) -> None:
    node = secured.node(1)
    before = node.log_path.read_text()
    for _ in range(20):
        _peer_exchange(node.peer_port, struct.pack(">I", len(payload)) + payload)
    new_log = node.log_path.read_text()[len(before) :]
    assert "Traceback" not in new_log
    assert "ERROR" not in new_log
    assert new_log.count("peer") <= 2, new_log  # at most a rate-limited line or two

    def counted() -> float:
        request = urllib.request.Request(
            f"{node.url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("ringkv_refused_input_total") and 'source="peer"' in line
        )

    assert wait_until(lambda: counted() >= 20, 10, message="refused frames counted")
    assert_serving(secured)


def test_peer_connection_without_proof_cannot_write(secured: Cluster, tmp_path: Path) -> None:
    """After a hello without the secret, a replicate frame is never applied."""
    port = secured.node(2).peer_port

    def frame(kind: int, rid: int, verb: str, body: object) -> bytes:
        payload = msgpack.packb([kind, rid, verb, body], use_bin_type=True)
        return struct.pack(">I", len(payload)) + payload

    versions = [["evil#1", 1, {}, 1, b"injected"]]
    data = frame(0, 0, "hello", {"node": "n1", "nonce": os.urandom(16)})
    data += frame(0, 1, "replicate", {"key": SENTINEL.encode(), "versions": versions})
    _peer_exchange(port, data)
    assert read_value(secured, SENTINEL, 2) == SENTINEL_VALUE
