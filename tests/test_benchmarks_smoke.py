"""Benchmarks are not tests: these only smoke-run each one with a tiny workload, so that a
change that breaks a benchmark script is noticed. The numbers live in docs/performance.md."""

from __future__ import annotations

import json
import os
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
    out = run("benchmarks/ring_balance.py", "12")
    line = next(x for x in out.splitlines() if x.startswith("largest excess over the bound"))
    assert float(line.split(":")[1].split()[0]) <= 0.05
    out = run("benchmarks/ring_balance.py", "--lookups", "--max-members", "1000")
    assert "1000 members" in out.replace(",", "")
    # nodes of 4 shards: every node's busiest shard near its mean (tokens claimed per slice)
    out = run("benchmarks/ring_balance.py", "--shards", "4", "9")
    rows = [x.split() for x in out.splitlines() if x.split()[:1] and x.split()[0].isdigit()]
    rows = [row for row in rows if len(row) == 10]  # nodes, zones, ..., shard max/mean, within
    assert rows and all(float(row[-1]) <= 1.05 for row in rows), out


def test_claim_lag_benchmark_quick_run() -> None:
    out = run("benchmarks/claim_lag.py", "6", "--rounds", "1")
    assert "inline" in out and "worker thread" in out


def test_membership_simulator_quick_run(tmp_path: Path) -> None:
    result = tmp_path / "sim.json"
    run("benchmarks/membership_sim.py", "--quick", "--json", str(result))
    row = json.loads(result.read_text())["100"]
    for event in ("join", "leave", "crash"):
        assert row["propagation"][event]["max"] is not None  # every member learned of it
    assert row["loss_0.01"]["false_convictions"] == 0
    assert row["loss_0.01"]["bytes_per_node_s"] < 20_000


def test_rocksdb_statistics_benchmark_quick_run() -> None:
    out = run("benchmarks/rocksdb_statistics.py", "--quick")
    assert "statistics=True" in out and "statistics=False" in out


@pytest.mark.slow
def test_same_moment_ab_quick_run() -> None:
    out = run("benchmarks/same_moment_ab.py", "--a", "x=.", "--b", "y=.", "--rounds", "1",
              "--duration", "1", timeout=240)  # fmt: skip
    assert "mix x: median" in out and "writes y: median" in out


@pytest.mark.slow
def test_client_cache_benchmark_quick_run(tmp_path: Path) -> None:
    result = tmp_path / "cache.json"
    run("benchmarks/client_cache.py", "--quick", "--json", str(result), timeout=180)
    summary = json.loads(result.read_text())["summary"]
    assert set(summary) == {"off", "revalidate", "stale", "server_cpu_ms_per_read"}


@pytest.mark.slow
def test_client_cpu_benchmark_quick_run(tmp_path: Path) -> None:
    baseline = tmp_path / "client_baseline.py"
    baseline.write_text((ROOT / "src" / "ringkv" / "client.py").read_text())
    out = run("benchmarks/client_cpu.py", "--quick", "--baseline", str(baseline), timeout=180)
    assert "sync_put: current vs baseline" in out and "async_get" in out


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


@pytest.mark.slow
def test_compare_quick_run_measures_every_system_and_workload(tmp_path: Path) -> None:
    """benchmarks/compare --quick: every system serves every workload without errors (the
    script apt-installs wrk, etcd-server and redis on first use), and the JSON holds a
    positive throughput for each and the target table."""
    result = tmp_path / "compare.json"
    run("benchmarks/compare_lib/main.py", "--quick", "--systems",
        "ringkv,etcd,redis,redis-cluster,ringkv-single", "--json", str(result),
        timeout=600)  # fmt: skip
    document = json.loads(result.read_text())
    measured = {(r["system"], r["workload"]): r for r in document["runs"]}
    for system in ("ringkv", "etcd", "redis", "redis-cluster", "ringkv-single"):
        for workload in ("write", "read", "mix"):
            run_ = measured[(system, workload)]
            assert run_["rps"] > 0 and run_["requests"] > 0, run_
            assert run_["non_2xx"] == 0, run_
            assert 0 <= run_["machine_steal_pct"] <= 100
    cpu_target = next(t for t in document["targets"] if "quorum write CPU" in t["target"])
    assert cpu_target["value"] > 1  # measured (ringkv-single ran): a quorum write costs more


@pytest.mark.slow
def test_compare_measures_10_kib_rows_beside_the_1_kib_ones(tmp_path: Path) -> None:
    """benchmarks/compare --value-size 1024,10240: rows of both sizes for ringkv and etcd in
    one run, and the design's p99 targets judged on the 10 KiB rows."""
    result = tmp_path / "compare.json"
    run("benchmarks/compare_lib/main.py", "--quick", "--systems", "ringkv,etcd",
        "--value-size", "1024,10240", "--workloads", "read,write", "--json", str(result),
        timeout=300)  # fmt: skip
    document = json.loads(result.read_text())
    rows = {(r["system"], r["value_size"], r["workload"]): r for r in document["summary"]}
    assert set(rows) == {
        (system, size, workload)
        for system in ("ringkv", "etcd")
        for size in (1024, 10240)
        for workload in ("read", "write")
    }
    for row in rows.values():
        assert row["rps"] > 0 and row["non_2xx"] == 0 and row["server_cpu_us_per_op"] > 0, row
    ten = [t for t in document["targets"] if t["target"].endswith("10 KiB values")]
    assert len(ten) == 2 and all(t["value"] is not None for t in ten), ten
    assert "ringkv/etcd @ 10 KiB" in document["ratios"]


@pytest.mark.slow
@pytest.mark.parametrize("generator", ["bench", "paced"])
def test_open_loop_benchmark_quick_run(tmp_path: Path, generator: str) -> None:
    """benchmarks/open_loop.py --quick: capacity first, then the open loop at each fraction of
    it, for reads and writes, every run answered; with ringkv bench or benchmarks/paced."""
    result = tmp_path / "open.json"
    run("benchmarks/open_loop.py", "--quick", "--generator", generator, "--json", str(result),
        timeout=300)  # fmt: skip
    document = json.loads(result.read_text())
    assert set(document["capacity"]) == {"read", "write"}
    rows = {(r["workload"], r["fraction"]): r for r in document["summary"]}
    assert set(rows) == {(w, f) for w in ("read", "write") for f in (0.5, 0.8)}
    for (workload, fraction), row in rows.items():
        capacity = document["capacity"][workload]["median"]
        assert capacity > 0 and row["target_rate"] == pytest.approx(fraction * capacity, 0.01)
        assert row["errors"] == 0, row
        assert 0 < row["p50_ms"]["median"] <= row["p99_ms"]["median"] <= row["p99.9_ms"]["median"]
        assert row["sent_per_s"]["median"] > 0 and row["generator_cpu_share"]["median"] > 0


@pytest.mark.slow
def test_shards_benchmark_quick_run(tmp_path: Path) -> None:
    """benchmarks/shards.py --quick: both arms measured for reads and writes with their CPU
    per request. With a node that has --shards the arms are 1 and 2; before, both arms run
    the node's default (no flag)."""
    from ringkv.node.config import SETTINGS

    arms = "1,2" if "shards" in SETTINGS else "default,default"
    result = tmp_path / "shards.json"
    run("benchmarks/shards.py", "--quick", "--arms", arms, "--json", str(result), timeout=300)
    document = json.loads(result.read_text())
    runs = document["runs"]
    assert len(runs) == 4  # 2 arms x 2 workloads, 1 round
    for r in runs:
        assert r["rps"] > 0 and r["non_2xx"] == 0 and r["cpu_us_per_request"] > 0, r
    ratios = document["summary"]["ratios"]
    assert set(ratios) == {"read", "write"}
    if arms == "1,2":
        assert {r["shards"] for r in runs} == {1, 2}
        assert max(r["node_processes"] for r in runs if r["shards"] == 2) >= 2


@pytest.mark.slow
def test_cleanup_benchmark_quick_run() -> None:
    out = run("benchmarks/cleanup.py", "--keys", "300", timeout=300)
    assert "keys/s" in out and "without cleanup" in out


def test_shard_view_benchmark_runs() -> None:
    out = run("benchmarks/shard_view.py", "--members", "20", "--repeat", "1")
    assert "steady poll" in out and "\n      20 " in out


def test_frame_auth_benchmark_runs() -> None:
    out = run("benchmarks/frame_auth.py", "--writes", "200", "--rounds", "1")
    assert "median_extra_us" in out


@pytest.mark.slow
def test_backup_benchmark_quick_run(tmp_path: Path) -> None:
    """A whole run, restore included; with two CPUs or more, the nodes on a CPU of their own."""
    result = tmp_path / "backup.json"
    split = ["--split-cpus"] if len(os.sched_getaffinity(0)) >= 2 else []
    run("benchmarks/backup.py", "--keys", "300", "--rounds", "1", "--rate", "50", *split,
        "--json", str(result), timeout=300)  # fmt: skip
    document = json.loads(result.read_text())
    assert document["split_cpus"] is bool(split)
    # one record per distinct replica copy: more than the keys when replicas were caught apart
    assert document["restore"]["records_sent"] >= 300
    assert document["restore"]["keys_readable"] == 300
    assert document["incremental"]["second_uploaded"] < document["incremental"]["second_bytes"]


@pytest.mark.slow
def test_backup_benchmark_attributes_the_node_side(tmp_path: Path) -> None:
    """--under reads: only what a backup asks of the nodes (snapshots, listings, file reads)."""
    result = tmp_path / "reads.json"
    run("benchmarks/backup.py", "--keys", "300", "--rounds", "1", "--rate", "50",
        "--under", "reads,snapshots+idle@0.25", "--chunk-mb", "0.25", "--nice", "5",
        "--skip-restore", "--json", str(result), timeout=300)  # fmt: skip
    document = json.loads(result.read_text())
    (row,) = document["rounds"]
    for arm in ("reads", "snapshots+idle@0.25"):
        assert row[arm]["runs"] >= 1 and row[arm]["errors"] == 0
        assert row[arm]["cpu_nodes_s"] > 0 and row[arm]["loop_probes"] > 0
    assert set(document["phases"]) == {"quiet", "reads", "snapshots+idle@0.25"}
    assert "restore" not in document
