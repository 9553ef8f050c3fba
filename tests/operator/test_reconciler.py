"""reconciler.reconcile against fake Kubernetes and node APIs."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import pytest

from ringkv.operator import builders, credentials, reconciler
from ringkv.operator.credentials import CredentialsError
from ringkv.operator.plan import ClusterReport, Member, PodState
from ringkv.operator.spec import parse_spec

NOW = 1_800_000_000.0
SECRET = "existing-secret-0123456789abcdef"


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.pvcs: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str, bool]] = []
        self.deleted_pdbs: list[str] = []
        self.machines: list[dict[str, Any]] | None = None
        self.status: dict[str, Any] | None = None
        self.replicas: int | None = None
        self.secrets: dict[str, dict[str, Any]] = {}
        self.order: list[tuple[str, str]] = []

    def apply(self, obj: dict[str, Any]) -> None:
        before = self.objects.get((obj["kind"], obj["metadata"]["name"]))
        if obj["kind"] == "StatefulSet" and before is not None:
            # as the API server: a StatefulSet's volume templates cannot change
            old = before["spec"].get("volumeClaimTemplates")
            new = obj["spec"]["volumeClaimTemplates"]
            sizes = [[t["spec"]["resources"]["requests"]["storage"] for t in ts]
                     for ts in (old, new) if ts]  # fmt: skip
            assert len(sizes) < 2 or sizes[0] == sizes[1], "volumeClaimTemplates are immutable"
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        self.order.append(("apply", obj["metadata"]["name"]))

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

    def list_nodes(self) -> list[dict[str, Any]] | None:
        return self.machines

    def delete_pdb(self, namespace: str, name: str) -> None:
        self.deleted_pdbs.append(name)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.status = status

    def patch_replicas(self, namespace: str, name: str, replicas: int) -> None:
        self.replicas = replicas

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get(name)

    def create(self, obj: dict[str, Any]) -> None:
        assert obj["kind"] == "Secret" and obj["metadata"]["name"] not in self.secrets
        self.secrets[obj["metadata"]["name"]] = obj
        self.order.append(("create", obj["metadata"]["name"]))

    def resize_pvc(self, namespace: str, name: str, size: str) -> None:
        for pvc in self.pvcs:
            if pvc["metadata"]["name"] == name:
                pvc["spec"]["resources"]["requests"]["storage"] = size
        self.order.append(("resize", name))

    def delete_statefulset_orphan(self, namespace: str, name: str) -> None:
        del self.objects[("StatefulSet", name)]  # the pods stay
        self.order.append(("orphan", name))

    def storage_class_expandable(self, name: str) -> bool:
        return name == "expandable"


class FakeNodes:
    def __init__(self, view: ClusterReport | None = None) -> None:
        self.view = view
        self.decommissioned: list[tuple[list[str], str]] = []
        self.cancelled: list[tuple[list[str], str]] = []
        self.endpoints: list[str] = []

    def ring_view(self, endpoints: list[str]) -> ClusterReport | None:
        self.endpoints = endpoints
        return self.view

    def decommission(self, endpoints: list[str], node: str) -> None:
        self.decommissioned.append((endpoints, node))

    def cancel(self, endpoints: list[str], node: str) -> None:
        self.cancelled.append((endpoints, node))

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


def with_secrets(kube: FakeKube, name: str) -> FakeKube:
    """A cluster that runs already: its generated Secrets exist."""
    spec = parse_spec(name, "ns", body(name)["spec"])
    for obj in builders.build_generated_secrets(spec, None, lambda: SECRET):
        kube.secrets[obj["metadata"]["name"]] = obj
    return kube


def test_fresh_create_applies_children_and_starts_the_first_node() -> None:
    reconciler.forget("ns", "kv")
    kube, nodes, events = FakeKube(), FakeNodes(), []
    action, status = reconciler.reconcile(body(), kube, nodes, lambda *e: events.append(e), now=NOW)
    assert action.kind == "scale"
    kinds = sorted(k for k, _ in kube.objects)
    assert kinds.count("StatefulSet") == 3 and kinds.count("PodDisruptionBudget") == 3
    # one budget per zone; the cluster-wide one of earlier versions deleted, once
    assert kube.deleted_pdbs == ["kv"]
    reconciler.reconcile(body(), kube, nodes, lambda *e: events.append(e), now=NOW + 5)
    assert kube.deleted_pdbs == ["kv"]
    assert kube.objects[("StatefulSet", "kv-zone-a")]["spec"]["replicas"] == 1
    assert kube.objects[("StatefulSet", "kv-zone-b")]["spec"]["replicas"] == 0
    assert events[0] == ("Normal", "ScaleUp", action.message)
    assert status["observedGeneration"] == 2


def test_decommission_goes_to_the_node_itself_first() -> None:
    reconciler.forget("ns", "kv2")
    kube = with_secrets(FakeKube(), "kv2")
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
    nodes, events = FakeNodes(ClusterReport(members)), []
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


def one_node_per_zone(
    name: str, update_revision: str = "r1", down: str = "", env: dict[str, str] | None = None
) -> tuple[FakeKube, FakeNodes]:
    """A running 3-node cluster (pods on revision r1), node ``down`` dead and unready."""
    reconciler.forget("ns", name)
    kube = with_secrets(FakeKube(), name)
    members = {}
    for i, z in enumerate(("zone-a", "zone-b", "zone-c")):
        kube.objects[("StatefulSet", f"{name}-{z}")] = {
            "metadata": {"name": f"{name}-{z}", "labels": {"ringkv.io/zone": z}},
            "spec": {"replicas": 1}, "status": {"updateRevision": update_revision},
        }  # fmt: skip
        node = f"{name}-{z}-0"
        p = pod(node, z, f"10.0.{i}.1", ready=node != down)
        p["spec"] = {"containers": [{"name": "node", "env": [
            {"name": k, "value": v} for k, v in (env or {}).items()]}]}  # fmt: skip
        kube.pods.append(p)
        members[node] = Member(node, z, "normal", node != down)
    return kube, FakeNodes(ClusterReport(members))


def test_replace_deletes_claim_then_pod_forcefully() -> None:
    kube, nodes = one_node_per_zone("kv3", down="kv3-zone-b-0")
    events: list[Any] = []
    b = body("kv3", failureReplacement={"after": "1m"})
    a1, _s1 = reconciler.reconcile(b, kube, nodes, lambda *e: events.append(e), now=NOW)
    assert a1.kind == "none"
    a2, _ = reconciler.reconcile(b, kube, nodes, lambda *e: events.append(e), now=NOW + 61)
    assert a2.kind == "replace"
    assert kube.deleted == [("pvc", "data-kv3-zone-b-0", False), ("pod", "kv3-zone-b-0", True)]
    assert events[-1][:2] == ("Warning", "ReplacingNode")


def test_a_shard_count_change_moves_each_node_onto_an_empty_volume() -> None:
    """A node refuses data written with another shard count, so the roll of a spec.shards
    change recreates a node's volume with its pod (gracefully: the node is healthy), one
    node at a time, instead of restarting the pod into a refusal."""
    kube, nodes = one_node_per_zone("kv4", update_revision="r2", env={"RINGKV_SHARDS": "1"})
    events: list[Any] = []
    action, status = reconciler.reconcile(
        body("kv4", shards=2), kube, nodes, lambda *e: events.append(e), now=NOW
    )
    assert action.kind == "reshard" and action.node == "kv4-zone-a-0", action
    assert kube.deleted == [("pvc", "data-kv4-zone-a-0", False), ("pod", "kv4-zone-a-0", False)]
    assert events[-1][:2] == ("Normal", "Resharding")
    assert "from 1 to 2 shards" in events[-1][2]
    assert status["phase"] == "Upgrading" and status.get("replacements", 0) == 0


# -- credentials: generated Secrets, named Secrets, the operator's access to nodes ------------


def _secret_values(kube: FakeKube) -> list[str]:
    """Every generated value, raw and base64 (the token inside tokens.json included)."""
    import base64
    import json

    out = []
    for obj in kube.secrets.values():
        for encoded in obj["data"].values():
            text = base64.b64decode(encoded).decode()
            out += [encoded, text]
            if text.startswith("{"):
                out += [t["token"] for t in json.loads(text)["tokens"]]
    return out


def test_fresh_create_generates_owned_secrets_first_and_once() -> None:
    reconciler.forget("ns", "kvs")
    kube, events = FakeKube(), []
    reconciler.reconcile(body("kvs"), kube, FakeNodes(), lambda *e: events.append(e), now=NOW)
    created = [n for op, n in kube.order if op == "create"]
    assert created == [
        "kvs-operator-token", "kvs-tokens", "kvs-cluster-secret", "kvs-metrics-token"
    ]  # fmt: skip
    # before any child: a node pod never waits for its Secrets
    assert kube.order[: len(created)] == [("create", n) for n in created]
    for obj in kube.secrets.values():
        [ref] = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == "u1" and ref["controller"] is True
    values = _secret_values(kube)
    assert len({v for v in values if len(v) >= 32}) >= 6  # random and distinct
    before = {n: dict(o) for n, o in kube.secrets.items()}
    template = kube.objects[("StatefulSet", "kvs-zone-a")]["spec"]["template"]
    kube.order.clear()
    reconciler.reconcile(body("kvs"), kube, FakeNodes(), lambda *e: events.append(e),
                         now=NOW + 5)  # fmt: skip
    assert [op for op, _ in kube.order if op == "create"] == []  # never re-generated
    assert kube.secrets == before
    assert kube.objects[("StatefulSet", "kvs-zone-a")]["spec"]["template"] == template


def test_named_secrets_must_exist_with_their_keys() -> None:
    reconciler.forget("ns", "kvn")
    kube = FakeKube()
    b = body("kvn", security={"auth": {"tokensSecret": {"name": "app-tokens", "key": "t.json"}},
                              "peerAuth": {"clusterSecret": {"name": "peer"}}})  # fmt: skip
    with pytest.raises(CredentialsError, match="Secret ns/app-tokens not found"):
        reconciler.reconcile(b, kube, FakeNodes(), lambda *e: None, now=NOW)
    assert not any(k == "StatefulSet" for k, _ in kube.objects)  # nothing started
    kube.secrets["app-tokens"] = {"data": {"other": "eA=="}}
    with pytest.raises(CredentialsError, match=r"has no key 't\.json'"):
        reconciler.reconcile(b, kube, FakeNodes(), lambda *e: None, now=NOW)
    kube.secrets["app-tokens"] = {"data": {"t.json": "e30="}}
    kube.secrets["peer"] = {"data": {"cluster-secret": "c2VjcmV0"}}
    reconciler.reconcile(b, kube, FakeNodes(), lambda *e: None, now=NOW)
    assert ("StatefulSet", "kvn-zone-a") in kube.objects
    # only the operator's own token and the scrapers' are generated
    assert [n for op, n in kube.order if op == "create"] == [
        "kvn-operator-token", "kvn-metrics-token"
    ]  # fmt: skip


def test_a_lost_cluster_secret_is_not_regenerated_under_running_nodes() -> None:
    reconciler.forget("ns", "kvl")
    kube = with_secrets(FakeKube(), "kvl")
    kube.objects[("StatefulSet", "kvl-zone-a")] = {
        "metadata": {"name": "kvl-zone-a", "labels": {"ringkv.io/zone": "zone-a"}},
        "spec": {"replicas": 1}, "status": {"updateRevision": "r1"},
    }  # fmt: skip
    del kube.secrets["kvl-operator-token"]  # re-created: the nodes reload tokens files
    reconciler.reconcile(body("kvl"), kube, FakeNodes(), lambda *e: None, now=NOW)
    assert ("create", "kvl-operator-token") in kube.order
    del kube.secrets["kvl-cluster-secret"]  # a new one would split the cluster at a restart
    with pytest.raises(CredentialsError, match="restore it"):
        reconciler.reconcile(body("kvl"), kube, FakeNodes(), lambda *e: None, now=NOW)
    assert "kvl-cluster-secret" not in kube.secrets


def test_secrets_never_reach_logs_events_status_or_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import json

    reconciler.forget("ns", "kvq")
    kube, events = FakeKube(), []
    caplog.set_level(logging.DEBUG)
    errors = []
    reconciler.reconcile(body("kvq"), kube, FakeNodes(), lambda *e: events.append(e), now=NOW)
    kube.objects[("StatefulSet", "kvq-zone-a")]["spec"]["replicas"] = 1
    del kube.secrets["kvq-cluster-secret"]
    try:
        reconciler.reconcile(body("kvq"), kube, FakeNodes(), lambda *e: events.append(e), now=NOW)
    except CredentialsError as exc:
        errors.append(repr(exc))
    assert errors
    spec = parse_spec("kvq", "ns", body("kvq")["spec"])
    access = credentials.node_access(spec, kube)
    assert access.token and access.token not in repr(access)
    children = [o for k, o in kube.objects.items() if k[0] != "Secret"]
    shown = "\n".join(
        [caplog.text, repr(events), json.dumps(kube.status), *errors, json.dumps(children)]
    )
    values = _secret_values(kube)
    assert values
    for value in values:
        assert value not in shown


def test_node_access_reads_the_operators_token_and_the_tls_ca() -> None:
    reconciler.forget("ns", "kva")
    kube = with_secrets(FakeKube(), "kva")
    spec = parse_spec("kva", "ns", body("kva")["spec"])
    access = credentials.node_access(spec, kube)
    assert access.token == SECRET and access.ssl_context is None
    assert access.headers() == {"Authorization": f"Bearer {SECRET}"}
    off = parse_spec("kva", "ns", {**body("kva")["spec"], "security": {"auth": {"enabled": False}}})
    assert credentials.node_access(off, kube) == credentials.NodeAccess()
    on = {"tls": {"enabled": True, "secretName": "t"}}
    tls = parse_spec("kva", "ns", {**body("kva")["spec"], "security": on})
    kube.secrets["t"] = {"data": {"tls.crt": "eA==", "tls.key": "eA=="}}
    access = credentials.node_access(tls, kube)
    assert access.ssl_context is not None and access.ssl_context.verify_mode == ssl.CERT_NONE
    assert reconciler.endpoints_of(tls, [PodState("kva-zone-a-0", "zone-a", 0, ip="10.0.0.1")]) \
        == ["https://kva-zone-a-0.kva-peers.ns.svc.cluster.local:7001"]  # fmt: skip


def test_the_timer_calls_nodes_with_the_clusters_access(monkeypatch: pytest.MonkeyPatch) -> None:
    from ringkv.operator import handlers

    kube = with_secrets(FakeKube(), "kvt")
    monkeypatch.setitem(handlers._apis, "kube", kube)
    monkeypatch.setitem(handlers._apis, "nodes", reconciler.NodeHttp())
    bound = handlers.nodes_for(body("kvt"), "kvt", "ns")
    assert bound.access.token == SECRET and bound.pool is handlers.nodes().pool
    bad = body("kvt")
    bad["spec"]["zones"] = []
    assert handlers.nodes_for(bad, "kvt", "ns").access == credentials.NodeAccess()


def test_create_errors_carry_no_secret() -> None:
    from kubernetes.client.exceptions import ApiException

    class Res:
        def create(self, body: dict[str, Any], namespace: str | None) -> None:
            exc = ApiException(status=422, reason="Unprocessable Entity")
            exc.body = f'{{"message": "data.token: Invalid value: {SECRET!r}"}}'  # echoed back
            raise exc

    api = reconciler.KubeApi.__new__(reconciler.KubeApi)
    api._resources = {("v1", "Secret"): Res()}
    spec = parse_spec("kve", "ns", body("kve")["spec"])
    [obj, *_] = builders.build_generated_secrets(spec, None, lambda: SECRET)
    with pytest.raises(CredentialsError) as info:
        api.create(obj)
    assert "ns/kve-operator-token" in str(info.value) and "422" in str(info.value)
    assert SECRET not in str(info.value) and info.value.__cause__ is None


def test_pod_monitor_is_applied_when_asked_and_optional(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reconciler.forget("ns", "kvm")
    kube = with_secrets(FakeKube(), "kvm")
    reconciler.reconcile(body("kvm"), kube, FakeNodes(), lambda *e: None, now=NOW)
    assert ("PodMonitor", "kvm") not in kube.objects  # off by default
    asked = body("kvm", monitoring={"podMonitor": {"enabled": True}})
    reconciler.reconcile(asked, kube, FakeNodes(), lambda *e: None, now=NOW)
    monitor = kube.objects[("PodMonitor", "kvm")]
    assert monitor["spec"]["podMetricsEndpoints"][0]["bearerTokenSecret"]["name"] == (
        "kvm-metrics-token"
    )

    class NoPrometheusOperator(FakeKube):
        def apply(self, obj: dict[str, Any]) -> None:
            if obj["kind"] == "PodMonitor":
                raise RuntimeError("the server could not find the requested resource")
            super().apply(obj)

    bare = with_secrets(NoPrometheusOperator(), "kvm")
    for _ in range(2):  # the pass goes on without the Prometheus Operator, and says so once
        reconciler.reconcile(asked, bare, FakeNodes(), lambda *e: None, now=NOW)
    assert ("StatefulSet", "kvm-zone-a") in bare.objects
    said = [r for r in caplog.records if "PodMonitor" in r.getMessage()]
    assert len(said) == 1 and "RuntimeError" in said[0].getMessage()


# -- volume growth ------------------------------------------------------------------------------


def _running_cluster(kube: FakeKube, name: str, storage_class: str) -> FakeNodes:
    """Three nodes on 1Gi volumes of ``storage_class``, applied by a first pass."""
    members = {}
    for i, z in enumerate(("zone-a", "zone-b", "zone-c")):
        node = f"{name}-{z}-0"
        kube.pods.append(pod(node, z, f"10.0.{i}.1"))
        members[node] = Member(node, z, "normal", True)
        kube.pvcs.append({
            "metadata": {"name": f"data-{node}"},
            "spec": {"storageClassName": storage_class,
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}},
        })  # fmt: skip
        kube.objects[("StatefulSet", f"{name}-{z}")] = {
            "metadata": {"name": f"{name}-{z}", "labels": {"ringkv.io/zone": z}},
            "spec": {"replicas": 1, "volumeClaimTemplates": [
                {"spec": {"resources": {"requests": {"storage": "1Gi"}}}}]},
            "status": {"updateRevision": "r1"},
        }  # fmt: skip
    return FakeNodes(ClusterReport(members))


def _volumes(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "VolumesResized")


def test_raising_storage_size_expands_the_claims_then_recreates_the_statefulsets() -> None:
    reconciler.forget("ns", "kvg")
    kube = with_secrets(FakeKube(), "kvg")
    nodes, events = _running_cluster(kube, "kvg", "expandable"), []
    b = body("kvg", storage={"size": "2Gi"})
    t = NOW

    def reconcile() -> tuple[Any, dict[str, Any]]:
        nonlocal t
        t += 10
        return reconciler.reconcile(b, kube, nodes, lambda *e: events.append(e), now=t)

    action, status = reconcile()
    assert action.kind == "resize_pvc" and len(action.pvcs) == 3
    assert [c["spec"]["resources"]["requests"]["storage"] for c in kube.pvcs] == ["2Gi"] * 3
    assert _volumes(status)["reason"] == "VolumeExpanding"
    assert events[-1][:2] == ("Normal", "VolumeExpansion")
    # then each StatefulSet, one a pass: deleted with its pods orphaned, applied again
    recreated = []
    for _ in range(3):
        action, status = reconcile()
        assert action.kind == "recreate_statefulset"
        recreated.append(action.zone)
    assert recreated == ["zone-a", "zone-b", "zone-c"]
    action, status = reconcile()  # the next pass applies the last one with its pods again
    for z in ("zone-a", "zone-b", "zone-c"):
        sts = kube.objects[("StatefulSet", f"kvg-{z}")]
        assert sts["spec"]["replicas"] == 1  # the orphaned pod, adopted again
        assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"][
            "storage"] == "2Gi"  # fmt: skip
    assert not [d for d in kube.deleted if d[0] == "pod"]  # no pod restarted
    # until the provider has grown them, the condition says it is waiting
    assert _volumes(status)["reason"] == "VolumeExpanding" and "waiting for" in _volumes(
        status)["message"]  # fmt: skip
    for c in kube.pvcs:
        c["status"]["capacity"]["storage"] = "2Gi"
    action, status = reconcile()
    assert action.kind == "none"
    assert (_volumes(status)["status"], _volumes(status)["reason"]) == ("True", "VolumesMatchSpec")


def test_volume_growth_refused_where_the_class_cannot_expand_and_shrink_refused() -> None:
    reconciler.forget("ns", "kvr")
    kube = with_secrets(FakeKube(), "kvr")
    nodes, events = _running_cluster(kube, "kvr", "local-path"), []
    b = body("kvr", storage={"size": "2Gi"})
    action, status = reconciler.reconcile(b, kube, nodes, lambda *e: events.append(e), now=NOW)
    assert action.kind == "none"
    cond = _volumes(status)
    assert (cond["status"], cond["reason"]) == ("False", "VolumeExpansionNotSupported")
    assert "local-path does not allow volume expansion" in cond["message"]
    assert [c["spec"]["resources"]["requests"]["storage"] for c in kube.pvcs] == ["1Gi"] * 3
    assert events == [("Warning", "VolumeExpansionNotSupported", cond["message"])]
    # said once, not every pass
    reconciler.reconcile(b, kube, nodes, lambda *e: events.append(e), now=NOW + 10)
    assert len(events) == 1
    # shrinking is refused too
    small = body("kvr", storage={"size": "512Mi"})
    action, status = reconciler.reconcile(small, kube, nodes, lambda *e: events.append(e),
                                          now=NOW + 20)  # fmt: skip
    assert action.kind == "none"
    assert _volumes(status)["reason"] == "VolumeShrinkRefused"
    assert "cannot shrink" in _volumes(status)["message"]
    assert events[-1][:2] == ("Warning", "VolumeShrinkRefused")


def test_one_list_of_the_kubernetes_nodes_serves_every_pass_for_a_while() -> None:
    """Each pass of each KVCluster reads the machines per zone: one list (from the API
    server's watch cache) serves them all for NODE_LIST_SECONDS, then the next pass lists
    again; a refusal (RBAC) is remembered as long."""
    import json as json_module
    from types import SimpleNamespace

    from kubernetes.client.exceptions import ApiException

    calls: list[dict[str, Any]] = []
    answers: list[Any] = [["m1"], ["m1", "m2"], ApiException(status=403), ["m3"]]

    class Core:
        def list_node(self, **kw: Any) -> Any:
            calls.append(kw)
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            items = [{"metadata": {"name": n}} for n in answer]
            return SimpleNamespace(data=json_module.dumps({"items": items}))

    now = [1000.0]
    api = reconciler.KubeApi.__new__(reconciler.KubeApi)
    api.core, api._nodes, api.clock = Core(), None, lambda: now[0]

    def names() -> list[str] | None:
        listed = api.list_nodes()
        return None if listed is None else [n["metadata"]["name"] for n in listed]

    assert names() == ["m1"]
    now[0] += reconciler.NODE_LIST_SECONDS - 0.1
    assert names() == ["m1"] and len(calls) == 1
    assert calls[0]["resource_version"] == "0"
    now[0] += 0.1
    assert names() == ["m1", "m2"] and len(calls) == 2
    now[0] += reconciler.NODE_LIST_SECONDS
    assert names() is None and names() is None and len(calls) == 3
    now[0] += reconciler.NODE_LIST_SECONDS
    assert names() == ["m3"] and len(calls) == 4
