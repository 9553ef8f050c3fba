"""Shards: one ring member served by several worker processes (``ringkv node --shards S``).

Unit tests of the shell's rules (the recorded shard count, the CPUs a process may use) and
multi-process tests of real sharded nodes on loopback: quorum reads and writes land in the
owning shard of every replica, the token-aware client goes straight to the owning shard, and a
killed shard is restarted while the node reports not ready, losing no acknowledged write.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ringkv.client import Client
from ringkv.core.placement import preference_list
from ringkv.core.ring import key_hash
from ringkv.core.sharding import shard_of
from ringkv.node import shards
from ringkv.node.main import main as node_main
from ringkv.node.storage import Storage
from tests.cluster import Cluster, wait_until
from tests.node.test_failures import local_value, ring_of, seen_down, trees_equal


def test_the_data_directory_records_the_shard_count_and_refuses_another(tmp_path: Path) -> None:
    shards.check_recorded(str(tmp_path), 2)
    shards.check_recorded(str(tmp_path), 2)  # the same again: fine
    with pytest.raises(shards.ShardCountChanged, match="--shards 2, not 4"):
        shards.check_recorded(str(tmp_path), 4)


def test_data_written_by_one_process_before_the_record_is_refused_with_shards(
    tmp_path: Path,
) -> None:
    (tmp_path / "CURRENT").write_text("MANIFEST-000001\n")  # a RocksDB directory
    with pytest.raises(shards.ShardCountChanged, match="--shards 1, not 2"):
        shards.check_recorded(str(tmp_path), 2)
    shards.check_recorded(str(tmp_path), 1)
    assert (tmp_path / shards.SHARDS_FILE).read_text().strip() == "1"


def test_a_node_started_with_another_shard_count_exits_saying_why(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    shards.check_recorded(str(tmp_path), 3)
    code = node_main(["--node-id", "n1", "--data-dir", str(tmp_path), "--shards", "1",
                      "--no-auth", "true", "--no-peer-auth", "true"])  # fmt: skip
    assert code == 1
    assert "written with --shards 3, not 1" in capfd.readouterr().err


def test_a_node_warns_when_its_shards_get_too_few_tokens_each(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    shards.check_recorded(str(tmp_path), 3)  # so that it stops right after saying it
    node_main(["--node-id", "n1", "--data-dir", str(tmp_path), "--shards", "2", "--vnodes",
               "16", "--no-auth", "true", "--no-peer-auth", "true"])  # fmt: skip
    err = capfd.readouterr().err
    assert "--vnodes 16 is fewer than 16 tokens for each of the 2 shards" in err
    assert "--vnodes 32 or more" in err
    node_main(["--node-id", "n1", "--data-dir", str(tmp_path), "--shards", "2", "--vnodes",
               "32", "--no-auth", "true", "--no-peer-auth", "true"])  # fmt: skip
    assert "fewer than" not in capfd.readouterr().err


def test_cpus_come_from_the_affinity_capped_by_the_cgroup_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert shards._cgroup_quota(str(tmp_path)) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert shards._cgroup_quota(str(tmp_path)) is None
    assert 1 <= shards.available_cpus() <= len(os.sched_getaffinity(0))


def _get(url: str, timeout: float = 5) -> tuple[int, dict]:
    """Status and JSON body (0 and {} when the connection broke: a shard being killed)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (ConnectionError, urllib.error.URLError):
        return 0, {}


def _status(url: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (ConnectionError, urllib.error.URLError):
        return 0


def _shard_pids(cluster: Cluster, node: int) -> list[int]:
    status = cluster.client(node).status()
    return [int(row["pid"]) for row in status["shards"]["per_shard"]]


def _handovers(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("ringkv_shard_handovers_total"))  # fmt: skip


@pytest.fixture
def sharded(tmp_path: Path):
    cluster = Cluster(tmp_path, nodes=3, zones=3, replication_factor=3, shards=2)
    try:
        cluster.start(deadline=90)
        yield cluster
    finally:
        cluster.stop()


def test_quorum_writes_land_in_the_owning_shard_of_every_replica(sharded: Cluster) -> None:
    keys = [f"key-{i}" for i in range(60)]
    for i, key in enumerate(keys):
        sharded.client(i % 3).put(key, key.encode(), w="all")
    for i, key in enumerate(keys):
        assert sharded.client((i + 1) % 3).get(key, r="all").value == key.encode()
    ring = sharded.client(0).ring()
    for node in ring["nodes"]:
        assert node["shards"] == 2 and node["shard_rule"] == shards.SHARD_RULE
        assert len(node["shard_addresses"]) == 2
        # a sharded node claims its tokens slice by slice: half of them in each shard's slice
        tokens = [int(t) for t in node["tokens"]]
        assert sum(shard_of(t, 2) for t in tokens) == len(tokens) // 2, node["id"]
    status = sharded.client(1).status()["shards"]
    assert [row["shard"] for row in status["per_shard"]] == [0, 1]
    assert all(row["ready"] for row in status["per_shard"])
    sharded.stop()
    # Every node holds every key (N = 3 of 3), each in the shard its token maps to.
    for node in sharded.nodes:
        assert_placed(node.data_dir, 2, keys)


def assert_placed(data_dir: Path, count: int, keys: list[str]) -> None:
    """The stopped node's shards hold all ``keys``, each in the shard its token maps to."""
    held: dict[int, set[str]] = {}
    for shard in range(count):
        # (the killed node's workers die with it, a moment later: wait for their locks)
        path = str(data_dir / f"shard-{shard}")
        storage = wait_until(lambda: Storage(path), 10, message="the shard's RocksDB lock")  # noqa: B023
        try:
            held[shard] = {k.decode() for _, k, _ in storage.scan(0, 0)}
        finally:
            storage.close()
    assert set().union(*held.values()) == set(keys), data_dir
    for shard, found in held.items():
        assert all(shard_of(key_hash(k.encode()), count) == shard for k in found), data_dir


def test_the_token_aware_client_sends_each_key_to_its_owning_shard(sharded: Cluster) -> None:
    shard_urls = sharded.urls  # a node's /metrics holds every shard's samples
    with Client(sharded.urls, token_aware=True, timeout=5) as client:
        before = sum(_handovers(u) for u in shard_urls)
        for i in range(40):
            client.put(f"aware-{i}", b"v")
            assert client.get(f"aware-{i}").value == b"v"
        assert sum(_handovers(u) for u in shard_urls) == before
    plain = sharded.client(0)
    for i in range(40):
        plain.put(f"plain-{i}", b"v")  # about half land on the shard that does not own them
    assert sum(_handovers(u) for u in shard_urls) > before
    with urllib.request.urlopen(sharded.urls[0] + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for shard in (0, 1):  # one sample per shard, labelled
        assert f'ringkv_shard_handovers_total{{shard="{shard}"}}' in text


def test_a_killed_shard_is_restarted_and_the_node_is_not_ready_meanwhile(
    sharded: Cluster,
) -> None:
    node = sharded.node(0)
    writer = sharded.client(1)
    acknowledged = []
    for i in range(30):
        writer.put(f"before-{i}", b"x")
        acknowledged.append(f"before-{i}")
    pids = _shard_pids(sharded, 0)
    os.kill(pids[1], signal.SIGKILL)
    # Not ready while the shard is missing (the probe may land on either shard's socket).
    wait_until(lambda: _get(node.url + "/health/ready")[0] == 503, 10, 0.02,
               message="n1 not ready")  # fmt: skip
    assert "not running" in wait_until(
        lambda: _get(node.url + "/health/ready")[1].get("message"), 10, message="its reason"
    )
    # Writes through the other nodes go on (the missing shard's replicas get hints).
    for i in range(30):
        try:
            writer.put(f"during-{i}", b"y")
        except Exception:  # a write may fail while the shard is down: then it is not counted
            continue
        acknowledged.append(f"during-{i}")
    wait_until(lambda: _get(node.url + "/health/ready")[0] == 200, 60, message="n1 ready again")
    restarted = _shard_pids(sharded, 0)
    assert restarted[0] == pids[0] and restarted[1] != pids[1]
    # No acknowledged write was lost: every one is read back from every replica.
    for key in acknowledged:
        assert sharded.client(0).get(key, r="all").found, key


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def test_stopping_the_nodes_process_pauses_every_shard_and_continuing_it_resumes_them(
    sharded: Cluster,
) -> None:
    """kill -STOP of a sharded node's process (the supervisor) pauses the whole node, as it
    pauses a node of one process: its shards stop too, the others convict it; kill -CONT
    brings every shard back."""
    node = sharded.node(2)
    pids = _shard_pids(sharded, 2)
    node.pause()
    wait_until(lambda: all(_state(p) == "T" for p in pids), 10, 0.05,
               message="every shard of n3 stopped")  # fmt: skip
    seen_down(sharded, 0, "n3")
    node.resume()
    wait_until(lambda: not any(_state(p) == "T" for p in pids), 10, 0.05,
               message="every shard of n3 running again")  # fmt: skip
    seen_down(sharded, 0, "n3", down=False)
    assert _shard_pids(sharded, 2) == pids  # the same processes, not restarted ones
    sharded.client(2).put("after-the-pause", b"v", w="all")


def test_a_wiped_node_restarted_with_another_shard_count_streams_into_its_shards(
    tmp_path: Path,
) -> None:
    """The documented way to change --shards: empty the data directory and start the node
    with the new count; it replaces itself and each shard receives exactly its keys, from
    nodes whose shards are cut differently."""
    cluster = Cluster(
        tmp_path,
        nodes=3,
        zones=3,
        replication_factor=3,
        shards=2,
        extra_args=["--anti-entropy-interval", "0"],
    )  # streaming alone
    try:
        cluster.start(deadline=90)
        keys = [f"s{i}" for i in range(300)]
        for key in keys:
            cluster.client(0).put(key, key.encode(), w="all")
        node = cluster.node(1)
        node.kill()
        node.wipe()
        node.args = [*node.args, "--shards", "3"]
        node.start()

        def replaced() -> bool:
            for change in cluster.client(0).progress()["changes"]:
                if (change.get("op"), change.get("node"), change["state"]) == (
                    "replace",
                    "n2",
                    "done",
                ):
                    return change["keys_sent"] == len(keys)
            return False

        wait_until(replaced, 120, 0.2, message="replace of n2 done")
        cluster.wait_ready(60)
        assert cluster.client(1).status()["shards"]["count"] == 3
    finally:
        cluster.stop()
    assert_placed(cluster.node(1).data_dir, 3, keys)


def _metric_total(urls: list[str], name: str) -> float:
    total = 0.0
    for url in urls:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith((name + " ", name + "{")):
                    total += float(line.split()[-1])
    return total


def test_anti_entropy_between_shards_carries_deletes_and_purges_them_once(
    make_cluster,  # type: ignore[no-untyped-def]
) -> None:
    """Each shard compares the trees of its pieces with the same shard of the other
    replicas: a node that missed deletes (hints expire at once) gets the tombstones, and
    after the grace period every replica's owning shard purges each tombstone exactly once."""
    cluster = make_cluster(
        shards=2,
        extra_args=[
            "--anti-entropy-interval",
            "0.3",
            "--anti-entropy-rate",
            "100000",
            "--tombstone-grace",
            "30",
            "--hint-window",
            "0.01",
        ],
    )  # fmt: skip  (a grace longer than a sharded node's restart on a loaded machine)
    keys = [f"del-{i}" for i in range(40)]
    for key in keys:
        cluster.client(0).put(key, b"doomed", w="all")
    cluster.node(2).kill()  # n3 keeps the old values on disk
    wait_until(lambda: any(m["id"] == "n3" and not m["alive"]
                           for m in cluster.client(0).status()["members"]), 15,
               message="n3 seen down")  # fmt: skip
    for key in keys:
        cluster.client(0).delete(key, w="quorum")
    cluster.node(2).start().wait_ready(60)
    cluster.wait_ready(60)

    def converged() -> bool:
        roots: dict[str, set[str]] = {}
        for node in cluster.nodes:
            status, document = _get(node.url + "/v1/anti-entropy/trees")
            assert status == 200
            for entry in document["ranges"]:
                roots.setdefault(entry["end"], set()).add(entry["root"])
        return bool(roots) and all(len(r) == 1 for r in roots.values())

    wait_until(converged, 60, 0.3, message="every shard's trees equal")
    for key in keys:
        assert not cluster.client(2).get(key, r="all").found
    urls = cluster.urls  # a node's /metrics holds every shard's samples, labelled by shard
    wait_until(lambda: _metric_total(urls, "ringkv_tombstones_purged_total") >= 3 * len(keys),
               120, 0.5, message="purged everywhere")  # fmt: skip
    status = cluster.client(0).status()["shards"]
    assert all(row["anti_entropy_rounds"] > 0 for row in status["per_shard"])
    assert _metric_total(urls, "ringkv_tombstones_purged_total") == 3 * len(keys)


def test_anti_entropy_repairs_between_nodes_of_different_shard_counts(tmp_path: Path) -> None:
    """Every node cuts its trees at the slice boundaries of every count in the ring, so a
    node of 2 shards whose only peers run 1 process compares the same pieces with them and
    gets the writes it missed (hints expire at once; nothing reads the keys meanwhile)."""
    cluster = Cluster(
        tmp_path, nodes=3, zones=3, replication_factor=3, shards=2,
        extra_args=["--anti-entropy-interval", "0.3", "--anti-entropy-rate", "100000",
                    "--hint-window", "0.01"],
    )  # fmt: skip
    for single in (0, 1):
        cluster.node(single).args = [*cluster.node(single).args, "--shards", "1"]
    keys = [f"ae-{i}" for i in range(100)]
    try:
        cluster.start(deadline=90)
        assert [n["shards"] for n in cluster.client(0).ring()["nodes"]] == [1, 1, 2]
        for key in keys:
            cluster.client(0).put(key, b"old", w="all")
        cluster.node(2).kill()
        seen_down(cluster, 0, "n3")
        for key in keys:
            cluster.client(0).put(key, b"new", w="quorum", replace=True)
        cluster.node(2).start().wait_ready(60)
        cluster.wait_ready(60)
        wait_until(lambda: trees_equal(cluster, [0, 1, 2]), 60, 0.3,
                   message="the trees of every piece equal on the three nodes")  # fmt: skip
        assert [local_value(cluster, 2, key) for key in keys] == [b"new"] * len(keys)
    finally:
        cluster.stop()


def test_a_join_streams_into_the_right_shards_and_every_shard_cleans_what_it_gave_away(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path, nodes=3, zones=3, replication_factor=2, shards=2,
                      extra_args=["--anti-entropy-interval", "0"])  # fmt: skip
    try:
        for i in (0, 1):
            cluster.node(i).start()
        cluster.wait_ready(90)
        keys = [f"j{i}" for i in range(200)]
        for key in keys:
            cluster.client(0).put(key, key.encode(), w="all")
        cluster.node(2).start()
        cluster.wait_ready(90)

        def cleaned() -> bool:
            for i in range(3):
                status = cluster.client(i).status()
                report = status["cleanup"]
                if (
                    report["state"] != "done"
                    or report["cleaned_ring"] != status["cluster"]["ring_version"]
                ):
                    return False
            return True

        wait_until(cleaned, 90, 0.3, message="every node cleaned for the new ring")
        for key in keys:
            assert cluster.client(2).get(key, r="all").value == key.encode()
        ring = ring_of(cluster.client(0))
    finally:
        cluster.stop()
    for node in cluster.nodes:
        mine = [
            k for k in keys
            if node.node_id in {r.node for r in preference_list(ring, key_hash(k.encode()), 2)}
        ]  # fmt: skip
        assert_placed(node.data_dir, 2, mine)  # exactly what it replicates: nothing given away left


def test_batches_on_sharded_nodes_behave_as_on_single_process_ones(sharded: Cluster) -> None:
    """The batch endpoints' own tests, against nodes of two shards: each shard serves its
    part of a batch, peers' multi-key messages reach the owning shards, and results keep
    request order."""
    from tests.node import test_batch

    test_batch.test_batches_through_every_node(sharded)
    test_batch.test_per_key_outcomes_and_conditions(sharded)
    test_batch.test_batch_limits_and_bad_requests(sharded)
    test_batch.test_batch_with_one_replica_down(sharded)


def test_key_listing_on_sharded_nodes_behaves_as_on_single_process_ones(sharded: Cluster) -> None:
    """The listing's own tests against nodes of two shards: a node lists the keys of all its
    shards in ring order, with prefixes, pages, expiry and quorum merging."""
    from tests.node import test_listing

    test_listing.test_prefixes_expiry_clients_and_cli(sharded)


def test_listing_at_a_quorum_on_sharded_nodes(make_cluster) -> None:  # type: ignore[no-untyped-def]
    from tests.node import test_listing

    def sharded_cluster(**kwargs):  # type: ignore[no-untyped-def]
        return make_cluster(shards=2, **kwargs)

    test_listing.test_listing_at_a_quorum_merges_replicas_and_checks_versions(sharded_cluster)


def test_hints_for_a_sharded_node_are_kept_by_every_shard_and_delivered_into_its_shards(
    make_cluster,  # type: ignore[no-untyped-def]
) -> None:
    """Hinted handoff's own test against nodes of two shards: every coordinating shard keeps
    hints for the down node, /v1/status counts all of them, and each is delivered to the
    shard of the node holding its key (read back from that node's own copy)."""
    from tests.node import test_failures

    def sharded_cluster(**kwargs):  # type: ignore[no-untyped-def]
        return make_cluster(shards=2, **kwargs)

    test_failures.test_hints_accumulate_while_a_node_is_down_and_are_delivered(sharded_cluster)


def test_a_shard_killed_while_serving_a_handed_over_request_answers_503_not_a_hang(
    tmp_path: Path,
) -> None:
    """A request handed to a sibling that dies before answering gets a 503 naming the shard
    as soon as the sibling is gone (not after the request timeout), and once the sibling is
    back the next handover is served again."""
    cluster = Cluster(tmp_path, nodes=1, zones=1, replication_factor=1, shards=2,
                      extra_args=["--request-timeout", "20"])  # fmt: skip
    try:
        cluster.start(deadline=60)
        node = cluster.node(0)
        first_shard = f"http://127.0.0.1:{node.peer_port + 2}"  # shard 0's own client port
        key = next(k for k in (f"k{i}" for i in range(100))
                   if shard_of(key_hash(k.encode()), 2) == 1)  # fmt: skip
        put = urllib.request.Request(f"{first_shard}/v1/kv/{key}", data=b"v", method="PUT")
        with urllib.request.urlopen(put, timeout=5) as answer:
            assert answer.status in (200, 201, 204)
        assert _status(f"{first_shard}/v1/kv/{key}") == 200
        pids = _shard_pids(cluster, 0)
        os.kill(pids[1], signal.SIGSTOP)  # it takes the request and never answers
        answers: list[tuple[int, dict]] = []
        asking = threading.Thread(
            target=lambda: answers.append(_get(f"{first_shard}/v1/kv/{key}", timeout=30))
        )
        asking.start()

        def handed_over() -> bool:  # the /metrics of shard 0 alone: shard 1 cannot answer
            with urllib.request.urlopen(first_shard + "/metrics", timeout=30) as answer:
                text = answer.read().decode()
            return any(float(line.split()[-1]) >= 3 for line in text.splitlines()
                       if line.startswith('ringkv_shard_handovers_total{shard="0"}'))  # fmt: skip

        wait_until(handed_over, 40, message="the third handover")
        assert asking.is_alive()  # waiting for shard 1
        os.kill(pids[1], signal.SIGKILL)
        asking.join(5)  # far less than the request timeout
        assert not asking.is_alive(), "the handed-over request hangs"
        status, body = answers[0]
        assert status == 503 and body["error"] == "unavailable", body
        assert "shard 1 of this node" in body["message"] and "stopped" in body["message"]
        # restarted by the node: handovers are served again
        wait_until(lambda: _status(f"{first_shard}/v1/kv/{key}") == 200, 60,
                   message="shard 1 back")  # fmt: skip
    finally:
        cluster.stop()
