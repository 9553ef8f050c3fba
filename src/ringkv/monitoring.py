"""Monitoring: the alerting rules, Grafana dashboards and scrape configurations ringkv ships.

One place for all of it: ``python -m ringkv.monitoring [DIR]`` writes ``manifests/monitoring/``
from the definitions here, and a test checks that the committed files are what it writes.

- ``SLO_P99_SECONDS``: the latency targets (p99 per operation) alerts and dashboards use.
- ``ALERTS``: the alerting rules, rendered as a plain rules file and a PrometheusRule; each
  has a runbook section in docs/operations.md (``RUNBOOK`` is the anchor).
- ``DASHBOARDS``: the Grafana dashboards (cluster overview, per node, operator), rendered as
  JSON and as a ConfigMap with the Grafana sidecar's label.
- ``scrape_config``/``local_prometheus_config``: how Prometheus scrapes nodes with the
  ``metrics`` token, in Kubernetes (pod annotations, or a PodMonitor) and on loopback
  (``ringkv local up --monitoring`` and the integration test).

Series carry ``job="ringkv"`` for nodes and ``job="ringkv-operator"`` for the operator (the
PodMonitors take the job from the pods' ``app.kubernetes.io/name``), and ``cluster`` (the
KVCluster's name) so that one Prometheus can watch several clusters.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NODE_JOB = "ringkv"
OPERATOR_JOB = "ringkv-operator"
NODES = f'job="{NODE_JOB}"'
OPERATOR = f'job="{OPERATOR_JOB}"'
# The design's latency targets: p99 under 10 ms for reads and 20 ms for writes.
SLO_P99_SECONDS = {"get": 0.010, "put": 0.020, "delete": 0.020}
# Runbooks: sections of docs/operations.md (prefix your repository's or docs site's address).
RUNBOOK = "docs/operations.md#"
# Grafana replaces $__rate_interval; promtool and Prometheus need a real duration.
RATE = "$__rate_interval"
SIDECAR_LABEL = "grafana_dashboard"
EXAMPLE_CLUSTER = "example"


# -- alerts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str

    @property
    def anchor(self) -> str:
        return self.name.lower()

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": RUNBOOK + self.anchor,
            },
        }


def _p99(ops: str) -> str:
    return (
        "histogram_quantile(0.99, sum by (cluster, op, le) "
        f'(rate(ringkv_request_duration_seconds_bucket{{{NODES}, op=~"{ops}"}}[5m])))'
    )


ALERTS: tuple[Alert, ...] = (
    Alert(
        "RingkvNodeDown",
        f"up{{{NODES}}} == 0",
        "1m",
        "critical",
        "ringkv node {{ $labels.instance }} is down",
        "Prometheus cannot scrape {{ $labels.instance }} (cluster {{ $labels.cluster }}): "
        "the process is gone or unreachable. Its ranges run on the other replicas and hints "
        "accumulate for it.",
    ),
    Alert(
        "RingkvReplicasBelowN",
        f"min by (cluster) (ringkv_ranges_below_replication_factor{{{NODES}}}) > 0",
        "5m",
        "warning",
        "Token ranges of {{ $labels.cluster }} have fewer live replicas than N",
        "Every live node sees {{ $value }} or more token ranges with fewer than N live "
        "replicas: a quorum of ALL fails there, and one more failure may make keys "
        "unavailable.",
    ),
    Alert(
        "RingkvHintsGrowing",
        f"ringkv_hints_pending{{{NODES}}} > 0 and deriv(ringkv_hints_pending{{{NODES}}}[15m]) > 0",
        "30m",
        "warning",
        "Hints keep growing on {{ $labels.instance }}",
        "{{ $value }} hints pending on {{ $labels.instance }} and still growing for 30 "
        "minutes: a replica has been down or unreachable that long.",
    ),
    Alert(
        "RingkvHintWindowExpiring",
        f"ringkv_hints_oldest_age_seconds{{{NODES}}} "
        f"> 0.75 * ringkv_hint_window_seconds{{{NODES}}}",
        "1m",
        "warning",
        "Hints on {{ $labels.instance }} will soon be dropped",
        "The oldest hint on {{ $labels.instance }} is past 75 % of the hint window; when it "
        "expires the hint is dropped and only anti-entropy repairs its key.",
    ),
    Alert(
        "RingkvAntiEntropyStalled",
        f"ringkv_anti_entropy_full_exchange_age_seconds{{{NODES}}} "
        f"> clamp_min(100 * ringkv_anti_entropy_interval_seconds{{{NODES}}}, 3600) "
        f"and ringkv_anti_entropy_interval_seconds{{{NODES}}} > 0",
        "15m",
        "warning",
        "Anti-entropy on {{ $labels.instance }} has not covered every range",
        "Some replicated range of {{ $labels.instance }} has not been compared with a live "
        "replica for {{ $value | humanizeDuration }}: divergent replicas stay divergent and "
        "tombstones are not purged.",
    ),
    Alert(
        "RingkvDiskNearFull",
        f"ringkv_disk_free_bytes{{{NODES}}} - ringkv_disk_min_free_bytes{{{NODES}}} "
        f"< 0.10 * ringkv_disk_total_bytes{{{NODES}}}",
        "10m",
        "warning",
        "Disk of {{ $labels.instance }} is near the write watermark",
        "Less than 10 % of the disk is left above --min-free-bytes on {{ $labels.instance }}; "
        "below it the node answers writes with 507.",
    ),
    Alert(
        "RingkvDiskFull",
        f"ringkv_disk_free_bytes{{{NODES}}} <= ringkv_disk_min_free_bytes{{{NODES}}} "
        f"or ringkv_writes_refused{{{NODES}}} == 1",
        "1m",
        "critical",
        "{{ $labels.instance }} refuses writes (507): disk full",
        "Free space on {{ $labels.instance }} is below --min-free-bytes (or RocksDB stopped "
        "writing); writes there are refused with 507 insufficient_storage, and go to other "
        "replicas as hints, until space is freed.",
    ),
    Alert(
        "RingkvReadP99OverSLO",
        f"{_p99('get')} > {SLO_P99_SECONDS['get']}",
        "5m",
        "warning",
        "Read p99 of {{ $labels.cluster }} is over its SLO",
        f"Read p99 is {{{{ $value | humanizeDuration }}}}, over the "
        f"{SLO_P99_SECONDS['get'] * 1000:g} ms target, for 5 minutes.",
    ),
    Alert(
        "RingkvWriteP99OverSLO",
        f"{_p99('put|delete')} > {SLO_P99_SECONDS['put']}",
        "5m",
        "warning",
        "Write p99 ({{ $labels.op }}) of {{ $labels.cluster }} is over its SLO",
        f"Write p99 is {{{{ $value | humanizeDuration }}}}, over the "
        f"{SLO_P99_SECONDS['put'] * 1000:g} ms target, for 5 minutes.",
    ),
    Alert(
        "RingkvRingChangeStalled",
        f"ringkv_stream_remaining_bytes{{{NODES}}} > 0 "
        f"and increase(ringkv_stream_bytes_total{{{NODES}}}[15m]) == 0",
        "5m",
        "warning",
        "The ring change driven by {{ $labels.instance }} makes no progress",
        "{{ $labels.instance }} still has {{ $value | humanize1024 }}B to stream but streamed "
        "nothing for 15 minutes.",
    ),
    Alert(
        "RingkvOperatorReconcileErrors",
        f"increase(ringkv_operator_cluster_reconcile_errors_total{{{OPERATOR}}}[10m]) > 0",
        "15m",
        "warning",
        "The operator keeps failing to reconcile {{ $labels.namespace }}/{{ $labels.name }}",
        "Reconcile passes of KVCluster {{ $labels.namespace }}/{{ $labels.name }} have "
        "failed for 15 minutes: the operator takes no action for it (see its ReconcileError "
        "events).",
    ),
    Alert(
        "RingkvCertificateExpiresSoon",
        f"ringkv_tls_certificate_expiry_timestamp_seconds{{{NODES}}} - time() < 14 * 86400",
        "1h",
        "warning",
        "TLS certificate of {{ $labels.instance }} expires within 14 days",
        "The certificate {{ $labels.instance }} serves expires in "
        "{{ $value | humanizeDuration }}; nodes reload a renewed one without a restart.",
    ),
)


def rule_groups() -> dict[str, Any]:
    return {"groups": [{"name": "ringkv", "rules": [a.rule() for a in ALERTS]}]}


def prometheus_rule() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "ringkv", "labels": {"app.kubernetes.io/name": "ringkv"}},
        "spec": rule_groups(),
    }


# -- dashboards ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    file: str
    panels: tuple[Panel, ...]
    instance_variable: bool = False
    tags: tuple[str, ...] = field(default=("ringkv",))


def _rate(metric: str, by: str, selector: str = NODES) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{RATE}]))"


def _quantile(q: float, metric: str, by: str, selector: str = NODES) -> str:
    buckets = f"rate({metric}_bucket{{{selector}}}[{RATE}])"
    return f"histogram_quantile({q}, sum by ({by}, le) ({buckets}))"


INSTANCE = f'{NODES}, instance=~"$instance"'

CLUSTER = Dashboard(
    "ringkv-cluster", "ringkv / Cluster overview", "ringkv-cluster.json", (
        Panel("Requests per second by operation",
              ((_rate("ringkv_requests_total", "op"), "{{op}}"),), "reqps"),
        Panel("p99 latency by operation (against the SLO)",
              ((_quantile(0.99, "ringkv_request_duration_seconds", "op"), "p99 {{op}}"),
               (f"vector({SLO_P99_SECONDS['get']})", "read SLO"),
               (f"vector({SLO_P99_SECONDS['put']})", "write SLO")), "s"),
        Panel("Errors by reason (HTTP status)",
              ((_rate("ringkv_requests_total", "op, outcome",
                      f'{NODES}, outcome!~"2..|300|404"'), "{{op}} {{outcome}}"),), "reqps",
              description="Client requests answered with an error, by operation and status: "
                          "400 bad request, 409 too many siblings, 503 unavailable or "
                          "overloaded, 504 timeout, 507 disk full"),
        Panel("Refused requests by reason",
              ((_rate("ringkv_rejected_requests_total", "reason"), "{{reason}}"),), "reqps"),
        Panel("Nodes up", ((f"sum by (cluster) (up{{{NODES}}})", "{{cluster}}"),), kind="stat"),
        Panel("Members by state (as each node sees them)",
              ((f"max by (state) (ringkv_member_states{{{NODES}}})", "{{state}}"),)),
        Panel("Phi per peer (highest seen by any node)",
              ((f"max by (peer) (ringkv_peer_phi{{{NODES}}})", "{{peer}}"),
               (f"max(ringkv_phi_threshold{{{NODES}}})", "threshold"))),
        Panel("Token ranges below N live replicas",
              ((f"max by (instance) (ringkv_ranges_below_replication_factor{{{NODES}}})",
                "{{instance}}"),)),
        Panel("Hints pending",
              ((f"sum by (instance) (ringkv_hints_pending{{{NODES}}})", "{{instance}}"),)),
        Panel("Oldest hint against the hint window",
              ((f"max by (instance) (ringkv_hints_oldest_age_seconds{{{NODES}}})",
                "{{instance}}"),
               (f"max(ringkv_hint_window_seconds{{{NODES}}})", "hint window")), "s"),
        Panel("Anti-entropy: ranges in sync",
              ((f"sum(ringkv_anti_entropy_ranges_in_sync{{{NODES}}}) "
                f"/ sum(ringkv_anti_entropy_ranges{{{NODES}}})", "in sync"),), "percentunit"),
        Panel("Anti-entropy: age of the last full exchange",
              ((f"max by (instance) (ringkv_anti_entropy_full_exchange_age_seconds{{{NODES}}})",
                "{{instance}}"),), "s"),
        Panel("Anti-entropy exchanges and repairs",
              ((_rate("ringkv_anti_entropy_exchanges_total", "result"), "exchanges {{result}}"),
               (_rate("ringkv_anti_entropy_keys_total", "direction"), "keys {{direction}}")),
              "ops"),
        Panel("Ring change: left to stream",
              ((f"sum by (instance) (ringkv_stream_remaining_bytes{{{NODES}}})", "{{instance}}"),),
              "bytes"),
        Panel("Ring change: streaming rate",
              ((_rate("ringkv_stream_bytes_total", "instance"), "{{instance}}"),), "Bps"),
        Panel("Tombstones pending purge and purged",
              ((f"sum by (instance) (ringkv_tombstones_pending_purge{{{NODES}}})",
                "pending {{instance}}"),
               (_rate("ringkv_tombstones_purged_total", "instance"), "purged/s {{instance}}"))),
    ),
)  # fmt: skip

NODE = Dashboard(
    "ringkv-node", "ringkv / Node", "ringkv-node.json", (
        Panel("CPU", ((_rate("process_cpu_seconds_total", "instance", INSTANCE),
                       "{{instance}}"),), "percentunit"),
        Panel("Resident memory", ((f"process_resident_memory_bytes{{{INSTANCE}}}",
                                   "{{instance}}"),), "bytes"),
        Panel("Event-loop lag p99",
              ((_quantile(0.99, "ringkv_event_loop_lag_seconds", "instance", INSTANCE),
                "{{instance}}"),), "s"),
        Panel("GC pauses (time per second, by generation)",
              ((_rate("ringkv_gc_pause_seconds_sum", "instance, generation", INSTANCE),
                "{{instance}} gen {{generation}}"),), "s"),
        Panel("Requests per second", ((_rate("ringkv_requests_total", "instance, op", INSTANCE),
                                       "{{instance}} {{op}}"),), "reqps"),
        Panel("Request p99", ((_quantile(0.99, "ringkv_request_duration_seconds",
                                         "instance, op", INSTANCE), "{{instance}} {{op}}"),), "s"),
        Panel("Value sizes p99 (sent and returned)",
              ((_quantile(0.99, "ringkv_request_size_bytes", "instance, op", INSTANCE),
                "sent {{instance}} {{op}}"),
               (_quantile(0.99, "ringkv_response_size_bytes", "instance, op", INSTANCE),
                "returned {{instance}} {{op}}")), "bytes"),
        Panel("Disk free against the 507 watermark",
              ((f"ringkv_disk_free_bytes{{{INSTANCE}}}", "free {{instance}}"),
               (f"ringkv_disk_min_free_bytes{{{INSTANCE}}}", "watermark {{instance}}")), "bytes"),
        Panel("Stored bytes and keys",
              ((f"ringkv_stored_bytes{{{INSTANCE}}}", "bytes {{instance}}"),
               (f"ringkv_stored_keys{{{INSTANCE}}}", "keys {{instance}}"))),
        Panel("RocksDB SST bytes by level",
              ((f"sum by (instance, level) (ringkv_rocksdb_sst_bytes{{{INSTANCE}}})",
                "{{instance}} L{{level}}"),), "bytes"),
        Panel("RocksDB memtables and pending compaction",
              ((f"ringkv_rocksdb_memtable_bytes{{{INSTANCE}}}", "memtables {{instance}}"),
               (f"ringkv_rocksdb_pending_compaction_bytes{{{INSTANCE}}}",
                "pending compaction {{instance}}")), "bytes"),
        Panel("RocksDB block cache usage",
              ((f"ringkv_rocksdb_block_cache_usage_bytes{{{INSTANCE}}}", "used {{instance}}"),
               (f"ringkv_rocksdb_block_cache_capacity_bytes{{{INSTANCE}}}",
                "capacity {{instance}}")), "bytes"),
        Panel("RocksDB block cache hit ratio",
              ((f'sum by (instance) (rate(ringkv_rocksdb_block_cache_lookups_total'
                f'{{{INSTANCE}, result="hit"}}[{RATE}])) / sum by (instance) '
                f"(rate(ringkv_rocksdb_block_cache_lookups_total{{{INSTANCE}}}[{RATE}]))",
                "{{instance}}"),
               (f"ringkv_rocksdb_block_cache_hit_ratio{{{INSTANCE}}}",
                "since start {{instance}}")), "percentunit"),
        Panel("RocksDB write stalls",
              ((_rate("ringkv_rocksdb_write_stalls_total", "instance, kind", INSTANCE),
                "{{instance}} {{kind}}"),
               (_rate("ringkv_rocksdb_write_stall_seconds_total", "instance", INSTANCE),
                "stalled s/s {{instance}}"))),
        Panel("Phi of each peer", ((f"ringkv_peer_phi{{{INSTANCE}}}",
                                    "{{instance}} -> {{peer}}"),)),
        Panel("Open file descriptors", ((f"process_open_fds{{{INSTANCE}}}", "{{instance}}"),)),
    ),
    instance_variable=True,
)  # fmt: skip

OPERATOR_DASHBOARD = Dashboard(
    "ringkv-operator", "ringkv / Operator", "ringkv-operator.json", (
        Panel("Phase per KVCluster",
              ((f"max by (namespace, name, phase) (ringkv_operator_cluster_phase{{{OPERATOR}}}) "
                "== 1", "{{namespace}}/{{name}} {{phase}}"),), kind="table"),
        Panel("Ready nodes and nodes",
              ((f"ringkv_operator_ready_nodes{{{OPERATOR}}}", "ready {{namespace}}/{{name}}"),
               (f"ringkv_operator_nodes{{{OPERATOR}}}", "nodes {{namespace}}/{{name}}"))),
        Panel("Reconcile passes by result",
              ((_rate("ringkv_operator_reconciles_total", "result", OPERATOR), "{{result}}"),),
              "ops"),
        Panel("Failed passes per KVCluster",
              ((_rate("ringkv_operator_cluster_reconcile_errors_total", "namespace, name",
                      OPERATOR), "{{namespace}}/{{name}}"),), "ops"),
        Panel("Errors by exception",
              ((_rate("ringkv_operator_errors_total", "type", OPERATOR), "{{type}}"),), "ops"),
        Panel("Reconcile duration p99",
              ((_quantile(0.99, "ringkv_operator_reconcile_duration_seconds", "instance",
                          OPERATOR), "p99"),), "s"),
        Panel("Actions by kind", ((_rate("ringkv_operator_actions_total", "action", OPERATOR),
                                   "{{action}}"),), "ops"),
        Panel("Time since the last action",
              ((f"time() - max by (namespace, name, action) "
                f"(ringkv_operator_last_action_timestamp_seconds{{{OPERATOR}}})",
                "{{namespace}}/{{name}} {{action}}"),), "s"),
    ),
)  # fmt: skip

DASHBOARDS = (CLUSTER, NODE, OPERATOR_DASHBOARD)


def _target(index: int, expr: str, legend: str) -> dict[str, Any]:
    return {
        "refId": chr(ord("A") + index),
        "expr": expr,
        "legendFormat": legend,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
    }


def dashboard_json(d: Dashboard) -> dict[str, Any]:
    panels = []
    for i, p in enumerate(d.panels):
        panel: dict[str, Any] = {
            "id": i + 1,
            "type": p.kind,
            "title": p.title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
            "targets": [_target(j, expr, legend) for j, (expr, legend) in enumerate(p.exprs)],
        }
        if p.description:
            panel["description"] = p.description
        panels.append(panel)
    variables: list[dict[str, Any]] = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"}
    ]
    if d.instance_variable:
        variables.append({
            "name": "instance", "type": "query", "label": "Node",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": f"label_values(up{{{NODES}}}, instance)",
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
            "current": {"text": "All", "value": "$__all"},
        })  # fmt: skip
    return {
        "uid": d.uid,
        "title": d.title,
        "tags": list(d.tags),
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": variables},
        "panels": panels,
    }


def dashboard_queries(d: Dashboard, rate: str = "1m", instance: str = ".*") -> list[str]:
    """Every query of a dashboard with Grafana's variables filled in, as Prometheus runs them."""
    return [
        expr.replace(RATE, rate).replace("$instance", instance)
        for p in d.panels
        for expr, _legend in p.exprs
    ]


def dashboards_configmap() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "ringkv-dashboards",
            "labels": {SIDECAR_LABEL: "1", "app.kubernetes.io/name": "ringkv"},
        },
        "data": {d.file: json.dumps(dashboard_json(d), indent=2) + "\n" for d in DASHBOARDS},
    }


# -- scraping -----------------------------------------------------------------------------------


def _relabel_pods(app: str) -> list[dict[str, Any]]:
    """Keep the pods of ``app`` that ask to be scraped; label series with job, cluster, pod."""
    label = "__meta_kubernetes_pod_label_app_kubernetes_io_"
    ann = "__meta_kubernetes_pod_annotation_prometheus_io_"
    return [
        {"source_labels": [label + "name"], "regex": app, "action": "keep"},
        {"source_labels": [ann + "scrape"], "regex": "true", "action": "keep"},
        {"source_labels": [ann + "scheme"], "regex": "(https?)", "target_label": "__scheme__"},
        {"source_labels": [ann + "path"], "regex": "(.+)", "target_label": "__metrics_path__"},
        {"source_labels": ["__address__", ann + "port"],
         "regex": r"([^:]+)(?::\d+)?;(\d+)", "replacement": "$1:$2",
         "target_label": "__address__"},
        {"source_labels": [label + "instance"], "target_label": "cluster"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ]  # fmt: skip


def scrape_config() -> dict[str, Any]:
    """A plain Prometheus's scrape config for node pods (annotated ``prometheus.io/*``) with
    the metrics token mounted as a file (from ``NAME-metrics-token``, key ``token``)."""
    return {
        "scrape_configs": [
            {
                "job_name": NODE_JOB,
                "kubernetes_sd_configs": [{"role": "pod"}],
                "authorization": {
                    "type": "Bearer",
                    "credentials_file": "/etc/prometheus/secrets/ringkv-metrics-token/token",
                },
                "relabel_configs": _relabel_pods("ringkv"),
            },
            {
                "job_name": OPERATOR_JOB,  # its /metrics needs no token
                "kubernetes_sd_configs": [
                    {"role": "pod", "namespaces": {"names": ["ringkv-system"]}}
                ],
                "relabel_configs": _relabel_pods("ringkv-operator"),
            },
        ]
    }


def pod_monitor(cluster: str = EXAMPLE_CLUSTER, namespace: str = "default") -> dict[str, Any]:
    """A PodMonitor (Prometheus Operator) for one KVCluster's nodes, with its metrics token."""
    from ringkv.operator.builders import build_pod_monitor
    from ringkv.operator.spec import parse_spec

    # what the operator applies with spec.monitoring.podMonitor.enabled (for the defaults)
    spec = parse_spec(cluster, namespace, {"zones": ["a"], "replicas": 1, "replicationFactor": 1})
    return build_pod_monitor(spec)


def operator_pod_monitor() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "ringkv-operator", "namespace": "ringkv-system",
                     "labels": {"app.kubernetes.io/name": "ringkv-operator"}},
        "spec": {
            "jobLabel": "app.kubernetes.io/name",  # job="ringkv-operator"
            "selector": {"matchLabels": {"app.kubernetes.io/name": "ringkv-operator"}},
            "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
        },
    }  # fmt: skip


def local_prometheus_config(
    targets: Sequence[str],
    *,
    token_file: str | None,
    rules_file: str | None,
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
    cluster: str = "local",
    operator_targets: Sequence[str] = (),
) -> dict[str, Any]:
    """Prometheus scraping nodes (and an operator's metrics port) on loopback
    (``ringkv local up --monitoring``, the tests)."""
    job: dict[str, Any] = {
        "job_name": NODE_JOB,
        "scrape_interval": scrape_interval,
        "scrape_timeout": scrape_interval,
        "static_configs": [{"targets": list(targets), "labels": {"cluster": cluster}}],
    }
    if token_file:
        job["authorization"] = {"type": "Bearer", "credentials_file": token_file}
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "scrape_configs": [job],
    }
    if operator_targets:
        config["scrape_configs"].append({
            "job_name": OPERATOR_JOB,
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "static_configs": [{"targets": list(operator_targets)}],
        })  # fmt: skip
    if rules_file:
        config["rule_files"] = [rules_file]
    return config


# -- the files ----------------------------------------------------------------------------------

HEADER = "# Generated by `python -m ringkv.monitoring` from src/ringkv/monitoring.py: edit that.\n"


def _yaml(doc: Any) -> str:
    text: str = yaml.safe_dump(doc, sort_keys=False, width=4096)
    return HEADER + text


def _yaml_all(docs: Sequence[Any]) -> str:
    text: str = yaml.safe_dump_all(docs, sort_keys=False, width=4096)
    return HEADER + text


def files() -> dict[str, str]:
    """Path (under manifests/monitoring/) -> contents."""
    out = {
        "rules.yml": _yaml(rule_groups()),
        "prometheusrule.yaml": _yaml(prometheus_rule()),
        "dashboards-configmap.yaml": _yaml(dashboards_configmap()),
        "podmonitor.yaml": _yaml_all([pod_monitor(), operator_pod_monitor()]),
        "prometheus-scrape.yml": _yaml(scrape_config()),
        # kubectl apply -k manifests/monitoring/ (needs the Prometheus Operator's CRDs)
        "kustomization.yaml": _yaml(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [
                    "prometheusrule.yaml",
                    "podmonitor.yaml",
                    "dashboards-configmap.yaml",
                ],
            }
        ),
    }
    for d in DASHBOARDS:
        out[f"dashboards/{d.file}"] = json.dumps(dashboard_json(d), indent=2) + "\n"
    return out


def write(root: Path) -> list[Path]:
    written = []
    for name, text in files().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(args[0]) if args else Path("manifests/monitoring")
    for path in write(root):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
