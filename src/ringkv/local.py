"""`ringkv local up`: a cluster of node processes on loopback, in the foreground.

Node i (1-based) is `n{i}` in zone `z{(i-1) % zones + 1}`, serves clients on
`base_port + i - 1` and its peers on `base_port + 1000 + i - 1`, keeps its data in
`{data_dir}/n{i}` and logs to `{data_dir}/n{i}.log`. Running it again with the same data
directory brings the same nodes back with their data.

With `--shards S` (S > 1) each node runs S worker processes, whose ports follow the node's
peer port (`--peer-port + I` for peers, `+ S + I` for each shard's own client port): node i's
peer port is then `base_port + 1000 + (i - 1) * 2S`, so that the nodes' runs do not overlap.
A data directory records its shard count: to change it, start from an empty one.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from ringkv.core.sharding import MAX_SHARDS
from ringkv.launcher import HOST, Process, answers_ready, node_args, port_taken

PEER_PORT_OFFSET = 1000
READY_DEADLINE = 30.0
STOP_GRACE = 10.0


@dataclass
class LocalNode:
    node_id: str
    zone: str
    port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: Process = field(init=False)

    def __post_init__(self) -> None:
        self.proc = Process(self.node_id, [], self.log_path, own_session=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    shards: int = 1

    @property
    def ports(self) -> list[int]:
        """Every port the node listens on: its client port and its shards' ports."""
        extra = 2 * self.shards if self.shards > 1 else 1
        return [self.port, *range(self.peer_port, self.peer_port + extra)]

    def command(self, seeds: str, replication_factor: int) -> list[str]:
        args = node_args(
            self.node_id, self.zone, self.port, self.peer_port, self.data_dir, seeds,
            replication_factor, self.shards,
        )  # fmt: skip
        # a development cluster on loopback: said explicitly, and announced below
        insecure = ["--no-auth", "true", "--no-peer-auth", "true"]
        return [sys.executable, "-m", "ringkv", "node", *args, *insecure]

    def start(self, seeds: str, replication_factor: int) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc.argv = self.command(seeds, replication_factor)
        self.proc.start(f"ringkv local up: starting {self.node_id}")

    def exited(self) -> bool:
        return self.proc.exited()

    def ready(self) -> bool:
        return answers_ready(self.port)

    def log_tail(self, lines: int = 30) -> str:
        return self.proc.log_tail(lines)


def plan(
    nodes: int, zones: int, data_dir: str | Path, base_port: int, shards: int = 1
) -> list[LocalNode]:
    root = Path(data_dir)
    spacing = 2 * shards if shards > 1 else 1
    return [
        LocalNode(
            node_id=f"n{i}",
            zone=f"z{(i - 1) % zones + 1}",
            port=base_port + i - 1,
            peer_port=base_port + PEER_PORT_OFFSET + (i - 1) * spacing,
            data_dir=root / f"n{i}",
            log_path=root / f"n{i}.log",
            shards=shards,
        )
        for i in range(1, nodes + 1)
    ]


def up(
    nodes: int = 3,
    zones: int = 3,
    data_dir: str = ".ringkv",
    base_port: int = 7001,
    replication_factor: int = 3,
    monitoring: bool = False,
    shards: int = 1,
) -> int:
    """Start the cluster, wait until every node is ready, then run until Ctrl-C or SIGTERM.
    With ``monitoring``, also a Prometheus scraping the nodes (``ringkv.prometheus``)."""
    if nodes < 1 or zones < 1 or replication_factor < 1:
        return fail("--nodes, --zones and --replication-factor must be at least 1")
    if replication_factor > nodes:
        return fail(f"--replication-factor {replication_factor} needs at least that many nodes")
    if not 1 <= shards <= MAX_SHARDS:
        return fail(f"--shards must be 1 to {MAX_SHARDS}")
    cluster = plan(nodes, zones, data_dir, base_port, shards)
    if base_port < 1 or max(cluster[-1].ports) > 65535:
        return fail(f"--base-port {base_port} leaves no room for {nodes} client and peer ports")
    taken = [p for n in cluster for p in n.ports if port_taken(p)]
    if taken:
        return fail(
            f"port(s) {', '.join(map(str, taken))} on {HOST} already in use "
            "(is another cluster running?); stop it or choose another --base-port"
        )

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    seeds = ",".join(f"{HOST}:{n.peer_port}" for n in cluster)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    # Ctrl-C must work even when started from a shell that ignores SIGINT in the background.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 0
    prometheus = None
    try:
        for node in cluster:
            node.start(seeds, replication_factor)
        if not wait_ready(cluster):
            code = 1
        else:
            print_banner(cluster, data_dir)
            if monitoring:
                from ringkv.prometheus import start_beside

                targets = [f"{HOST}:{n.port}" for n in cluster]
                prometheus = start_beside(Path(data_dir) / "prometheus", targets)
                if prometheus is not None:
                    print(f"prometheus: {prometheus.url} (rules and dashboards' queries: "
                          "manifests/monitoring/)", flush=True)  # fmt: skip
            watch(cluster)
            code = fail("every node has exited")
    except KeyboardInterrupt:
        print("\nstopping the nodes...", flush=True)
    finally:
        # A second Ctrl-C or SIGTERM must not leave nodes behind half-stopped.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if prometheus is not None:
            prometheus.stop()
        stop(cluster)
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
    if code == 0:
        print("all nodes stopped", flush=True)
    return code


def wait_ready(cluster: Sequence[LocalNode]) -> bool:
    """Poll until every node is ready; on a crash or the deadline, show logs and give up."""
    deadline = time.monotonic() + READY_DEADLINE
    pending = list(cluster)
    while pending:
        for node in pending:
            if node.exited():
                fail(f"node {node.node_id} exited during startup; last lines of {node.log_path}:")
                print(node.log_tail(), file=sys.stderr)
                return False
        pending = [node for node in pending if not node.ready()]
        if pending and time.monotonic() > deadline:
            ids = ", ".join(n.node_id for n in pending)
            fail(f"not ready after {READY_DEADLINE:.0f} s: {ids}")
            for node in pending:
                print(f"--- {node.log_path} ---\n{node.log_tail()}", file=sys.stderr)
            return False
        if pending:
            time.sleep(0.2)
    return True


def print_banner(cluster: Sequence[LocalNode], data_dir: str) -> None:
    first = cluster[0].url
    lines = [f"ringkv: {len(cluster)} nodes ready (data in {data_dir}, logs in {data_dir}/*.log)"]
    lines += [f"  {n.node_id}  zone {n.zone}  {n.url}  (peers on :{n.peer_port})" for n in cluster]
    lines += [
        "",
        "try:",
        f"  ringkv put hello world --endpoint {first}",
        f"  ringkv get hello --endpoint {cluster[-1].url}",
        f"  ringkv status --endpoint {first}",
        f"  curl -X PUT --data-binary world {first}/v1/kv/hello",
        f"  curl -i {first}/v1/kv/hello",
        f"  curl {first}/v1/status",
        "",
        "security: OFF (a development cluster on loopback: no API tokens, no cluster secret;",
        "          see docs/security.md to turn them on)",
        "Ctrl-C stops every node; data stays for the next start.",
    ]
    print("\n".join(lines), flush=True)


def watch(cluster: Sequence[LocalNode]) -> None:
    """Wait in the foreground; report nodes that die. Returns when every node has exited."""
    reported: set[str] = set()
    while True:
        for node in cluster:
            if node.exited() and node.node_id not in reported:
                reported.add(node.node_id)
                fail(f"node {node.node_id} exited; last lines of {node.log_path}:")
                print(node.log_tail(), file=sys.stderr)
        if len(reported) == len(cluster):
            return
        time.sleep(0.5)


def stop(cluster: Sequence[LocalNode]) -> None:
    """SIGTERM every node, give each up to STOP_GRACE seconds, then SIGKILL."""
    for node in cluster:
        node.proc.send(signal.SIGTERM)
    for node in cluster:
        node.proc.wait_or_kill(STOP_GRACE)


def fail(message: str) -> int:
    print(f"ringkv: error: {message}", file=sys.stderr, flush=True)
    return 1


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
