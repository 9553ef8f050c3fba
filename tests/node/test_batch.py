"""Batches on a real 3-node cluster: POST /v1/batch/{get,put,delete} through every node, per-key
outcomes (conditions, one replica down, r=all failing per key), the limits, both clients and
the CLI."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from ringkv.client import AsyncClient, Client, GetResult, PreconditionFailed, Unavailable
from ringkv.core.batching import MAX_BATCH_KEYS
from tests.cluster import Cluster, wait_until
from tests.node.test_cli_client import ringkv
from tests.node.test_conditional import FORGED
from tests.node.test_failures import seen_down

pytestmark = pytest.mark.slow


def post(cluster: Cluster, path: str, document: Any, node: int = 0) -> tuple[int, Any]:
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    request = urllib.request.Request(cluster.urls[node] + path, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_batches_through_every_node(cluster3: Cluster) -> None:
    keys = [f"batch-{i}" for i in range(MAX_BATCH_KEYS)]
    for node in range(3):
        items = [{"key": k, "value": b64(b"%s@%d" % (k.encode(), node)), "replace": True}
                 for k in keys]  # fmt: skip
        status, answer = post(cluster3, "/v1/batch/put", {"items": items}, node)
        assert status == 200
        assert [r["key"] for r in answer["results"]] == keys  # request order
        assert all(r["status"] == 204 and r["context"] for r in answer["results"])
        for reader in range(3):
            status, answer = post(cluster3, "/v1/batch/get?r=all", {"keys": keys}, reader)
            assert status == 200
            for key, result in zip(keys, answer["results"], strict=True):
                assert result["status"] == 200, result
                assert base64.b64decode(result["value"]) == b"%s@%d" % (key.encode(), node)
                # the batch read agrees with the single-key read
                assert cluster3.client(reader).get(key).context == result["context"]
    status, answer = post(cluster3, "/v1/batch/delete", {"items": [{"key": k} for k in keys[:50]]})
    assert status == 200 and all(r["status"] == 204 for r in answer["results"])
    status, answer = post(cluster3, "/v1/batch/delete", {"keys": keys[50:90]}, 1)  # shorthand
    assert status == 200 and all(r["status"] == 204 for r in answer["results"])
    # a put batch may mix writes and deletes
    mixed = [{"key": k, "delete": True} for k in keys[90:]] + [{"key": "mixed", "value": "eA=="}]
    status, answer = post(cluster3, "/v1/batch/put", {"items": mixed}, 2)
    assert status == 200 and all(r["status"] == 204 for r in answer["results"])
    assert not any(r.found for r in cluster3.client(0).get_many(keys, r="all").values())  # type: ignore[union-attr]
    assert cluster3.client(0).get("mixed").value == b"x"
    status, answer = post(cluster3, "/v1/batch/get", {"keys": [*keys[:3], "never-written"]}, 2)
    assert [r["status"] for r in answer["results"]] == [404] * 4
    assert "context" in answer["results"][0] and "context" not in answer["results"][3]


def test_per_key_outcomes_and_conditions(cluster3: Cluster) -> None:
    kv = cluster3.client(0)
    kv.put("cond-a", b"exists")
    kv.put("cond-b", b"old")
    old = kv.get("cond-b").context
    kv.put("cond-b", b"newer", context=old)
    cluster3.client(1).put("sib", b"one")
    cluster3.client(2).put("sib", b"two")
    results = kv.put_many(
        {"cond-a": b"x", "cond-new": b"y"}, if_none_match=True
    )  # one refused, one created
    assert isinstance(results["cond-a"], PreconditionFailed) and results["cond-a"].context
    assert isinstance(results["cond-new"], str)
    results = kv.put_many({"cond-b": b"cas"}, if_match={"cond-b": old})
    assert isinstance(results["cond-b"], PreconditionFailed)
    got = kv.get_many(["cond-a", "cond-new", "cond-b", "sib", "missing"], r="all")
    assert got["cond-a"] == GetResult(True, b"exists", [b"exists"], got["cond-a"].context)  # type: ignore[union-attr]
    assert got["cond-new"].value == b"y"  # type: ignore[union-attr]
    assert got["cond-b"].value == b"newer"  # type: ignore[union-attr]
    assert sorted(got["sib"].siblings) == [b"one", b"two"]  # type: ignore[union-attr]
    assert got["missing"].found is False  # type: ignore[union-attr]
    # resolve the siblings in a batch with the batch read's context, with a TTL
    kv.put_many({"sib": b"merged"}, contexts={"sib": got["sib"].context}, ttl=100)  # type: ignore[union-attr,dict-item]
    merged = kv.get("sib", r="all")
    assert merged.siblings == [b"merged"] and merged.ttl is not None
    # binary keys
    binary = {b"\x00\xff/%": b"\x01", "plain": b"\x02"}
    assert all(isinstance(v, str) for v in kv.put_many(binary).values())
    assert {k: r.value for k, r in kv.get_many(list(binary)).items()} == binary  # type: ignore[union-attr]


def test_batch_with_one_replica_down(cluster3: Cluster) -> None:
    keys = [f"down-{i}" for i in range(60)]
    cluster3.client(0).put_many({k: b"before" for k in keys}, w="all")
    cluster3.node(2).kill()
    for node in (0, 1):
        seen_down(cluster3, node, "n3")
    for node in (0, 1):
        kv = cluster3.client(node)
        written = kv.put_many({k: b"during-%d" % node for k in keys}, replace=True)
        assert all(isinstance(r, str) for r in written.values()), written
        got = kv.get_many(keys)  # quorum: two of three replicas answer
        assert all(isinstance(r, GetResult) and r.value == b"during-%d" % node
                   for r in got.values()), got  # fmt: skip
        # every key fails on its own, and says why, when the quorum cannot be met
        strict = kv.get_many(keys[:5], r="all")
        assert all(isinstance(r, Unavailable) and r.required == 3 for r in strict.values()), {
            k: (type(r).__name__, getattr(r, "body", r)) for k, r in strict.items()
        }
        refused = kv.put_many({k: b"x" for k in keys[:5]}, consistency="strong")
        assert all(isinstance(r, Unavailable) for r in refused.values()), {
            k: (type(r).__name__, getattr(r, "body", r)) for k, r in refused.items()
        }
    # n3 comes back: the hints bring it the batch writes it missed
    cluster3.node(2).start().wait_ready()
    cluster3.wait_ready()
    wait_until(
        lambda: all(
            r.value == b"during-1" for r in cluster3.client(2).get_many(keys, r="all").values()
        ),  # type: ignore[union-attr]
        30,
        message="n3 caught up",
    )


def test_batch_limits_and_bad_requests(cluster3: Cluster) -> None:
    too_many = {"keys": [f"k{i}" for i in range(MAX_BATCH_KEYS + 1)]}
    bad: list[tuple[str, Any, int]] = [
        ("/v1/batch/get", too_many, 400),
        ("/v1/batch/get", {"keys": []}, 400),
        ("/v1/batch/get", {"keys": "k"}, 400),
        ("/v1/batch/get", {"keys": [1]}, 400),
        ("/v1/batch/get", {"keys": ["k"], "extra": 1}, 400),
        ("/v1/batch/get", {"keys": ["x" * 257]}, 414),
        ("/v1/batch/get", {"keys": ["!"], "encoding": "base64"}, 400),
        ("/v1/batch/get?r=9", {"keys": ["k"]}, 400),
        ("/v1/batch/get", b"not json", 400),
        ("/v1/batch/put", {"items": [{"key": "k", "value": "v"}, {"key": "k", "value": "dg=="}]},
         400),
        ("/v1/batch/put", {"items": [{"key": "k"}]}, 400),
        ("/v1/batch/put", {"items": [{"key": "k", "value": "dg==", "ttl": -1}]}, 400),
        ("/v1/batch/put", {"items": [{"key": "k", "value": "dg==", "replace": True,
                                      "context": "x"}]}, 400),
        ("/v1/batch/put?ttl=abc", {"items": [{"key": "k", "value": "dg=="}]}, 400),
        ("/v1/batch/delete", {"items": [{"key": "k", "value": "dg=="}]}, 400),
        ("/v1/batch/delete", {"items": [{"key": "k"}], "keys": ["k"]}, 400),
        ("/v1/batch/put", {"items": [{"key": "k", "delete": True, "value": "dg=="}]}, 400),
        ("/v1/batch/get", {"items": [{"key": "k"}]}, 400),
        ("/v1/batch/put", {"items": [{"key": "k", "value": "dg==", "if_match": FORGED}]}, 400),
        ("/v1/batch/put", {"items": [{"key": "k", "value": b64(b"x" * 800_000)},
                                     {"key": "j", "value": b64(b"x" * 800_000)}]}, 413),
    ]  # fmt: skip
    for path, document, expected in bad:
        status, answer = post(cluster3, path, document)
        assert status == expected, (path, document if len(str(document)) < 200 else "...", answer)
        assert answer["error"] and answer["message"]
    assert not cluster3.client(0).get("k", r="all").found  # nothing written by any of them


def test_async_client_and_cli_batches(cluster3: Cluster) -> None:
    async def scenario() -> None:
        async with AsyncClient(cluster3.urls[1]) as kv:
            written = await kv.put_many({f"a{i}": b"%d" % i for i in range(150)})  # 2 requests
            assert len(written) == 150 and all(isinstance(c, str) for c in written.values())
            got = await kv.get_many([f"a{i}" for i in range(150)])
            assert all(got[f"a{i}"].value == b"%d" % i for i in range(150))  # type: ignore[union-attr]
            gone = await kv.delete_many([f"a{i}" for i in range(150)])
            assert all(isinstance(c, str) for c in gone.values())
            assert not any(r.found for r in (await kv.get_many(["a1", "a2"])).values())  # type: ignore[union-attr]

    asyncio.run(scenario())
    endpoint = ("--endpoint", cluster3.urls[0])
    put = ringkv("batch", "put", "c1=one", "c2=two", "--ttl", "100", *endpoint)
    assert put.returncode == 0, put.stderr
    got = ringkv("batch", "get", "c1", "c2", "c3", *endpoint)
    assert got.returncode == 0
    assert got.stdout.decode().splitlines() == [
        "c1\t200\tone",
        "c2\t200\ttwo",
        "c3\t404\tnot found",
    ]
    document = json.loads(ringkv("batch", "get", "c1", "--json", *endpoint).stdout)
    assert 50 < document["results"][0]["ttl"] <= 100
    refused = ringkv("batch", "put", "c1=again", "--if-none-match", *endpoint)
    assert refused.returncode == 6 and b"412" in refused.stderr
    assert ringkv("batch", "delete", "c1", "c2", *endpoint).returncode == 0
    assert ringkv("batch", "put", "novalue", *endpoint).returncode == 2
    with Client(cluster3.urls[2]) as kv:
        assert not kv.get("c1", r="all").found


def test_batch_benchmark_smoke_run() -> None:
    """benchmarks/batch.py still runs (numbers: docs/performance.md)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "benchmarks/batch.py", "--quick"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "| get | batch-100 |" in done.stdout


def test_batch_writes_need_the_readwrite_role() -> None:
    from ringkv.node.http import Request
    from ringkv.node.server import required_role

    def role(method: str, path: str) -> str | None:
        return required_role(Request(method, path, "", {}, None, b"", True))

    assert role("POST", "/v1/batch/get") == "read"
    assert role("POST", "/v1/batch/put") == "readwrite"
    assert role("POST", "/v1/batch/delete") == "readwrite"
    assert role("GET", "/v1/keys") == "read"


def test_forwarded_batches_ttl_and_conditions_on_five_nodes(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """With 5 nodes and N=3 a node replicates only some keys: the rest of a batch goes to
    their coordinators (one coordinate_batch message each), and single writes are forwarded
    with their TTL; conditions are judged wherever the request arrives."""
    from ringkv.core.placement import preference_list
    from ringkv.core.ring import key_hash
    from tests.node.test_failures import ring_of

    cluster = make_cluster(nodes=5, zones=3)
    ring = ring_of(cluster.client(0))
    keys = [f"fwd-{i}" for i in range(100)]
    elsewhere = [
        k for k in keys
        if "n1" not in {r.node for r in preference_list(ring, key_hash(k.encode()), 3)}
    ]  # fmt: skip
    assert len(elsewhere) > 10
    kv = cluster.client(0)
    written = kv.put_many({k: b"v-" + k.encode() for k in keys}, ttl=500, w="all")
    assert all(isinstance(c, str) for c in written.values()), written
    for reader in (1, 4):
        got = cluster.client(reader).get_many(keys, r="all")
        for key in keys:
            result = got[key]
            assert isinstance(result, GetResult) and result.value == b"v-" + key.encode()
            assert result.ttl is not None and 400 < result.ttl <= 500
    key = elsewhere[0]
    kv.put(key, b"single", ttl=300, replace=True)  # forwarded to a replica, with its TTL
    got = cluster.client(3).get(key, r="all")
    assert got.siblings == [b"single"] and got.ttl is not None and 200 < got.ttl <= 300
    with pytest.raises(PreconditionFailed):
        kv.put(key, b"again", if_none_match=True)
    kv.put(key, b"cas", if_match=got.context)
    assert cluster.client(2).get(key, r="all").siblings == [b"cas"]
    refused = kv.put_many({k: b"x" for k in elsewhere[:5]}, if_none_match=True)
    assert all(isinstance(r, PreconditionFailed) for r in refused.values())
    gone = kv.delete_many(elsewhere)
    assert all(isinstance(c, str) for c in gone.values())
    assert not any(r.found for r in cluster.client(4).get_many(elsewhere, r="all").values())  # type: ignore[union-attr]


def test_batch_read_does_not_wait_for_a_paused_replica(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """n3 is paused (SIGSTOP): alive to the failure detector for seconds, answering nothing.
    A batch read asks the keys' other replicas after --speculative-read-delay, as a single
    read does, instead of waiting out --request-timeout."""
    import time

    cluster = make_cluster(extra_args=["--request-timeout", "5"])
    keys = [f"paused-{i}" for i in range(100)]
    cluster.client(0).put_many({k: b"v" for k in keys}, w="all")
    cluster.node(2).pause()
    try:
        started = time.monotonic()
        got = cluster.client(0, timeout=20).get_many(keys, r="quorum")
        elapsed = time.monotonic() - started
        assert all(isinstance(r, GetResult) and r.value == b"v" for r in got.values()), got
        assert elapsed < 3.0, f"the batch read took {elapsed:.2f} s"
    finally:
        cluster.node(2).resume()


def test_batches_with_fsync_answer_once_durable_and_survive_a_kill(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """--fsync true: a replica's replicate_many is answered in a task once the group commit
    covers it (not inline); every write of a w=all batch is there after SIGKILL of all nodes."""
    cluster = make_cluster(extra_args=["--fsync", "true"])
    keys = [f"durable-{i}" for i in range(60)]
    written = cluster.client(0).put_many({k: k.encode() for k in keys}, w="all")
    assert all(isinstance(c, str) for c in written.values()), written
    for node in cluster.nodes:
        node.restart(graceful=False)
    cluster.wait_ready()
    got = cluster.client(2).get_many(keys, r="all")
    assert all(isinstance(r, GetResult) and r.value == k.encode() for k, r in got.items()), got
