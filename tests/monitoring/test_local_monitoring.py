"""`ringkv local up --monitoring`: a Prometheus beside the local cluster, scraping every node."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ringkv.prometheus import LocalPrometheus, port_free
from tests.cluster import wait_until
from tests.node.test_cli_client import free_base_port


def test_local_up_monitoring_starts_prometheus_and_stops_it(tmp_path: Path, promtool: str) -> None:
    base = free_base_port()
    output = tmp_path / "local-up.out"
    command = [sys.executable, "-m", "ringkv", "local", "up", "--monitoring",
               "--data-dir", str(tmp_path / "local"), "--base-port", str(base)]  # fmt: skip
    with output.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:

        def url() -> str | None:
            if process.poll() is not None:
                pytest.fail(f"local up exited early:\n{output.read_text()}")
            found = re.search(r"prometheus: (http://127\.0\.0\.1:(\d+))", output.read_text())
            return found.group(1) if found else None

        address = wait_until(url, 60, interval=0.2, message="the Prometheus URL")
        port = int(address.rsplit(":", 1)[1])
        prometheus = LocalPrometheus(tmp_path / "unused", [], port=port)  # a query client
        wait_until(
            lambda: len(prometheus.query('up{job="ringkv"} == 1')) == 3, 60, interval=0.5,
            message="Prometheus scraping the 3 local nodes",
        )  # fmt: skip
        assert [g["name"] for g in prometheus.rule_groups()] == ["ringkv"]
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        assert process.returncode == 0, output.read_text()
        assert "all nodes stopped" in output.read_text()
        wait_until(lambda: port_free(port), 10, message="Prometheus stopped with the cluster")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_monitoring_without_prometheus_installed_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ringkv.prometheus import start_beside

    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus binary anywhere
    assert start_beside(tmp_path / "p", ["127.0.0.1:7001"]) is None
    assert "prometheus is not installed" in capsys.readouterr().err
