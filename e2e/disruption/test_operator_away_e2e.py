"""The operator away, and an operator upgrade (issue 23), on kind, under a quorum workload.

1. Operator away: its Deployment scaled to 0; a data pod deleted (the StatefulSet recreates it
   on its volume, no operator needed) and the spec changed (the node resources: a new pod
   template); the operator brought back converges: the template applied and rolled one pod at
   a time, the cluster settled at 3.
2. Operator upgrade: the operator's Deployment moved to a new image tag (``ringkv:0.1.1``, the
   same image under the upgrade test's second tag, e2e/kind/build-images.sh). The node
   template does not change, so no data pod restarts; the new operator is seen acting (it
   reconciles a later spec change: ``status.observedGeneration``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from test_operator_e2e import (
    NAME,
    OPERATOR_NS,
    assert_consistent,
    check_quorum_reads,
    endpoints,
    fill,
    kvc,
    node_pods,
    pod_ready,
    settled,
    wait_for,
)
from test_operator_lifecycle_e2e import live_workload, report

pytestmark = [pytest.mark.slow]

DEPLOYMENT = "deploy/ringkv-operator"
OPERATOR_SELECTOR = "app.kubernetes.io/name=ringkv-operator"


def _operator_pods(k8s: Any) -> list[dict[str, Any]]:
    out = k8s.kubectl("-n", OPERATOR_NS, "get", "pods", "-l", OPERATOR_SELECTOR, "-o",
                      "json").stdout  # fmt: skip
    return list(json.loads(out)["items"])


def _pods_by_name(k8s: Any, ns: str) -> dict[str, tuple[str, int]]:
    """Data pods: name -> (uid, container restarts)."""
    return {
        p["metadata"]["name"]: (p["metadata"]["uid"], sum(
            int(c.get("restartCount", 0)) for c in p["status"].get("containerStatuses") or ()))
        for p in node_pods(k8s, ns)
    }  # fmt: skip


def _reconciled(k8s: Any, ns: str) -> dict[str, Any] | None:
    s = settled(k8s, ns, 3)
    if s is None:
        return None
    st = s.obj["status"]
    return s.obj if st.get("updatedReplicas") == 3 else None


@pytest.mark.timeout(1500)
def test_operator_away_then_back_converges(k8s: Any, available: str) -> None:
    ns = available
    t0 = time.monotonic()
    before = fill(k8s, ns, "pre-away", 50)
    work = live_workload(k8s, ns, "away").start()
    try:
        k8s.kubectl("-n", OPERATOR_NS, "scale", DEPLOYMENT, "--replicas=0")
        wait_for(lambda: not _operator_pods(k8s), 180, "the operator pod gone", every=2)
        gen_before = kvc(k8s, ns)["metadata"]["generation"]
        victim = f"{NAME}-zone-b-0"
        old_uid = _pods_by_name(k8s, ns)[victim][0]
        k8s.kubectl("-n", ns, "delete", "pod", victim, "--wait=true", timeout=180)
        k8s.kubectl("-n", ns, "patch", "kvc", NAME, "--type=merge", "-p", json.dumps(
            {"spec": {"resources": {"requests": {"cpu": "110m", "memory": "256Mi"},
                                    "limits": {"memory": "1Gi"}}}}))  # fmt: skip
        # Without the operator: the StatefulSet brings the pod back on its volume, nothing
        # acts on the spec (the status stays at the old generation).
        def recreated() -> bool:
            return any(p["metadata"]["name"] == victim and p["metadata"]["uid"] != old_uid
                       and pod_ready(p) for p in node_pods(k8s, ns))  # fmt: skip

        wait_for(recreated, 300, f"{victim} recreated and ready without the operator", every=2)
        assert kvc(k8s, ns)["status"].get("observedGeneration") == gen_before
        t_back = time.monotonic()
        k8s.kubectl("-n", OPERATOR_NS, "scale", DEPLOYMENT, "--replicas=1")
        obj = wait_for(lambda: _reconciled(k8s, ns), 900,
                       "the operator back: the new template rolled out, settled at 3", every=3)
        converge = time.monotonic() - t_back
        sts = json.loads(k8s.kubectl("-n", ns, "get", "statefulsets", "-o", "json").stdout)
        for s_ in sts["items"]:
            cpu = s_["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
            assert cpu == "110m", s_["metadata"]["name"]
        for p in node_pods(k8s, ns):
            cpu = p["spec"]["containers"][0]["resources"]["requests"]["cpu"]
            assert cpu == "110m", p["metadata"]["name"]
        assert obj["status"].get("replacements", 0) == 0  # a deleted pod is not a failure
    finally:
        work.stop()
        k8s.kubectl("-n", OPERATOR_NS, "scale", DEPLOYMENT, "--replicas=1", check=False)
    report(work)
    print(f"\noperator away and back: converged {converge:.0f}s after it returned, "
          f"{time.monotonic() - t0:.0f}s in all; workload: {work.summary()}")
    s = wait_for(lambda: settled(k8s, ns, 3), 300, "settled", every=2)
    assert_consistent(k8s, ns, s, 3)
    assert work.acked and work.wrong_reads == [], work.summary()
    assert check_quorum_reads(endpoints(k8s, ns)[0], {**before, **work.acked}) == []
    failed = len(work.write_failures) + len(work.read_failures)
    assert failed <= max(3, work.ops // 100), work.summary()


@pytest.mark.timeout(900)
def test_operator_upgrade_restarts_no_data_pod(k8s: Any, available: str) -> None:
    ns = available
    t0 = time.monotonic()
    work = live_workload(k8s, ns, "op-upgrade").start()
    try:
        pods = _pods_by_name(k8s, ns)
        revisions = {s_["metadata"]["name"]: s_["status"].get("updateRevision") for s_ in
                     json.loads(k8s.kubectl("-n", ns, "get", "statefulsets", "-o",
                                            "json").stdout)["items"]}  # fmt: skip
        old_ops = {p["metadata"]["uid"] for p in _operator_pods(k8s)}
        k8s.kubectl("-n", OPERATOR_NS, "set", "image", DEPLOYMENT, "operator=ringkv:0.1.1")

        def upgraded() -> bool:
            ps = _operator_pods(k8s)
            return bool(ps) and all(
                p["metadata"]["uid"] not in old_ops and pod_ready(p)
                and p["spec"]["containers"][0]["image"].endswith("ringkv:0.1.1") for p in ps)

        wait_for(upgraded, 300, "the operator on ringkv:0.1.1", every=2)
        # The new operator acts: it reconciles a spec change that needs no restart.
        k8s.kubectl("-n", ns, "patch", "kvc", NAME, "--type=merge", "-p",
                    json.dumps({"spec": {"failureReplacement": {"after": "6m"}}}))

        def reconciled() -> Any:
            obj = kvc(k8s, ns)
            if (obj.get("status") or {}).get("observedGeneration") != \
                    obj["metadata"]["generation"]:
                return None
            return settled(k8s, ns, 3)

        s = wait_for(reconciled, 300, "the new operator reconciled the spec change", every=2)
        upgrade = time.monotonic() - t0
    finally:
        work.stop()
    report(work)
    print(f"\noperator upgraded and acting in {upgrade:.0f}s; workload: {work.summary()}")
    assert _pods_by_name(k8s, ns) == pods  # same pods (uid), no container restarted
    after = {s_["metadata"]["name"]: s_["status"].get("updateRevision") for s_ in
             json.loads(k8s.kubectl("-n", ns, "get", "statefulsets", "-o",
                                    "json").stdout)["items"]}  # fmt: skip
    assert after == revisions  # the node template did not change
    assert_consistent(k8s, ns, s, 3)
    assert work.acked and work.wrong_reads == [], work.summary()
    assert work.write_failures == [] and work.read_failures == [], work.summary()
