"""reconciler.reconcile against fake Kubernetes and node APIs."""

from __future__ import annotations

from typing import Any

from ringkv.operator import reconciler
from ringkv.operator.plan import Member, RingView

NOW = 1_800_000_000.0


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.pvcs: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str, bool]] = []
        self.status: dict[str, Any] | None = None
        self.replicas: int | None = None

    def apply(self, obj: dict[str, Any]) -> None:
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj

    def list_statefulsets(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [o for (k, _), o in self.objects.items() if k == "StatefulSet"]

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.pods

    def list_pvcs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.pvcs

    def delete_pod(self, namespace: str, name: str, force: bool = False) -> None:
        self.deleted.append(("pod", name, force))

    def delete_pvc(self, namespace: str, name: str) -> None:
        self.deleted.append(("pvc", name, False))

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.status = status

    def patch_replicas(self, namespace: str, name: str, replicas: int) -> None:
        self.replicas = replicas


class FakeNodes:
    def __init__(self, view: RingView | None = None) -> None:
        self.view = view
        self.decommissioned: list[tuple[list[str], str]] = []
        self.endpoints: list[str] = []

    def ring_view(self, endpoints: list[str]) -> RingView | None:
        self.endpoints = endpoints
        return self.view

    def decommission(self, endpoints: list[str], node: str) -> None:
        self.decommissioned.append((endpoints, node))

    def load(self, endpoints: list[str]) -> tuple[float | None, float | None]:
        return None, None


def body(name: str = "kv", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ringkv.io/v1alpha1", "kind": "KVCluster",
        "metadata": {"name": name, "namespace": "ns", "uid": "u1", "generation": 2},
        "spec": {"zones": ["zone-a", "zone-b", "zone-c"], "replicas": 3, **spec},
    }  # fmt: skip


def pod(name: str, zone: str, ip: str, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"ringkv.io/zone": zone,
                                              "controller-revision-hash": "r1"}},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }  # fmt: skip


def test_fresh_create_applies_children_and_starts_the_first_node() -> None:
    reconciler.forget("ns", "kv")
    kube, nodes, events = FakeKube(), FakeNodes(), []
    action, status = reconciler.reconcile(body(), kube, nodes, lambda *e: events.append(e), now=NOW)
    assert action.kind == "scale"
    kinds = sorted(k for k, _ in kube.objects)
    assert kinds.count("StatefulSet") == 3 and "PodDisruptionBudget" in kinds
    assert kube.objects[("StatefulSet", "kv-zone-a")]["spec"]["replicas"] == 1
    assert kube.objects[("StatefulSet", "kv-zone-b")]["spec"]["replicas"] == 0
    assert events == [("Normal", "ScaleUp", action.message)]
    assert kube.status == status and status["observedGeneration"] == 2


def test_decommission_goes_to_the_node_itself_first() -> None:
    reconciler.forget("ns", "kv2")
    kube = FakeKube()
    for z in ("zone-a", "zone-b", "zone-c"):
        kube.objects[("StatefulSet", f"kv2-{z}")] = {
            "metadata": {"name": f"kv2-{z}", "labels": {"ringkv.io/zone": z}},
            "spec": {"replicas": 2}, "status": {"updateRevision": "r1"},
        }  # fmt: skip
    members = {}
    for i, z in enumerate(("zone-a", "zone-b", "zone-c")):
        for o in range(2):
            name = f"kv2-{z}-{o}"
            kube.pods.append(pod(name, z, f"10.0.{i}.{o + 1}"))
            members[name] = Member(name, z, "normal", True)
    nodes, events = FakeNodes(RingView(members)), []
    action, _status = reconciler.reconcile(
        body("kv2"), kube, nodes, lambda *e: events.append(e), now=NOW
    )
    assert (action.kind, action.node) == ("decommission", "kv2-zone-c-1")
    [(endpoints, node)] = nodes.decommissioned
    assert node == "kv2-zone-c-1" and endpoints[0] == "http://10.0.2.2:7001"
    assert events[0][1] == "Decommission"


def test_invalid_spec_is_reported_not_acted_on() -> None:
    kube, events = FakeKube(), []
    b = body("bad")
    b["spec"]["zones"] = []
    action, status = reconciler.reconcile(b, kube, FakeNodes(), lambda *e: events.append(e))
    assert action.kind == "none" and not kube.objects
    assert status["phase"] == "Degraded"
    assert status["conditions"][-1]["reason"] == "InvalidSpec"
    assert events[0][:2] == ("Warning", "InvalidSpec")


def test_replace_deletes_claim_then_pod_forcefully() -> None:
    reconciler.forget("ns", "kv3")
    kube = FakeKube()
    for z in ("zone-a", "zone-b", "zone-c"):
        kube.objects[("StatefulSet", f"kv3-{z}")] = {
            "metadata": {"name": f"kv3-{z}", "labels": {"ringkv.io/zone": z}},
            "spec": {"replicas": 1}, "status": {"updateRevision": "r1"},
        }  # fmt: skip
    members = {}
    for i, z in enumerate(("zone-a", "zone-b", "zone-c")):
        name = f"kv3-{z}-0"
        kube.pods.append(pod(name, z, f"10.0.{i}.1", ready=z != "zone-b"))
        members[name] = Member(name, z, "normal", z != "zone-b")
    nodes, events = FakeNodes(RingView(members)), []
    b = body("kv3", failureReplacement={"after": "1m"})
    a1, _s1 = reconciler.reconcile(b, kube, nodes, lambda *e: events.append(e), now=NOW)
    assert a1.kind == "none"
    a2, _ = reconciler.reconcile(b, kube, nodes, lambda *e: events.append(e), now=NOW + 61)
    assert a2.kind == "replace"
    assert kube.deleted == [("pvc", "data-kv3-zone-b-0", False), ("pod", "kv3-zone-b-0", True)]
    assert events[-1][:2] == ("Warning", "ReplacingNode")
