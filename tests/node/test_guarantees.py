"""Guarantees on a real cluster under faults: hints survive a SIGKILL of the node holding them,
and last-write-wins never loses an acknowledged write to an older one nor invents a value."""

from __future__ import annotations

import base64
import random
import threading
import time

import msgpack
import pytest

from ringkv.client import Client, RingkvError
from tests.cluster import Cluster, wait_until
from tests.node.test_failures import all_up, local_value, seen_down

pytestmark = pytest.mark.slow

NO_REPAIR = ["--anti-entropy-interval", "0", "--read-repair-chance", "0"]


def _metric(cluster: Cluster, node: int, name: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(cluster.node(node).url + "/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_hints_survive_a_sigkill_of_their_holder_and_are_delivered(make_cluster) -> None:  # type: ignore[no-untyped-def]
    # Without anti-entropy and read repair, only hinted handoff can bring n3 the writes.
    cluster: Cluster = make_cluster(extra_args=NO_REPAIR)
    cluster.node(2).kill()
    seen_down(cluster, 0, "n3")
    keys = [f"hinted-{i}" for i in range(30)]
    for key in keys:
        cluster.client(0).put(key, key.encode(), w="quorum")
    hints = cluster.client(0).status()["hints"]["pending"]
    assert hints >= len(keys), hints  # n1 coordinated every write and holds n3's hints
    cluster.node(0).kill()  # SIGKILL: no flush, no shutdown
    cluster.node(0).start().wait_ready()
    assert cluster.client(0).status()["hints"]["pending"] >= len(keys)  # still on disk
    cluster.node(2).start().wait_ready()
    all_up(cluster)
    wait_until(
        lambda: cluster.client(0).status()["hints"]["pending"] == 0, 60, message="hints delivered"
    )
    assert _metric(cluster, 0, "ringkv_hints_delivered_total") >= len(keys)
    # n3 alone answers: what it holds came from the hints
    cluster.node(0).kill()
    cluster.node(1).kill()
    for key in keys:
        assert local_value(cluster, 2, key) == key.encode()


def _clock(context: str) -> dict[str, tuple[int, int]]:
    raw = msgpack.unpackb(base64.urlsafe_b64decode(context + "=" * (-len(context) % 4)))
    return {actor: (int(entry[0]), int(entry[1])) for actor, entry in raw.items()}


def test_lww_keeps_every_acknowledged_write_or_a_later_one_under_faults(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """Concurrent blind writers on few keys while nodes are killed, restarted, paused and
    resumed. Afterwards each key holds a value some writer sent (nothing invented), and every
    acknowledged write to it is either that value or older (by its timestamp) than the write
    that holds it."""
    cluster: Cluster = make_cluster(extra_args=["--conflict-mode", "lww",
                                                "--anti-entropy-interval", "1"])  # fmt: skip
    keys = [f"lww-{i}" for i in range(6)]
    attempted: dict[str, set[bytes]] = {k: set() for k in keys}
    acked: dict[str, list[tuple[bytes, str, int, int]]] = {k: [] for k in keys}
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + 25

    def writer(number: int) -> None:
        rng = random.Random(number)
        clients = [Client(n.url, timeout=3.0) for n in cluster.nodes]
        for seq in range(2000):  # bounded in count and in time
            if stop.is_set() or time.monotonic() > deadline:
                return
            key = rng.choice(keys)
            value = f"w{number}-{seq}".encode()
            with lock:
                attempted[key].add(value)
            try:
                context = rng.choice(clients).put(key, value, w="quorum")
            except (RingkvError, OSError):
                continue  # not acknowledged: it may or may not have landed
            ((actor, (counter, ts_ms)),) = _clock(context).items()  # a blind write: one dot
            with lock:
                acked[key].append((value, actor, counter, ts_ms))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        cluster.node(2).kill()  # a crash
        time.sleep(3)
        cluster.node(2).start()
        time.sleep(3)
        cluster.node(1).pause()  # a stall (SIGSTOP): it neither answers nor is declared dead
        time.sleep(3)
        cluster.node(1).resume()
        time.sleep(2)
        cluster.node(0).kill()
        time.sleep(2)
        cluster.node(0).start()
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    cluster.wait_ready(120)  # restarts after faults are slow on a loaded machine
    all_up(cluster)
    assert sum(len(v) for v in acked.values()) >= 50  # the writers did get through

    def final(key: str) -> tuple[bytes, str, int, int]:
        got = cluster.client(0).get(key, r="all")
        assert got.found and got.value is not None
        ((actor, (counter, ts_ms)),) = _clock(got.context).items()
        return got.value, actor, counter, ts_ms

    # Anti-entropy brings every replica to one value; then it is the same through every node.
    def converged() -> bool:
        return all(
            len({cluster.client(i).get(k, r="all").value for i in range(3)}) == 1 for k in keys
        )

    wait_until(converged, 120, interval=0.5, message="replicas converged")
    for key in keys:
        value, actor, counter, ts_ms = final(key)
        assert value in attempted[key], f"{key}: {value!r} was never written"
        for w_value, w_actor, w_counter, w_ts in acked[key]:
            if w_value == value:
                continue
            # the winner is later: by wall time, or by the HLC counter for one node's writes
            assert ts_ms >= w_ts, (key, value, ts_ms, w_value, w_ts)
            if w_actor == actor:
                assert counter > w_counter, (key, value, counter, w_value, w_counter)


def test_a_node_away_longer_than_the_grace_refuses_to_rejoin_until_wiped(make_cluster) -> None:  # type: ignore[no-untyped-def]
    grace = 3.0
    cluster: Cluster = make_cluster(extra_args=["--tombstone-grace", str(grace)])
    for i in range(20):
        cluster.client(0).put(f"kept-{i}", b"v", w="all")
    cluster.node(2).kill()
    away = time.monotonic()
    cluster.client(0).delete("kept-0", w="quorum")  # a delete n3 never sees
    wait_until(lambda: time.monotonic() - away > grace + 1.5, grace + 10, interval=0.2,
               message="longer than the grace")  # fmt: skip
    node = cluster.node(2)
    node.start()
    assert node.process is not None
    code = node.process.wait(60)  # it exits by itself: refused
    assert code != 0
    log = node.log_path.read_text()
    assert "refuses to rejoin" in log and "--tombstone-grace" in log
    assert "wipe its data directory" in log and "replace" in log
    # wiped, it comes back as a replacement of itself and gets the data from its replicas
    node.wipe()
    node.start().wait_ready()
    cluster.wait_ready(120)  # restarts after faults are slow on a loaded machine
    wait_until(lambda: local_value(cluster, 2, "kept-1") == b"v", 60, message="refilled")
    assert not cluster.client(2).get("kept-0", r="all").found


def test_a_whole_cluster_down_longer_than_the_grace_starts_again(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """Nobody ran while the nodes were away, so nothing was purged behind their backs."""
    grace = 2.0
    cluster: Cluster = make_cluster(extra_args=["--tombstone-grace", str(grace)])
    cluster.client(0).put("survivor", b"v", w="all")
    for node in cluster.nodes:
        node.kill()
    time.sleep(grace + 1.5)  # the absence itself is what is tested: no condition to wait on
    for node in cluster.nodes:
        node.start()
    cluster.wait_ready(120)  # restarts after faults are slow on a loaded machine
    assert cluster.client(1).get("survivor", r="all").value == b"v"


def test_with_replace_when_away_too_long_the_node_wipes_and_replaces_itself(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """What the Kubernetes operator sets: the stale node comes back as its own replacement."""
    grace = 3.0
    flags = ["--tombstone-grace", str(grace), "--replace-when-away-too-long", "true"]
    cluster: Cluster = make_cluster(extra_args=flags)
    for i in range(20):
        cluster.client(0).put(f"kept-{i}", b"v", w="all")
    old = cluster.client(2).status()["node"]["incarnation"]
    cluster.node(2).kill()
    away = time.monotonic()
    cluster.client(0).delete("kept-0", w="quorum")  # a delete n3 never sees
    wait_until(lambda: time.monotonic() - away > grace + 1.5, grace + 10, interval=0.2,
               message="longer than the grace")  # fmt: skip
    cluster.node(2).start().wait_ready()
    cluster.wait_ready(120)  # restarts after faults are slow on a loaded machine
    log = cluster.node(2).log_path.read_text()
    assert "refuses to rejoin" in log and "wiping it now" in log
    assert cluster.client(2).status()["node"]["incarnation"] != old  # a new life: wiped
    wait_until(lambda: local_value(cluster, 2, "kept-1") == b"v", 60, message="refilled")
    assert not cluster.client(2).get("kept-0", r="all").found
