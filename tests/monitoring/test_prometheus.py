"""A real Prometheus scrapes a real 3-node cluster with a metrics token, through the shipped
configuration and rules: every cluster and node dashboard query returns series, and killing a
node fires RingkvNodeDown within its ``for`` plus one evaluation interval.

Intervals are short here (1 s scrapes and rule evaluations); the rules are the shipped ones,
``for`` included. Printed timings (``pytest -s``) go to the issue's closing note."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import pytest

from ringkv import monitoring
from ringkv.client import Client
from ringkv.prometheus import LocalPrometheus
from tests.cluster import Cluster, free_ports, wait_until

METRICS = "metrics-token-0123456789"
ADMIN = "admin-token-0123456789ab"
SCRAPE, EVALUATION = 1.0, 1.0
RULES = {a.name: a for a in monitoring.ALERTS}


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]]


def _traffic(cluster: Cluster) -> None:
    """Some of every kind of request the dashboards count: writes, reads, a miss, a delete,
    a bad request and an unauthenticated one."""
    client = Client(cluster.node(0).url, token=ADMIN, timeout=5)
    for i in range(40):
        client.put(f"key-{i}", b"v" * (10 * i + 1))
        client.get(f"key-{i}")
    client.get("missing")
    client.delete("key-1")
    for path, token in (("/v1/kv/k?r=bogus", ADMIN), ("/v1/kv/k", None)):
        conn = http.client.HTTPConnection("127.0.0.1", cluster.node(1).port, timeout=5)
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        assert conn.getresponse().status in (400, 401)
        conn.close()


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, promtool: str):  # type: ignore[no-untyped-def]
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [
        {"token": METRICS, "role": "metrics", "name": "prometheus"},
        {"token": ADMIN, "role": "admin", "name": "ops"},
    ]}))  # fmt: skip
    token_file = tmp_path / "metrics-token"
    token_file.write_text(METRICS)
    monkeypatch.setenv("RINGKV_TOKEN", ADMIN)  # the harness's own status polling
    cluster = Cluster(tmp_path / "cluster", nodes=3, zones=3, extra_args=[
        "--auth-tokens-file", str(tokens), "--anti-entropy-interval", "1"])  # fmt: skip
    [port] = free_ports(1)
    prometheus = LocalPrometheus(
        tmp_path / "prometheus", [f"127.0.0.1:{n.port}" for n in cluster.nodes], port=port,
        token_file=str(token_file), scrape_interval=f"{SCRAPE:g}s",
        evaluation_interval=f"{EVALUATION:g}s",
    )  # fmt: skip
    try:
        cluster.start()
        started = time.monotonic()
        prometheus.start().wait_ready()
        print(f"\nprometheus ready in {time.monotonic() - started:.1f} s")
        yield cluster, prometheus
    finally:
        prometheus.stop()
        cluster.stop()


def test_dashboards_have_data_and_node_down_fires(stack: tuple[Cluster, LocalPrometheus]) -> None:
    cluster, prometheus = stack
    _traffic(cluster)
    started = time.monotonic()
    # every node is scraped with the metrics token (a 401/403 would leave up == 0)
    wait_until(
        lambda: len([s for s in prometheus.query('up{job="ringkv"} == 1')]) == 3, 30,
        interval=0.5, message="3 nodes up in Prometheus",
    )  # fmt: skip
    queries = [
        q for d in (monitoring.CLUSTER, monitoring.NODE)
        for q in monitoring.dashboard_queries(d, rate="30s")
    ]  # fmt: skip
    missing = list(queries)

    def all_have_series() -> bool:
        missing[:] = [q for q in missing if not prometheus.query(q)]
        return not missing

    try:
        wait_until(all_have_series, 90, interval=1.0, message="series for every panel")
    except AssertionError:
        raise AssertionError(f"dashboard queries without series: {missing}") from None
    print(f"all {len(queries)} dashboard queries returned series after "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip
    assert not [a for a in prometheus.alerts() if a["labels"]["alertname"] == "RingkvNodeDown"]

    victim = cluster.node(2)
    target = f"127.0.0.1:{victim.port}"
    victim.kill()
    killed = time.monotonic()
    rule = RULES["RingkvNodeDown"]
    hold = _seconds(rule.for_)
    pending_at: list[float] = []

    def firing() -> bool:
        for alert in prometheus.alerts():
            labels = alert["labels"]
            if labels["alertname"] == rule.name and labels.get("instance") == target:
                if not pending_at:
                    pending_at.append(time.monotonic())
                if alert["state"] == "firing":
                    return True
        return False

    # the scrape that fails, one evaluation to go pending, `for`, one evaluation to fire
    budget = SCRAPE * 2 + EVALUATION + hold + EVALUATION
    wait_until(firing, budget + 15, interval=0.25, message=f"{rule.name} firing for {target}")
    fired = time.monotonic()
    assert pending_at, "the alert was never seen pending"
    print(f"{rule.name}: pending {pending_at[0] - killed:.1f} s after the kill, firing "
          f"{fired - killed:.1f} s after it ({fired - pending_at[0]:.1f} s after pending; "
          f"for {hold:.0f} s, evaluation every {EVALUATION:g} s)")  # fmt: skip
    # once Prometheus has seen the node down (pending), it fires within `for` plus one
    # evaluation interval (plus our polling granularity and a loaded machine's slack)
    assert fired - pending_at[0] <= hold + EVALUATION + 2.0
    assert fired - killed <= budget + 5.0
    # the live nodes still answer and the alert names the dead one only
    names = {a["labels"].get("instance") for a in prometheus.alerts()
             if a["labels"]["alertname"] == rule.name}  # fmt: skip
    assert names == {target}
