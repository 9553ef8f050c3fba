"""Health metrics, the ``metrics`` token role and JSON logs, on real nodes where it matters."""

from __future__ import annotations

import http.client
import json
import logging
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ringkv.node.auth import Principal, parse_tokens
from ringkv.node.logs import REQUEST_ID, JsonFormatter, request_id_of
from ringkv.node.observability import (
    certificate_expiry,
    parse_statistics,
    parse_write_stalls,
)
from tests.cluster import Cluster, wait_until

METRICS = "metrics-token-0123456789"
ADMIN = "admin-token-0123456789ab"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int, token: str | None = METRICS) -> Samples:
    status, text = get(port, "/metrics", token)
    assert status == 200, text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(
    port: int, path: str, token: str | None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        extra = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=extra)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


# -- pure parts ---------------------------------------------------------------------------------


def test_metrics_role_reads_metrics_and_nothing_else() -> None:
    scraper = Principal("prometheus", "metrics")
    assert scraper.allows("metrics")
    assert not scraper.allows("read")
    assert Principal("dash", "read").allows("metrics")  # every other role may scrape too
    table = parse_tokens(json.dumps({"tokens": [{"token": METRICS, "role": "metrics"}]}))
    assert [p.role for p in table.values()] == ["metrics"]


def test_rocksdb_statistics_and_stalls_are_parsed() -> None:
    text = (
        "rocksdb.block.cache.miss COUNT : 58\nrocksdb.block.cache.hit COUNT : 1942\n"
        "rocksdb.block.cache.index.hit COUNT : 7\nrocksdb.stall.micros COUNT : 1500000\n"
        "rocksdb.db.write.stall P50 : 0.0 P95 : 0.0 COUNT : 0 SUM : 0\n"
    )
    assert parse_statistics(text) == {"hit": 1942, "miss": 58, "stall_micros": 1500000}
    assert parse_statistics(None) == {}
    stalls = (
        "Write Stall (count): l0-file-count-limit-delays: 2, memtable-limit-stops: 1, "
        "total-delays: 4, total-stops: 1\n"
    )
    assert parse_write_stalls(stalls) == {"delays": 4, "stops": 1}


def test_certificate_expiry_is_read_from_the_pem(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-subj", "/CN=n1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    expiry = certificate_expiry(str(cert))
    assert expiry is not None
    assert abs(expiry - (time.time() + 30 * 86400)) < 3600
    assert certificate_expiry(str(tmp_path / "missing.pem")) is None


def test_json_log_lines_carry_node_and_request_id_and_no_token() -> None:
    formatter = JsonFormatter("n7")
    record = logging.LogRecord("ringkv.x", logging.WARNING, __file__, 1,
                               "refused %s", ("Bearer s3cret-token",), None)  # fmt: skip
    plain = json.loads(formatter.format(record))
    assert plain["node"] == "n7" and plain["level"] == "warning" and "request_id" not in plain
    assert "s3cret" not in plain["message"] and "[redacted]" in plain["message"]
    token = REQUEST_ID.set("req-42")
    try:
        assert json.loads(formatter.format(record))["request_id"] == "req-42"
    finally:
        REQUEST_ID.reset(token)
    assert request_id_of("abc-1") == "abc-1"
    assert request_id_of("has space") is None
    assert request_id_of("x" * 200) is None


# -- real nodes ---------------------------------------------------------------------------------


@pytest.fixture
def secured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [
        {"token": METRICS, "role": "metrics", "name": "prometheus"},
        {"token": ADMIN, "role": "admin", "name": "ops"},
    ]}))  # fmt: skip
    monkeypatch.setenv("RINGKV_TOKEN", ADMIN)  # the harness's own status polling
    cluster = Cluster(
        tmp_path / "c", nodes=3, zones=3,
        extra_args=["--auth-tokens-file", str(tokens), "--anti-entropy-interval", "0.5",
                    "--log-format", "json"],
    )  # fmt: skip
    cluster.start()
    yield cluster  # type: ignore[misc]
    cluster.stop()


def test_health_metrics_of_a_running_cluster(secured: Cluster) -> None:
    port = secured.node(0).port
    assert get(port, "/metrics", None)[0] == 401
    assert get(port, "/v1/kv/k", METRICS)[0] == 403
    assert get(port, "/v1/status", METRICS)[0] == 403
    client = secured.client(0)
    for i in range(50):
        client.put(f"k{i}", b"x" * (100 * i + 1))
    client.get("k10")
    client.delete("k1")
    got = scrape(port)
    assert set(dict(got)) and value(got, "ringkv_member_states", state="normal") == 3
    for peer in ("n2", "n3"):
        assert 0 <= value(got, "ringkv_peer_phi", peer=peer) < 8
    assert ("ringkv_peer_phi", (("peer", "n1"),)) not in got
    assert value(got, "ringkv_ranges_below_replication_factor") == 0
    assert value(got, "ringkv_ring_ranges") > 0
    assert value(got, "ringkv_request_size_bytes_count", op="put") == 50
    assert value(got, "ringkv_request_size_bytes_sum", op="put") == sum(
        100 * i + 1 for i in range(50)
    )
    assert value(got, "ringkv_response_size_bytes_count", op="get") == 1
    assert value(got, "ringkv_rocksdb_memtable_bytes") > 0
    assert value(got, "ringkv_rocksdb_block_cache_capacity_bytes") > 0
    assert ("ringkv_rocksdb_sst_bytes", (("level", "6"),)) in got
    assert value(got, "ringkv_rocksdb_write_stalls_total", kind="stop") == 0
    assert value(got, "ringkv_disk_free_bytes") > value(got, "ringkv_disk_min_free_bytes") > 0
    assert value(got, "ringkv_event_loop_lag_seconds_count") > 0
    assert value(got, "process_cpu_seconds_total") > 0
    assert value(got, "ringkv_hint_window_seconds") == 3 * 3600
    assert value(got, "ringkv_anti_entropy_ranges") > 0

    def exchanged() -> bool:
        s = scrape(port)
        return (
            value(s, "ringkv_anti_entropy_ranges_in_sync") == value(s, "ringkv_anti_entropy_ranges")
            and value(s, "ringkv_anti_entropy_full_exchange_age_seconds") < 30
        )

    wait_until(exchanged, 60, interval=0.5, message="every range exchanged and in sync")

    secured.node(2).kill()

    def short() -> bool:
        return value(scrape(port), "ringkv_ranges_below_replication_factor") > 0

    wait_until(short, 30, interval=0.2, message="ranges below N after a node died")
    wait_until(lambda: value(scrape(port), "ringkv_peer_phi", peer="n3") > 8, 60,
               interval=0.5, message="phi of the dead node above the threshold")  # fmt: skip
    for i in range(10):  # writes for n3 become hints; the expiry pass finds the oldest
        client.put(f"h{i}", b"x")

    def hinted() -> bool:
        s = scrape(port)
        return value(s, "ringkv_hints_pending") > 0 and (
            value(s, "ringkv_hints_oldest_age_seconds") > 0
        )

    wait_until(hinted, 30, interval=0.5, message="hints and the oldest hint's age")
    # JSON logs: one object per line, each naming its node, and the request id of the request
    # being served when the line was written (here: the many-siblings warning)
    for i in range(26):  # writes without a context: each adds a sibling
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("PUT", "/v1/kv/crowded", body=b"v%d" % i, headers={
            "Authorization": f"Bearer {ADMIN}", "X-Request-Id": f"req-{i}"})  # fmt: skip
        assert conn.getresponse().status == 204
        conn.close()

    def lines() -> list[dict[str, str]]:
        text = secured.node(0).log_path.read_text()
        return [json.loads(x) for x in text.splitlines() if x.startswith("{")]

    warned = wait_until(lambda: [x for x in lines() if "siblings" in x["message"]], 10,
                        message="the siblings warning")  # fmt: skip
    assert all(x["node"] == "n1" for x in lines())
    assert warned[0]["request_id"] == "req-24"  # the write that made the 25th sibling
    assert all("request_id" not in x for x in lines() if "siblings" not in x["message"])
    assert ADMIN not in secured.node(0).log_path.read_text()


def test_tombstones_pending_purge_rises_then_falls(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "c", nodes=1, zones=1, replication_factor=1, extra_args=[
        "--tombstone-grace", "4", "--anti-entropy-interval", "0.5"]).start()  # fmt: skip
    try:
        port, client = cluster.node(0).port, cluster.client(0)
        for i in range(10):
            client.put(f"t{i}", b"v")
            client.delete(f"t{i}")
        client.put("alive", b"v")  # a live record never counts

        def pending() -> float:
            return value(scrape(port, None), "ringkv_tombstones_pending_purge")

        wait_until(lambda: pending() == 10, 20, interval=0.2, message="10 tombstones pending")
        wait_until(lambda: pending() == 0, 30, interval=0.2, message="tombstones purged")
        assert value(scrape(port, None), "ringkv_tombstones_purged_total") == 10
    finally:
        cluster.stop()


def test_a_decommissioned_node_counts_as_left_and_has_no_phi(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "c", nodes=4, zones=3).start()
    try:
        port = cluster.node(0).port
        cluster.client(0).admin("decommission", "n4")

        def left() -> bool:
            got = scrape(port, None)
            return value(got, "ringkv_member_states", state="left") == 1 and (
                value(got, "ringkv_member_states", state="normal") == 3
            )

        wait_until(left, 120, interval=0.5, message="n4 counted as left")
        cluster.node(3).terminate()  # a node that left stops; nobody should suspect it
        got = scrape(port, None)
        assert ("ringkv_peer_phi", (("peer", "n4"),)) not in got
        assert ("ringkv_peer_phi", (("peer", "n2"),)) in got
    finally:
        cluster.stop()
