"""A full disk on one node of three (real processes on loopback, the node's data on a small
tmpfs the test mounts): writes it cannot take answer 507, reads keep working, the node reports
itself not ready and its peers route writes around it (hints), and it all recovers by itself
once space returns, with every acknowledged write readable."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path

import pytest

from ringkv.client import Client, RingkvError
from tests.cluster import Cluster, wait_until

MIB = 1024 * 1024
MIN_FREE = 32 * MIB
KEYS = 60


def _probe(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves about ``leave`` bytes free on ``disk``."""
    ballast = disk / "ballast"
    with ballast.open("ab") as f:
        f.write(b"\0" * max(0, _free(disk) - leave))
    return ballast


def _on_disk(cluster: Cluster, which: int, disk: Path) -> None:
    node = cluster.node(which)
    node.data_dir = disk / "data"
    node.args[node.args.index("--data-dir") + 1] = str(node.data_dir)


def _member(cluster: Cluster, viewer: int, node_id: str) -> dict[str, object]:
    members = Client(cluster.node(viewer).url, timeout=3).status()["members"]
    return next(m for m in members if m["id"] == node_id)


def test_full_disk_on_one_node_routes_writes_elsewhere_and_recovers(
    small_disk: Path, make_cluster
) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(nodes=3, zones=3, replication_factor=3, start=False,
                           extra_args=["--min-free-bytes", str(MIN_FREE)])  # fmt: skip
    _on_disk(cluster, 2, small_disk)
    cluster.start()
    n1, n3 = cluster.node(0), cluster.node(2)
    acked: dict[str, bytes] = {}
    for i in range(KEYS):
        cluster.client(0).put(f"before-{i}", f"v{i}".encode(), w="all")
        acked[f"before-{i}"] = f"v{i}".encode()

    ballast = _fill(small_disk, MIN_FREE // 2)
    # n3 says it: not ready (the Service's probe), flagged in its peers' view, metric set
    wait_until(lambda: _probe(n3.port, "/health/ready")[0] == 507, 15, message="n3 unready")
    _, body = _probe(n3.port, "/health/ready")
    assert json.loads(body)["error"] == "insufficient_storage"
    wait_until(lambda: _member(cluster, 0, "n3")["writes_refused"], 15,
               message="n1 sees n3 refusing writes")  # fmt: skip
    assert cluster.client(2).status()["node"]["writes_refused"]
    metrics = _probe(n3.port, "/metrics")[1].decode()
    assert "ringkv_writes_refused 1.0" in metrics

    # a write sent to n3 alone: 507 with the documented body, nothing written
    with pytest.raises(RingkvError) as full:
        cluster.client(2).put("refused", b"x")
    assert full.value.status == 507 and full.value.code == "insufficient_storage"
    assert not cluster.client(0).get("refused", r="all").found

    # writes through the other nodes, and through a client that lists n3 first: all succeed
    with Client([n3.url, n1.url], timeout=5) as failover:
        for i in range(KEYS):
            key = f"during-{i}"
            value = f"d{i}".encode()
            (failover if i % 2 else cluster.client(1)).put(key, value)
            acked[key] = value
    pending = sum(cluster.client(i).status()["hints"]["by_target"].get("n3", 0) for i in (0, 1))
    assert pending > 0  # the fallbacks keep n3's copies as hints

    # n3 keeps serving reads, also of what it missed
    for key, value in acked.items():
        assert cluster.client(2).get(key).value == value, key

    ballast.unlink()  # space returns: no restart, no manual step
    wait_until(lambda: _probe(n3.port, "/health/ready")[0] == 200, 15, message="n3 ready again")
    wait_until(lambda: not _member(cluster, 0, "n3")["writes_refused"], 15,
               message="n1 sees n3 taking writes")  # fmt: skip
    cluster.client(2).put("after", b"ok")
    acked["after"] = b"ok"
    wait_until(
        lambda: all(cluster.client(i).status()["hints"]["pending"] == 0 for i in (0, 1)),
        30, message="hints for n3 delivered",
    )  # fmt: skip

    # n3 alone holds every acknowledged write, intact
    cluster.node(0).kill()
    cluster.node(1).kill()
    for key, value in acked.items():
        assert cluster.client(2).get(key, r=1).value == value, key


def test_rocksdb_out_of_space_recovers_without_a_restart(small_disk: Path, make_cluster) -> None:  # type: ignore[no-untyped-def]
    """With no free-space floor RocksDB itself meets ENOSPC and then refuses every write until
    reopened: the node reopens it once space is back."""
    cluster = make_cluster(nodes=1, zones=1, replication_factor=1, start=False,
                           extra_args=["--min-free-bytes", "0"])  # fmt: skip
    _on_disk(cluster, 0, small_disk)
    cluster.start()
    node = cluster.node(0)
    ballast = _fill(small_disk, 24 * MIB)
    c = cluster.client(0)
    value = os.urandom(256 * 1024)
    written = 0
    with pytest.raises(RingkvError) as full:
        for i in range(400):
            c.put(f"fill-{i}", value)
            written += 1
    assert full.value.status == 507 and full.value.code == "insufficient_storage"
    assert written > 0
    wait_until(lambda: _probe(node.port, "/health/ready")[0] == 507, 15, message="unready")
    for i in range(written):
        assert c.get(f"fill-{i}").value == value  # reads keep working
    ballast.unlink()
    wait_until(lambda: _probe(node.port, "/health/ready")[0] == 200, 15, message="ready again")
    assert node.running
    c.put("after", b"ok")
    assert c.get("after").value == b"ok"
    node.restart()
    for i in range(written):
        assert cluster.client(0).get(f"fill-{i}").value == value
