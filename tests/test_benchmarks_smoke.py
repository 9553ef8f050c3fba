"""Benchmarks are not tests: these only smoke-run each one with a tiny workload, so that a
change that breaks a benchmark script is noticed. The numbers live in docs/performance.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_ring_balance_benchmark_runs_and_meets_the_balance_target() -> None:
    out = run("benchmarks/ring_balance.py")
    line = next(x for x in out.splitlines() if x.startswith("worst max/mean"))
    assert float(line.split(":")[1].split()[0]) <= 1.15


@pytest.mark.slow
def test_latency_benchmark_quick_run(tmp_path: Path) -> None:
    result = tmp_path / "latency.json"
    run("benchmarks/latency.py", "--quick", "--json", str(result), timeout=180)
    document = json.loads(result.read_text())
    assert document  # it measured something and wrote it down


@pytest.mark.slow
def test_streaming_benchmark_quick_run() -> None:
    out = run("benchmarks/streaming.py", "--keys", "200", timeout=180)
    assert "records/s" in out
