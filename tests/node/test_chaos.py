"""Read-modify-write clients against random kills and pauses lose no acknowledged write.

Each client owns its keys and keeps a counter in each: read at R=quorum, add one to the largest
sibling, write back at W=quorum with the context it read. Meanwhile a chaos thread kills
(SIGKILL, then restarts) or pauses (SIGSTOP, then SIGCONT) one random node at a time. At the end
every key must hold at least the last value whose write was acknowledged.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time

import pytest

from ringkv.client import Client, RingkvError
from tests.cluster import Cluster, wait_until

pytestmark = pytest.mark.slow

CLIENTS = 4
KEYS_PER_CLIENT = 5
DURATION = 20.0  # seconds of workload
MAX_OPS_PER_CLIENT = 8000


def counter(got_siblings: list[bytes]) -> int:
    return max((int(v) for v in got_siblings), default=0)


def test_read_modify_write_under_kills_and_pauses(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = make_cluster(
        extra_args=["--anti-entropy-interval", "1", "--request-timeout", "1"]
    )
    rng = random.Random(20261125)
    acked: dict[str, int] = {}
    acked_lock = threading.Lock()
    stop = threading.Event()
    stats = {"ok": 0, "failed": 0, "faults": 0}

    def client_loop(index: int) -> None:
        urls = cluster.urls[index % 3 :] + cluster.urls[: index % 3]  # spread coordinators
        client = Client(urls, timeout=3.0)
        keys = [f"c{index}-k{j}" for j in range(KEYS_PER_CLIENT)]
        local_rng = random.Random(index)
        for _ in range(MAX_OPS_PER_CLIENT):
            if stop.is_set():
                break
            key = local_rng.choice(keys)
            try:
                got = client.get(key, r="quorum")
                value = counter(got.siblings) + 1
                client.put(key, str(value).encode(), context=got.context, w="quorum")
            except RingkvError:
                stats["failed"] += 1
                continue
            with acked_lock:
                acked[key] = max(acked.get(key, 0), value)
                stats["ok"] += 1
        client.close()

    def chaos_loop() -> None:
        deadline = time.monotonic() + DURATION
        while time.monotonic() < deadline and stats["faults"] < 20:
            node = cluster.node(rng.randrange(3))
            if rng.random() < 0.5:
                node.kill()
                stop.wait(rng.uniform(0.5, 2.0))
                node.start()
            else:
                node.pause()
                stop.wait(rng.uniform(0.5, 2.0))
                node.resume()
            stats["faults"] += 1
            # let the node rejoin before the next fault, so that a quorum stays possible
            with contextlib.suppress(AssertionError):
                node.wait_ready(20)
            stop.wait(rng.uniform(0.5, 1.5))

    clients = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
    chaos = threading.Thread(target=chaos_loop)
    for t in (*clients, chaos):
        t.start()
    chaos.join(DURATION + 120)
    stop.set()  # the clients stop with the chaos
    for t in clients:
        t.join(30)
    assert not chaos.is_alive() and not any(t.is_alive() for t in clients)
    for node in cluster.nodes:
        if not node.running:
            node.start()
    cluster.wait_ready()
    print(f"chaos: {stats}")
    assert stats["ok"] > 50, stats  # the workload really ran
    assert stats["faults"] >= 5, stats

    final = Client(cluster.urls, timeout=5.0)

    def all_keys_ok() -> bool:
        for key, value in acked.items():
            got = final.get(key, r="all")
            if counter(got.siblings) < value:
                raise AssertionError(f"{key}: acknowledged {value}, found {got.siblings}")
        return True

    # r=all needs every node alive again; the check itself must pass on the first full read
    wait_until(
        lambda: all(m["alive"] for n in cluster.nodes for m in Client(n.url).status()["members"]),
        30,
        message="all nodes alive",
    )
    assert all_keys_ok()
