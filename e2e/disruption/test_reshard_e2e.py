"""A shard-count change rolled by the operator, on kind, under a quorum workload.

The example cluster (3 nodes, one shard each: no CPU limit) gets ``spec.shards: 2``. A node
refuses data written with another count, so the operator moves each node in turn onto an
empty volume (Event ``Resharding``): the pod comes back with 2 shards, takes over its tokens
and streams its data back from the other replicas; the next node goes only once it is normal
with no hints pending. At the end every pod runs 2 shards on a new volume, the ring says so,
and every acknowledged write reads back.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from test_operator_e2e import (
    PORT,
    check_quorum_reads,
    endpoints,
    fill,
    kvc,
    node_pods,
    settled,
    wait_for,
)
from test_operator_lifecycle_e2e import live_workload, patch_kvc, report

from ringkv.client import Client

pytestmark = [pytest.mark.slow]


def _pod_shards(p: dict[str, Any]) -> str | None:
    for c in p["spec"]["containers"]:
        for env in c.get("env") or ():
            if env["name"] == "RINGKV_SHARDS":
                return str(env.get("value"))
    return None


def _volume_uids(k8s: Any, ns: str) -> dict[str, str]:
    out = json.loads(k8s.kubectl("-n", ns, "get", "pvc", "-o", "json").stdout)["items"]
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in out}


def _events(k8s: Any, ns: str, reason: str) -> list[str]:
    out = json.loads(k8s.kubectl("-n", ns, "get", "events", "-o", "json").stdout)["items"]
    return [str(e.get("message")) for e in out if e.get("reason") == reason]


@pytest.mark.timeout(1500)
def test_a_shard_count_change_moves_every_node_one_at_a_time(k8s: Any, available: str) -> None:
    ns = available
    t0 = time.monotonic()
    assert kvc(k8s, ns)["status"].get("shards") == 1
    volumes = _volume_uids(k8s, ns)
    before = fill(k8s, ns, "pre-reshard", 100)
    work = live_workload(k8s, ns, "reshard").start()
    try:
        patch_kvc(k8s, ns, {"spec": {"shards": 2}})

        def done() -> Any:
            s = settled(k8s, ns, 3)
            if s is None or s.obj["status"].get("shards") != 2:
                return None
            return s if all(_pod_shards(p) == "2" for p in s.pods) else None

        s = wait_for(done, 1200, "every node moved to 2 shards and settled", every=3)
    finally:
        work.stop()
    took = time.monotonic() - t0
    report(work)
    moved = _events(k8s, ns, "Resharding")
    print(f"\n3 nodes moved from 1 to 2 shards in {took:.0f}s; events: {moved}; "
          f"workload: {work.summary()}")
    assert len({m.split()[1] for m in moved}) == 3, moved  # each node once
    assert all(uid != volumes.get(name) for name, uid in _volume_uids(k8s, ns).items())
    assert int(s.obj["status"].get("replacements", 0)) == 0
    with Client(k8s.pod_url(ns, node_pods(k8s, ns)[0]["metadata"]["name"], PORT),
                timeout=10) as c:  # fmt: skip
        ring = c.ring()
    assert all(n.get("shards") == 2 for n in ring["nodes"] if n["state"] != "left"), ring
    assert work.acked and work.wrong_reads == [], work.summary()
    assert check_quorum_reads(endpoints(k8s, ns)[0], {**before, **work.acked}) == []
    failed = len(work.write_failures) + len(work.read_failures)
    assert failed <= max(3, work.ops // 100), work.summary()
