"""Cleanup after ring changes on real processes, and deletes that stay deleted through them:
the old owner's stale copies go, a shrink back does not resurrect purged deletes, a stale
delete arriving late does not erase a newer value, and a late write for a range just given
away is applied on the new owners (or refused), never dropped."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import time
from typing import Any

import pytest

from ringkv.client import Client
from ringkv.core.cleanup import CLEANUP_STATES
from ringkv.core.placement import preference_list
from ringkv.core.ring import Ring, key_hash
from ringkv.core.versions import (
    VClock,
    Version,
    encode_record,
    version_from_wire,
    version_to_wire,
)
from ringkv.node.messaging import MessagingService, PeerError
from tests.cluster import Cluster, free_ports, wait_until
from tests.node.test_failures import ring_of
from tests.node.test_replication import metric
from tests.node.test_ring_changes import last_change

pytestmark = pytest.mark.slow

N = 3


def replicas(ring: Ring, key: str) -> set[str]:
    return {r.node for r in preference_list(ring, key_hash(key.encode()), N)}


def load(cluster: Cluster, keys: list[str], value: bytes = b"v1") -> None:
    with Client([n.url for n in cluster.nodes if n.running]) as client:
        for key in keys:
            client.put(key, value, w="all")


def cleaned(cluster: Cluster, timeout: float = 90) -> dict[str, Any]:
    """Wait until every running node reports every ring member's cleanup done."""

    def done() -> dict[str, Any] | None:
        documents = [Client(n.url).progress() for n in cluster.nodes if n.running]
        states = {r["state"] for d in documents for r in d["cleanup"]}
        assert states <= set(CLEANUP_STATES), states  # the documented set, declared once
        if all(not d["cleanup_pending"] and d["in_progress"] is None for d in documents):
            return {r["node"]: r for r in documents[0]["cleanup"]}
        return None

    return wait_until(done, timeout, interval=0.3, message="cleanup done on every node")


def grow_to_four(cluster: Cluster, keys: list[str], value: bytes = b"v1") -> tuple[Ring, Ring]:
    """Start n1..n3, load ``keys``, join n4 (zone z1, with n1); return the rings. n4 starts
    with the others (so no client connection can take its ports meanwhile) and waits to be
    told to join."""
    cluster.node(3).args += ["--auto-join", "false"]
    for node in cluster.nodes:
        node.start()
    for node in cluster.nodes[:3]:
        node.wait_ready(60)

    def formed() -> bool:
        for i in range(4):
            status, progress = cluster.client(i).status(), cluster.client(i).progress()
            if progress["in_progress"] is not None or len(status["members"]) != 4:
                return False
            if not all(m["alive"] for m in status["members"]):
                return False
            if status["cluster"]["ring_nodes"] != 3:
                return False
        return True

    wait_until(formed, 60, message="n1..n3 formed, n4 waiting, every node agreeing")
    load(cluster, keys, value)
    before = ring_of(cluster.client(0))

    # n3's own join may still be streaming on a loaded machine (409 change_in_progress): the
    # next change waits for it, as an operator would.
    def join() -> bool:
        cluster.client(3).admin("join", "n4")
        return True

    wait_until(join, 120, interval=0.5, message="n4's join accepted")
    last_change(cluster, "join", "n4")
    cluster.wait_ready(60)
    return before, ring_of(cluster.client(0))


def test_after_a_join_the_old_owner_keeps_only_what_it_replicates(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(
        nodes=4, zones=3, start=False, extra_args=["--anti-entropy-interval", "0"]
    )
    keys = [f"c{i}" for i in range(1500)]
    _before, after = grow_to_four(cluster, keys)
    reports = cleaned(cluster)
    mine = sum(1 for k in keys if "n1" in replicas(after, k))
    assert mine < len(keys) * 0.8  # n4 took a real share of z1's copies
    n1 = cluster.node(0).url
    stored = metric(n1, "ringkv_stored_keys")
    assert abs(stored - mine) <= max(3, mine * 0.01), (stored, mine)
    assert reports["n1"]["keys_done"] == len(keys) - mine
    assert reports["n1"]["reclaimed_bytes"] > 0
    assert metric(n1, "ringkv_cleanup_keys_total") == len(keys) - mine
    assert metric(n1, "ringkv_cleanup_remaining_keys") == 0
    assert metric(n1, "ringkv_cleanup_ranges_total") >= reports["n1"]["ranges_done"] > 0
    status = cluster.client(0).status()["cleanup"]
    assert status["state"] == "done" and status["disk_bytes"] > 0
    with Client(cluster.urls) as client:
        for key in keys:  # nothing lost: every replica of every key still holds it
            assert client.get(key, r="all").value == b"v1", key
    # bad requests get the documented JSON errors
    for body, status, code in (
        (b"[1]", 400, "bad_request"),
        (b'{"node": 7}', 400, "bad_request"),
        (b'{"node": "n9"}', 404, "unknown_node"),
    ):
        conn = http.client.HTTPConnection("127.0.0.1", cluster.node(1).port, timeout=5)
        conn.request("POST", "/v1/admin/cleanup", body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == status and json.loads(answer.read())["error"] == code, body
        conn.close()
    # run again by hand (asked of n2): nothing more to delete, nothing lost
    rerun = subprocess.run(
        [sys.executable, "-m", "ringkv", "admin", "cleanup", "--node", "n1", "--wait",
         "--wait-timeout", "60", "--endpoint", cluster.node(1).url],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "cleanup on n1: started" in rerun.stdout and "cleanup done" in rerun.stdout
    assert cluster.client(0).status()["cleanup"]["state"] == "done"
    assert metric(n1, "ringkv_cleanup_keys_total") == len(keys) - mine


def test_deletes_stay_deleted_through_grow_purge_and_shrink(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """The resurrection scenario: grow, delete keys the old owner gave away, let their
    tombstones be purged, shrink back so the ranges return to the old owner."""
    cluster = make_cluster(
        nodes=4, zones=3, start=False,
        extra_args=["--tombstone-grace", "2", "--anti-entropy-interval", "0.5"],
    )  # fmt: skip
    keys = [f"r{i}" for i in range(600)]
    before, after = grow_to_four(cluster, keys)
    cleaned(cluster)
    given_away = [k for k in keys if "n1" in replicas(before, k) and "n1" not in replicas(after, k)]
    assert len(given_away) > 50
    # (counted before the deletes: the first tombstones may be purged while the last are sent)
    purged_before = sum(metric(n.url, "ringkv_tombstones_purged_total") for n in cluster.nodes)
    with Client(cluster.urls) as client:
        for key in given_away:
            client.delete(key, w="all")
    try:
        wait_until(
            lambda: (
                sum(metric(n.url, "ringkv_tombstones_purged_total") for n in cluster.nodes)
                - purged_before
                >= 3 * len(given_away)
            ),
            90,
            interval=0.5,
            message="the tombstones purged on every replica",
        )
    except AssertionError as exc:
        purged = {n.node_id: metric(n.url, "ringkv_tombstones_purged_total") for n in cluster.nodes}
        views = {n.node_id: Client(n.url).progress()["cleanup"] for n in cluster.nodes}
        raise AssertionError(f"{exc}: purged {purged}, cleanup as seen by each {views}") from None
    cluster.client(0).admin("decommission", "n4")
    last_change(cluster, "decommission", "n4")
    wait_until(
        lambda: all(cluster.client(i).status()["cluster"]["ring_nodes"] == 3 for i in range(3)),
        30,
        message="the ring shrinks back",
    )
    cluster.node(3).kill()
    assert all("n1" in replicas(ring_of(cluster.client(0)), k) for k in given_away)
    with Client(cluster.urls[:3]) as client:
        back = [k for k in given_away if client.get(k, r="all").found]
        assert not back, f"{len(back)} deleted keys came back, e.g. {back[:5]}"
        for key in set(keys) - set(given_away):
            assert client.get(key, r="quorum").value == b"v1"


def test_a_stale_delete_arriving_late_does_not_erase_a_newer_value(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """The doomstone scenario: delete, write again without a context, then the delete's hint
    reaches the replica that missed both only after the new value did."""
    cluster = make_cluster(extra_args=["--anti-entropy-interval", "0"])
    key = "doom"
    cluster.client(0).put(key, b"v1", w="all")
    cluster.node(2).pause()
    wait_until(
        lambda: (
            not next(m for m in cluster.client(0).status()["members"] if m["id"] == "n3")["alive"]
        ),
        20,
        message="n3 seen down",
    )
    cluster.client(0).delete(key, w="quorum")  # n1 keeps the delete's hint for n3
    time.sleep(0.01)
    cluster.client(1).put(key, b"v2", w="quorum")  # blind: no context; n2 keeps a hint
    assert cluster.client(1).get(key, r="quorum").value == b"v2"
    cluster.node(0).pause()  # the delete's hint waits on n1
    cluster.node(2).resume()
    wait_until(lambda: cluster.client(1).status()["hints"]["pending"] == 0, 30,
               message="n2's hint delivered")  # fmt: skip
    cluster.node(0).resume()  # ... and now the stale delete arrives at n3
    wait_until(lambda: cluster.client(0).status()["hints"]["pending"] == 0, 30,
               message="n1's stale hint delivered")  # fmt: skip
    for i in range(3):
        assert cluster.client(i).get(key, r="all").siblings == [b"v2"], i


async def _late_writes(peer: str, single: bytes, batched: bytes) -> Any:
    port = free_ports(1)[0]

    async def nothing(verb: str, body: Any) -> Any:
        return None

    svc = MessagingService("late-writer", "127.0.0.1", port, nothing)
    await svc.start()
    try:
        stamp = int(time.time() * 1000) << 16
        wire = [version_to_wire(Version("late#1", 1, VClock.empty(), b"late", stamp))]
        try:
            single_answer: Any = await svc.request(
                peer, "replicate", {"key": single, "versions": wire}, 5.0
            )
        except PeerError as exc:
            single_answer = exc
        batch_answer = await svc.request(peer, "replicate_batch", {"items": [[batched, wire]]}, 5.0)
        # a batch write's message to one replica: refused whole when one record is foreign
        try:
            many: Any = await svc.request(
                peer, "replicate_many", {"items": [[single, encode_record(
                    [version_from_wire(w) for w in wire]), None]]}, 5.0,
            )  # fmt: skip
        except PeerError as exc:
            many = exc
        return single_answer, batch_answer, many
    finally:
        await svc.stop()


def test_a_late_write_for_a_range_given_away_reaches_the_new_owners(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """A replica write (or a hint, or a repair) that reaches the old owner after the change:
    refused, or applied on the key's new replicas -- never kept only where cleanup deletes."""
    cluster = make_cluster(
        nodes=4, zones=3, start=False, extra_args=["--anti-entropy-interval", "0"]
    )
    keys = [f"w{i}" for i in range(300)]
    _before, after = grow_to_four(cluster, keys)
    cleaned(cluster)
    away = [f"late{i}" for i in range(400) if "n1" not in replicas(after, f"late{i}")]
    single, batched = away[0], away[1]
    answer, applied, many = asyncio.run(
        _late_writes(cluster.node(0).peer_address, single.encode(), batched.encode())
    )
    with Client(cluster.urls) as client:
        if not isinstance(answer, PeerError):  # acknowledged: it must reach the new owners
            wait_until(lambda: client.get(single, r="all").found, 30, message="the late write")
        # a batch (a late hint, a repair) is never refused: its records reach the new owners
        assert applied == 0
        wait_until(lambda: client.get(batched, r="all").value == b"late", 30,
                   message="the late batch on every new replica")  # fmt: skip
    assert isinstance(answer, PeerError) and "does not replicate" in str(answer)
    assert isinstance(many, PeerError) and "does not replicate" in str(many)
    # and the old owner keeps nothing of either
    assert metric(cluster.node(0).url, "ringkv_stored_keys") <= sum(
        1 for k in keys if "n1" in replicas(after, k)
    )


def test_cleanup_is_throttled_and_resumes_after_a_restart(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(
        nodes=4, zones=3, start=False,
        extra_args=["--anti-entropy-interval", "0", "--cleanup-rate", "25000"],
    )  # fmt: skip
    keys = [f"t{i}" for i in range(1500)]
    _before, after = grow_to_four(cluster, keys, b"x" * 1000)
    given_away = sum(1 for k in keys if "n1" not in replicas(after, k))

    def deleting() -> dict[str, Any] | None:
        report = cluster.client(0).status()["cleanup"]
        return report if report["state"] == "running" and report["keys_done"] > 0 else None

    first = wait_until(deleting, 60, interval=0.1, message="n1 deleting")
    assert first["keys_total"] == given_away
    assert first["keys_done"] < given_away  # throttled: one batch, then a pause
    cluster.node(0).kill()  # mid-cleanup
    cluster.node(0).start()
    cluster.wait_ready(60)
    reports = cleaned(cluster)
    resumed = reports["n1"]
    # the restart went on from the saved position instead of starting over
    assert resumed["ranges_resumed"] > 0
    # (n1 may have deleted one more batch between our look and the kill)
    assert resumed["keys_total"] <= given_away - first["keys_done"], (resumed, first)
    assert resumed["keys_done"] == resumed["keys_total"]
    stored = metric(cluster.node(0).url, "ringkv_stored_keys")
    assert abs(stored - (len(keys) - given_away)) <= 3
    with Client(cluster.urls) as client:
        for key in keys:
            assert client.get(key, r="all").found, key
