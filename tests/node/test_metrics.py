"""The node's request-path metrics (plain numbers exported at scrape time) in Prometheus form."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ringkv.node.metrics import LATENCY_BUCKETS, NodeMetrics


def samples(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_are_exported_with_their_labels() -> None:
    m = NodeMetrics()
    m.request_count("put", "204").inc()
    m.request_count("put", "204").inc()
    m.request_count("get", "404").inc()
    m.replica_request("write", primary=False).inc()
    m.replica_error("read").inc(3)
    got = samples(m)
    assert got[("ringkv_requests_total", (("op", "put"), ("outcome", "204")))] == 2
    assert got[("ringkv_requests_total", (("op", "get"), ("outcome", "404")))] == 1
    assert got[("ringkv_replica_requests_total", (("op", "write"), ("role", "fallback")))] == 1
    assert got[("ringkv_replica_rpc_errors_total", (("verb", "read"),))] == 3
    assert ("ringkv_requests_created", (("op", "put"), ("outcome", "204"))) in got


def test_histogram_buckets_are_cumulative_and_include_their_bound() -> None:
    m = NodeMetrics()
    latency = m.request_latency_of("get")
    for seconds in (0.0001, 0.002, 0.002, 0.0041, 7.0):  # 0.002 is a bound: "le" includes it
        latency.observe(seconds)
    got = samples(m)

    def bucket(le: str) -> float:
        return got[("ringkv_request_duration_seconds_bucket", (("le", le), ("op", "get")))]

    assert bucket("0.0005") == 1
    assert bucket("0.002") == 3
    assert bucket("0.003") == 3
    assert bucket("0.005") == 4
    assert bucket(str(float(LATENCY_BUCKETS[-1]))) == 4
    assert bucket("+Inf") == 5
    assert got[("ringkv_request_duration_seconds_count", (("op", "get"),))] == 5
    assert got[("ringkv_request_duration_seconds_sum", (("op", "get"),))] == pytest.approx(7.0082)


def test_wrong_label_count_is_refused() -> None:
    m = NodeMetrics()
    with pytest.raises(ValueError):
        m.requests.labels("put")
