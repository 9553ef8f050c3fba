"""The operator dashboard against the operator's real handlers and metrics endpoint.

The operator needs Kubernetes; here its reconcile timer runs against the stand-in Kubernetes
API of tests/operator (``FakeKube``: a fresh cluster that gets created, and one whose every
API call fails), serves its metrics over HTTP as in production (``start_http_server``), and a
real Prometheus scrapes it as ``job="ringkv-operator"``: every operator panel's query must
return series."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import kopf
import pytest
from prometheus_client import start_http_server

from ringkv import monitoring
from ringkv.operator import handlers, reconciler
from ringkv.prometheus import LocalPrometheus
from tests.cluster import free_ports, wait_until
from tests.operator.test_reconciler import FakeKube, FakeNodes, body


class _Kube(FakeKube):
    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        if name.startswith("broken"):
            raise RuntimeError("the API server is unreachable")
        return super().get_secret(namespace, name)


class _Nodes(FakeNodes):
    def using(self, access: Any) -> _Nodes:
        return self


def test_operator_dashboard_queries_return_series(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, promtool: str
) -> None:
    monkeypatch.setitem(handlers._apis, "kube", _Kube())
    monkeypatch.setitem(handlers._apis, "nodes", _Nodes())
    monkeypatch.setattr(kopf, "event", lambda *a, **k: None)
    monkeypatch.setattr(kopf, "warn", lambda *a, **k: None)
    metrics_port, prometheus_port = free_ports(2)
    server, thread = start_http_server(metrics_port, addr="127.0.0.1")
    prometheus = LocalPrometheus(
        tmp_path / "prometheus", [], port=prometheus_port, scrape_interval="1s",
        evaluation_interval="1s", operator_targets=[f"127.0.0.1:{metrics_port}"],
    )  # fmt: skip
    clusters = [body("dash"), body("broken")]
    for c in clusters:
        reconciler.forget("ns", c["metadata"]["name"])
    try:
        prometheus.start().wait_ready()
        queries = monitoring.dashboard_queries(monitoring.OPERATOR_DASHBOARD, rate="30s")
        missing = list(queries)

        def all_have_series() -> bool:
            for c in clusters:  # the timer's passes, as kopf would run them
                handlers.reconcile_timer(body=c, name=c["metadata"]["name"], namespace="ns")
            missing[:] = [q for q in missing if not prometheus.query(q)]
            return not missing

        started = time.monotonic()
        try:
            wait_until(all_have_series, 60, interval=1.0, message="series for every panel")
        except AssertionError:
            raise AssertionError(f"operator queries without series: {missing}") from None
        print(f"\nall {len(queries)} operator dashboard queries returned series after "
              f"{time.monotonic() - started:.1f} s")  # fmt: skip
        phases = prometheus.query('ringkv_operator_cluster_phase{name="dash"} == 1')
        assert [s["metric"]["phase"] for s in phases] in (["Creating"], ["Pending"])
    finally:
        prometheus.stop()
        server.shutdown()
        thread.join(timeout=5)
        for c in clusters:
            handlers.forget(name=c["metadata"]["name"], namespace="ns")
