"""Launching node processes on loopback, shared by ``ringkv local up`` (``ringkv.local``), the
multi-process test harness (tests/cluster.py) and the benchmarks (benchmarks/compare_lib).

- ``node_args``: the command-line flags of one node of a loopback cluster.
- ``Process``: one child process writing to a log file: start, signal, stop (SIGTERM, a grace
  period, then SIGKILL), the log's last lines.
- ``answers_ready``: whether a node answers ``GET /health/ready`` with 200.
- ``free_ports`` / ``port_taken``: loopback ports free now, and whether one is in use.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

HOST = "127.0.0.1"


def node_args(
    node_id: str,
    zone: str,
    port: int,
    peer_port: int,
    data_dir: Path,
    seeds: str,
    replication_factor: int,
    shards: int | None = 1,
) -> list[str]:
    """The flags every node of a loopback cluster is started with (callers add their own).
    ``shards=None``: no ``--shards`` flag (the node's default; a node that predates it)."""
    return [
        "--node-id", node_id,
        "--host", HOST,
        "--port", str(port),
        "--peer-port", str(peer_port),
        "--zone", zone,
        "--data-dir", str(data_dir),
        "--seeds", seeds,
        "--replication-factor", str(replication_factor),
        # one process per node unless a caller asks for more
        *(("--shards", str(shards)) if shards is not None else ()),
    ]  # fmt: skip


class Process:
    """A child process whose output goes to ``log_path``; it can be started again after it
    stopped, with the same command line."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        own_session: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        # A session of its own: Ctrl-C in the terminal reaches only the launcher, which then
        # stops its children one by one (so each can flush its data).
        self.own_session = own_session
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, banner: str | None = None) -> subprocess.Popen[bytes]:
        """Start it, appending to the log (after a ``=== banner ===`` line when given)."""
        with self.log_path.open("ab") as log:
            if banner is not None:
                log.write(f"=== {banner} ===\n".encode())
                log.flush()
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=self.own_session,
            )
        return self.process

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exited(self) -> bool:
        """Never started, or ended."""
        return not self.running

    def send(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def wait_or_kill(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for it to end, then SIGKILL it; reaped either way."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self, sig: signal.Signals = signal.SIGTERM, grace: float = 10.0) -> None:
        """Send ``sig``, then ``wait_or_kill(grace)``."""
        self.send(sig)
        self.wait_or_kill(grace)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def answers_ready(port: int, host: str = HOST) -> bool:
    """True when the node on ``port`` answers ``GET /health/ready`` with 200."""
    conn = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        conn.request("GET", "/health/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def free_ports(count: int) -> list[int]:
    """Ports the kernel considers free right now (all held open together, so distinct)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port_run(length: int, tries: int = 200) -> int:
    """The first of ``length`` consecutive ports free right now (a node's shard ports), below
    the kernel's ephemeral range where it can: a port found free there can still be given to
    any process's outgoing connection before the node binds it."""
    rng = random.Random()
    low, high = 20000, 60000
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral = int(f.read().split()[0])
        if ephemeral - 10000 > 1000 + length:
            low, high = 10000, ephemeral
    for _ in range(tries):
        base = rng.randrange(low, high - length)
        if not any(port_taken(p) for p in range(base, base + length)):
            return base
    raise OSError(f"no {length} consecutive free ports found")


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False
