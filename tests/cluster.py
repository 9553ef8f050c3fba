"""Multi-process test harness: real `ringkv node` processes on loopback.

    cluster = Cluster(tmp_path, nodes=3, zones=3, replication_factor=3).start()
    cluster.client(0).put("k", b"v")
    cluster.node(1).kill()              # SIGKILL; .terminate(), .pause(), .resume(), .restart()
    wait_until(lambda: not cluster.client(0).get("k").found, 5, message="k deleted")
    cluster.stop()                      # SIGKILLs whatever still runs

`node(i)` and `client(i)` take a 0-based index (node 0 is "n1", in zone "z1") or a node id.
Ports are picked by binding port 0 on 127.0.0.1. The processes are ``ringkv.launcher``'s, as
``ringkv local up``'s are; every process started here is also killed at interpreter exit,
whatever happened to the test.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ringkv.client import Client
from ringkv.launcher import HOST, Process, answers_ready, free_port_run, free_ports, node_args

__all__ = ["HOST", "Cluster", "NodeExited", "NodeProc", "free_ports", "wait_until"]
T = TypeVar("T")

#: Child processes still running: killed when the test process exits, however it exits.
LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for process in list(LIVE):
        with contextlib.suppress(OSError):
            process.kill()


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.05,
    message: str = "condition",
    explain: Callable[[], str] | None = None,
) -> T:
    """Poll `predicate` until it returns something truthy, and return that.

    Exceptions raised by the predicate count as "not yet"; the last one is shown if the
    deadline passes, and so is what `explain` says then (the state the test waited on).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
        except Exception as exc:
            last_error = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            if explain is not None:
                try:
                    detail += f"; {explain()}"
                except Exception as exc:  # the state could not be read either
                    detail += f"; explain failed: {exc!r}"
            raise AssertionError(f"timed out after {timeout} s waiting for {message}{detail}")
        time.sleep(interval)


class NodeProc(Process):
    """One `ringkv node` process; the command line stays the same across restarts, and a test
    may change ``args`` before a start."""

    def __init__(
        self,
        node_id: str,
        zone: str,
        port: int,
        peer_port: int,
        data_dir: Path,
        log_path: Path,
        args: Sequence[str],
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
        env["PYTHONUNBUFFERED"] = "1"
        super().__init__(node_id, [sys.executable, "-m", "ringkv.node", *args], log_path, env=env)
        self.node_id = node_id
        self.zone = zone
        self.port = port
        self.peer_port = peer_port
        self.data_dir = data_dir
        self.args = list(args)

    def __repr__(self) -> str:
        return f"NodeProc({self.node_id}, {self.url}, running={self.running})"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def peer_address(self) -> str:
        return f"{HOST}:{self.peer_port}"

    def start(self, banner: str | None = None) -> NodeProc:  # type: ignore[override]
        assert not self.running, f"{self.node_id} is already running"
        self.argv = [sys.executable, "-m", "ringkv.node", *self.args]
        LIVE.add(super().start(banner or f"harness: starting {self.node_id}"))
        return self

    def ready(self) -> bool:
        """True when GET /health/ready answers 200."""
        return answers_ready(self.port)

    def wait_ready(self, deadline: float = 30) -> None:
        def check() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise NodeExited(
                    f"{self.node_id} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            return self.ready()

        end = time.monotonic() + deadline
        while not check():
            if time.monotonic() >= end:
                raise AssertionError(
                    f"{self.node_id} not ready after {deadline} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL and reap."""
        self._stop(signal.SIGKILL, grace=10)

    def terminate(self, grace: float = 15) -> None:
        """SIGTERM, wait up to `grace` seconds (then SIGKILL)."""
        self.send(signal.SIGCONT)  # a paused node cannot handle SIGTERM
        self._stop(signal.SIGTERM, grace=grace)

    def pause(self) -> None:
        """SIGSTOP: the process stays up but answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self, wait: bool = True, graceful: bool = True) -> NodeProc:
        """Stop (SIGTERM, or SIGKILL if not graceful) if running, then start again."""
        if graceful:
            self.terminate()
        else:
            self.kill()
        self.start()
        if wait:
            self.wait_ready()
        return self

    def wipe(self) -> None:
        """Delete the data directory (the node must be stopped)."""
        assert not self.running, f"stop {self.node_id} before wiping its data"
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return super().log_tail(lines)

    def _stop(self, sig: signal.Signals, grace: float) -> None:
        if self.process is None:
            return
        self.stop(sig, grace)
        LIVE.discard(self.process)


def _insecure_unless_configured(extra_args: Sequence[str]) -> list[str]:
    """Test clusters run without auth unless a test configures it (nodes demand a choice)."""
    out = []
    if "--auth-tokens-file" not in extra_args and "--no-auth" not in extra_args:
        out += ["--no-auth", "true"]
    if "--cluster-secret-file" not in extra_args and "--no-peer-auth" not in extra_args:
        out += ["--no-peer-auth", "true"]
    return out


class NodeExited(AssertionError):
    """A node process ended while we waited for it."""


class Cluster:
    """N nodes on loopback seeded with each other's peer addresses."""

    def __init__(
        self,
        tmp_path: Path,
        nodes: int = 3,
        zones: int = 3,
        replication_factor: int = 3,
        extra_args: Sequence[str] = (),
        shards: int | None = 1,
    ) -> None:
        """``shards``: run each node with ``--shards`` (its shard ports follow its peer port);
        None: without the flag (benchmarks run nodes of older checkouts)."""
        self.root = Path(tmp_path)
        self.root.mkdir(parents=True, exist_ok=True)
        self.replication_factor = replication_factor
        if shards is None or shards == 1:
            ports = free_ports(2 * nodes)
            client_ports, peer_ports = ports[:nodes], ports[nodes:]
        else:
            client_ports = free_ports(nodes)
            # room for a node restarted with up to 4 shards: a peer and a client port each
            peer_ports = [free_port_run(2 * max(shards, 4)) for _ in range(nodes)]
        seeds = ",".join(f"{HOST}:{p}" for p in peer_ports)
        self.nodes: list[NodeProc] = []
        for i in range(nodes):
            node_id, zone = f"n{i + 1}", f"z{i % zones + 1}"
            data_dir = self.root / node_id
            args = [
                *node_args(node_id, zone, client_ports[i], peer_ports[i], data_dir, seeds,
                           replication_factor, shards),
                *_insecure_unless_configured(extra_args),
                *extra_args,
            ]  # fmt: skip
            log_path = self.root / f"{node_id}.log"
            self.nodes.append(
                NodeProc(node_id, zone, client_ports[i], peer_ports[i], data_dir, log_path, args)
            )
        self._clients: dict[str, Client] = {}

    def start(self, deadline: float = 30) -> Cluster:
        for node in self.nodes:
            node.start()
        self.wait_ready(deadline)
        return self

    def wait_ready(self, deadline: float = 30) -> None:
        """Wait until every running node answers /health/ready with 200, sees every other
        running node as alive in /v1/status, and sees no ring change under way."""
        end = time.monotonic() + deadline
        running = [node for node in self.nodes if node.running]
        for node in running:
            node.wait_ready(max(0.1, end - time.monotonic()))
        ids = {node.node_id for node in running}

        def converged() -> bool:
            for node in running:
                if not node.ready():
                    return False
                with Client(node.url, timeout=2) as client:
                    members = client.status()["members"]
                    progress = client.progress()
                if not ids <= {m["id"] for m in members if m.get("alive")}:
                    return False
                if progress.get("in_progress") is not None:
                    return False
            return True

        try:
            wait_until(converged, max(0.1, end - time.monotonic()), message="membership")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tails()}") from None

    def node(self, which: int | str) -> NodeProc:
        """By 0-based index or by node id ("n1")."""
        if isinstance(which, int):
            return self.nodes[which]
        for node in self.nodes:
            if node.node_id == which:
                return node
        raise KeyError(which)

    def client(self, which: int | str, timeout: float = 5.0) -> Client:
        """A client bound to that one node (cached; closed by stop())."""
        node = self.node(which)
        key = f"{node.node_id}/{timeout}"
        if key not in self._clients:
            self._clients[key] = Client(node.url, timeout=timeout)
        return self._clients[key]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(
            f"----- {node.node_id} ({node.log_path}) -----\n{node.log_tail(lines)}"
            for node in self.nodes
        )

    def stop(self) -> None:
        """SIGKILL every node and close the clients."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
