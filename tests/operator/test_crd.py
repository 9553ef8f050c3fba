"""The KVCluster CRD (crds/kvcluster.yaml) and its copy in manifests/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "kvcluster.yaml"


def load() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return doc


def schema() -> dict[str, Any]:
    version = load()["spec"]["versions"][0]
    s: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return s


def test_identity() -> None:
    crd = load()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "kvclusters.ringkv.io"
    spec = crd["spec"]
    assert spec["group"] == "ringkv.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "KVCluster"
    assert spec["names"]["plural"] == "kvclusters"
    assert "kvc" in spec["names"]["shortNames"]
    [version] = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]


def test_subresources() -> None:
    version = load()["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns() -> None:
    cols = {c["name"]: c for c in load()["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert cols["Replicas"]["jsonPath"] == ".spec.replicas"
    assert cols["Ready"]["jsonPath"] == ".status.readyReplicas"
    assert cols["Phase"]["jsonPath"] == ".status.phase"
    assert cols["RF"]["jsonPath"] == ".spec.replicationFactor"
    assert cols["Zones"]["jsonPath"] == ".status.zoneSizes"
    assert cols["Load-Bound"]["jsonPath"] == ".status.replicaLoadBound"
    assert cols["Age"]["type"] == "date"


def test_spec_defaults_and_validation() -> None:
    spec = schema()["properties"]["spec"]
    assert spec["required"] == ["zones"]
    p = spec["properties"]
    assert p["replicas"]["default"] == 3 and p["replicas"]["minimum"] == 1
    assert p["replicationFactor"]["default"] == 3
    assert (p["replicationFactor"]["minimum"], p["replicationFactor"]["maximum"]) == (1, 15)
    assert p["consistency"]["enum"] == ["strong", "balanced", "eventual"]
    assert p["consistency"]["default"] == "balanced"
    assert p["conflictResolution"]["enum"] == ["siblings", "lww"]
    assert p["vnodes"]["default"] == 128
    assert p["scaleByWholeZones"]["default"] is False
    zones = p["zones"]
    assert zones["minItems"] == 1 and zones["x-kubernetes-list-type"] == "set"
    assert any("exists_one" in r["rule"] for r in zones["x-kubernetes-validations"])
    assert p["storage"]["properties"]["size"]["default"] == "1Gi"
    assert p["storage"]["properties"]["size"]["x-kubernetes-int-or-string"] is True
    assert p["failureReplacement"]["properties"]["after"]["default"] == "10m"
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert "self.replicationFactor <= self.replicas" in rules
    assert any("oldSelf.zones" in r for r in rules)
    for quantity in ("requests", "limits"):
        q = p["resources"]["properties"][quantity]["additionalProperties"]
        assert q["x-kubernetes-int-or-string"] is True


def test_every_status_field_declared() -> None:
    """Everything plan.decide writes into status is in the schema (else it would be pruned)."""
    from ringkv.operator.plan import decide

    from .conftest import cluster, make_spec

    status_schema = schema()["properties"]["status"]
    spec = make_spec()
    observed = cluster(spec, {"zone-a": 1, "zone-b": 1, "zone-c": 1})
    status = decide(spec, observed, {"lastScaleTime": "2025-01-01T00:00:00Z"}, 1000.0, 2).status
    status["progress"] = {"operation": "join", "node": "x", "state": "running", "percent": 1.0,
                          "transfers": 1, "transfersDone": 0, "keysSent": 1, "keysTotal": 2,
                          "bytesSent": 1, "bytesTotal": 2, "rateBytesPerSecond": 1.0,
                          "etaSeconds": 1.0, "updatedReplicas": 1}  # fmt: skip

    def check(value: Any, s: dict[str, Any], path: str) -> None:
        if isinstance(value, dict):
            if s.get("x-kubernetes-preserve-unknown-fields"):
                return
            props = s.get("properties", {})
            for k, v in value.items():
                assert k in props, f"{path}.{k} is not declared in the status schema"
                if v is not None:
                    check(v, props[k], f"{path}.{k}")
        elif isinstance(value, list):
            for item in value:
                check(item, s["items"], path + "[]")

    check(status, status_schema, "status")
    conds = status_schema["properties"]["conditions"]
    assert conds["x-kubernetes-list-map-keys"] == ["type"]


def test_manifests_crd_is_the_same() -> None:
    copy = ROOT / "manifests" / "operator" / "crd.yaml"
    assert yaml.safe_load(copy.read_text()) == load()


def test_security_schema_defaults_and_rules() -> None:
    """spec.security: secure by default (the defaults match parse_spec's), contradictions and
    changes that would split a running cluster refused by the API server."""
    from ringkv.operator.spec import Security, parse_spec

    p = schema()["properties"]["spec"]["properties"]
    sec = p["security"]
    assert sec["default"] == {}
    auth, peer, tls = (sec["properties"][k] for k in ("auth", "peerAuth", "tls"))
    for section in (auth, peer, tls):
        assert section["default"] == {}
    assert auth["properties"]["enabled"]["default"] is True
    assert peer["properties"]["enabled"]["default"] is True
    assert tls["properties"]["enabled"]["default"] is False
    assert tls["properties"]["verifyPeers"]["default"] is False
    assert auth["properties"]["tokensSecret"]["required"] == ["name"]
    assert auth["properties"]["tokensSecret"]["properties"]["key"]["default"] == "tokens.json"
    assert peer["properties"]["clusterSecret"]["properties"]["key"]["default"] == "cluster-secret"
    # the CRD's defaults are parse_spec's defaults
    assert parse_spec("kv", "ns", {"zones": ["a"]}).security == Security()
    rules = {r["rule"]: r for r in peer["x-kubernetes-validations"]}
    assert rules["self == oldSelf"]["reason"] == "FieldValueForbidden"
    assert "!has(self.clusterSecret) || !has(self.enabled) || self.enabled" in rules
    assert [r["rule"] for r in tls["properties"]["enabled"]["x-kubernetes-validations"]] == [
        "self == oldSelf"
    ]
    tls_rules = [r["rule"] for r in tls["x-kubernetes-validations"]]
    assert "!has(self.enabled) || !self.enabled || has(self.secretName)" in tls_rules
    assert "!has(self.secretName) || (has(self.enabled) && self.enabled)" in tls_rules
    assert any("!self.verifyPeers" in r for r in tls_rules)
    assert "!has(self.tokensSecret) || !has(self.enabled) || self.enabled" in [
        r["rule"] for r in auth["x-kubernetes-validations"]
    ]


def test_reserved_settings_rule_matches_the_operator() -> None:
    """The CRD refuses exactly the settings parse_spec refuses (security flags included)."""
    import re

    from ringkv.operator.spec import RESERVED_SETTINGS

    settings = schema()["properties"]["spec"]["properties"]["settings"]
    [rule] = [r["rule"] for r in settings["x-kubernetes-validations"]]
    assert set(re.findall(r"'([a-z-]+)'", rule)) == RESERVED_SETTINGS


def test_rules_in_defaulted_objects_guard_their_fields() -> None:
    """The API server checks a default (``{}``) against the CEL rules before nested defaults
    are applied, so a rule on a defaulted object must not read a field without ``has()``:
    ``self.enabled`` on ``{}`` is an error and the whole CRD is refused."""
    import re

    def walk(node: dict[str, Any], path: str) -> list[str]:
        bad = []
        if "default" in node:
            for r in node.get("x-kubernetes-validations") or ():
                if "oldSelf" in r["rule"]:
                    continue  # transition rules do not run on a default
                for f in set(re.findall(r"(?<![\w.])self\.(\w+)", r["rule"])):
                    if f"has(self.{f})" not in r["rule"]:
                        bad.append(f"{path}: {r['rule']!r} reads self.{f} without has()")
        for k, child in (node.get("properties") or {}).items():
            bad += walk(child, f"{path}.{k}")
        return bad

    assert walk(schema()["properties"]["spec"], "spec") == []
