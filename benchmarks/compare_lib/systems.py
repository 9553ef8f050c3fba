"""The systems benchmarks/compare starts, preloads and stops: ringkv, etcd, Redis, Redis Cluster.

Every server listens on 127.0.0.1 only, keeps its data under the run's work directory, and
is stopped by stop() (the caller does that in a `finally`); every child process also gets
SIGKILL if the benchmark process dies (see procs.install_parent_death_signal).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from procs import HOST, Daemon, free_ports, wait_port

REPO = Path(__file__).resolve().parents[2]


def make_keys(count: int) -> list[str]:
    # the same names redis-benchmark uses for "key:__rand_int__" with -r count
    return [f"key:{i:012d}" for i in range(count)]


# ----------------------------------------------------------------------------- HTTP preload


async def _http_preload(
    requests: list[tuple[str, str, bytes, dict[str, str]]], concurrency: int, timeout: float
) -> dict[str, Any]:
    import aiohttp

    statuses: dict[int, int] = {}
    failures: list[str] = []
    queue: asyncio.Queue[tuple[str, str, bytes, dict[str, str]]] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                method, url, body, headers = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            problem = ""
            for attempt in range(3):
                try:
                    async with session.request(method, url, data=body, headers=headers) as resp:
                        await resp.read()
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
                        if 200 <= resp.status < 300:
                            break
                        problem = f"status {resp.status}"
                except (TimeoutError, aiohttp.ClientError) as exc:
                    problem = repr(exc)
                await asyncio.sleep(0.05 * (attempt + 1))
            else:
                failures.append(f"{method} {url}: {problem}")

    client_timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        await asyncio.wait_for(
            asyncio.gather(*(worker(session) for _ in range(concurrency))), timeout
        )
    return {"statuses": statuses, "failures": len(failures), "first_failures": failures[:5]}


def http_preload(
    requests: list[tuple[str, str, bytes, dict[str, str]]],
    concurrency: int = 32,
    timeout: float = 300,
) -> dict[str, Any]:
    started = time.monotonic()
    result = asyncio.run(_http_preload(requests, concurrency, timeout))
    result["seconds"] = round(time.monotonic() - started, 2)
    if result["failures"]:
        raise RuntimeError(f"preload failed: {result}")
    return result


def http_call(
    method: str, url: str, body: bytes | None = None, timeout: float = 5
) -> tuple[int, bytes, dict[str, str]]:
    import http.client

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


# ----------------------------------------------------------------------------- base class


class System:
    name = ""
    label = ""
    durability = ""
    generator = ""

    def __init__(self, root: Path, keys: list[str], value: bytes) -> None:
        self.root = root / self.name
        self.root.mkdir(parents=True, exist_ok=True)
        self.keys = keys
        self.value = value
        self.info: dict[str, Any] = {}
        self.daemons: list[Daemon] = []

    def start(self) -> None:
        raise NotImplementedError

    def preload(self) -> None:
        raise NotImplementedError

    def verify(self, after_load: bool = False) -> None:
        """Read one preloaded key back; raise if the system does not return the value (after
        the load, whose generator may write other bytes, only the length is checked)."""

    # The default: the servers are ``self.daemons`` (etcd and Redis); ringkv overrides these.

    def pids(self) -> list[int]:
        return [d.pid for d in self.daemons]

    def stop(self) -> None:
        for d in self.daemons:
            d.stop()

    def check_alive(self) -> None:
        """Raise if a server process died."""
        for d in self.daemons:
            d.check_alive()


# ----------------------------------------------------------------------------- ringkv


class Ringkv(System):
    name = "ringkv"
    generator = "wrk"
    wrk_script = "ringkv.lua"
    fsync = False
    nodes = 3
    replication_factor = 3

    def __init__(self, root: Path, keys: list[str], value: bytes, conflict_mode: str) -> None:
        super().__init__(root, keys, value)
        self.conflict_mode = conflict_mode
        self.cluster: Any = None
        sync = (
            "RocksDB WAL fsync on every write batch (--fsync true)"
            if self.fsync
            else "RocksDB WAL written on every write, no fsync (--fsync false, the default): "
            "survives a process crash, not a power loss"
        )
        if self.replication_factor == 1:
            self.durability = f"1 copy (1 node, N=1); {sync}"
            self.label = "ringkv 1 node N=1 (the --replication-factor 1 baseline)"
        else:
            self.durability = f"3 replicas, W=2 acks; {sync}"
            self.label = f"ringkv 3 nodes/3 zones N=3 W=R=quorum{' fsync' if self.fsync else ''}"

    def start(self) -> None:
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        from tests.cluster import Cluster

        extra = [
            "--conflict-mode",
            self.conflict_mode,
            "--fsync",
            "true" if self.fsync else "false",
            *_no_auth_flags(),  # etcd and Redis run without auth and TLS here too
        ]
        self.cluster = Cluster(
            self.root,
            nodes=self.nodes,
            zones=self.nodes,
            replication_factor=self.replication_factor,
            extra_args=extra,
            **self.cluster_options(),
        )
        self.cluster.start(deadline=120)
        _, body, _ = http_call("GET", f"{self.cluster.urls[0]}/v1/status")
        cluster_info = json.loads(body)["cluster"]
        self.info = {
            "cluster": cluster_info,
            "zones": sorted({m["zone"] for m in json.loads(body)["members"]}),
            "args": extra,
        }
        assert cluster_info["replication_factor"] == self.replication_factor, cluster_info

    def cluster_options(self) -> dict[str, Any]:
        """More keyword arguments for ``tests.cluster.Cluster`` (benchmarks/shards.py's)."""
        return {}

    @property
    def targets(self) -> list[str]:
        return [f"{HOST}:{node.port}" for node in self.cluster.nodes]

    def encoded_keys(self) -> list[str]:
        return [urllib.parse.quote(key, safe="") for key in self.keys]

    def wrk_value(self) -> bytes:
        return self.value

    def preload(self) -> None:
        urls = self.cluster.urls
        requests = [
            ("PUT", f"{urls[i % len(urls)]}/v1/kv/{key}?w=all", self.value,
             {"Content-Type": "application/octet-stream"})
            for i, key in enumerate(self.encoded_keys())
        ]  # fmt: skip
        self.info["preload"] = http_preload(requests)

    def verify(self, after_load: bool = False) -> None:
        key = self.encoded_keys()[len(self.keys) // 2]
        for url in self.cluster.urls:
            status, body, _ = http_call("GET", f"{url}/v1/kv/{key}?r=quorum")
            if status != 200 or body != self.value:
                raise RuntimeError(f"ringkv GET {key} on {url}: {status}, {len(body)} bytes")

    def pids(self) -> list[int]:
        return [node.process.pid for node in self.cluster.nodes if node.process is not None]

    def check_alive(self) -> None:
        for node in self.cluster.nodes:
            if not node.running:
                raise RuntimeError(f"ringkv {node.node_id} died:\n{node.log_tail()}")

    def log_problems(self) -> dict[str, Any]:
        """Count WARNING/ERROR/Traceback lines in the node logs (shown in the report)."""
        counts: dict[str, int] = {}
        samples: list[str] = []
        if self.cluster is None:
            return {}
        for node in self.cluster.nodes:
            try:
                text = node.log_path.read_text(errors="replace")
            except OSError:
                continue
            lines = text.splitlines()
            for i, line in enumerate(lines):
                for word in ("Traceback", "ERROR", "WARNING"):
                    if word in line:
                        counts[word] = counts.get(word, 0) + 1
                        # "2026-01-01 12:00:00,123 n1 WARNING module: message" -> from WARNING on;
                        # for a traceback, its last line (the exception) instead
                        message = line[line.find(word) :][:300]
                        if word == "Traceback":
                            end = next(
                                (j for j in range(i + 1, len(lines)) if not lines[j][:1].isspace()),
                                None,
                            )
                            if end is not None:
                                message = f"Traceback ... {lines[end][:250]}"
                        if len(samples) < 20 and message not in samples:
                            samples.append(message)
                        break
        return {"counts": counts, "distinct_messages": samples}

    def stop(self) -> None:
        if self.cluster is not None:
            self.info["log_problems"] = self.log_problems()
            self.cluster.stop()


_NODE_HELP: list[str] = []


def _no_auth_flags() -> list[str]:
    """--no-auth/--no-peer-auth where this ringkv has them (newer nodes demand a choice)."""
    if not _NODE_HELP:
        out = subprocess.run(
            [sys.executable, "-m", "ringkv.node", "--help"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        _NODE_HELP.append(out.stdout)
    flags = []
    if re.search(r"--no-auth\b", _NODE_HELP[0]):
        flags += ["--no-auth", "true"]
    if re.search(r"--no-peer-auth\b", _NODE_HELP[0]):
        flags += ["--no-peer-auth", "true"]
    return flags


class RingkvFsync(Ringkv):
    name = "ringkv-fsync"
    fsync = True


class RingkvSingle(Ringkv):
    """One node with --replication-factor 1: the local-write baseline of issue 7's CPU target
    (a quorum write may cost at most 3x the CPU of a single-node write)."""

    name = "ringkv-single"
    nodes = 1
    replication_factor = 1


# ----------------------------------------------------------------------------- etcd


class Etcd(System):
    name = "etcd"
    generator = "wrk"
    wrk_script = "etcd.lua"
    label = "etcd 3 members (Debian etcd-server), v3 JSON gateway"
    durability = (
        "3 members, Raft majority (2) ack; fsync of the Raft WAL before every commit "
        "(etcd default); reads linearizable (ReadIndex)"
    )

    def __init__(self, root: Path, keys: list[str], value: bytes) -> None:
        super().__init__(root, keys, value)
        self.client_ports: list[int] = []

    def start(self) -> None:
        ports = free_ports(6)
        self.client_ports, peer_ports = ports[:3], ports[3:]
        names = [f"m{i + 1}" for i in range(3)]
        initial = ",".join(f"{n}=http://{HOST}:{p}" for n, p in zip(names, peer_ports, strict=True))
        token = f"ringkv-compare-{int(time.time())}"
        for name, cport, pport in zip(names, self.client_ports, peer_ports, strict=True):
            argv = [
                "etcd", "--name", name, "--data-dir", str(self.root / name),
                "--listen-client-urls", f"http://{HOST}:{cport}",
                "--advertise-client-urls", f"http://{HOST}:{cport}",
                "--listen-peer-urls", f"http://{HOST}:{pport}",
                "--initial-advertise-peer-urls", f"http://{HOST}:{pport}",
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", token,
                "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
            ]  # fmt: skip
            self.daemons.append(Daemon(f"etcd {name}", argv, self.root / f"{name}.log"))
        deadline = time.monotonic() + 60
        for daemon, port in zip(self.daemons, self.client_ports, strict=True):
            wait_port(port, max(1, deadline - time.monotonic()))
            daemon.check_alive()
        # healthy once a leader exists and a put goes through on every member
        probe = json.dumps({"key": _b64(b"probe"), "value": _b64(b"1")}).encode()
        for port in self.client_ports:
            while True:
                try:
                    status, body, _ = http_call("POST", f"http://{HOST}:{port}/v3/kv/put", probe)
                    if status == 200:
                        break
                except OSError:
                    pass
                for daemon in self.daemons:
                    daemon.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError("etcd cluster did not accept a put within 60 s")
                time.sleep(0.2)
        version = subprocess.run(["etcd", "--version"], capture_output=True, text=True, check=False)
        status, body, _ = http_call(
            "POST", f"http://{HOST}:{self.client_ports[0]}/v3/cluster/member/list", b"{}"
        )
        self.info = {
            "version": version.stdout.strip().splitlines()[0] if version.stdout else "?",
            "members": len(json.loads(body).get("members", [])),
            "flags": "defaults (fsync on; --unsafe-no-fsync not given)",
        }

    @property
    def targets(self) -> list[str]:
        return [f"{HOST}:{port}" for port in self.client_ports]

    def encoded_keys(self) -> list[str]:
        return [_b64(key.encode()) for key in self.keys]

    def wrk_value(self) -> bytes:
        return _b64(self.value).encode()

    def preload(self) -> None:
        value = _b64(self.value)
        requests = [
            ("POST", f"http://{self.targets[i % 3]}/v3/kv/put",
             json.dumps({"key": key, "value": value}).encode(),
             {"Content-Type": "application/json"})
            for i, key in enumerate(self.encoded_keys())
        ]  # fmt: skip
        self.info["preload"] = http_preload(requests)

    def verify(self, after_load: bool = False) -> None:
        key = self.encoded_keys()[len(self.keys) // 2]
        for target in self.targets:
            status, body, _ = http_call(
                "POST", f"http://{target}/v3/kv/range", json.dumps({"key": key}).encode()
            )
            kvs = json.loads(body).get("kvs", []) if status == 200 else []
            if not kvs or base64.b64decode(kvs[0]["value"]) != self.value:
                raise RuntimeError(f"etcd range {key} on {target}: {status} {body[:200]!r}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ----------------------------------------------------------------------------- Redis


def resp_command(*args: bytes | str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def redis_pipeline(port: int, commands: list[bytes], timeout: float = 120) -> list[bytes]:
    """Send commands pipelined, return the first line of every reply (simple replies only,
    or bulk replies whose body we skip)."""
    replies: list[bytes] = []
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(b"".join(commands))
        buf = b""
        while len(replies) < len(commands):
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError(f"redis {port} closed the connection")
            buf += chunk
            while True:
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                line = buf[:end]
                if line.startswith(b"$") and int(line[1:]) >= 0:
                    need = end + 2 + int(line[1:]) + 2
                    if len(buf) < need:
                        break
                    replies.append(buf[end + 2 : need - 2])
                    buf = buf[need:]
                else:
                    replies.append(line)
                    buf = buf[end + 2 :]
    return replies


def redis_cli(port: int, *args: str, timeout: float = 30) -> str:
    result = subprocess.run(
        ["redis-cli", "-h", HOST, "-p", str(port), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"redis-cli {args}: {result.stderr or result.stdout}")
    return result.stdout


REDIS_DURABILITY = (
    "appendonly yes, appendfsync everysec (AOF write() per event loop, fsync once a second), "
    "no RDB snapshots"
)


class RedisSingle(System):
    name = "redis"
    generator = "redis-benchmark (SET, GET); redis_load (mix)"
    label = "Redis single redis-server"
    durability = f"1 copy; {REDIS_DURABILITY}"

    def __init__(self, root: Path, keys: list[str], value: bytes) -> None:
        super().__init__(root, keys, value)
        self.ports: list[int] = []

    def _server(self, name: str, port: int, extra: list[str]) -> Daemon:
        data = self.root / name
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            "redis-server", "--port", str(port), "--bind", HOST, "--protected-mode", "no",
            "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
            "--dir", str(data), "--daemonize", "no", "--logfile", "", *extra,
        ]  # fmt: skip
        return Daemon(f"redis {name}", argv, self.root / f"{name}.log")

    def start(self) -> None:
        (port,) = free_ports(1)
        self.ports = [port]
        self.daemons.append(self._server("r1", port, []))
        wait_port(port, 30)
        self._ping_all()
        self.info = {
            "version": redis_cli(port, "INFO", "server").split("redis_version:")[1].split()[0]
        }

    def _ping_all(self) -> None:
        deadline = time.monotonic() + 30
        for port in self.ports:
            while True:
                try:
                    if redis_cli(port, "PING").strip() == "PONG":
                        break
                except (RuntimeError, subprocess.TimeoutExpired):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis {port} does not answer PING")
                time.sleep(0.1)

    def key_owner(self) -> dict[str, int]:
        return {key: self.ports[0] for key in self.keys}

    def preload(self) -> None:
        started = time.monotonic()
        by_port: dict[int, list[bytes]] = {}
        for key, port in self.key_owner().items():
            by_port.setdefault(port, []).append(resp_command("SET", key, self.value))
        for port, commands in by_port.items():
            replies = redis_pipeline(port, commands)
            bad = [r for r in replies if r != b"+OK"]
            if bad:
                raise RuntimeError(f"redis preload on {port}: {bad[:3]}")
        self.info["preload"] = {
            "keys": len(self.keys),
            "seconds": round(time.monotonic() - started, 2),
        }

    def verify(self, after_load: bool = False) -> None:
        key = self.keys[len(self.keys) // 2]
        port = self.key_owner()[key]
        (reply,) = redis_pipeline(port, [resp_command("GET", key)])
        if (len(reply) != len(self.value)) if after_load else (reply != self.value):
            raise RuntimeError(f"redis GET {key}: {reply[:80]!r}")

    def write_keys_file(self, path: Path) -> Path:
        owner = self.key_owner()
        path.write_text("".join(f"{owner[key]} {key}\n" for key in self.keys))
        return path


class RedisCluster(RedisSingle):
    name = "redis-cluster"
    generator = "redis_load (SET + WAIT 1 0, GET)"
    label = "Redis Cluster 3 masters + 3 replicas, WAIT 1 0 after every SET"
    durability = (
        "2 copies; a write completes after WAIT 1 0, i.e. once one replica received it "
        f"(in memory); every server {REDIS_DURABILITY}; reads from the master only"
    )

    def start(self) -> None:
        ports = free_ports(12)
        self.ports, bus_ports = ports[:6], ports[6:]
        for i, (port, bus) in enumerate(zip(self.ports, bus_ports, strict=True)):
            name = f"c{i + 1}"
            extra = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.root / name / "nodes.conf"),
                "--cluster-node-timeout", "5000", "--cluster-port", str(bus),
            ]  # fmt: skip
            self.daemons.append(self._server(name, port, extra))
        for port in self.ports:
            wait_port(port, 30)
        self._ping_all()
        result = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"{HOST}:{p}" for p in self.ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}"
            )
        deadline = time.monotonic() + 60
        while True:
            ok = all("cluster_state:ok" in redis_cli(p, "CLUSTER", "INFO") for p in self.ports)
            masters = self._masters()
            online = (
                ok
                and len(masters) == 3
                and all(
                    re.search(r"slave\d+:.*state=online", redis_cli(port, "INFO", "replication"))
                    for port in masters
                )
            )
            if online:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("redis cluster not ok / replicas not online after 60 s")
            time.sleep(0.3)
        self.masters = masters
        self.info = {
            "version": redis_cli(self.ports[0], "INFO", "server")
            .split("redis_version:")[1]
            .split()[0],
            "masters": {str(p): ranges for p, ranges in masters.items()},
        }

    def _masters(self) -> dict[int, list[tuple[int, int]]]:
        masters: dict[int, list[tuple[int, int]]] = {}
        for line in redis_cli(self.ports[0], "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if len(parts) < 8 or "master" not in parts[2]:
                continue
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            ranges = []
            for slot in parts[8:]:
                if slot.startswith("["):
                    continue
                lo, _, hi = slot.partition("-")
                ranges.append((int(lo), int(hi or lo)))
            if ranges:
                masters[port] = ranges
        return masters

    def key_owner(self) -> dict[str, int]:
        owner = {}
        for key in self.keys:
            slot = binascii.crc_hqx(key.encode(), 0) % 16384  # keys have no {hash tag}
            for port, ranges in self.masters.items():
                if any(lo <= slot <= hi for lo, hi in ranges):
                    owner[key] = port
                    break
            else:
                raise RuntimeError(f"no master owns slot {slot}")
        return owner

    def preload(self) -> None:
        super().preload()
        for port in self.masters:  # make sure the replicas have everything
            (reply,) = redis_pipeline(port, [resp_command("WAIT", "1", "10000")])
            if reply != b":1":
                raise RuntimeError(f"redis {port}: WAIT after preload answered {reply!r}")
