"""benchmarks/compare: ringkv side by side with etcd and Redis on this machine, in one run.

See `benchmarks/compare --help` and docs/performance.md ("Comparison with etcd and Redis").
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loaders
import procs
import systems

REPO = systems.REPO
BASE_VALUE_SIZE = 1024  # the rows the issue 7 targets are judged on
DESIGN_VALUE_SIZE = 10 * 1024  # the design's value size: its own p99 targets
WORKLOADS = ("write", "read", "mix")
ALL_SYSTEMS = ("ringkv", "etcd", "ringkv-fsync", "redis", "redis-cluster", "ringkv-single")
DEFAULT_SYSTEMS = ("ringkv", "etcd", "ringkv-fsync", "redis", "redis-cluster")
SHORT_DURABILITY = {
    "ringkv": "W=2 of 3 replicas; WAL written, no fsync",
    "ringkv-fsync": "W=2 of 3 replicas; WAL fsync per write",
    "ringkv-single": "1 node, N=1; WAL written, no fsync",
    "etcd": "Raft majority 2 of 3; WAL fsync per commit",
    "redis": "1 copy; AOF, fsync every 1 s",
    "redis-cluster": "WAIT 1: 2 copies in memory; AOF, fsync every 1 s",
}
TOOLS = {  # binary -> Debian package
    "etcd": "etcd-server",
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "redis-benchmark": "redis-tools",
    "wrk": "wrk",
    "gcc": "gcc",
}
NEEDS = {
    "ringkv": ["wrk"],
    "ringkv-fsync": ["wrk"],
    "ringkv-single": ["wrk"],
    "etcd": ["etcd", "wrk"],
    "redis": ["redis-server", "redis-cli", "redis-benchmark", "gcc"],
    "redis-cluster": ["redis-server", "redis-cli", "gcc"],
}


def log(message: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/compare",
        description=(
            "Benchmark ringkv (3 nodes in 3 zones, N=3, W=R=quorum) against a 3-member etcd "
            "cluster and Redis (single server, and Redis Cluster with WAIT 1) on this machine, "
            "with C load generators (wrk, redis-benchmark, a small epoll client for SET+WAIT "
            "and the Redis mix), equal connections and durations. Prints one table and writes "
            "a JSON file with every raw number. Everything listens on 127.0.0.1 and is "
            "stopped at the end, also on failure or Ctrl-C."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (< 60 s): 1 s per run, 1 repetition, 1000 keys, no warm-up",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per measured run (default 15; --quick: 1)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=30,
        help="concurrent connections for every generator (default 30; rounded "
        "down to a multiple of 3: wrk runs one thread per node)",
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=None,
        help="repetitions of every system x workload; medians are reported (default 3; --quick: 1)",
    )
    parser.add_argument("--keys", type=int, default=None, help="distinct keys (default 10000)")
    parser.add_argument(
        "--value-size",
        default=str(BASE_VALUE_SIZE),
        help="value bytes (1024); several comma-separated sizes, e.g. 1024,10240 (the design's "
        "10 KiB), are measured in the same run, each size a round of its own, interleaved",
    )
    parser.add_argument(
        "--read-ratio", type=int, default=10, help="reads per write in the mix (10)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of unrecorded mixed load per system before measuring (5)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated workloads, run in this order in every round (write,read,mix)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help=f"comma-separated subset of {','.join(ALL_SYSTEMS)}",
    )
    parser.add_argument(
        "--ringkv-conflict-mode",
        choices=("lww", "siblings"),
        default="lww",
        help="ringkv --conflict-mode (default lww, see docs/performance.md: "
        "blind writes in siblings mode pile up siblings)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the raw results "
        "(default benchmarks/compare_lib/results/compare-<UTC time>.json)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="parent directory for data dirs and logs (default: system temp dir)",
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep data dirs and logs")
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="do not apt-get install missing tools (etcd-server, redis-server, "
        "redis-tools, wrk, gcc)",
    )
    args = parser.parse_args(argv)
    args.duration = args.duration if args.duration is not None else (1 if args.quick else 15)
    args.reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    args.keys = args.keys if args.keys is not None else (1000 if args.quick else 10000)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 5)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    try:
        args.value_sizes = [int(v) for v in str(args.value_size).split(",") if v.strip()]
    except ValueError:
        parser.error("--value-size: bytes, or comma-separated byte counts such as 1024,10240")
    if not args.value_sizes or min(args.value_sizes) < 1:
        parser.error("--value-size must be positive")
    args.value_sizes = list(dict.fromkeys(args.value_sizes))
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not args.workloads or set(args.workloads) - set(WORKLOADS):
        parser.error(f"--workloads: a comma-separated subset of {','.join(WORKLOADS)}")
    unknown = set(args.systems) - set(ALL_SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    if args.connections < 3:
        parser.error("--connections must be at least 3")
    if args.connections % 3:
        log(f"--connections {args.connections} rounded down to {args.connections // 3 * 3}")
        args.connections = args.connections // 3 * 3
    if args.duration <= 0 or args.reps < 1 or args.keys < 1:
        parser.error("--duration, --reps and --keys must be positive")
    return args


def ensure_tools(args: argparse.Namespace) -> list[str]:
    """Install missing Debian packages (as root); return notes about what is still missing."""
    needed = sorted({tool for name in args.systems for tool in NEEDS[name]})
    missing = procs.install_missing({t: TOOLS[t] for t in needed}, not args.no_install)
    notes: list[str] = []
    for tool in missing:
        notes.append(f"{tool} (Debian package {TOOLS[tool]}) is not installed")
    skipped = [name for name in args.systems if any(tool in missing for tool in NEEDS[name])]
    for name in skipped:
        notes.append(f"{name} skipped: missing {', '.join(t for t in NEEDS[name] if t in missing)}")
        args.systems.remove(name)
    return notes


def versions(src_root: Path) -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else "?"

    return {
        "ringkv_git": first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "ringkv_src_uncommitted_changes": str(
            len(
                subprocess.run(
                    ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                ).stdout.splitlines()
            )
        ),
        "ringkv_src_sha256_16": src_digest(src_root),
        "python": platform.python_version(),
        "etcd": first_line(["etcd", "--version"]),
        "redis": first_line(["redis-server", "--version"]),
        "wrk": first_line(["wrk", "-v"]),
    }


def machine() -> dict[str, Any]:
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except OSError:
        pass
    cpu_model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?"
            )
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
    }


def make_system(
    name: str, root: Path, keys: list[str], value: bytes, args: argparse.Namespace
) -> Any:
    if name == "ringkv":
        return systems.Ringkv(root, keys, value, args.ringkv_conflict_mode)
    if name == "ringkv-fsync":
        return systems.RingkvFsync(root, keys, value, args.ringkv_conflict_mode)
    if name == "ringkv-single":
        return systems.RingkvSingle(root, keys, value, args.ringkv_conflict_mode)
    if name == "etcd":
        return systems.Etcd(root, keys, value)
    if name == "redis":
        return systems.RedisSingle(root, keys, value)
    if name == "redis-cluster":
        return systems.RedisCluster(root, keys, value)
    raise ValueError(name)


class Runner:
    def __init__(self, args: argparse.Namespace, workdir: Path, redis_load: Path | None) -> None:
        self.args = args
        self.workdir = workdir
        self.redis_load = redis_load
        self.calibration: dict[tuple[str, int, str], float] = {}

    def load(
        self, system: Any, workload: str, duration: float, files: dict[str, Path]
    ) -> dict[str, Any]:
        a = self.args
        if system.name in ("ringkv", "ringkv-fsync", "ringkv-single", "etcd"):
            return loaders.run_wrk(system, workload, duration, a.connections, a.read_ratio, files)
        if system.name == "redis" and workload in ("write", "read"):
            test = "set" if workload == "write" else "get"
            rate = self.calibration.get((system.name, len(system.value), test))
            if rate is None:  # redis-benchmark counts requests, not seconds: size -n from a probe
                probe = loaders.redis_benchmark(
                    system.ports[0],
                    test,
                    5000 if a.quick else 30000,
                    a.connections,
                    a.keys,
                    len(system.value),
                    duration,
                )
                rate = probe["rps"]
                self.calibration[(system.name, len(system.value), test)] = rate
            requests = max(1000, int(rate * duration))
            return loaders.redis_benchmark(
                system.ports[0],
                test,
                requests,
                a.connections,
                a.keys,
                len(system.value),
                duration,
            )
        assert self.redis_load is not None
        wait = 1 if system.name == "redis-cluster" else 0
        return loaders.run_redis_load(
            self.redis_load, files["redis_keys"], workload, duration, a.connections,
            a.read_ratio, wait, len(system.value),
        )  # fmt: skip

    def measure(self, system: Any, workload: str, rep: int, files: dict[str, Path],
                duration: float) -> dict[str, Any]:  # fmt: skip
        uptime = procs.uptime_line()
        loadavg = os.getloadavg()
        pids = system.pids()
        cpu0 = procs.cpu_seconds(pids)
        busy0, total0, steal0 = procs.machine_cpu()
        gen0 = _children_cpu()
        started = time.monotonic()
        result = self.load(system, workload, duration, files)
        elapsed = time.monotonic() - started
        generator_cpu = _children_cpu() - gen0
        cpu1 = procs.cpu_seconds(pids)
        busy1, total1, steal1 = procs.machine_cpu()
        system.check_alive()
        server_cpu = cpu1 - cpu0
        requests = result.get("requests") or 0
        result.update(
            system=system.name,
            value_size=len(system.value),
            workload=workload,
            rep=rep,
            uptime=uptime,
            loadavg_before=[round(x, 2) for x in loadavg],
            loadavg_after=[round(x, 2) for x in os.getloadavg()],
            machine_busy_pct=round(100 * (busy1 - busy0) / max(1, total1 - total0), 1),
            machine_steal_pct=round(100 * (steal1 - steal0) / max(1, total1 - total0), 1),
            server_cpu_s=round(server_cpu, 3),
            server_cores=round(server_cpu / elapsed, 2) if elapsed else 0,
            server_cpu_us_per_op=round(server_cpu / requests * 1e6, 1) if requests else None,
            generator_cpu_s=round(generator_cpu, 3),
            generator_cores=round(generator_cpu / elapsed, 2) if elapsed else 0,
            timestamp=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        return result

    def run_round(self, name: str, rnd: int, keys: list[str], value: bytes,
                  record: dict[str, Any], runs: list[dict[str, Any]]) -> None:  # fmt: skip
        """One round of one system at one value size: fresh servers and data, preload,
        warm-up, one run of every workload, stop. Rounds rotate the order of the systems (and
        sizes), so that a change in the machine's load is spread over all of them instead of
        hitting one."""
        a = self.args
        tag = name if len(a.value_sizes) == 1 else f"{name} {size_label(len(value))}"
        root = self.workdir / f"round{rnd}-{len(value)}"
        system = make_system(name, root, keys, value, a)
        record.update(
            label=system.label,
            durability=system.durability,
            durability_short=SHORT_DURABILITY[name],
            generator=system.generator,
        )
        this: dict[str, Any] = {"round": rnd, "value_size": len(value)}
        record.setdefault("rounds", []).append(this)
        try:
            started = time.monotonic()
            for attempt in (1, 2):
                try:
                    log(f"round {rnd}/{a.reps} {tag}: starting")
                    system.start()
                    log(f"round {rnd}/{a.reps} {tag}: preloading {len(keys)} keys")
                    system.preload()
                    system.verify()
                    break
                except Exception as exc:
                    # e.g. a free port taken by another process before the server bound it
                    if attempt == 2:
                        raise
                    this["first_attempt_error"] = f"{type(exc).__name__}: {exc}"
                    log(f"round {rnd}/{a.reps} {tag}: start failed ({exc}); one more try")
                    system.stop()
                    shutil.rmtree(system.root, ignore_errors=True)
                    root = self.workdir / f"round{rnd}-{len(value)}-retry"
                    system = make_system(name, root, keys, value, a)
            this["setup_seconds"] = round(time.monotonic() - started, 1)
            files = self.files_for(system)
            if a.warmup > 0:
                log(f"round {rnd}/{a.reps} {tag}: warm-up, {a.warmup:g} s of the mix")
                this["warmup"] = self.load(system, "mix", a.warmup, files)
            # the workload order rotates too: a system that slows down (or speeds up) over
            # its lifetime in a round does not always penalise the same workload
            shift = (rnd - 1) % len(a.workloads)
            for workload in a.workloads[shift:] + a.workloads[:shift]:
                result = self.measure(system, workload, rnd, files, a.duration)
                runs.append(result)
                log(
                    f"round {rnd}/{a.reps} {tag} {workload}: {result['rps']:.0f} req/s, "
                    f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                    f"non-2xx/errors {result['non_2xx']}, server CPU "
                    f"{result['server_cpu_us_per_op']} us/op, "
                    f"load {result['loadavg_before'][0]}, steal {result['machine_steal_pct']} %"
                )
            system.verify(after_load=True)  # still serves a value (no siblings, nothing lost)
            if (name == "redis" and rnd == a.reps and len(value) == a.value_sizes[0]
                    and self.redis_load is not None):  # fmt: skip
                check_s = min(a.duration, 5)
                record["generator_check"] = {
                    w: self.load_check(system, w, check_s, files) for w in ("write", "read")
                }
        except Exception as exc:  # record and go on with the next system
            this["error"] = f"{type(exc).__name__}: {exc}"
            this["traceback"] = traceback.format_exc()
            record.setdefault("errors", []).append(
                f"round {rnd} ({size_label(len(value))}): {this['error']}"
            )
            log(f"round {rnd}/{a.reps} {tag}: FAILED: {exc}")
        finally:
            log(f"round {rnd}/{a.reps} {tag}: stopping")
            try:
                system.stop()
            finally:
                this["info"] = system.info
                if not a.keep_workdir:  # etcd's and RocksDB's files add up over rounds
                    shutil.rmtree(system.root, ignore_errors=True)

    def load_check(self, system: Any, workload: str, duration: float,
                   files: dict[str, Path]) -> dict[str, Any]:  # fmt: skip
        """redis_load on the same SET/GET as redis-benchmark: shows the generators agree."""
        assert self.redis_load is not None
        return loaders.run_redis_load(
            self.redis_load, files["redis_keys"], workload, duration, self.args.connections,
            self.args.read_ratio, 0, len(system.value),
        )  # fmt: skip

    def files_for(self, system: Any) -> dict[str, Path]:
        base = self.workdir / f"{system.name}-load"
        base.mkdir(exist_ok=True)
        files: dict[str, Path] = {}
        if hasattr(system, "wrk_script"):
            files["keys"] = base / "keys.txt"
            files["keys"].write_text("\n".join(system.encoded_keys()) + "\n")
            files["value"] = base / "value.bin"
            files["value"].write_bytes(system.wrk_value())
        if isinstance(system, systems.RedisSingle):
            files["redis_keys"] = system.write_keys_file(base / "redis-keys.txt")
        return files


def size_label(size: int) -> str:
    """1024 -> "1 KiB", 10240 -> "10 KiB", 100 -> "100 B"."""
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def summarise(runs: list[dict[str, Any]], system_names: list[str],
              sizes: list[int]) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for size in sizes:
        for name in system_names:
            for workload in WORKLOADS:
                sample = [
                    r for r in runs
                    if r["system"] == name and r["workload"] == workload
                    and r.get("value_size", BASE_VALUE_SIZE) == size
                ]  # fmt: skip
                if not sample:
                    continue

                def med(key: str, sample: list[dict[str, Any]] = sample) -> float | None:
                    values = [r[key] for r in sample if r.get(key) is not None]
                    return statistics.median(values) if values else None

                rows.append({
                    "system": name,
                    "value_size": size,
                    "workload": workload,
                    "runs": len(sample),
                    "generators": sorted({r["generator"] for r in sample}),
                    "rps": med("rps"),
                    "rps_min": min(r["rps"] for r in sample),
                    "rps_max": max(r["rps"] for r in sample),
                    "p50_ms": med("p50_ms"),
                    "p99_ms": med("p99_ms"),
                    "p99_ms_min": min(r["p99_ms"] for r in sample),
                    "p99_ms_max": max(r["p99_ms"] for r in sample),
                    "server_cpu_us_per_op": med("server_cpu_us_per_op"),
                    "non_2xx": sum(r["non_2xx"] for r in sample),
                    "socket_errors": sum(
                        sum(r.get("socket_errors", {}).values()) for r in sample
                    ),
                    "requests": sum(r["requests"] for r in sample),
                    "load1": med_list([r["loadavg_before"][0] for r in sample]),
                    "machine_busy_pct": med("machine_busy_pct"),
                    "machine_steal_pct": med("machine_steal_pct"),
                })  # fmt: skip
    return rows


def med_list(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def ratio_key(key: str, size: int) -> str:
    """Ratios of the 1 KiB rows keep their names; other sizes say theirs."""
    return key if size == BASE_VALUE_SIZE else f"{key} @ {size_label(size)}"


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    by = {(r["system"], r["value_size"], r["workload"]): r for r in rows}
    out: dict[str, dict[str, float | None]] = {}
    pairs = [("ringkv", "etcd"), ("ringkv", "redis"), ("ringkv", "redis-cluster"),
             ("ringkv-fsync", "etcd")]  # fmt: skip
    for size in sorted({r["value_size"] for r in rows}):
        for num, den in pairs:
            key = ratio_key(f"{num}/{den}", size)
            for workload in WORKLOADS:
                a, b = by.get((num, size, workload)), by.get((den, size, workload))
                if a and b and a["rps"] and b["rps"]:
                    out.setdefault(key, {})[workload] = a["rps"] / b["rps"]
        # server CPU per operation: a cost that depends less on the machine's other load
        for workload in WORKLOADS:
            a, b = by.get(("ringkv", size, workload)), by.get(("etcd", size, workload))
            if a and b and a["server_cpu_us_per_op"] and b["server_cpu_us_per_op"]:
                key = ratio_key("server CPU per op, etcd/ringkv (>1: ringkv cheaper)", size)
                out.setdefault(key, {})[workload] = (
                    b["server_cpu_us_per_op"] / a["server_cpu_us_per_op"]
                )
        # issue 7: a quorum write (3 nodes, N=3) against a local write (1 node, N=1)
        for workload in WORKLOADS:
            a, b = by.get(("ringkv", size, workload)), by.get(("ringkv-single", size, workload))
            if a and b and a["server_cpu_us_per_op"] and b["server_cpu_us_per_op"]:
                key = ratio_key("server CPU per op, ringkv/ringkv-single (N=3 vs N=1)", size)
                out.setdefault(key, {})[workload] = (
                    a["server_cpu_us_per_op"] / b["server_cpu_us_per_op"]
                )
    return out


def targets(
    rows: list[dict[str, Any]], rat: dict[str, dict[str, float | None]]
) -> list[dict[str, Any]]:
    """The issue 7 targets on the 1 KiB rows; with 10 KiB rows, the p99 targets on them too
    (the design's value size)."""
    by = {(r["system"], r["value_size"], r["workload"]): r for r in rows}
    vs_etcd = rat.get("ringkv/etcd", {})
    checks = []

    def add(
        what: str,
        value: float | None,
        limit: float,
        higher_is_better: bool,
        unit: str,
        inclusive: bool = False,
    ) -> None:
        if value is None:
            met = None
        elif higher_is_better:
            met = value >= limit
        else:
            met = value <= limit if inclusive else value < limit
        checks.append({"target": what, "value": value, "limit": limit, "unit": unit, "met": met})

    add("ringkv/etcd throughput, 100% writes >= 2x", vs_etcd.get("write"), 2.0, True, "x")
    add("ringkv/etcd throughput, 10:1 mix >= 2x", vs_etcd.get("mix"), 2.0, True, "x")
    add("ringkv/etcd throughput, 100% reads >= 1.5x", vs_etcd.get("read"), 1.5, True, "x")
    sizes = sorted({r["value_size"] for r in rows} & {BASE_VALUE_SIZE, DESIGN_VALUE_SIZE})
    for size in sizes or [BASE_VALUE_SIZE]:
        suffix = "" if size == BASE_VALUE_SIZE else f", {size_label(size)} values"
        for workload, limit, label in (("read", 10.0, "100% reads"), ("write", 20.0, "100% writes"),
                                       ("mix", 10.0, "10:1 mix, all requests")):  # fmt: skip
            if size != BASE_VALUE_SIZE and workload == "mix":
                continue  # the design states the 10 KiB targets for reads and writes
            row = by.get(("ringkv", size, workload))
            add(
                f"ringkv p99 < {limit:g} ms, {label}{suffix}",
                row["p99_ms"] if row else None,
                limit,
                False,
                "ms",
            )
    cpu = rat.get("server CPU per op, ringkv/ringkv-single (N=3 vs N=1)", {})
    add("quorum write CPU <= 3x a single-node write (ringkv/ringkv-single CPU per op)",
        cpu.get("write"), 3.0, False, "x", inclusive=True)  # fmt: skip
    return checks


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def render(rows: list[dict[str, Any]], rat: dict[str, dict[str, float | None]],
           checks: list[dict[str, Any]], args: argparse.Namespace,
           records: dict[str, dict[str, Any]]) -> str:  # fmt: skip
    lines = []
    wl_name = {
        "write": "100% writes",
        "read": "100% reads",
        "mix": f"{args.read_ratio}:1 read:write",
    }
    lines.append(
        f"| system | value | workload | req/s (median of {args.reps}) | req/s min-max | p50 ms "
        "| p99 ms | p99 ms min-max | server CPU us/op | non-2xx / errors | durability |"
    )
    lines.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        lines.append(
            f"| {r['system']} | {size_label(r['value_size'])} | {wl_name[r['workload']]} "
            f"| {fmt(r['rps'], 0)} | {fmt(r['rps_min'], 0)}-{fmt(r['rps_max'], 0)} "
            f"| {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} "
            f"| {fmt(r['p99_ms_min'])}-{fmt(r['p99_ms_max'])} "
            f"| {fmt(r['server_cpu_us_per_op'], 0)} | {r['non_2xx'] + r['socket_errors']} "
            f"| {records[r['system']]['durability_short']} |"
        )
    lines.append("")
    lines.append(
        "| ratio (of medians; throughput unless said) | 100% writes | 100% reads | 10:1 mix |"
    )
    lines.append("|---|---:|---:|---:|")
    for key, values in rat.items():
        lines.append(
            f"| {key} | " + " | ".join(
                f"{values[w]:.2f}x" if values.get(w) is not None else "-" for w in WORKLOADS
            ) + " |"
        )  # fmt: skip
    lines.append("")
    lines.append("| target | measured | met? |")
    lines.append("|---|---:|---|")
    for c in checks:
        value = (
            "-"
            if c["value"] is None
            else f"{c['value']:.2f}{' ' if c['unit'] == 'ms' else ''}{c['unit']}"
        )
        met = {True: "yes", False: "**no**", None: "not measured"}[c["met"]]
        lines.append(f"| {c['target']} | {value} | {met} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started_wall = time.monotonic()
    command = "benchmarks/compare " + " ".join(argv)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    procs.install_parent_death_signal()
    notes = ensure_tools(args)
    for note in notes:
        log(note)

    workdir = Path(tempfile.mkdtemp(prefix="ringkv-compare-", dir=args.workdir))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = args.json or Path(__file__).resolve().parent / "results" / f"compare-{stamp}.json"
    log(f"work dir {workdir}; results to {json_path}")
    rng = random.Random(7)
    values = {
        size: bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
                    for _ in range(size))
        for size in args.value_sizes
    }  # fmt: skip
    keys = systems.make_keys(args.keys)
    if any(name.startswith("ringkv") for name in args.systems):
        # Other people edit this tree while the benchmark runs, and every round restarts the
        # nodes: run all rounds on a copy of src/ringkv taken now (PYTHONPATH wins over the
        # editable install), so that every round measures the same code.
        snapshot = workdir / "src"
        shutil.copytree(
            REPO / "src" / "ringkv", snapshot / "ringkv",
            ignore=shutil.ignore_patterns("__pycache__"),
        )  # fmt: skip
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(snapshot), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        sys.path.insert(0, str(snapshot))
        src_root = snapshot
    else:
        src_root = REPO / "src"
    measured_versions = versions(src_root)
    records: dict[str, dict[str, Any]] = {}
    runs: list[dict[str, Any]] = []
    redis_load = None
    try:
        if any(s in args.systems for s in ("redis", "redis-cluster")):
            redis_load = loaders.build_redis_load(workdir)
        runner = Runner(args, workdir, redis_load)
        for name in args.systems:
            records[name] = {}
        units = [(name, size) for size in args.value_sizes for name in args.systems]
        for rnd in range(1, args.reps + 1):
            shift = (rnd - 1) % len(units)
            for name, size in units[shift:] + units[:shift]:
                runner.run_round(name, rnd, keys, values[size], records[name], runs)
    finally:
        if args.keep_workdir:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    ok_systems = [n for n in args.systems if not records.get(n, {}).get("errors")]
    rows = summarise(runs, args.systems, args.value_sizes)
    rat = ratios(rows)
    checks = targets(rows, rat)
    table = render(rows, rat, checks, args, records)
    elapsed = time.monotonic() - started_wall

    for name, rec in records.items():
        for error in rec.get("errors", []):
            notes.append(f"{name} failed in {error}")
    redis_rec = records.get("redis", {})
    if "generator_check" in redis_rec:
        check = redis_rec["generator_check"]
        bench = {
            r["workload"]: r
            for r in rows
            if r["system"] == "redis" and r["value_size"] == args.value_sizes[0]
        }
        parts = []
        for w, test in (("write", "SET"), ("read", "GET")):
            if w in bench:
                parts.append(
                    f"{test} {check[w]['rps']:.0f} req/s "
                    f"(redis-benchmark median {bench[w]['rps']:.0f})"
                )
        notes.append(
            "generator check, redis_load vs redis-benchmark on single Redis: " + "; ".join(parts)
        )
    for name in ("ringkv", "ringkv-fsync", "ringkv-single"):
        counts: dict[str, int] = {}
        messages: list[str] = []
        for rnd in records.get(name, {}).get("rounds", []):
            problems = rnd.get("info", {}).get("log_problems", {})
            for word, n in problems.get("counts", {}).items():
                counts[word] = counts.get(word, 0) + n
            messages += [m for m in problems.get("distinct_messages", []) if m not in messages]
        if name in records:
            notes.append(
                f"{name} node logs, all rounds: {counts or 'no WARNING/ERROR lines'}"
                + (f"; distinct: {messages}" if messages else "")
            )

    result = {
        "command": command,
        "started_utc": stamp,
        "elapsed_s": round(elapsed, 1),
        "machine": machine(),
        "versions": measured_versions,
        "config": {
            "duration_s": args.duration,
            "connections": args.connections,
            "reps": args.reps,
            "keys": args.keys,
            "value_size": args.value_sizes[0],
            "value_sizes": args.value_sizes,
            "read_ratio": args.read_ratio,
            "warmup_s": args.warmup,
            "systems": args.systems,
            "workloads": args.workloads,
            "wrk_threads": loaders.WRK_THREADS,
            "ringkv_conflict_mode": args.ringkv_conflict_mode,
            "workdir_fs": _fs_of(workdir.parent),
        },
        "systems": records,
        "runs": runs,
        "summary": rows,
        "ratios": rat,
        "targets": checks,
        "notes": notes,
        "table_markdown": table,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")

    print()
    print(f"# {command}")
    print(
        f"# {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}, {elapsed / 60:.1f} min, "
        f"{machine()['cpus']} CPUs; {procs.uptime_line()}"
    )
    print(
        "# NOTE: other work shares this machine; numbers are noisy "
        "(see min-max, and the load recorded with every run in the JSON)."
    )
    print()
    print(table)
    print()
    for name in args.systems:
        rec = records.get(name, {})
        print(
            f"- {name}: {rec.get('label', '')}; durability: {rec.get('durability', '')}; "
            f"generator: {rec.get('generator', '')}"
        )
    for note in notes:
        print(f"- note: {note}")
    print(f"\nraw numbers: {json_path}")
    return 0 if len(ok_systems) == len(args.systems) else 1


def _children_cpu() -> float:
    """CPU seconds of finished children: the load generators (servers are still running)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def src_digest(src_root: Path) -> str:
    """sha256 over ringkv/**/*.py: which code was measured (the tree may be uncommitted)."""
    digest = hashlib.sha256()
    for path in sorted((src_root / "ringkv").rglob("*.py")):
        digest.update(str(path.relative_to(src_root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _fs_of(path: Path) -> str:
    try:
        out = subprocess.run(
            ["df", "-T", str(path)], capture_output=True, text=True, timeout=10, check=False
        )
        return out.stdout.splitlines()[-1].split()[1]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
