"""`Client` and `AsyncClient` behave the same: every case here runs once through each, against
real nodes on loopback (tests/cluster.py), and checks the same outcomes. The async client is
driven through `Blocking`, which runs each of its calls to completion on an event loop."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import shutil
import ssl
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ringkv.client import (
    AsyncClient,
    BadRequest,
    Client,
    ConnectionFailed,
    PreconditionFailed,
    RingView,
)
from ringkv.core.batching import MAX_BATCH_KEYS
from tests.cluster import Cluster, free_ports, wait_until
from tests.node.test_tls_names import make_ca, make_cert

Connect = Callable[..., Any]


class Blocking:
    """An `AsyncClient` behind blocking calls, so one scenario runs through both clients."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name == "iter_keys":

            async def collect(*args: Any, **kwargs: Any) -> list[bytes]:
                return [key async for key in attribute(*args, **kwargs)]

            return lambda *args, **kwargs: iter(self._run(collect(*args, **kwargs)))
        if inspect.iscoroutinefunction(attribute):
            return lambda *args, **kwargs: self._run(attribute(*args, **kwargs))
        return attribute

    def _run(self, coroutine: Any) -> Any:
        return self._loop.run_until_complete(coroutine)

    def close(self) -> None:
        self._run(self._client.close())
        self._loop.close()


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest) -> Iterator[Connect]:
    """connect(endpoints, **arguments): a `Client`, or an `AsyncClient` seen as blocking."""
    made: list[Any] = []

    def make(endpoints: Any, **kwargs: Any) -> Any:
        if request.param == "sync":
            client: Any = Client(endpoints, **kwargs)
        else:
            client = Blocking(AsyncClient(endpoints, **kwargs))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """Keys of their own for each case and client (the cluster is shared)."""
    return re.sub(r"\W", "-", request.node.name) + ":"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("parity"), nodes=3, zones=3, replication_factor=3)
    cluster.start()
    yield cluster
    cluster.stop()


def metric(url: str, name: str, context: ssl.SSLContext | None = None) -> float:
    text = urllib.request.urlopen(url + "/metrics", timeout=5, context=context).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


PUTS = 'ringkv_requests_total{op="put",outcome="204"}'


# --------------------------------------------------------------------------- key-value


def test_round_trip(shared: Cluster, connect: Connect, prefix: str) -> None:
    kv = connect(shared.urls)
    key, odd = prefix + "greeting", (prefix + "a/b c?%").encode() + b"\x00\xff"
    context = kv.put(key, b"hello", w="all")
    assert context
    got = kv.get(key, r="all")
    assert (got.found, got.value, got.siblings, got.ttl) == (True, b"hello", [b"hello"], None)
    assert got.context and got.etag
    kv.put(key, b"hi", context=got.context, consistency="strong")
    assert [kv.get(key, r=level).value for level in ("one", "quorum", 3)] == [b"hi"] * 3
    big = os.urandom(100 * 1024)
    kv.put(odd, big, ttl=3600, w=2)
    read = kv.get(odd, consistency="eventual")
    assert read.value == big and read.ttl is not None and 3500 < read.ttl <= 3600
    kv.delete(key, context=kv.get(key).context)
    assert not kv.get(key, r="all").found
    assert kv.health()
    assert {m["id"] for m in kv.status()["members"]} == {"n1", "n2", "n3"}
    assert kv.ring()["replication_factor"] == 3
    assert "in_progress" in kv.progress()


def test_siblings_and_conditions(shared: Cluster, connect: Connect, prefix: str) -> None:
    kv = connect(shared.urls[0])
    key = prefix + "k"
    kv.put(key, b"a", w="all")
    kv.put(key, b"b", w="all")  # no context: concurrent with the first
    both = kv.get(key, r="all")
    assert (both.value, sorted(both.siblings)) == (None, [b"a", b"b"])
    kv.put(key, b"ab", context=both.context, w="all")
    assert kv.get(key, r="all").siblings == [b"ab"]

    lock = prefix + "lock"
    kv.put(lock, b"me", if_none_match=True)
    with pytest.raises(PreconditionFailed) as taken:
        kv.put(lock, b"you", if_none_match=True)
    assert (taken.value.status, taken.value.context is not None) == (412, True)
    stale = kv.get(lock).context
    kv.put(lock, b"me2", replace=True)
    with pytest.raises(PreconditionFailed):
        kv.delete(lock, if_match=stale)
    assert kv.get(lock).value == b"me2"
    with pytest.raises(ValueError):
        kv.put(lock, b"x", context=stale, replace=True)


def test_error_answers(shared: Cluster, connect: Connect, prefix: str) -> None:
    kv = connect(shared.urls[1])
    with pytest.raises(BadRequest) as too_long:
        kv.put(prefix.encode() + b"k" * 300, b"v")
    assert (too_long.value.status, too_long.value.code) == (414, "key_too_long")
    with pytest.raises(BadRequest) as bad_level:
        kv.get(prefix + "k", r=7)
    assert (bad_level.value.status, bad_level.value.code) == (400, "bad_request")
    with pytest.raises(BadRequest):
        kv.put(prefix + "k", b"v", context="not a context")
    assert not kv.get(prefix + "k").found  # nothing was written by the refused requests


def test_batches_and_listing(shared: Cluster, connect: Connect, prefix: str) -> None:
    kv = connect(shared.urls)
    values = {f"{prefix}{i:04d}": str(i).encode() for i in range(MAX_BATCH_KEYS + 7)}
    written = kv.put_many(values, w="all")
    assert list(written) == list(values) and all(isinstance(c, str) and c for c in written.values())
    missing = prefix + "missing"
    read = kv.get_many([*values, missing], r="all")
    assert {k: r.value for k, r in read.items() if k != missing} == values
    assert not read[missing].found
    again = kv.put_many({k: b"x" for k in list(values)[:2]}, if_none_match=True)
    assert all(isinstance(outcome, PreconditionFailed) for outcome in again.values())

    listed = list(kv.iter_keys(prefix, page_size=40, r="all"))
    assert len(listed) == len(set(listed))  # no key twice across pages
    assert sorted(listed) == sorted(k.encode() for k in values)
    page, cursor = kv.keys(prefix, 10)
    assert len(page) == 10 and cursor

    contexts = {k: r.context for k, r in read.items() if k != missing}
    deleted = kv.delete_many(list(values), contexts=contexts, w="all")
    assert all(isinstance(c, str) for c in deleted.values())
    assert not any(r.found for r in kv.get_many(list(values), r="all").values())


def test_cache_revalidates_and_reads_its_writes(
    shared: Cluster, connect: Connect, prefix: str
) -> None:
    kv = connect(shared.urls[2], cache=True)
    key = prefix + "cached"
    kv.put(key, b"v1", w="all")
    assert not kv.get(key, r="all").from_cache
    again = kv.get(key, r="all")  # If-None-Match: 304, served from the cache
    assert (again.value, again.from_cache) == (b"v1", True)
    kv.put(key, b"v2", context=again.context, w="all")
    fresh = kv.get(key, r="all", max_staleness=60)  # the write dropped the entry
    assert (fresh.value, fresh.from_cache) == (b"v2", False)
    assert kv.get(key, max_staleness=60).from_cache  # now within staleness: no request
    assert kv.cache_metrics.as_dict() == {
        "hits": 1, "revalidations": 1, "not_modified": 1, "misses": 2, "evictions": 0}  # fmt: skip


def test_failover_and_unreachable(shared: Cluster, connect: Connect, prefix: str) -> None:
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    kv = connect([closed, shared.urls[0]], timeout=2)
    kv.put(prefix + "k", b"v")
    assert kv.get(prefix + "k").value == b"v"
    nobody = connect(closed, timeout=1)
    assert not nobody.health()
    with pytest.raises(ConnectionFailed) as failed:
        nobody.get(prefix + "k")
    assert (failed.value.status, failed.value.code) == (0, "connection_failed")
    assert closed in str(failed.value)


# --------------------------------------------------------------------------- token-aware routing


def coordinated(urls: list[str], context: ssl.SSLContext | None = None) -> list[float]:
    return [metric(url, PUTS, context) for url in urls]


def test_token_aware_sends_each_key_to_its_hash_chosen_replica(
    shared: Cluster, connect: Connect, prefix: str
) -> None:
    """Given only n1, the client learns the ring and sends each write straight to the key's
    coordinator (the replica its hash picks), so the writes spread over the nodes."""
    kv = connect(shared.urls[0], token_aware=True, ring_refresh=60)
    view = RingView(kv.ring())
    port_of = {node.port: i for i, node in enumerate(shared.nodes)}
    keys = [f"{prefix}{i}" for i in range(60)]
    expected = Counter(port_of[view.coordinators(key)[0].port] for key in keys)
    before = coordinated(shared.urls)
    for key in keys:
        kv.put(key, b"v")
    after = coordinated(shared.urls)
    assert [round(b - a) for a, b in zip(before, after, strict=True)] == [
        expected[i] for i in range(3)
    ]
    assert min(expected.values()) > 5  # the coordinators are spread, not all n1


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path]]:
    """3 nodes serving HTTPS with a test CA's certificate for 127.0.0.1; (cluster, CA file)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    root = tmp_path_factory.mktemp("tls")
    ca = make_ca(root)
    key, cert = make_cert(root, "node", "IP:127.0.0.1", ca)
    tls = ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-file", str(ca[1])]
    cluster = Cluster(root / "cluster", nodes=3, zones=3, replication_factor=3, extra_args=tls)
    try:
        for node in cluster.nodes:
            node.start()
        verified = ssl.create_default_context(cafile=str(ca[1]))
        urls = [f"https://127.0.0.1:{node.port}" for node in cluster.nodes]

        def converged() -> bool:
            for url in urls:
                with Client(url, timeout=2, ssl_context=verified) as client:
                    if not client.health():  # /health/ready: joined, serving
                        return False
                    members = client.status()["members"]
                    joined = {m["id"] for m in members if m.get("alive") and m["state"] == "normal"}
                    if joined != {"n1", "n2", "n3"} or client.progress().get("in_progress"):
                        return False
            return True

        wait_until(converged, 60, message="TLS cluster ready")
        yield cluster, ca[1]
    finally:
        cluster.stop()


def test_tls_with_token_aware_routing(
    tls_cluster: tuple[Cluster, Path], connect: Connect, prefix: str
) -> None:
    cluster, ca_file = tls_cluster
    verified = ssl.create_default_context(cafile=str(ca_file))
    urls = [f"https://127.0.0.1:{node.port}" for node in cluster.nodes]
    kv = connect(urls[0], ssl_context=verified, token_aware=True, timeout=5)
    keys = [f"{prefix}{i}" for i in range(30)]
    before = coordinated(urls, verified)
    for key in keys:
        kv.put(key, b"secret")
    after = coordinated(urls, verified)
    assert sum(1 for a, b in zip(before, after, strict=True) if b > a) >= 2  # over https too
    assert all(kv.get(key).value == b"secret" for key in keys)
    # The system's trust store does not know the test CA: no endpoint can be used.
    untrusted = connect(urls[0], timeout=5)
    with pytest.raises(ConnectionFailed, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
        untrusted.get(keys[0])
