"""Process helpers for benchmarks/compare: children that die with us, CPU accounting, load.
The processes themselves are ``ringkv.launcher``'s, as the test harness's and
``ringkv local up``'s are."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

try:
    from ringkv.launcher import HOST, Process, free_ports
except ImportError:  # run by a Python without ringkv installed: this checkout's
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from ringkv.launcher import HOST, Process, free_ports

__all__ = ["HOST", "Daemon", "free_ports", "wait_port"]
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _Popen(subprocess.Popen):  # type: ignore[type-arg]
    """Popen whose children get SIGKILL if this process dies, even by SIGKILL."""

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("preexec_fn", _die_with_parent)
        super().__init__(*args, **kwargs)


def install_parent_death_signal() -> None:
    """Every process started from now on (also by tests/cluster.py) dies with this one."""
    subprocess.Popen = _Popen  # type: ignore[misc]


def install_missing(packages: dict[str, str], allowed: bool = True) -> list[str]:
    """Install with apt-get (as root, when ``allowed``) the Debian packages of the tools in
    ``packages`` (tool -> package) that are not on PATH; return the tools still missing."""
    missing = [tool for tool in packages if shutil.which(tool) is None]
    if missing and allowed and os.geteuid() == 0:
        names = sorted({packages[tool] for tool in missing})
        print(f"installing {' '.join(names)} with apt-get", file=sys.stderr, flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *names]
        result = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        if result.returncode != 0:  # a stale package index: refresh it once
            subprocess.run(
                ["apt-get", "update"], env=env, capture_output=True, timeout=600, check=False
            )
            subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        missing = [tool for tool in packages if shutil.which(tool) is None]
    return missing


def require(packages: dict[str, str]) -> bool:
    """``install_missing``, then say on stderr which tools are still missing: False if any."""
    missing = install_missing(packages)
    for tool in missing:
        print(
            f"{tool} is not installed (Debian package {packages[tool]}; as root this script "
            "installs it)",
            file=sys.stderr,
        )
    return not missing


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout} s") from None
            time.sleep(0.05)


class Daemon(Process):
    """A server process we started (``ringkv.launcher.Process``), running from construction;
    stop() is idempotent (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Path | None = None):
        super().__init__(name, argv, log_path, cwd=cwd)
        self.process: subprocess.Popen[bytes] = self.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 20) -> str:
        return super().log_tail(lines)

    def stop(self, sig: signal.Signals = signal.SIGTERM, grace: float = 5) -> None:
        super().stop(sig, grace)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3, the state, is [0])."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree(pids: Iterable[int]) -> set[int]:
    """These processes and all their live descendants (a node's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))  # ppid
    tree: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo += children.get(pid, [])
    return tree


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds consumed so far by these processes and their descendants: the
    live ones' own time, and the time of the children they have reaped (cutime, cstime), so
    that a server of several processes counts whole, and a worker that ended still counts."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in process_tree(pids):
        fields = _stat(pid)
        if fields is None:
            continue
        with contextlib.suppress(IndexError, ValueError):
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return total / tick


def machine_cpu() -> tuple[float, float, float]:
    """(busy, total, steal) jiffies of the whole machine from /proc/stat. Steal is time the
    hypervisor ran something else while this VM wanted its CPUs: on a shared host it is why the
    same code measures slower from one minute to the next."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    steal = parts[7] if len(parts) > 7 else 0
    return total - idle, total, steal


def uptime_line() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def finish_report(result: dict[str, Any], table: str, json_path: Path | None, command: str,
                  uptime_before: str) -> None:  # fmt: skip
    """Write ``result`` as JSON (when asked) and print the run's header and table."""
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"# {command}\n# {result['started_utc']}, {result['minutes']} min; before: "
          f"{uptime_before}; after: {result['uptime_after']}\n")  # fmt: skip
    print(table)
