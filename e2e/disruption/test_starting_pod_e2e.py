"""A pod deleted while it is still starting, three times in a row (issue 23), on kind.

The example cluster (3 nodes, RF 3) is scaled to 4 under a quorum workload; the new node's
pod is deleted while it starts -- first as soon as it exists, then twice once its container
runs (the node starting and joining), each time before it is ready -- and the StatefulSet
recreates it on the same volume each time. Then: the cluster settles at 4 with exactly the
expected members (no duplicate, no ghost from an earlier start), no ring change left running,
every acknowledged write reads back; and it scales back to 3.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from test_operator_e2e import (
    NAME,
    PORT,
    Workload,
    assert_consistent,
    changes,
    check_quorum_reads,
    endpoints,
    fill,
    kvc,
    pod_ready,
    sample,
    settled,
    wait_for,
)

from ringkv.client import Client

pytestmark = [pytest.mark.slow]

NEW = f"{NAME}-zone-a-1"  # the fourth node: zone-a is the first zone below its share


def _pod(k8s: Any, ns: str, name: str) -> dict[str, Any] | None:
    r = k8s.kubectl("-n", ns, "get", "pod", name, "-o", "json", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


@pytest.mark.timeout(1500)
def test_pod_deleted_while_starting_three_times(k8s: Any, available: str) -> None:
    ns = available
    t_start = time.monotonic()
    before = fill(k8s, ns, "pre-start", 50)
    work = Workload(endpoints(k8s, ns), "starting").start()
    samples: list[tuple[Any, ...]] = []
    stages: list[str] = []
    try:
        k8s.kubectl("-n", ns, "scale", "kvc", NAME, "--replicas=4")
        deleted: set[str] = set()
        for round_ in range(3):

            def fresh() -> dict[str, Any] | None:
                p = _pod(k8s, ns, NEW)
                if p is None or p["metadata"]["uid"] in deleted \
                        or p["metadata"].get("deletionTimestamp"):
                    return None
                return p

            # Only kubectl get pod in these loops: a new node is ready within seconds here.
            pod = wait_for(fresh, 300, f"{NEW} (re)created, round {round_ + 1}", every=0.2)
            if round_ > 0:
                # Then let its container run (the node starting, joining), not yet ready.
                def running() -> dict[str, Any] | None:
                    p = fresh()
                    states = [c.get("state") or {} for c in
                              ((p or {}).get("status") or {}).get("containerStatuses") or ()]
                    return p if p and any("running" in st for st in states) else None

                pod = wait_for(running, 120, f"{NEW}'s container running", every=0.2)
            started = any("running" in (c.get("state") or {})
                          for c in pod["status"].get("containerStatuses") or ())
            stages.append(f"round {round_ + 1}: pod {pod['status'].get('phase')}, container "
                          f"{'running' if started else 'not started'}, "
                          f"{'ready' if pod_ready(pod) else 'not ready'}")
            deleted.add(pod["metadata"]["uid"])
            k8s.kubectl("-n", ns, "delete", "pod", NEW, "--wait=false")
            samples.append(sample(kvc(k8s, ns)))
        assert all("not ready" in st for st in stages), stages

        def at_four() -> Any:
            samples.append(sample(kvc(k8s, ns)))
            return settled(k8s, ns, 4)

        s4 = wait_for(at_four, 900, "settled at 4 nodes after the deletions", every=2)
        t_four = time.monotonic() - t_start
        names = sorted(m["id"] for m in s4.obj["status"]["members"])
        assert names == sorted({f"{NAME}-zone-{z}-0" for z in "abc"} | {NEW}), names
        assert not s4.obj["status"].get("progress")
        with Client(k8s.pod_url(ns, NEW, PORT), timeout=10) as c:
            ring = c.ring()
            progress = c.progress()
        ids = [str(n["id"]) for n in ring["nodes"] if n["state"] != "left"]
        assert sorted(ids) == names, ring["nodes"]  # no duplicate, no ghost
        assert all(n["state"] == "normal" and n["alive"] for n in ring["nodes"]
                   if n["state"] != "left"), ring["nodes"]
        assert not progress.get("in_progress"), progress
        assert not [c_ for c_ in progress.get("changes") or () if c_.get("state") == "running"]

        k8s.kubectl("-n", ns, "scale", "kvc", NAME, "--replicas=3")
        s3 = wait_for(lambda: settled(k8s, ns, 3), 900, "settled back at 3 nodes", every=2)
    finally:
        work.stop()
    duration = time.monotonic() - t_start
    print(f"\n{' / '.join(stages)}; settled at 4 after {t_four:.0f}s, back at 3, "
          f"{duration:.0f}s in all; workload: {work.summary()}")
    print(f"status changes seen: {changes(samples)}")
    assert_consistent(k8s, ns, s3, 3)
    assert work.acked and work.wrong_reads == [], work.summary()
    assert check_quorum_reads(endpoints(k8s, ns)[0], {**before, **work.acked}) == []
    failed = len(work.write_failures) + len(work.read_failures)
    assert failed <= max(3, work.ops // 100), work.summary()
