"""The Python client and the `ringkv` command against a real 3-node cluster."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ringkv.client import AsyncClient, BadRequest, Client, GetResult, Unavailable
from tests.cluster import Cluster, free_ports, wait_until


def ringkv(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the command as a user would, in a fresh process."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
    return subprocess.run(
        [sys.executable, "-m", "ringkv", *args],
        input=stdin,
        capture_output=True,
        env={**base, **(env or {})},
        timeout=60,
    )


# --------------------------------------------------------------------------- client


def test_client_reads_and_writes_through_every_node(cluster3: Cluster) -> None:
    c1, c2, c3 = (cluster3.client(i) for i in range(3))
    assert all(c.health() for c in (c1, c2, c3))

    context = c1.put("greeting", b"hello")
    assert context
    for client in (c1, c2, c3):
        result = client.get("greeting")
        assert (result.found, result.value, result.siblings) == (True, b"hello", [b"hello"])
        assert result.context

    # An update with the read context replaces the value; it shows through any node.
    c2.put("greeting", b"hi", context=c2.get("greeting").context, consistency="strong")
    for level in ("one", "quorum", "all", 1, 2, 3):
        assert c3.get("greeting", r=level).value == b"hi"

    odd_key = b"a/b c?\x00\xff%"
    big_value = os.urandom(100 * 1024)
    c3.put(odd_key, big_value, w="all")
    assert c1.get(odd_key, consistency="eventual").value == big_value

    c3.delete("greeting", context=c3.get("greeting").context)
    for client in (c1, c2, c3):
        assert not client.get("greeting", r="all").found

    status = c1.status()
    assert {m["id"] for m in status["members"]} == {"n1", "n2", "n3"}
    assert status["node"]["id"] == "n1"
    assert c2.ring()


def test_client_maps_error_answers(cluster3: Cluster) -> None:
    client = cluster3.client(0)
    with pytest.raises(BadRequest) as too_long:
        client.put(b"k" * 257, b"v")
    assert (too_long.value.status, too_long.value.code) == (414, "key_too_long")
    with pytest.raises(BadRequest) as bad_level:
        client.get("k", r=7)
    assert (bad_level.value.status, bad_level.value.code) == (400, "bad_request")
    with pytest.raises(BadRequest) as bad_context:
        client.put("k", b"v", context="not a context")
    assert bad_context.value.code == "bad_request"
    assert not client.get("k").found  # nothing was written by the refused requests


def test_async_client_against_the_cluster(cluster3: Cluster) -> None:
    async def scenario() -> GetResult:
        async with AsyncClient(cluster3.urls) as client:
            context = await client.put("async-key", b"v1")
            await client.put("async-key", b"v2", context=context, w="all")
            assert await client.health()
            assert (await client.status())["node"]["id"] in {"n1", "n2", "n3"}
            return await client.get("async-key", r="all")

    result = asyncio.run(scenario())
    assert (result.found, result.value) == (True, b"v2")
    assert cluster3.client(2).get("async-key").value == b"v2"


def test_client_fails_over_and_quorum_survives_a_killed_node(cluster3: Cluster) -> None:
    cluster3.client(1).put("k", b"before", w="all")
    cluster3.node(0).kill()

    with Client([cluster3.node(0).url, cluster3.node(1).url], timeout=2) as client:
        assert client.get("k").value == b"before"  # n1 refuses connections; n2 answers
        client.put("k", b"after", context=client.get("k").context)  # quorum: 2 of 3

        def refused() -> Unavailable | None:
            try:
                client.get("k", r="all")
            except Unavailable as exc:
                return exc
            return None

        # Once n1 is known to be down, r=all is refused up front (before that: 504).
        error = wait_until(refused, timeout=10, message="r=all to answer 503")
        assert (error.status, error.code) == (503, "unavailable")
        assert (error.required, error.alive) == (3, 2)
    assert cluster3.client(2).get("k").value == b"after"


# --------------------------------------------------------------------------- CLI


def test_cli_put_get_delete_and_exit_codes(cluster3: Cluster) -> None:
    n1, n3 = cluster3.node(0).url, cluster3.node(2).url

    put = ringkv("put", "hello", "world", "--endpoint", n1)
    assert (put.returncode, put.stdout) == (0, b"OK\n"), put.stderr

    got = ringkv("get", "hello", "--endpoint", n3, "--r", "all")
    assert (got.returncode, got.stdout) == (0, b"world"), got.stderr

    # `-` and a missing VALUE both read the value bytes from stdin.
    binary = bytes(range(256)) * 4
    assert ringkv("put", "bin", "-", "--endpoint", n3, stdin=binary).returncode == 0
    assert ringkv("get", "bin", "--endpoint", n1).stdout == binary
    assert ringkv("put", "piped", "--endpoint", n1, stdin=b"from stdin\n").returncode == 0
    assert cluster3.client(1).get("piped").value == b"from stdin\n"

    # RINGKV_ENDPOINT is the default endpoint; --json shows the context and base64 values.
    got = ringkv("get", "hello", "--json", env={"RINGKV_ENDPOINT": cluster3.node(1).url})
    document = json.loads(got.stdout)
    assert document["found"] is True
    assert base64.b64decode(document["value"]) == b"world"
    assert document["context"]

    deleted = ringkv("delete", "hello", "--endpoint", n3, "--consistency", "strong")
    assert deleted.returncode == 0, deleted.stderr
    missing = ringkv("get", "hello", "--endpoint", n1)
    assert (missing.returncode, missing.stdout) == (1, b"")
    assert missing.stderr.startswith(b"ringkv: error: key not found")
    assert ringkv("get", "hello", "--json", "--endpoint", n1).returncode == 1

    bad = ringkv("get", "hello", "--r", "7", "--endpoint", n1)
    assert bad.returncode == 2
    assert bad.stderr.startswith(b"ringkv: error:")
    assert ringkv("put", "k" * 257, "v", "--endpoint", n1).returncode == 2
    assert ringkv("get", "--endpoint", n1).returncode == 2  # usage: no KEY

    nobody = f"http://127.0.0.1:{free_ports(1)[0]}"
    unreachable = ringkv("get", "hello", "--endpoint", nobody, "--timeout", "1")
    assert unreachable.returncode == 3
    assert b"no endpoint reachable" in unreachable.stderr


def test_cli_unavailable_exits_3(cluster3: Cluster) -> None:
    n1 = cluster3.node(0).url
    assert ringkv("put", "k", "v", "--endpoint", n1, "--w", "all").returncode == 0
    cluster3.node(2).kill()
    # Until n3 is known dead the coordinator may wait for it and time out (504): also 3.
    result = ringkv("put", "k", "v2", "--endpoint", n1, "--w", "all")
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith(b"ringkv: error:")
    assert ringkv("get", "k", "--endpoint", n1).stdout in (b"v", b"v2")


def test_cli_shows_siblings_and_resolves_them(cluster3: Cluster) -> None:
    n1, n2 = cluster3.node(0).url, cluster3.node(1).url
    # Two writes without a context, coordinated by different nodes: concurrent versions.
    cluster3.client(0).put("cart", b"apple", w="all")
    cluster3.client(1).put("cart", b"pear", w="all")

    shown = ringkv("get", "cart", "--endpoint", n1)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert b"--- sibling 1 of 2 ---\n" in out
    assert b"--- sibling 2 of 2 ---\n" in out
    assert b"apple\n" in out
    assert b"pear\n" in out
    assert b"siblings" in shown.stderr
    assert ringkv("get", "cart", "--endpoint", n2, "--fail-on-siblings").returncode == 4

    document = json.loads(ringkv("get", "cart", "--json", "--endpoint", n2).stdout)
    assert document["value"] is None
    assert {base64.b64decode(s["value"]) for s in document["siblings"]} == {b"apple", b"pear"}

    resolved = ringkv("put", "cart", "apple,pear", "--context", document["context"],
                      "--endpoint", n2, "--w", "all")  # fmt: skip
    assert resolved.returncode == 0, resolved.stderr
    final = ringkv("get", "cart", "--endpoint", n1, "--fail-on-siblings")
    assert (final.returncode, final.stdout) == (0, b"apple,pear")


def test_cli_status(cluster3: Cluster) -> None:
    shown = ringkv("status", "--endpoint", cluster3.node(1).url)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.decode()
    assert text.startswith("node     n2")
    table = text.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("ID"))
    rows = {line.split()[0]: line.split() for line in table[header + 1 :]}
    assert set(rows) == {"n1", "n2", "n3"}
    for node in cluster3.nodes:
        row = rows[node.node_id]
        assert row[1:5] == [node.zone, f"127.0.0.1:{node.port}", "normal", "yes"]
        assert row[5].endswith("%")

    document = json.loads(ringkv("status", "--json", "--endpoint", cluster3.node(0).url).stdout)
    assert document["cluster"]["replication_factor"] == 3
    assert sorted(document["zones"]) == ["z1", "z2", "z3"]


# --------------------------------------------------------------------------- harness, local up


def test_harness_restart_pause_and_wipe(cluster3: Cluster) -> None:
    cluster3.client(0).put("durable", b"v", w="all")
    n2 = cluster3.node(1)
    n2.restart()  # SIGTERM, start again, wait until ready
    assert cluster3.client(1).get("durable", r="one").value == b"v"

    n2.pause()
    with Client(n2.url, timeout=0.5) as slow:
        assert not slow.health()
    n2.resume()
    wait_until(lambda: cluster3.client(1).health(), 10, message="n2 to answer again")

    n2.kill()
    n2.wipe()
    assert not n2.data_dir.exists()
    n2.start().wait_ready()
    assert "n2" in n2.log_tail()


def free_base_port() -> int:
    """A base port whose three client ports and three peer ports are all free."""
    from ringkv.launcher import port_taken
    from ringkv.local import PEER_PORT_OFFSET

    for candidate in free_ports(20):
        if candidate + PEER_PORT_OFFSET + 2 > 65535:
            continue
        ports = [candidate + i for i in range(3)] + [
            candidate + PEER_PORT_OFFSET + i for i in range(3)
        ]
        if not any(port_taken(p) for p in ports):
            return candidate
    raise AssertionError("no free port range found")


def test_local_up_serves_stops_and_keeps_data(tmp_path: Path) -> None:
    base = free_base_port()
    data_dir = tmp_path / "local"
    output = tmp_path / "local-up.out"
    urls = [f"http://127.0.0.1:{base + i}" for i in range(3)]
    command = ["local", "up", "--data-dir", str(data_dir), "--base-port", str(base)]

    def start() -> subprocess.Popen[bytes]:
        """Start `local up` and wait until it says the cluster is ready."""
        output.write_bytes(b"")
        with output.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "ringkv", *command], stdout=out, stderr=subprocess.STDOUT
            )

        def banner_shown() -> bool:
            if process.poll() is not None:
                pytest.fail(f"local up exited early:\n{output.read_text()}")
            return "Ctrl-C stops every node" in output.read_text()

        wait_until(banner_shown, 40, message="local up to report ready")
        return process

    def stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> str:
        process.send_signal(sig)
        process.wait(timeout=60)
        text = output.read_text()
        assert process.returncode == 0, text
        assert "all nodes stopped" in text
        return text

    process = start()
    try:
        with Client(urls) as client:
            client.put("kept", b"across restarts")
        text = stop(process, signal.SIGINT)  # what Ctrl-C sends
        assert f"ringkv put hello world --endpoint {urls[0]}" in text
        assert sorted(p.name for p in data_dir.glob("*.log")) == ["n1.log", "n2.log", "n3.log"]

        process = start()
        with Client(urls[2]) as client:
            wait_until(
                lambda: client.get("kept").value == b"across restarts", 10, message="kept value"
            )
        stop(process, signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_local_up_with_shards_runs_every_node_with_them(tmp_path: Path) -> None:
    """`ringkv local up --shards 2`: each node serves with 2 processes, their port runs apart."""
    from ringkv.launcher import port_taken
    from ringkv.local import plan

    for base in free_ports(20):
        nodes = plan(3, 3, tmp_path / "local", base, shards=2)
        runs = [set(n.ports) for n in nodes]
        if max(max(r) for r in runs) <= 65535 and not any(port_taken(p) for r in runs for p in r):
            break
    else:
        raise AssertionError("no free port range found")
    assert all(len(r) == 1 + 4 for r in runs) and not (runs[0] & runs[1] or runs[1] & runs[2])
    output = tmp_path / "local-up.out"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ringkv", "local", "up", "--shards", "2", "--data-dir",
             str(tmp_path / "local"), "--base-port", str(base)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def ready() -> bool:
            assert process.poll() is None, output.read_text()
            return "Ctrl-C stops every node" in output.read_text()

        wait_until(ready, 60, message="local up --shards 2 to report ready")
        with Client([f"http://127.0.0.1:{base + i}" for i in range(3)]) as client:
            client.put("sharded", b"yes", w="all")
            assert client.get("sharded", r="all").value == b"yes"
            status = client.status()
            assert status["shards"]["count"] == 2
            assert all(row["ready"] for row in status["shards"]["per_shard"])
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        assert process.returncode == 0, output.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
