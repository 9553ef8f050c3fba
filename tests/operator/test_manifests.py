"""manifests/: parseable, complete for `kubectl apply -k`, consistent with each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ringkv.operator.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_kustomization_lists_existing_files() -> None:
    k = docs(MANIFESTS / "kustomization.yaml")[0]
    assert k["kind"] == "Kustomization"
    kinds = set()
    for res in k["resources"]:
        for d in docs(MANIFESTS / res):
            kinds.add(d["kind"])
    assert {"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
            "ClusterRoleBinding", "Deployment"} <= kinds  # fmt: skip


def test_operator_runs_as_its_service_account_with_the_handlers() -> None:
    [dep] = docs(MANIFESTS / "operator" / "deployment.yaml")
    pod = dep["spec"]["template"]["spec"]
    rbac = {d["kind"]: d for d in docs(MANIFESTS / "operator" / "rbac.yaml")}
    assert pod["serviceAccountName"] == rbac["ServiceAccount"]["metadata"]["name"]
    assert rbac["ClusterRoleBinding"]["subjects"][0]["name"] == pod["serviceAccountName"]
    assert pod["containers"][0]["command"] == ["python", "-m", "ringkv.operator"]
    rules = rbac["ClusterRole"]["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip
    # what the nodes' Role grants, the operator must hold itself
    for res in ("pods", "endpoints"):
        for verb in ("get", "list", "watch"):
            assert ("", res, verb) in granted
    assert ("ringkv.io", "kvclusters/status", "patch") in granted
    assert not any(v == "*" or r == "*" for _, r, v in granted)


def test_example_is_a_valid_three_zone_cluster() -> None:
    [kvc] = docs(MANIFESTS / "example" / "kvcluster.yaml")
    assert kvc["apiVersion"] == "ringkv.io/v1alpha1" and kvc["kind"] == "KVCluster"
    spec = parse_spec(kvc["metadata"]["name"], kvc["metadata"]["namespace"], kvc["spec"])
    assert spec.replicas == 3 and len(spec.zones) == 3 and spec.replication_factor == 3


def test_operator_secret_access_is_least_privilege() -> None:
    """Secrets: get (its token, the TLS CA, checking named Secrets exist) and create (the
    generated ones) -- no list or watch (it reads only Secrets it is pointed at by name), no
    update, patch or delete (generated Secrets go with the KVCluster through owner refs)."""
    rbac = {d["kind"]: d for d in docs(MANIFESTS / "operator" / "rbac.yaml")}
    secret_rules = [r for r in rbac["ClusterRole"]["rules"] if "secrets" in r["resources"]]
    assert secret_rules == [{"apiGroups": [""], "resources": ["secrets"],
                             "verbs": ["get", "create"]}]  # fmt: skip


def test_example_is_secure_with_generated_secrets() -> None:
    [kvc] = docs(MANIFESTS / "example" / "kvcluster.yaml")
    spec = parse_spec(kvc["metadata"]["name"], kvc["metadata"]["namespace"], kvc["spec"])
    sec = spec.security
    assert sec.auth and sec.peer_auth
    assert sec.tokens_secret is None and sec.cluster_secret is None  # generated
    assert spec.tokens_ref.name == "example-tokens"
