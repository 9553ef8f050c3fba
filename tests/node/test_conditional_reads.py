"""Conditional reads on real nodes: ETag and Cache-Control on GET, If-None-Match -> 304 (never a
body) in the forms RFC 9110 defines for GET, digest reads, and the clients' caches."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringkv.client import AsyncClient, Client, ClientCache
from ringkv.node.config import MAX_CACHE_MAX_AGE, parse_args
from tests.cluster import Cluster, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("conditional")).start()
    yield c
    c.stop()


def request(
    cluster: Cluster, path: str, headers: dict[str, str] | None = None, node: int = 0
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.node(node).port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def raw_exchange(port: int, wire: bytes, answers: int) -> bytes:
    """Send raw request bytes; read until ``answers`` responses' heads arrived and the
    connection is idle (bounded in time)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire)
        data = b""
        deadline = time.monotonic() + 10
        while data.count(b"HTTP/1.1 ") < answers or not data.endswith(b"}"):
            if time.monotonic() > deadline:
                raise AssertionError(f"incomplete answers: {data!r}")
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_a_read_carries_an_etag_and_no_cache(cluster: Cluster) -> None:
    cluster.client(0).put("plain", b"value")
    status, headers, body = request(cluster, "/v1/kv/plain")
    assert status == 200 and body == b"value"
    assert headers["etag"].startswith('"') and headers["cache-control"] == "no-cache"
    # every coordinator derives the same tag for the same version set
    assert request(cluster, "/v1/kv/plain", node=2)[1]["etag"] == headers["etag"]


@pytest.mark.parametrize("form", ["{t}", "W/{t}", '"nope", {t}', 'W/"a", W/{t}, "b"', "*"])
def test_if_none_match_naming_the_current_version_answers_304(cluster: Cluster, form: str) -> None:
    cluster.client(0).put("conditional", b"v" * 5000)
    tag = request(cluster, "/v1/kv/conditional")[1]["etag"]
    for node in range(3):
        status, headers, body = request(
            cluster, "/v1/kv/conditional", {"If-None-Match": form.format(t=tag)}, node
        )
        assert (status, body) == (304, b"")
        assert headers["etag"] == tag and headers["cache-control"] == "no-cache"
        assert "content-length" not in headers and "x-ringkv-context" not in headers


def test_a_304_never_carries_a_body_on_the_wire(cluster: Cluster) -> None:
    cluster.client(0).put("wire", b"w" * 3000)
    tag = request(cluster, "/v1/kv/wire")[1]["etag"]
    # two pipelined requests: whatever follows the 304's head must be the next answer
    wire = (
        f"GET /v1/kv/wire HTTP/1.1\r\nHost: x\r\nIf-None-Match: {tag}\r\n\r\n"
        "GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    ).encode()
    data = raw_exchange(cluster.node(0).port, wire, 2)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 304 ")
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b'{"status":"live"}')


def test_repeated_if_none_match_lines_form_one_list(cluster: Cluster) -> None:
    cluster.client(0).put("lines", b"x")
    tag = request(cluster, "/v1/kv/lines")[1]["etag"]
    wire = (
        "GET /v1/kv/lines HTTP/1.1\r\nHost: x\r\n"
        f'If-None-Match: "other"\r\nIf-None-Match: {tag}\r\n\r\n'
        "GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    ).encode()
    assert raw_exchange(cluster.node(1).port, wire, 2).startswith(b"HTTP/1.1 304 ")


def test_a_stale_or_foreign_tag_gets_the_full_answer(cluster: Cluster) -> None:
    kv = cluster.client(0)
    kv.put("changing", b"one")
    old = request(cluster, "/v1/kv/changing")[1]["etag"]
    kv.put("changing", b"two", context=kv.get("changing").context)
    status, headers, body = request(cluster, "/v1/kv/changing", {"If-None-Match": old})
    assert (status, body) == (200, b"two") and headers["etag"] != old
    assert request(cluster, "/v1/kv/changing", {"If-None-Match": '"x"'})[0] == 200


def test_absent_and_deleted_keys_ignore_the_condition(cluster: Cluster) -> None:
    status, headers, body = request(cluster, "/v1/kv/never-written", {"If-None-Match": "*"})
    assert status == 404 and json.loads(body)["error"] == "not_found"
    kv = cluster.client(0)
    kv.put("deleted", b"x")
    kv.delete("deleted")
    status, headers, body = request(cluster, "/v1/kv/deleted")
    assert status == 404 and headers["etag"]
    again = request(cluster, "/v1/kv/deleted", {"If-None-Match": headers["etag"]})
    assert again[0] == 404 and json.loads(again[2])["error"] == "not_found"


def test_siblings_have_a_tag_and_revalidate(cluster: Cluster) -> None:
    cluster.client(0).put("sibs", b"a")
    cluster.client(1).put("sibs", b"b")  # blind: a sibling
    status, headers, body = request(cluster, "/v1/kv/sibs")
    assert status == 300 and len(json.loads(body)["siblings"]) == 2
    tag = headers["etag"]
    assert request(cluster, "/v1/kv/sibs", {"If-None-Match": tag})[0] == 304
    cluster.client(2).put("sibs", b"c")  # a third sibling: the tag changes
    status, headers, body = request(cluster, "/v1/kv/sibs", {"If-None-Match": tag})
    assert status == 300 and len(json.loads(body)["siblings"]) == 3


@pytest.mark.parametrize("header", ["nope", '"unterminated', "W/x", '"a" "b"', ""])
def test_a_malformed_condition_is_a_400(cluster: Cluster, header: str) -> None:
    status, _, body = request(cluster, "/v1/kv/plain", {"If-None-Match": header})
    assert status == 400 and json.loads(body)["error"] == "bad_request"


def digest_reads(cluster: Cluster, node: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.node(node).port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    found = {}
    for line in text.splitlines():
        if line.startswith("ringkv_digest_reads_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            found[outcome] = float(line.rsplit(" ", 1)[1])
    return found


def test_revalidations_are_digest_reads(cluster: Cluster) -> None:
    cluster.client(0).put("digest", b"d" * 1000)
    tag = request(cluster, "/v1/kv/digest?r=all")[1]["etag"]
    before = digest_reads(cluster, 1).get("agreed", 0)
    for _ in range(5):
        assert request(cluster, "/v1/kv/digest?r=all", {"If-None-Match": tag}, node=1)[0] == 304
    assert digest_reads(cluster, 1).get("agreed", 0) >= before + 4  # peers may be redialled


def test_cache_control_follows_cache_max_age(tmp_path_factory: pytest.TempPathFactory) -> None:
    with Cluster(
        tmp_path_factory.mktemp("max-age"), nodes=1, replication_factor=1,
        extra_args=["--cache-max-age", "5"],
    ) as one:  # fmt: skip
        one.client(0).put("k", b"v")
        status, headers, _ = request(one, "/v1/kv/k")
        assert status == 200 and headers["cache-control"] == "max-age=5"
        status, headers, _ = request(one, "/v1/kv/k", {"If-None-Match": headers["etag"]})
        assert status == 304 and headers["cache-control"] == "max-age=5"


# -- the clients' caches ------------------------------------------------------------------------


def cached_client(cluster: Cluster, node: int = 0, **options: float) -> Client:
    return Client(cluster.node(node).url, cache=ClientCache(**options))  # type: ignore[arg-type]


def test_a_stale_entry_is_replaced_after_another_client_writes(cluster: Cluster) -> None:
    other = cluster.client(1)
    other.put("shared", b"first")
    with cached_client(cluster) as kv:
        assert kv.get("shared").value == b"first"
        second = kv.get("shared")
        assert second.value == b"first" and second.from_cache  # revalidated: 304
        other.put("shared", b"second", context=other.get("shared").context)
        third = kv.get("shared")
        assert third.value == b"second" and not third.from_cache
        assert kv.get("shared").value == b"second"
        metrics = kv.cache_metrics
        assert metrics is not None
        assert (metrics.misses, metrics.revalidations, metrics.not_modified) == (1, 3, 2)


def test_a_deleted_key_is_not_served_from_cache_after_revalidation(cluster: Cluster) -> None:
    other = cluster.client(2)
    other.put("doomed", b"alive")
    with cached_client(cluster) as kv:
        assert kv.get("doomed").found
        other.delete("doomed")
        gone = kv.get("doomed")
        assert not gone.found and gone.value is None and not gone.from_cache
        assert not kv.get("doomed").found  # the tombstone is cached too


def test_a_cached_entry_never_hides_siblings(cluster: Cluster) -> None:
    cluster.client(0).put("cart", b"apple")
    with cached_client(cluster, 1) as kv:
        assert kv.get("cart").value == b"apple"
        cluster.client(2).put("cart", b"pear")  # blind: concurrent with apple
        got = kv.get("cart")
        assert got.value is None and sorted(got.siblings) == [b"apple", b"pear"]
        again = kv.get("cart")  # the siblings are cached and revalidated as such
        assert again.from_cache and sorted(again.siblings) == [b"apple", b"pear"]


def test_a_client_reads_its_own_writes_even_within_max_staleness(cluster: Cluster) -> None:
    with cached_client(cluster, max_staleness=60) as kv:
        kv.put("mine", b"1")
        assert kv.get("mine").value == b"1"
        assert kv.get("mine").from_cache
        kv.put("mine", b"2", context=kv.get("mine").context)
        assert kv.get("mine").value == b"2"
        kv.delete("mine")
        assert not kv.get("mine").found


def test_max_staleness_bounds_the_age_served(cluster: Cluster) -> None:
    bound = 0.5
    other = cluster.client(1)
    other.put("aging", b"old")
    with cached_client(cluster, max_staleness=bound) as kv:
        assert kv.get("aging").value == b"old"
        other.put("aging", b"new", context=other.get("aging").context)
        written = time.monotonic()
        hits = 0
        deadline = written + 10
        while time.monotonic() < deadline:  # bounded: at most 10 s of reads
            got = kv.get("aging")
            if got.value == b"new":
                break
            assert got.from_cache and got.age <= bound  # an old answer only while young
            hits += 1
            time.sleep(0.02)
        else:
            raise AssertionError("the new value never came through")
        assert time.monotonic() - written <= bound + 5  # served no later than once too old
        metrics = kv.cache_metrics
        assert metrics is not None and metrics.hits >= hits


def test_the_async_client_caches_and_revalidates(cluster: Cluster) -> None:
    other = cluster.client(0)
    other.put("async", b"one")

    async def scenario() -> None:
        async with AsyncClient(cluster.node(2).url, cache=True) as kv:
            assert (await kv.get("async")).value == b"one"
            assert (await kv.get("async")).from_cache
            other.put("async", b"two", context=other.get("async").context)
            assert (await kv.get("async")).value == b"two"
            await kv.put("async", b"three", context=(await kv.get("async")).context)
            assert (await kv.get("async")).value == b"three"
            metrics = kv.cache_metrics
            assert metrics is not None and metrics.not_modified >= 2

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_if_none_match_on_the_client(cluster: Cluster) -> None:
    kv = cluster.client(0)
    kv.put("explicit", b"e")
    tag = kv.get("explicit").etag
    assert tag is not None
    result = kv.get("explicit", if_none_match=tag)
    assert result.not_modified and result.value is None and result.etag == tag
    wait_until(lambda: not kv.get("explicit", if_none_match='"x"').not_modified, 5)


# -- the command line ---------------------------------------------------------------------------


def ringkv(*args: str) -> subprocess.CompletedProcess[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
    return subprocess.run(
        [sys.executable, "-m", "ringkv", *args], capture_output=True, env=base, timeout=60
    )


def test_cli_get_if_none_match(cluster: Cluster) -> None:
    endpoint = ("--endpoint", cluster.node(1).url)
    cluster.client(0).put("script", b"payload")
    first = ringkv("get", "script", "--json", *endpoint)
    assert first.returncode == 0, first.stderr
    tag = json.loads(first.stdout)["etag"]
    unchanged = ringkv("get", "script", "--if-none-match", tag, *endpoint)
    assert (unchanged.returncode, unchanged.stdout) == (6, b"")
    as_json = ringkv("get", "script", "--if-none-match", tag, "--json", *endpoint)
    assert as_json.returncode == 6
    assert json.loads(as_json.stdout) == {"not_modified": True, "etag": tag}
    kv = cluster.client(0)
    kv.put("script", b"changed", context=kv.get("script").context)
    changed = ringkv("get", "script", "--if-none-match", tag, *endpoint)
    assert (changed.returncode, changed.stdout) == (0, b"changed")
    malformed = ringkv("get", "script", "--if-none-match", "no-quotes", *endpoint)
    assert malformed.returncode == 2 and b"If-None-Match" in malformed.stderr


def test_bench_cache_smoke(cluster: Cluster, tmp_path: Path) -> None:
    """Bounded: 300 requests or 3 s per run, 50 keys."""
    common = ["bench", "--endpoint", cluster.node(0).url, "--keys", "50", "--zipf", "0.99",
              "--value-bytes", "2048", "--max-requests", "300", "--duration", "3",
              "--warmup", "0", "--quiet", "--concurrency", "4", "--seed", "1"]  # fmt: skip
    documents = {}
    for name, extra in (
        ("off", ["--preload"]), ("revalidate", ["--cache"]),
        ("stale", ["--cache", "--max-staleness", "5"]),
    ):  # fmt: skip
        out = tmp_path / f"{name}.json"
        done = ringkv(*common, *extra, "--json", str(out))
        assert done.returncode == 0, done.stderr
        assert b"bytes received per read" in done.stdout
        documents[name] = json.loads(out.read_text())["runs"][0]["ops"]["read"]
    assert "cache" not in documents["off"]
    revalidate, stale = documents["revalidate"], documents["stale"]
    assert revalidate["cache"]["not_modified"] > 0 and revalidate["statuses"].get("304")
    assert stale["cache"]["hits"] > 0
    # short runs start cold (every key a miss once), so only the direction is checked
    assert revalidate["bytes_per_read"] < documents["off"]["bytes_per_read"]
    assert stale["bytes_per_read"] < documents["off"]["bytes_per_read"]


def test_a_coordinator_without_a_copy_revalidates_from_digests(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """N=1 on two nodes: n1 holds about half the keys; for the others it has no copy of its
    own, so a digest that does not match needs a second, full read."""
    with Cluster(tmp_path_factory.mktemp("no-copy"), nodes=2, replication_factor=1) as two:
        kv = two.client(1)
        for i in range(8):
            kv.put(f"k{i}", b"first %d" % i)
        tags = {i: request(two, f"/v1/kv/k{i}")[1]["etag"] for i in range(8)}
        for i in range(8):
            assert request(two, f"/v1/kv/k{i}", {"If-None-Match": tags[i]})[0] == 304
            kv.put(f"k{i}", b"second %d" % i, context=kv.get(f"k{i}").context)
            status, headers, body = request(two, f"/v1/kv/k{i}", {"If-None-Match": tags[i]})
            assert (status, body) == (200, b"second %d" % i) and headers["etag"] != tags[i]
            assert "x-ringkv-context" in headers


def test_an_expiring_value_is_not_served_from_cache_past_its_ttl(cluster: Cluster) -> None:
    kv = cluster.client(0)
    kv.put("brief", b"soon gone", ttl=1)
    status, headers, _ = request(cluster, "/v1/kv/brief")
    assert status == 200
    tag = headers["etag"]
    with cached_client(cluster, max_staleness=60) as cached:
        assert cached.get("brief").value == b"soon gone"

        def expired() -> bool:
            return request(cluster, "/v1/kv/brief", {"If-None-Match": tag})[0] == 404

        wait_until(expired, 10, interval=0.1, message="the value expired")
        gone = cached.get("brief")  # the TTL ran out: asks, although within max_staleness
        assert not gone.found and not gone.from_cache


def test_the_documented_cache_max_age_range_is_the_configured_one() -> None:
    api = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    assert f"`--cache-max-age SECONDS` (node flag, 0..{MAX_CACHE_MAX_AGE}," in api
    flags = ["--node-id", "n1", "--no-auth", "true", "--no-peer-auth", "true", "--cache-max-age"]
    assert parse_args([*flags, str(MAX_CACHE_MAX_AGE)]).cache_max_age == MAX_CACHE_MAX_AGE
    with pytest.raises(SystemExit):
        parse_args([*flags, str(MAX_CACHE_MAX_AGE + 1)])


def test_batch_writes_through_the_client_drop_their_cache_entries(cluster: Cluster) -> None:
    with cached_client(cluster, max_staleness=60) as kv:
        kv.put_many({"b1": b"one", "b2": b"two"})
        assert kv.get("b1").value == b"one" and kv.get("b2").value == b"two"
        assert kv.get("b1").from_cache  # within max_staleness: no request
        kv.put_many({"b1": b"uno"}, contexts={"b1": kv.get("b1").context or ""})
        assert kv.get("b1").value == b"uno"
        kv.delete_many(["b2"])
        assert not kv.get("b2").found
