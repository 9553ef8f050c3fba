"""A Prometheus server beside local nodes: ``ringkv local up --monitoring`` and the tests.

``LocalPrometheus`` writes a configuration (``monitoring.local_prometheus_config``: the nodes
on loopback, the metrics token file if any, the shipped alerting rules), starts the
``prometheus`` binary (Debian package ``prometheus``) on loopback, and answers instant
queries and the alerts list through Prometheus's HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ringkv import monitoring
from ringkv.launcher import port_taken

HOST = "127.0.0.1"
DEFAULT_PORT = 9090
READY_DEADLINE = 30.0
RULES_FILE = "rules.yml"


def binary() -> str | None:
    """The ``prometheus`` executable, or None when it is not installed."""
    return shutil.which("prometheus")


class PrometheusError(RuntimeError):
    pass


class LocalPrometheus:
    def __init__(
        self,
        directory: str | Path,
        targets: Sequence[str],
        *,
        port: int = DEFAULT_PORT,
        token_file: str | None = None,
        scrape_interval: str = "5s",
        evaluation_interval: str = "5s",
        operator_targets: Sequence[str] = (),
    ) -> None:
        self.directory = Path(directory)
        self.port = port
        self.targets = list(targets)
        self.token_file = token_file
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.operator_targets = list(operator_targets)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "prometheus.log"

    def write_config(self) -> Path:
        """prometheus.yml and the shipped rules file, in ``directory``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        rules = self.directory / RULES_FILE
        rules.write_text(monitoring.files()[RULES_FILE], encoding="utf-8")
        config = monitoring.local_prometheus_config(
            self.targets,
            token_file=self.token_file,
            rules_file=str(rules),
            scrape_interval=self.scrape_interval,
            evaluation_interval=self.evaluation_interval,
            operator_targets=self.operator_targets,
        )
        path = self.directory / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path

    def start(self) -> LocalPrometheus:
        exe = binary()
        if exe is None:
            raise PrometheusError(
                "prometheus is not installed (Debian: apt-get install prometheus)"
            )
        config = self.write_config()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    exe,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address={HOST}:{self.port}",
                    "--storage.tsdb.retention.time=1d",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C of `local up` stops it through stop()
            )
        return self

    def wait_ready(self, deadline: float = READY_DEADLINE) -> None:
        end = time.monotonic() + deadline
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited; see {self.log_path}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            if time.monotonic() > end:
                raise PrometheusError(f"prometheus not ready after {deadline:.0f} s")
            time.sleep(0.2)

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            document = json.loads(response.read())
        if document.get("status") != "success":
            raise PrometheusError(f"{path}: {document.get('error')}")
        return document["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (a list of series; a scalar becomes one series)."""
        data = self._get("/api/v1/query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self._get("/api/v1/alerts")["alerts"]
        return alerts

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/api/v1/rules")["groups"]
        return groups

    def stop(self, grace: float = 10.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def port_free(port: int) -> bool:
    return not port_taken(port)


def start_beside(directory: str | Path, targets: Sequence[str]) -> LocalPrometheus | None:
    """``ringkv local up --monitoring``: Prometheus on port 9090 (or the next free one up to
    9099) scraping ``targets`` with the shipped rules; None (with a note on stderr) when the
    binary is missing or it does not start."""
    import sys

    if binary() is None:
        print("ringkv: --monitoring: prometheus is not installed (Debian/Ubuntu: apt-get "
              "install prometheus); the cluster runs without it", file=sys.stderr)  # fmt: skip
        return None
    port = next((p for p in range(DEFAULT_PORT, DEFAULT_PORT + 10) if port_free(p)), None)
    if port is None:
        print(f"ringkv: --monitoring: ports {DEFAULT_PORT}-{DEFAULT_PORT + 9} are taken; "
              "the cluster runs without Prometheus", file=sys.stderr)  # fmt: skip
        return None
    prometheus = LocalPrometheus(directory, targets, port=port)
    try:
        prometheus.start().wait_ready()
    except PrometheusError as exc:
        prometheus.stop()
        print(f"ringkv: --monitoring: {exc}", file=sys.stderr)
        return None
    return prometheus
