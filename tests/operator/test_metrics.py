"""The operator's per-cluster metrics, the phases they name, and the nodes' scrape wiring."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ringkv.operator import builders
from ringkv.operator.metrics import ClusterMetrics
from ringkv.operator.plan import PHASES

from .conftest import make_spec

ROOT = Path(__file__).resolve().parents[2]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }


def test_phase_last_action_and_errors_per_cluster() -> None:
    registry = CollectorRegistry()
    m = ClusterMetrics(registry)
    m.observe("ns", "kv", {"phase": "Scaling", "lastAction": {
        "action": "scale", "node": "", "zone": "a", "time": "2026-01-02T03:04:05Z"}})  # fmt: skip
    m.failed("ns", "kv")
    got = samples(registry)
    key = (("name", "kv"), ("namespace", "ns"))
    phases = {dict(labels)["phase"]: v for (n, labels), v in got.items()
              if n == "ringkv_operator_cluster_phase"}  # fmt: skip
    assert phases == {p: (1.0 if p == "Scaling" else 0.0) for p in PHASES}
    stamp = got[("ringkv_operator_last_action_timestamp_seconds",
                 tuple(sorted((*key, ("action", "scale")))))]  # fmt: skip
    assert stamp == 1767323045.0
    assert got[("ringkv_operator_cluster_reconcile_errors_total", key)] == 1
    m.observe("ns", "kv", {"phase": "Running"})  # the last action stays
    got = samples(registry)
    assert got[("ringkv_operator_cluster_phase", tuple(sorted((*key, ("phase", "Running")))))] == 1
    m.forget("ns", "kv")
    assert not any(dict(labels).get("name") == "kv" for (_n, labels) in samples(registry))


def test_crd_lists_every_phase() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "kvcluster.yaml").read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    listed = re.findall(r"[A-Z][a-z]+", status["properties"]["phase"]["description"])
    assert tuple(listed) == PHASES


def test_node_pods_carry_scrape_annotations() -> None:
    pod = builders.build_pod_template(make_spec(), "zone-a")
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/path"] == "/metrics"
    assert ann["prometheus.io/port"] == "7001"
    assert ann["prometheus.io/scheme"] == "http"
    own = make_spec(podTemplate={"annotations": {"prometheus.io/scrape": "false"}})
    assert (
        builders.build_pod_template(own, "zone-a")["metadata"]["annotations"][
            "prometheus.io/scrape"
        ]
        == "false"
    )  # the spec's own annotations win


def test_crd_names_every_token_role() -> None:
    from ringkv.node.auth import ROLES

    crd = yaml.safe_load((ROOT / "crds" / "kvcluster.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    auth = spec["properties"]["security"]["properties"]["auth"]["description"]
    listed = re.search(r"roles \(([^)]*)\)", auth)
    assert listed is not None and tuple(listed.group(1).split(", ")) == ROLES
    assert "NAME-metrics-token" in auth


def test_pod_monitor_scrapes_the_nodes_with_the_metrics_token() -> None:
    assert make_spec().monitoring.pod_monitor is False  # off unless asked
    spec = make_spec(monitoring={"podMonitor": {"enabled": True, "interval": "15s",
                                                "labels": {"release": "prom"}}})  # fmt: skip
    monitor = builders.build_pod_monitor(spec, {"name": "kv", "uid": "u1"})
    assert monitor["kind"] == "PodMonitor" and monitor["metadata"]["name"] == "kv"
    assert monitor["metadata"]["namespace"] == "ns"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert monitor["spec"]["selector"]["matchLabels"] == spec.node_selector_labels()
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "client" and endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s" and endpoint["scheme"] == "http"
    assert endpoint["bearerTokenSecret"] == {"name": "kv-metrics-token", "key": "token"}
    assert "tlsConfig" not in endpoint
    tls = make_spec(security={"tls": {"enabled": True, "secretName": "kv-tls"}})
    [endpoint] = builders.build_pod_monitor(tls)["spec"]["podMetricsEndpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {"ca": {"secret": {"name": "kv-tls", "key": "ca.crt"}},
                                     "serverName": "kv.ns.svc"}  # fmt: skip
    open_api = make_spec(security={"auth": {"enabled": False}})
    [endpoint] = builders.build_pod_monitor(open_api)["spec"]["podMetricsEndpoints"]
    assert "bearerTokenSecret" not in endpoint


def test_pod_monitor_interval_is_checked() -> None:
    import pytest

    from ringkv.operator.spec import SpecError

    with pytest.raises(SpecError, match="interval"):
        make_spec(monitoring={"podMonitor": {"enabled": True, "interval": "soon"}})


def test_crd_declares_the_pod_monitor_settings() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "kvcluster.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    pod_monitor = spec["properties"]["monitoring"]["properties"]["podMonitor"]["properties"]
    assert pod_monitor["enabled"]["default"] is False
    assert pod_monitor["interval"]["default"] == make_spec().monitoring.interval
    assert re.match(pod_monitor["interval"]["pattern"], "30s")
    assert not re.match(pod_monitor["interval"]["pattern"], "soon")
