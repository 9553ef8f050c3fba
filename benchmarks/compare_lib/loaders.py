"""Load generators: wrk (HTTP), redis-benchmark and redis_load (Redis). All C programs; every
run is bounded in time (its own duration, plus a subprocess timeout as a safety net)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

WRK_DIR = Path(__file__).resolve().parents[1] / "wrk"
WRK_THREADS = 3  # one per node/member: thread i talks to node i
C_SOURCE = Path(__file__).resolve().parent / "redis_load.c"


def _safety_timeout(duration: float) -> float:
    return max(3 * duration, duration + 60)


def run_wrk(
    system: Any,
    workload: str,
    duration: float,
    connections: int,
    read_ratio: int,
    files: dict[str, Path],
) -> dict[str, Any]:
    """One wrk run against the system's HTTP API; connections spread over its 3 endpoints."""
    env = dict(os.environ)
    env.update(
        KV_TARGETS=",".join(system.targets),
        KV_KEYS_FILE=str(files["keys"]),
        KV_VALUE_FILE=str(files["value"]),
        KV_WORKLOAD=workload,
        KV_READ_RATIO=str(read_ratio),
        KV_WRK_DIR=str(WRK_DIR),
    )
    url = f"http://{system.targets[0]}"
    argv = [
        "wrk", "-t", str(WRK_THREADS), "-c", str(connections), "-d", f"{duration:g}s",
        "--timeout", "10s", "-s", str(WRK_DIR / system.wrk_script), url,
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=_safety_timeout(duration),
        check=False,
    )
    wall = time.monotonic() - started
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    raw = json.loads(line[len("WRKJSON ") :])
    statuses = {int(k): v for k, v in raw["statuses"].items()}
    non_2xx = {code: n for code, n in statuses.items() if not 200 <= code < 300}
    socket_errors = {k: v for k, v in raw["errors"].items() if k != "status" and v}
    seconds = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    return {
        "generator": "wrk",
        "argv": argv,
        "requests": raw["requests"],
        "duration_s": round(seconds, 3),
        "wall_s": round(wall, 3),
        "rps": raw["requests"] / seconds if seconds else 0.0,
        "p50_ms": lat["p50"] / 1000,
        "p90_ms": lat["p90"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "p999_ms": lat["p999"] / 1000,
        "max_ms": lat["max"] / 1000,
        "mean_ms": lat["mean"] / 1000,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "non_2xx": sum(non_2xx.values()),
        "non_2xx_by_status": {str(k): v for k, v in sorted(non_2xx.items())},
        "socket_errors": socket_errors,
        "sent_writes": raw["sent_writes"],
        "sent_reads": raw["sent_reads"],
    }


def redis_benchmark(
    port: int, test: str, requests: int, connections: int, keys: int, value_size: int,
    duration_hint: float,
) -> dict[str, Any]:  # fmt: skip
    """One redis-benchmark run of SET or GET with random keys key:000000000000..keys-1."""
    argv = [
        "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(connections),
        "-n", str(requests), "-r", str(keys), "-d", str(value_size), "-t", test, "--csv",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=_safety_timeout(duration_hint), check=False
    )
    wall = time.monotonic() - started
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith('"' + test.upper() + '"')]
    if proc.returncode != 0 or not rows:
        raise RuntimeError(
            f"redis-benchmark failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    fields = [f.strip('"') for f in rows[0].split(",")]
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
    # "p99_latency_ms","max_latency_ms"
    rps = float(fields[1])
    return {
        "generator": "redis-benchmark",
        "argv": argv,
        "requests": requests,
        "duration_s": round(requests / rps, 3) if rps else 0.0,
        "wall_s": round(wall, 3),
        "rps": rps,
        "mean_ms": float(fields[2]),
        "p50_ms": float(fields[4]),
        "p95_ms": float(fields[5]),
        "p99_ms": float(fields[6]),
        "max_ms": float(fields[7]),
        "non_2xx": 0,
        "stderr_tail": proc.stderr.strip()[-500:],
    }


def build_redis_load(out_dir: Path) -> Path:
    binary = out_dir / "redis_load"
    subprocess.run(
        ["gcc", "-O2", "-o", str(binary), str(C_SOURCE)],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return binary


def run_redis_load(
    binary: Path, keys_file: Path, workload: str, duration: float, connections: int,
    read_ratio: int, wait: int, value_size: int,
) -> dict[str, Any]:  # fmt: skip
    argv = [
        str(binary), "--keys", str(keys_file), "--workload", workload,
        "--duration", f"{duration:g}", "--connections", str(connections),
        "--read-ratio", str(read_ratio), "--wait", str(wait), "--value-size", str(value_size),
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=_safety_timeout(duration), check=False
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"redis_load failed ({proc.returncode}): {proc.stderr}")
    raw = json.loads(proc.stdout)
    raw.update(
        generator="redis_load",
        argv=argv,
        wall_s=round(wall, 3),
        non_2xx=raw["errors"] + raw["misses"] + raw["wait_short"] + raw["connection_errors"],
    )
    return raw
