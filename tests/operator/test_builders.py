"""The pure builders: every child of a KVCluster."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringkv.node.config import parse_args
from ringkv.operator import builders
from ringkv.operator.spec import SpecError, parse_duration, parse_quantity, parse_spec

from .conftest import ZONES, make_spec

OWNER = {"name": "kv", "uid": "1234"}


def children() -> dict[tuple[str, str], dict[str, Any]]:
    spec = make_spec()
    objs = builders.build_children(spec, OWNER, {"zone-a": 1, "zone-b": 2, "zone-c": 0})
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def test_every_child_is_named_labelled_and_owned() -> None:
    objs = children()
    assert set(objs) == {
        ("ServiceAccount", "kv-node"), ("Role", "kv-node"), ("RoleBinding", "kv-node"),
        ("Service", "kv-peers"), ("Service", "kv"),
        ("PodDisruptionBudget", "kv-zone-a"), ("PodDisruptionBudget", "kv-zone-b"),
        ("PodDisruptionBudget", "kv-zone-c"), ("StatefulSet", "kv-zone-a"),
        ("StatefulSet", "kv-zone-b"), ("StatefulSet", "kv-zone-c"),
    }  # fmt: skip
    for obj in objs.values():
        meta = obj["metadata"]
        assert meta["namespace"] == "ns"
        assert meta["labels"]["app.kubernetes.io/instance"] == "kv"
        assert meta["labels"]["app.kubernetes.io/name"] == "ringkv"
        [ref] = meta["ownerReferences"]
        assert ref == {"apiVersion": "ringkv.io/v1alpha1", "kind": "KVCluster", "name": "kv",
                       "uid": "1234", "controller": True, "blockOwnerDeletion": True}  # fmt: skip
        assert obj["apiVersion"] and obj["kind"]


def test_builders_are_pure() -> None:
    assert children() == children()


def test_statefulset_selector_matches_template_and_services() -> None:
    objs = children()
    for zone, replicas in (("zone-a", 1), ("zone-b", 2), ("zone-c", 0)):
        sts = objs[("StatefulSet", f"kv-{zone}")]
        s = sts["spec"]
        assert s["replicas"] == replicas
        labels = s["template"]["metadata"]["labels"]
        assert s["selector"]["matchLabels"].items() <= labels.items()
        assert labels["ringkv.io/zone"] == zone
        assert s["serviceName"] == "kv-peers"
        assert s["updateStrategy"] == {"type": "OnDelete"}
        assert s["podManagementPolicy"] == "Parallel"
        for svc in (objs[("Service", "kv-peers")], objs[("Service", "kv")]):
            assert svc["spec"]["selector"].items() <= labels.items()
        pdb = objs[("PodDisruptionBudget", f"kv-{zone}")]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"]["maxUnavailable"] == 1
    # a zone's selector (StatefulSet, PodDisruptionBudget) does not select another zone's pods
    a = objs[("StatefulSet", "kv-zone-a")]["spec"]["selector"]["matchLabels"]
    b = objs[("StatefulSet", "kv-zone-b")]["spec"]["template"]["metadata"]["labels"]
    assert not a.items() <= b.items()
    a = objs[("PodDisruptionBudget", "kv-zone-a")]["spec"]["selector"]["matchLabels"]
    assert not a.items() <= b.items()


def test_each_zone_budget_is_the_one_given() -> None:
    spec = make_spec()
    objs = builders.build_children(spec, OWNER, {"zone-a": 1, "zone-b": 1, "zone-c": 1},
                                   {"zone-a": 1, "zone-b": 0, "zone-c": 0})  # fmt: skip
    budgets = {o["metadata"]["name"]: o["spec"]["maxUnavailable"] for o in objs
               if o["kind"] == "PodDisruptionBudget"}  # fmt: skip
    assert budgets == {"kv-zone-a": 1, "kv-zone-b": 0, "kv-zone-c": 0}


def test_peer_service_is_headless_and_publishes_unready_pods() -> None:
    svc = children()[("Service", "kv-peers")]["spec"]
    assert svc["clusterIP"] == "None"
    assert svc["publishNotReadyAddresses"] is True
    assert {p["port"] for p in svc["ports"]} == {7001, 8001}
    client = children()[("Service", "kv")]["spec"]
    assert client["type"] == "ClusterIP"
    assert [p["port"] for p in client["ports"]] == [7001]


def test_zone_pinning_and_anti_affinity() -> None:
    pod = children()[("StatefulSet", "kv-zone-b")]["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    [term] = terms["nodeSelectorTerms"]
    assert term["matchExpressions"] == [
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-b"]}
    ]
    [pref] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert pref["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert pod["serviceAccountName"] == "kv-node"
    assert pod["enableServiceLinks"] is False


def test_container_env_probes_and_volume() -> None:
    sts = children()[("StatefulSet", "kv-zone-a")]["spec"]
    [c] = sts["template"]["spec"]["containers"]
    assert c["command"] == ["ringkv", "node"]
    assert c["image"] == "ringkv:0.1.0"
    env = {e["name"]: e for e in c["env"]}
    assert env["RINGKV_NODE_ID"]["value"] == "$(POD_NAME)"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["RINGKV_ZONE"]["value"] == "zone-a"
    assert env["RINGKV_ADVERTISE_HOST"]["value"] == "$(POD_IP)"
    assert (env["RINGKV_PEER_ADVERTISE"]["value"]
            == "$(POD_NAME).kv-peers.$(POD_NAMESPACE).svc.cluster.local:8001")  # fmt: skip
    assert "envFrom" not in c and env["RINGKV_SEEDS"]["value"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert c["readinessProbe"]["httpGet"]["port"] == 7001
    assert c["volumeMounts"][0] == {"name": "data", "mountPath": "/var/lib/ringkv"}
    assert "lifecycle" not in c  # the operator decommissions, not a preStop hook
    [claim] = sts["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in claim["spec"]
    assert sts["persistentVolumeClaimRetentionPolicy"] == {
        "whenScaled": "Retain", "whenDeleted": "Retain",
    }  # fmt: skip


def test_storage_class_and_delete_policy() -> None:
    spec = make_spec(storage={"size": "5Gi", "storageClassName": "fast", "deletePolicy": "Delete"})
    sts = builders.build_statefulset(spec, "zone-a", 1)["spec"]
    claim = sts["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast"
    assert claim["resources"]["requests"]["storage"] == "5Gi"
    assert sts["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"


def test_settings_are_what_the_node_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings plus the per-pod env are a configuration `ringkv node` accepts."""
    spec = make_spec(consistency="strong", conflictResolution="lww", vnodes=64,
                     settings={"stream-rate": "1000", "hint-window": "60"})  # fmt: skip
    data = builders.config_data(spec)
    assert data["RINGKV_SEEDS"] == ",".join(
        f"kv-{z}-0.kv-peers.ns.svc.cluster.local:8001" for z in ZONES
    )
    assert data["RINGKV_STREAM_RATE"] == "1000"
    env = dict(data)
    env.update(
        {
            "RINGKV_NODE_ID": "kv-zone-b-1",
            "RINGKV_ZONE": "zone-b",
            "RINGKV_ADVERTISE_HOST": "10.0.0.7",
            "RINGKV_PEER_ADVERTISE": "kv-zone-b-1.kv-peers.ns.svc.cluster.local:8001",
        }
    )
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    config = parse_args([])
    assert config.node_id == "kv-zone-b-1"
    assert config.port == 7001 and config.peer_port == 8001
    assert config.replication_factor == 3 and config.vnodes == 64
    assert config.conflict_mode == "lww" and config.default_consistency == "strong"
    assert config.auto_join is True
    assert config.stream_rate == 1000.0 and config.hint_window == 60.0
    assert config.address == "10.0.0.7:7001"
    # a seed pod advertises exactly its seed address, so it recognises (and skips) itself
    own = "kv-zone-b-0.kv-peers.ns.svc.cluster.local:8001"
    assert own in config.seeds


def test_config_change_changes_the_pod_template() -> None:
    a = builders.build_statefulset(make_spec(), "zone-a", 1)
    b = builders.build_statefulset(make_spec(settings={"stream-rate": "5"}), "zone-a", 1)
    c = builders.build_statefulset(make_spec(image="ringkv:0.2.0"), "zone-a", 1)
    assert a["spec"]["template"] != b["spec"]["template"]
    assert a["spec"]["template"] != c["spec"]["template"]
    assert a["spec"]["volumeClaimTemplates"] == b["spec"]["volumeClaimTemplates"]


def test_role_is_least_privilege() -> None:
    role = children()[("Role", "kv-node")]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "endpoints"],
         "verbs": ["get", "list", "watch"]}
    ]  # fmt: skip
    rb = children()[("RoleBinding", "kv-node")]
    assert rb["roleRef"]["name"] == "kv-node"
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "kv-node", "namespace": "ns"}]


def test_pod_template_extras() -> None:
    spec = make_spec(
        resources={"requests": {"cpu": "500m", "memory": "1Gi"}},
        podTemplate={"nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "k"}],
                     "labels": {"team": "x"}, "priorityClassName": "high"},
        imagePullSecrets=[{"name": "regcred"}],
    )  # fmt: skip
    pod = builders.build_pod_template(spec, "zone-c")
    assert pod["metadata"]["labels"]["team"] == "x"
    assert pod["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert pod["spec"]["tolerations"] == [{"key": "k"}]
    assert pod["spec"]["priorityClassName"] == "high"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "500m"


def test_unknown_zone_is_refused() -> None:
    with pytest.raises(ValueError):
        builders.build_statefulset(make_spec(), "zone-x", 1)


@pytest.mark.parametrize(
    "raw",
    [
        {"zones": []},
        {"zones": ["a", "a"]},
        {"zones": ["A_b"]},
        {"zones": ["a"], "replicas": 2, "replicationFactor": 3},
        {"zones": ["a"], "settings": {"node-id": "x"}},
        {"zones": ["a"], "clientPort": 7001, "peerPort": 7001},
        {"zones": ["a"], "failureReplacement": {"after": "ten minutes"}},
        {"zones": ["a"], "storage": {"size": "lots"}},
        {"zones": ["a"], "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 4}},
    ],
)
def test_invalid_specs(raw: dict[str, Any]) -> None:
    with pytest.raises(SpecError):
        parse_spec("kv", "ns", raw)


def test_durations_and_quantities() -> None:
    assert parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5
    assert parse_quantity("1Gi") == 2**30
    assert parse_quantity("500M") == 5e8
    assert parse_quantity(3) == 3


@given(replicas=st.integers(1, 200), zones=st.integers(1, 8))
def test_zone_targets_are_even_and_sum_up(replicas: int, zones: int) -> None:
    spec = parse_spec("kv", "ns", {"zones": [f"z{i}" for i in range(zones)],
                                   "replicas": replicas, "replicationFactor": 1})  # fmt: skip
    targets = spec.zone_targets()
    assert sum(targets.values()) == replicas
    assert max(targets.values()) - min(targets.values()) <= 1
    assert list(targets.values()) == sorted(targets.values(), reverse=True)


# -- security: tokens, the cluster secret and TLS from Secrets ---------------------------------


def _container(spec: Any, zone: str = "zone-a") -> dict[str, Any]:
    pod = builders.build_pod_template(spec, zone)
    [c] = pod["spec"]["containers"]
    return dict(c)


def _volumes(spec: Any) -> dict[str, dict[str, Any]]:
    pod = builders.build_pod_template(spec, "zone-a")
    return {v["name"]: v for v in pod["spec"].get("volumes") or ()}


def test_secure_by_default_with_generated_secrets() -> None:
    spec = make_spec()
    data = builders.config_data(spec)
    assert "RINGKV_NO_AUTH" not in data and "RINGKV_NO_PEER_AUTH" not in data
    assert data["RINGKV_AUTH_TOKENS_FILE"] == (
        "/etc/ringkv/tokens/tokens.json,/etc/ringkv/operator-token/tokens.json,"
        "/etc/ringkv/metrics-token/tokens.json"
    )
    assert data["RINGKV_CLUSTER_SECRET_FILE"] == "/etc/ringkv/cluster-secret/cluster-secret"
    assert not any(k.startswith("RINGKV_TLS") for k in data)
    vols = _volumes(spec)
    assert set(vols) == {"tokens", "operator-token", "metrics-token", "cluster-secret"}
    assert vols["tokens"]["secret"] == {
        "secretName": "kv-tokens", "items": [{"key": "tokens.json", "path": "tokens.json"}],
        "defaultMode": 0o440,
    }  # fmt: skip
    assert vols["operator-token"]["secret"]["secretName"] == "kv-operator-token"
    assert vols["operator-token"]["secret"]["items"] == [
        {"key": "tokens.json", "path": "tokens.json"}
    ]
    assert vols["cluster-secret"]["secret"]["secretName"] == "kv-cluster-secret"
    assert vols["cluster-secret"]["secret"]["items"] == [
        {"key": "cluster-secret", "path": "cluster-secret"}
    ]
    mounts = {m["name"]: m for m in _container(spec)["volumeMounts"]}
    for name, path in (("tokens", "/etc/ringkv/tokens"),
                       ("operator-token", "/etc/ringkv/operator-token"),
                       ("metrics-token", "/etc/ringkv/metrics-token"),
                       ("cluster-secret", "/etc/ringkv/cluster-secret")):  # fmt: skip
        # whole directories, read-only, never subPath (a subPath mount is never updated)
        assert mounts[name] == {"name": name, "mountPath": path, "readOnly": True}
    # the files the settings name are the mounted ones
    paths = {f"{mounts[v['name']]['mountPath']}/{i['path']}"
             for v in vols.values() for i in v["secret"]["items"]}  # fmt: skip
    assert (
        set(data["RINGKV_AUTH_TOKENS_FILE"].split(",")) | {data["RINGKV_CLUSTER_SECRET_FILE"]}
        == paths
    )


SECURITY_VARIANTS = [
    {},
    {"auth": {"enabled": False}, "peerAuth": {"enabled": False}},
    {"tls": {"enabled": True, "secretName": "kv-tls", "verifyPeers": True}},
]


@pytest.mark.parametrize("security", SECURITY_VARIANTS)
def test_security_config_is_what_the_node_parses(
    security: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in list(os.environ):
        if k.startswith("RINGKV_"):
            monkeypatch.delenv(k)
    spec = make_spec(security=security)
    for k, v in builders.config_data(spec).items():
        monkeypatch.setenv(k, v)
    config = parse_args(["--node-id", "kv-zone-a-0"])  # exits on a contradiction
    sec = spec.security
    assert config.no_auth is not sec.auth and config.no_peer_auth is not sec.peer_auth
    assert len([f for f in config.auth_tokens_file.split(",") if f]) == (3 if sec.auth else 0)
    assert bool(config.cluster_secret_file) is sec.peer_auth
    assert bool(config.tls_cert_file) is bool(config.tls_key_file) is sec.tls
    assert bool(config.tls_ca_file) is sec.tls_verify_peers


def test_user_named_secrets_are_mounted_with_their_keys() -> None:
    spec = make_spec(security={
        "auth": {"tokensSecret": {"name": "app-tokens", "key": "ringkv.json"}},
        "peerAuth": {"clusterSecret": {"name": "peer-secret"}},
    })  # fmt: skip
    vols = _volumes(spec)
    assert vols["tokens"]["secret"]["secretName"] == "app-tokens"
    assert vols["tokens"]["secret"]["items"] == [{"key": "ringkv.json", "path": "tokens.json"}]
    # the operator's own token file is mounted even next to the users' Secret
    assert vols["operator-token"]["secret"]["secretName"] == "kv-operator-token"
    assert vols["cluster-secret"]["secret"]["secretName"] == "peer-secret"
    assert vols["cluster-secret"]["secret"]["items"] == [
        {"key": "cluster-secret", "path": "cluster-secret"}
    ]
    names = [o["metadata"]["name"] for o in builders.build_generated_secrets(spec, OWNER, str)]
    assert names == ["kv-operator-token", "kv-metrics-token"]  # nothing else generated


def test_security_switched_off_explicitly() -> None:
    spec = make_spec(security={"auth": {"enabled": False}, "peerAuth": {"enabled": False}})
    data = builders.config_data(spec)
    assert data["RINGKV_NO_AUTH"] == "true" and data["RINGKV_NO_PEER_AUTH"] == "true"
    assert "RINGKV_AUTH_TOKENS_FILE" not in data and "RINGKV_CLUSTER_SECRET_FILE" not in data
    assert "volumes" not in builders.build_pod_template(spec, "zone-a")["spec"]
    assert builders.build_generated_secrets(spec, OWNER, str) == []


def test_tls_from_a_kubernetes_tls_secret() -> None:
    spec = make_spec(security={"tls": {"enabled": True, "secretName": "kv-tls"}})
    data = builders.config_data(spec)
    assert data["RINGKV_TLS_CERT_FILE"] == "/etc/ringkv/tls/tls.crt"
    assert data["RINGKV_TLS_KEY_FILE"] == "/etc/ringkv/tls/tls.key"
    assert "RINGKV_TLS_CA_FILE" not in data
    tls = _volumes(spec)["tls"]["secret"]
    assert tls["secretName"] == "kv-tls"
    assert [i["key"] for i in tls["items"]] == ["tls.crt", "tls.key"]
    c = _container(spec)
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["scheme"] == "HTTPS"
    assert {"name": "tls", "mountPath": "/etc/ringkv/tls", "readOnly": True} in c["volumeMounts"]
    assert spec.client_scheme == "https" and make_spec().client_scheme == "http"
    assert _container(make_spec())["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    mutual = make_spec(security={"tls": {"enabled": True, "secretName": "kv-tls",
                                         "verifyPeers": True}})  # fmt: skip
    assert builders.config_data(mutual)["RINGKV_TLS_CA_FILE"] == "/etc/ringkv/tls/ca.crt"
    assert [i["key"] for i in _volumes(mutual)["tls"]["secret"]["items"]] == [
        "tls.crt", "tls.key", "ca.crt"
    ]  # fmt: skip


def test_generated_secrets_hold_what_the_nodes_read() -> None:
    from ringkv.node.auth import parse_tokens

    values = iter(["operator-token-0123456789abcdef", "admin-token-0123456789abcdef",
                   "cluster-secret-0123456789abcdef",
                   "metrics-token-0123456789abcdef"])  # fmt: skip
    objs = builders.build_generated_secrets(make_spec(), OWNER, lambda: next(values))
    by_name = {o["metadata"]["name"]: o for o in objs}
    assert set(by_name) == {
        "kv-operator-token", "kv-tokens", "kv-cluster-secret", "kv-metrics-token"
    }  # fmt: skip
    for o in objs:
        assert o["apiVersion"] == "v1" and o["kind"] == "Secret" and o["type"] == "Opaque"
        assert o["metadata"]["namespace"] == "ns"
        assert o["metadata"]["ownerReferences"][0]["uid"] == "1234"
        assert o["metadata"]["labels"]["app.kubernetes.io/component"] == "credentials"
    import base64

    def data(name: str) -> dict[str, str]:
        return {k: base64.b64decode(v).decode() for k, v in by_name[name]["data"].items()}

    op = data("kv-operator-token")
    assert op["token"] == "operator-token-0123456789abcdef"
    [(_digest, principal)] = parse_tokens(op["tokens.json"]).items()
    assert (principal.name, principal.role) == ("ringkv-operator", "admin")
    scraper = data("kv-metrics-token")
    assert scraper["token"] == "metrics-token-0123456789abcdef"
    [principal] = parse_tokens(scraper["tokens.json"]).values()
    assert (principal.name, principal.role) == ("metrics", "metrics")
    users = data("kv-tokens")
    assert users["admin-token"] == "admin-token-0123456789abcdef"
    [principal] = parse_tokens(users["tokens.json"]).values()
    assert (principal.name, principal.role) == ("admin", "admin")
    assert data("kv-cluster-secret") == {"cluster-secret": "cluster-secret-0123456789abcdef"}


def test_secret_wiring_depends_on_the_spec_only() -> None:
    """The pod template names Secrets and paths, never their contents: a new token or a
    renewed certificate changes no template (no roll: the nodes reload the files), while
    pointing at another Secret or key (a mount change) does."""
    base = builders.build_statefulset(make_spec(), "zone-a", 1)["spec"]["template"]
    text = json.dumps(base)
    for o in builders.build_generated_secrets(make_spec(), OWNER, lambda: "s3cret-" + "x" * 20):
        for v in o["data"].values():
            assert v not in text
    assert "s3cret" not in text
    again = builders.build_statefulset(make_spec(), "zone-a", 1)["spec"]["template"]
    assert again == base
    other = make_spec(security={"auth": {"tokensSecret": {"name": "mine"}}})
    assert builders.build_statefulset(other, "zone-a", 1)["spec"]["template"] != base
    assert builders.config_data(other) == builders.config_data(make_spec())  # paths unchanged


@pytest.mark.parametrize(
    "security",
    [
        {"auth": {"enabled": False, "tokensSecret": {"name": "t"}}},
        {"auth": {"tokensSecret": {"key": "k"}}},
        {"auth": {"tokensSecret": {"name": "Not_A_Name"}}},
        {"auth": {"tokensSecret": {"name": "t", "key": "bad/key"}}},
        {"auth": {"enabled": "yes"}},
        {"peerAuth": {"enabled": False, "clusterSecret": {"name": "s"}}},
        {"tls": {"enabled": True}},
        {"tls": {"secretName": "kv-tls"}},
        {"tls": {"verifyPeers": True}},
        {"tls": "on"},
    ],
)
def test_invalid_security(security: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match=r"spec\.security"):
        parse_spec("kv", "ns", {"zones": ["a"], "security": security})


SECURITY_FLAGS = ["auth-tokens-file", "no-auth", "cluster-secret-file", "no-peer-auth",
                  "tls-cert-file", "tls-key-file", "tls-ca-file"]  # fmt: skip


@pytest.mark.parametrize("flag", SECURITY_FLAGS)
def test_settings_cannot_bypass_security(flag: str) -> None:
    with pytest.raises(SpecError, match=flag):
        parse_spec("kv", "ns", {"zones": ["a"], "settings": {flag: "true"}})


def test_settings_live_in_the_pod_template() -> None:
    """Each StatefulSet revision carries its own settings (no shared ConfigMap): a pod of the
    old revision restarting mid-roll keeps the old settings, and a change rolls the nodes."""
    spec = make_spec(settings={"stream-rate": "1000"})
    c = _container(spec)
    assert "envFrom" not in c
    env = {e["name"]: e.get("value") for e in c["env"]}
    for k, v in builders.config_data(spec).items():
        assert env[k] == v
    other = make_spec(settings={"stream-rate": "2000"})
    assert builders.build_pod_template(other, "zone-a") != builders.build_pod_template(
        spec, "zone-a"
    )
