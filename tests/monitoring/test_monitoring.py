"""The shipped alerting rules, dashboards and scrape configurations, checked with promtool."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from ringkv import monitoring
from ringkv.node import metrics as node_metrics
from ringkv.node import observability
from ringkv.operator.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "monitoring"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yml")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_committed_files_are_the_generated_ones() -> None:
    for name, text in monitoring.files().items():
        path = MONITORING / name
        assert path.exists(), f"{path} missing: run python -m ringkv.monitoring"
        assert path.read_text() == text, f"{path} is stale: run python -m ringkv.monitoring"


def test_alerts_pass_their_promtool_unit_tests(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    # every alert has a case where it fires and one where it must not (yet)
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    checks = [c for t in cases for c in t["alert_rule_test"]]
    for alert in monitoring.ALERTS:
        mine = [c for c in checks if c["alertname"] == alert.name]
        assert any(c["exp_alerts"] for c in mine), f"no firing case for {alert.name}"
        assert any(not c["exp_alerts"] for c in mine), f"no quiet case for {alert.name}"


def test_rules_files_are_valid(promtool: str, tmp_path: Path) -> None:
    result = run(promtool, "check", "rules", str(MONITORING / "rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(monitoring.ALERTS)} rules found" in result.stdout
    # the PrometheusRule carries the same groups
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load((MONITORING / "rules.yml").read_text())


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses PromQL in rule files: every panel's query becomes a recording rule."""
    for d in monitoring.DASHBOARDS:
        queries = monitoring.dashboard_queries(d)
        assert len(queries) >= len(d.panels)
        rules = {"groups": [{"name": d.uid, "rules": [
            {"record": f"panel:{i}", "expr": q} for i, q in enumerate(queries)]}]}  # fmt: skip
        path = tmp_path / f"{d.uid}.yml"
        path.write_text(yaml.safe_dump(rules))
        result = run(promtool, "check", "rules", str(path))
        assert result.returncode == 0, f"{d.title}: {result.stdout}{result.stderr}"


def test_dashboards_are_grafana_json_and_in_the_configmap() -> None:
    configmap = yaml.safe_load((MONITORING / "dashboards-configmap.yaml").read_text())
    assert configmap["metadata"]["labels"][monitoring.SIDECAR_LABEL] == "1"
    uids = set()
    for d in monitoring.DASHBOARDS:
        doc = json.loads((MONITORING / "dashboards" / d.file).read_text())
        assert json.loads(configmap["data"][d.file]) == doc
        uids.add(doc["uid"])
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)) == len(d.panels)
        assert {v["name"] for v in doc["templating"]["list"]} >= {"datasource"}
        for panel in doc["panels"]:
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
            assert panel["datasource"]["uid"] == "${datasource}"
    assert len(uids) == len(monitoring.DASHBOARDS)
    titles = {d.title for d in monitoring.DASHBOARDS}
    assert titles == {"ringkv / Cluster overview", "ringkv / Node", "ringkv / Operator"}


def test_operator_dashboard_names_only_metrics_the_operator_exports() -> None:
    """Every metric the operator dashboard queries is one the operator registers (the live
    check with Prometheus is test_operator_dashboard.py)."""
    from prometheus_client import REGISTRY

    import ringkv.operator.handlers  # noqa: F401 (registers the operator's metrics)

    exported = {s.name for family in REGISTRY.collect() for s in family.samples} | {
        family.name for family in REGISTRY.collect()
    }
    for expr in monitoring.dashboard_queries(monitoring.OPERATOR_DASHBOARD):
        for name in re.findall(r"\b(ringkv_operator_[a-z_]+)", expr):
            base = re.sub(r"_(bucket|count|sum|total)$", "", name)
            assert name in exported or base in exported, f"{name} is not an operator metric"


def test_runbook_section_for_every_alert() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#{2,4} (.+)$", docs, re.M)
    }
    for alert in monitoring.ALERTS:
        assert alert.anchor in headings, f"docs/operations.md has no section {alert.name}"
        assert alert.rule()["annotations"]["runbook_url"].endswith("#" + alert.anchor)


def test_slo_thresholds_are_the_design_targets() -> None:
    capacity = (ROOT / "docs" / "capacity.md").read_text()
    read_ms, write_ms = re.search(
        r"p99 < (\d+) ms for reads and < (\d+) ms for writes", capacity
    ).groups()  # type: ignore[union-attr]
    assert monitoring.SLO_P99_SECONDS["get"] == int(read_ms) / 1000
    assert monitoring.SLO_P99_SECONDS["put"] == monitoring.SLO_P99_SECONDS["delete"]
    assert monitoring.SLO_P99_SECONDS["put"] == int(write_ms) / 1000


def test_local_scrape_config_is_valid(promtool: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("metrics-token-0123456789")
    config = monitoring.local_prometheus_config(
        ["127.0.0.1:7001"], token_file=str(token),
        rules_file=str(MONITORING / "rules.yml"), scrape_interval="1s",
    )  # fmt: skip
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = run(promtool, "check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_scraping_uses_the_metrics_token_secret() -> None:
    spec = parse_spec(monitoring.EXAMPLE_CLUSTER, "default", {"zones": ["a"]})
    monitors = (MONITORING / "podmonitor.yaml").read_text()
    node_monitor, operator_monitor = yaml.safe_load_all(monitors)
    example = yaml.safe_load((ROOT / "manifests" / "example" / "kvcluster.yaml").read_text())
    assert node_monitor["metadata"]["namespace"] == example["metadata"]["namespace"]
    assert example["metadata"]["name"] == monitoring.EXAMPLE_CLUSTER
    [endpoint] = node_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["bearerTokenSecret"] == {"name": spec.metrics_token_secret, "key": "token"}
    assert endpoint["port"] == "client" and endpoint["path"] == "/metrics"
    assert node_monitor["spec"]["selector"]["matchLabels"] == spec.node_selector_labels()
    assert node_monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"  # job="ringkv"
    assert operator_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    scrape = yaml.safe_load((MONITORING / "prometheus-scrape.yml").read_text())
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    assert set(jobs) == {monitoring.NODE_JOB, monitoring.OPERATOR_JOB}
    assert jobs["ringkv"]["authorization"]["credentials_file"].endswith("/token")
    policy = yaml.safe_load((ROOT / "manifests" / "example" / "networkpolicy.yaml").read_text())
    client_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 7001)
    admitted = [f.get("namespaceSelector", {}).get("matchLabels", {}) for f in client_rule["from"]]
    assert {"kubernetes.io/metadata.name": "monitoring"} in admitted
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    kinds = {doc["kind"] for res in kustomization["resources"]
             for doc in yaml.safe_load_all((MONITORING / res).read_text())}  # fmt: skip
    assert kinds == {"PrometheusRule", "PodMonitor", "ConfigMap"}


def test_alerts_name_metrics_the_node_exports() -> None:
    """Every ringkv_ metric a node alert uses is one a node exports (names drift otherwise)."""
    source = "\n".join(Path(m.__file__).read_text() for m in (node_metrics, observability))
    for alert in monitoring.ALERTS:
        for name in re.findall(r"\b(ringkv_(?!operator_)[a-z0-9_]+)", alert.expr):
            base = re.sub(r"_(bucket|count|sum|total)$", "", name)
            assert f'"{base}"' in source, f"{alert.name}: {name} is not a node metric"
