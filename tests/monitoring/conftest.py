"""Prometheus's own tools for the monitoring tests: Debian's ``prometheus`` package (it ships
``prometheus`` and ``promtool``), installed with apt-get when missing, as benchmarks/compare
installs its tools."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

TOOLS = ("prometheus", "promtool")


def _install() -> None:
    if os.geteuid() != 0:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y",
               "--no-install-recommends", "prometheus"]  # fmt: skip
    if subprocess.run(command, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        subprocess.run(command, env=env, capture_output=True, timeout=900)


@pytest.fixture(scope="session")
def promtool() -> str:
    if any(shutil.which(t) is None for t in TOOLS):
        _install()
    path = shutil.which("promtool")
    if path is None or shutil.which("prometheus") is None:
        pytest.fail("promtool/prometheus missing: apt-get install prometheus (Debian package)")
    return path
