"""Drains and evictions (issue 23), on kind, under a quorum workload.

1. The Eviction API against the per-zone PodDisruptionBudgets: evicting one node's pod is
   admitted; once the operator has closed the other zones' budgets, a second eviction (in
   another zone) is refused with 429; the evicted pod comes back on its volume.
2. ``kubectl drain`` of zone-c's worker (the spare worker of zone-c untainted, so the zone has
   somewhere else to run): the drain finishes on its own; the node's pod cannot come back on
   its local-path volume (pinned to the drained machine), so it stays Pending; the operator
   treats that as a node down and replaces it after ``failureReplacement.after`` (a new
   volume on the spare, the data streamed back) -- not a crash loop, no manual step.
3. Two pods of one zone (4 nodes: zone-a runs two, on one machine): the zone's budget admits
   the first eviction and refuses the second until the first pod is back.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from test_operator_e2e import (
    NAME,
    check_quorum_reads,
    endpoints,
    fill,
    kvc,
    node_pods,
    pod_ready,
    settled,
    wait_for,
)
from test_operator_lifecycle_e2e import Spare, live_workload, patch_kvc, report, settle

pytestmark = [pytest.mark.slow, pytest.mark.kind_only]


def evict(k8s: Any, ns: str, pod: str) -> tuple[bool, str]:
    """POST an Eviction for ``pod``: (admitted, the API's answer)."""
    body = {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod, "namespace": ns}}  # fmt: skip
    r = k8s.kubectl("create", "--raw", f"/api/v1/namespaces/{ns}/pods/{pod}/eviction",
                    "-f", "-", input=json.dumps(body), check=False)  # fmt: skip
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def budgets(k8s: Any, ns: str) -> dict[str, tuple[int, int]]:
    """Each PodDisruptionBudget: (spec.maxUnavailable, status.disruptionsAllowed)."""
    out = json.loads(k8s.kubectl("-n", ns, "get", "pdb", "-o", "json").stdout)["items"]
    return {p["metadata"]["name"]: (int(p["spec"].get("maxUnavailable", -1)),
                                    int((p.get("status") or {}).get("disruptionsAllowed", -1)))
            for p in out}  # fmt: skip


@pytest.mark.timeout(1500)
def test_evictions_are_one_zone_at_a_time_and_a_drain_finishes(
    k8s: Any, available: str, spare_node: Spare
) -> None:
    ns = available
    t0 = time.monotonic()
    zones = [f"{NAME}-zone-{z}" for z in "abc"]
    wait_for(lambda: budgets(k8s, ns) == {z: (1, 1) for z in zones}, 120,
             "a budget of 1 per zone, each allowing one disruption", every=2)
    patch_kvc(k8s, ns, {"spec": {"failureReplacement": {"enabled": True, "after": "60s"}}})
    before = fill(k8s, ns, "pre-drain", 50)
    work = live_workload(k8s, ns, "drain").start()
    try:
        # 1. One eviction admitted; the others are closed once the operator sees it out.
        first, second = f"{NAME}-zone-a-0", f"{NAME}-zone-b-0"
        ok, answer = evict(k8s, ns, first)
        assert ok, answer
        wait_for(lambda: budgets(k8s, ns)[f"{NAME}-zone-b"][0] == 0, 60,
                 "the operator closing the other zones' budgets", every=1)
        ok, answer = evict(k8s, ns, second)
        # 429: "Cannot evict pod as it would violate the pod's disruption budget" (or, while
        # the budget's new maxUnavailable is being processed, "... is being processed")
        assert not ok and ("TooManyRequests" in answer or "429" in answer), answer
        assert "disruption" in answer.lower(), answer
        t_evict = time.monotonic() - t0
        settle(k8s, ns, 3, 300, f"{first} back after its eviction")
        wait_for(lambda: budgets(k8s, ns) == {z: (1, 1) for z in zones}, 120,
                 "the budgets open again", every=2)

        # 2. Drain zone-c's worker: the pod's local volume stays behind on it.
        victim = f"{NAME}-{spare_node.zone}-0"
        pod = next(p for p in node_pods(k8s, ns) if p["metadata"]["name"] == victim)
        assert pod["spec"]["nodeName"] == spare_node.failing, (pod["spec"]["nodeName"], spare_node)
        replaced_before = int(kvc(k8s, ns)["status"].get("replacements", 0))
        t_drain = time.monotonic()
        r = k8s.kubectl("drain", spare_node.failing, "--ignore-daemonsets",
                        "--delete-emptydir-data", "--timeout=300s", check=False, timeout=330)
        drain_took = time.monotonic() - t_drain
        assert r.returncode == 0, r.stdout + r.stderr
        try:
            def on_spare() -> bool:
                return any(p["metadata"]["name"] == victim and pod_ready(p)
                           and p["spec"].get("nodeName") == spare_node.name
                           for p in node_pods(k8s, ns))  # fmt: skip

            wait_for(on_spare, 600, f"{victim} replaced onto {spare_node.name}", every=3)
            s = settle(k8s, ns, 3, 600, "settled after the drain")
            back = time.monotonic() - t_drain
        finally:
            k8s.kubectl("uncordon", spare_node.failing, check=False)
        assert int(s.obj["status"].get("replacements", 0)) == replaced_before + 1
    finally:
        work.stop()
    report(work)
    print(f"\nevictions checked in {t_evict:.0f}s; drain of {spare_node.failing} took "
          f"{drain_took:.0f}s, {victim} replaced and settled {back:.0f}s after it; "
          f"{time.monotonic() - t0:.0f}s in all; workload: {work.summary()}")
    assert work.acked and work.wrong_reads == [], work.summary()
    assert check_quorum_reads(endpoints(k8s, ns)[0], {**before, **work.acked}) == []
    failed = len(work.write_failures) + len(work.read_failures)
    assert failed <= max(3, work.ops // 100), work.summary()


@pytest.mark.timeout(1200)
def test_two_pods_of_one_zone_are_evicted_one_at_a_time(k8s: Any, available: str) -> None:
    """Within a zone the budget (``maxUnavailable: 1``) admits one eviction and refuses the
    next until the first pod is back: at 4 nodes zone-a runs two, on its one machine (what a
    drain of that machine asks for)."""
    ns = available
    t0 = time.monotonic()
    zone_a = f"{NAME}-zone-a"
    before = fill(k8s, ns, "pre-zone-evict", 30)
    work = live_workload(k8s, ns, "zone-evict").start()
    try:
        k8s.kubectl("-n", ns, "scale", "kvc", NAME, "--replicas=4")
        wait_for(lambda: settled(k8s, ns, 4), 600, "settled at 4 nodes", every=2)
        names = {p["metadata"]["name"] for p in node_pods(k8s, ns)}
        first, second = f"{zone_a}-1", f"{zone_a}-0"
        assert {first, second} <= names, names
        wait_for(lambda: budgets(k8s, ns).get(zone_a) == (1, 1), 120,
                 "zone-a's budget allowing one disruption of its two pods", every=2)
        ok, answer = evict(k8s, ns, first)
        assert ok, answer
        ok, answer = evict(k8s, ns, second)
        assert not ok and ("TooManyRequests" in answer or "429" in answer), answer
        assert "disruption" in answer.lower(), answer
        wait_for(lambda: settled(k8s, ns, 4), 300, f"{first} back", every=2)
        # once the first is back, the second may go
        wait_for(lambda: budgets(k8s, ns).get(zone_a) == (1, 1), 120,
                 "zone-a's budget open again", every=2)
        ok, answer = evict(k8s, ns, second)
        assert ok, answer
        wait_for(lambda: settled(k8s, ns, 4), 300, f"{second} back", every=2)
        k8s.kubectl("-n", ns, "scale", "kvc", NAME, "--replicas=3")
        settle(k8s, ns, 3, 600, "back at 3 nodes")
    finally:
        work.stop()
    report(work)
    print(f"\ntwo pods of zone-a evicted one at a time; {time.monotonic() - t0:.0f}s in all; "
          f"workload: {work.summary()}")
    assert work.acked and work.wrong_reads == [], work.summary()
    assert check_quorum_reads(endpoints(k8s, ns)[0], {**before, **work.acked}) == []
    failed = len(work.write_failures) + len(work.read_failures)
    assert failed <= max(3, work.ops // 100), work.summary()
