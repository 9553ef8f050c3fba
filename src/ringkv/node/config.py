"""Node configuration: command-line flags, each also readable from ``RINGKV_<FLAG>``."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ringkv.core.clock_bounds import DEFAULT_MAX_CLOCK_SKEW
from ringkv.core.expiry import MAX_TTL_SECONDS
from ringkv.core.quorum import PRESETS
from ringkv.core.ring import DEFAULT_VNODES
from ringkv.core.versions import CONFLICT_MODES, ConflictMode
from ringkv.node.auth import split_paths
from ringkv.node.logs import LOG_FORMATS

BOOL = ("true", "false")
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


#: Largest --cache-max-age (seconds): a day; reads that stale are better served by max_staleness.
MAX_CACHE_MAX_AGE = 86400


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    host: str = "127.0.0.1"
    port: int = 7001
    peer_port: int = 8001
    advertise_host: str = ""  # address peers and clients use to reach us; defaults to host
    peer_advertise: str = ""  # HOST:PORT peers dial for us (a proxy, a NodePort); default ours
    zone: str = "default"
    data_dir: str = "./data"
    seeds: tuple[str, ...] = field(default_factory=tuple)
    replication_factor: int = 3
    vnodes: int = DEFAULT_VNODES
    max_value_bytes: int = 1024 * 1024
    conflict_mode: str = "siblings"
    default_consistency: str = "balanced"
    request_timeout: float = 2.0
    gossip_interval: float = 1.0
    heartbeat_interval: float = 0.5
    phi_threshold: float = 8.0
    fsync: bool = False
    auto_join: bool = True
    stream_rate: float = 50 * 1024 * 1024
    cleanup_rate: float = 32 * 1024 * 1024
    cluster_secret_file: str = ""
    auth_tokens_file: str = ""
    no_auth: bool = False
    no_peer_auth: bool = False
    max_concurrent_requests: int = 512
    max_client_connections: int = 4096
    read_repair_chance: float = 0.1
    speculative_read_delay: float = 0.1
    cache_max_age: int = 0
    client_timeout: float = 30.0
    max_siblings: int = 100
    min_free_bytes: int = 64 * 1024 * 1024
    block_cache_mb: int = 64
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    hint_window: float = 3 * 3600.0
    hint_rate: float = 2000.0
    anti_entropy_interval: float = 30.0
    anti_entropy_rate: float = 5000.0
    tombstone_grace: float = 10 * 86400.0
    default_ttl: int = 0
    max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW
    replace_when_away_too_long: bool = False
    log_level: str = "info"
    log_format: str = "text"

    @property
    def mode(self) -> ConflictMode:
        """The cluster's conflict mode, typed for ``ringkv.core.versions``."""
        return "lww" if self.conflict_mode == "lww" else "siblings"

    @property
    def public_host(self) -> str:
        return self.advertise_host or self.host

    @property
    def address(self) -> str:
        return f"{self.public_host}:{self.port}"

    @property
    def peer_address(self) -> str:
        return self.peer_advertise or f"{self.public_host}:{self.peer_port}"


def _env(name: str) -> str | None:
    return os.environ.get("RINGKV_" + name.upper().replace("-", "_"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ringkv node",
        description="Run one ringkv storage node. Every flag can also be set with the environment "
        "variable RINGKV_<FLAG> (for example RINGKV_NODE_ID, RINGKV_SEEDS); flags win.",
    )

    def add(flag: str, **kw: object) -> None:
        env = _env(flag)
        if env is not None:
            kw["default"] = env
            kw.pop("required", None)
        p.add_argument("--" + flag, **kw)  # type: ignore[arg-type]

    add("node-id", required=True, help="stable node id, e.g. n1 (letters, digits, . _ -)")
    add("host", default="127.0.0.1", help="address to bind the client API and peer port to")
    add("port", type=int, default=7001, help="client HTTP API port")
    add("peer-port", type=int, default=None, help="node-to-node port (default: --port + 1000)")
    add("advertise-host", default="", help="address others use to reach this node (default --host)")
    add(
        "peer-advertise",
        default="",
        help="HOST:PORT other nodes dial to reach this node's peer port, when that is not "
        "--advertise-host:--peer-port (behind a proxy or NAT)",
    )
    add("zone", default="default", help="failure zone (rack / availability zone)")
    add("data-dir", default="./data", help="RocksDB directory; created if missing")
    add("seeds", default="", help="comma-separated peer addresses HOST:PEER_PORT to join through")
    add("replication-factor", type=int, default=3, help="N, copies of every key (default 3)")
    add("vnodes", type=int, default=DEFAULT_VNODES, help="tokens per node (default 128)")
    add("max-value-bytes", type=int, default=1024 * 1024, help="largest value accepted (1 MiB)")
    add("conflict-mode", default="siblings", choices=CONFLICT_MODES, help="siblings or lww")
    add(
        "default-consistency",
        default="balanced",
        choices=sorted(PRESETS),
        help="preset used when a request names none",
    )
    add("request-timeout", type=float, default=2.0, help="seconds to wait for replicas")
    add("gossip-interval", type=float, default=1.0, help="seconds between gossip rounds")
    add("heartbeat-interval", type=float, default=0.5, help="seconds between heartbeats")
    add("phi-threshold", type=float, default=8.0, help="phi accrual conviction threshold")
    add(
        "fsync",
        default="false",
        choices=["true", "false"],
        help="fsync every write batch (durable against power loss; costs a disk flush per write)",
    )
    add(
        "auto-join",
        default="true",
        help="join an existing cluster (or replace this id's dead node) at start-up; with "
        "false the node waits for POST /v1/admin/join or /v1/admin/replace",
    )
    add("stream-rate", type=float, default=50 * 1024 * 1024,
        help="bytes per second a ring change may stream, at most (50 MiB/s)")  # fmt: skip
    add("cleanup-rate", type=float, default=32 * 1024 * 1024,
        help="bytes per second cleanup may delete (handing them off first), at most "
        "(32 MiB/s)")  # fmt: skip
    add("cluster-secret-file", default="",
        help="file holding the shared secret peers must prove (HMAC) to talk to this node; "
        "without it peer traffic is unauthenticated")  # fmt: skip
    add("auth-tokens-file", default="",
        help='JSON file {"tokens": [{"token", "role": metrics|read|readwrite|admin}]} for the '
        "client API, reloaded when it changes; several files comma-separated (their tokens "
        "together); without it the API is open")  # fmt: skip
    add("no-auth", default="false", choices=["true", "false"],
        help="run the client API without authentication (must be said explicitly)")  # fmt: skip
    add("no-peer-auth", default="false", choices=["true", "false"],
        help="accept peers without the cluster secret (must be said explicitly)")  # fmt: skip
    add("max-concurrent-requests", type=int, default=512,
        help="client requests served at once; beyond it 503 with Retry-After")  # fmt: skip
    add("read-repair-chance", type=float, default=0.1,
        help="share of reads that ask every live replica, to repair the ones a read does not "
        "need (0.1; 0: only anti-entropy compares them)")  # fmt: skip
    add("speculative-read-delay", type=float, default=0.1,
        help="seconds before a read also asks the replicas it skipped (0.1)")  # fmt: skip
    add("cache-max-age", type=int, default=0,
        help="seconds reads may be served from HTTP caches without revalidation "
        "(Cache-Control: max-age); 0: no-cache, every reuse revalidates (0)")  # fmt: skip
    add("max-client-connections", type=int, default=4096,
        help="open client connections at once; more get 503 and are closed")  # fmt: skip
    add("client-timeout", type=float, default=30.0,
        help="seconds a client may take to send a request body")  # fmt: skip
    add("max-siblings", type=int, default=100,
        help="refuse writes that would leave a key with more siblings (warns at 25)")  # fmt: skip
    add("tls-cert-file", default="", help="PEM certificate: serve the client API and peer port "
        "over TLS (reloaded when the file changes)")  # fmt: skip
    add("tls-key-file", default="", help="PEM private key for --tls-cert-file")
    add("tls-ca-file", default="", help="CA bundle: peers must present a certificate it signed "
        "(mutual TLS); clients of the API may use it to verify nodes")  # fmt: skip
    add("min-free-bytes", type=int, default=64 * 1024 * 1024,
        help="refuse writes (507) while the data disk has less free space (64 MiB)")  # fmt: skip
    add("block-cache-mb", type=int, default=64,
        help="RocksDB block cache in MiB (64); production nodes want about 1024")  # fmt: skip
    add("hint-window", type=float, default=3 * 3600.0, help="seconds hints are kept (3 h)")
    add("hint-rate", type=float, default=2000.0, help="hints delivered per second, at most")
    add(
        "anti-entropy-interval",
        type=float,
        default=30.0,
        help="seconds between Merkle-tree exchanges with the next peer (0 disables)",
    )
    add(
        "anti-entropy-rate",
        type=float,
        default=5000.0,
        help="records per second anti-entropy may move, at most",
    )
    add(
        "tombstone-grace",
        type=float,
        default=10 * 86400.0,
        help="seconds a tombstone is kept at least (10 days)",
    )
    add("default-ttl", type=int, default=0,
        help="seconds until a written value expires when the PUT gives no ttl= (0: never, "
        "the default)")  # fmt: skip
    add("max-clock-skew", type=float, default=DEFAULT_MAX_CLOCK_SKEW,
        help="seconds a clock from a client context or a peer may run ahead of ours; "
        "beyond it the request is refused (5)")  # fmt: skip
    add("replace-when-away-too-long", default="false", choices=["true", "false"],
        help="a node down longer than --tombstone-grace while the cluster ran wipes its data "
        "and replaces itself (else it refuses to start, saying why)")  # fmt: skip
    add("log-level", default="info", choices=["debug", "info", "warning", "error"])
    add("log-format", default="text", choices=LOG_FORMATS,
        help="text (human-readable, the default) or json (one object a line: time, level, "
        "node, message, request_id when the client sent X-Request-Id)")  # fmt: skip
    return p


def parse_args(argv: Sequence[str] | None) -> NodeConfig:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        config = NodeConfig(
            node_id=ns.node_id,
            host=ns.host,
            port=int(ns.port),
            peer_port=int(ns.peer_port) if ns.peer_port not in (None, "") else int(ns.port) + 1000,
            advertise_host=ns.advertise_host,
            peer_advertise=ns.peer_advertise,
            zone=ns.zone,
            data_dir=ns.data_dir,
            seeds=tuple(s.strip() for s in str(ns.seeds).split(",") if s.strip()),
            replication_factor=int(ns.replication_factor),
            vnodes=int(ns.vnodes),
            max_value_bytes=int(ns.max_value_bytes),
            conflict_mode=ns.conflict_mode,
            default_consistency=ns.default_consistency,
            request_timeout=float(ns.request_timeout),
            gossip_interval=float(ns.gossip_interval),
            heartbeat_interval=float(ns.heartbeat_interval),
            phi_threshold=float(ns.phi_threshold),
            fsync=str(ns.fsync).lower() == "true",
            auto_join=str(ns.auto_join).lower() == "true",
            stream_rate=float(ns.stream_rate),
            cleanup_rate=float(ns.cleanup_rate),
            cluster_secret_file=ns.cluster_secret_file,
            auth_tokens_file=ns.auth_tokens_file,
            no_auth=str(ns.no_auth).lower() == "true",
            no_peer_auth=str(ns.no_peer_auth).lower() == "true",
            max_concurrent_requests=int(ns.max_concurrent_requests),
            max_client_connections=int(ns.max_client_connections),
            read_repair_chance=float(ns.read_repair_chance),
            speculative_read_delay=float(ns.speculative_read_delay),
            cache_max_age=int(ns.cache_max_age),
            client_timeout=float(ns.client_timeout),
            max_siblings=int(ns.max_siblings),
            min_free_bytes=int(ns.min_free_bytes),
            block_cache_mb=int(ns.block_cache_mb),
            tls_cert_file=ns.tls_cert_file,
            tls_key_file=ns.tls_key_file,
            tls_ca_file=ns.tls_ca_file,
            hint_window=float(ns.hint_window),
            hint_rate=float(ns.hint_rate),
            anti_entropy_interval=float(ns.anti_entropy_interval),
            anti_entropy_rate=float(ns.anti_entropy_rate),
            tombstone_grace=float(ns.tombstone_grace),
            default_ttl=int(ns.default_ttl),
            max_clock_skew=float(ns.max_clock_skew),
            replace_when_away_too_long=str(ns.replace_when_away_too_long).lower() == "true",
            log_level=ns.log_level,
            log_format=ns.log_format,
        )
    except ValueError as exc:
        parser.error(str(exc))
    problems = validate(config)
    # argparse checks `choices` only for values given as flags, not for RINGKV_* defaults.
    for flag, value, allowed in (
        ("--conflict-mode", ns.conflict_mode, CONFLICT_MODES),
        ("--default-consistency", ns.default_consistency, tuple(sorted(PRESETS))),
        ("--fsync", str(ns.fsync).lower(), ("true", "false")),
        ("--auto-join", str(ns.auto_join).lower(), ("true", "false")),
        ("--no-auth", str(ns.no_auth).lower(), ("true", "false")),
        ("--no-peer-auth", str(ns.no_peer_auth).lower(), ("true", "false")),
        ("--replace-when-away-too-long", str(ns.replace_when_away_too_long).lower(), BOOL),
        ("--log-level", ns.log_level, ("debug", "info", "warning", "error")),
        ("--log-format", ns.log_format, LOG_FORMATS),
    ):
        if value not in allowed:
            problems.append(f"{flag} {value!r} must be one of {', '.join(allowed)}")
    if problems:
        parser.error("; ".join(problems))
    return config


def validate(c: NodeConfig) -> list[str]:
    problems = []
    if not _NODE_ID.match(c.node_id):
        problems.append(f"--node-id {c.node_id!r} must be 1-63 letters, digits, '.', '_' or '-'")
    for name, port in (("--port", c.port), ("--peer-port", c.peer_port)):
        if not 0 < port < 65536:
            problems.append(f"{name} {port} is not a TCP port")
    if c.port == c.peer_port:
        problems.append("--port and --peer-port must differ")
    if not c.zone:
        problems.append("--zone must not be empty")
    if not 1 <= c.replication_factor <= 15:
        problems.append("--replication-factor must be between 1 and 15")
    if not 1 <= c.vnodes <= 4096:
        problems.append("--vnodes must be between 1 and 4096")
    if not 1 <= c.max_value_bytes <= 64 * 1024 * 1024:
        problems.append("--max-value-bytes must be between 1 and 64 MiB")
    for name, value in (
        ("--request-timeout", c.request_timeout),
        ("--gossip-interval", c.gossip_interval),
        ("--heartbeat-interval", c.heartbeat_interval),
        ("--phi-threshold", c.phi_threshold),
        ("--hint-window", c.hint_window),
        ("--hint-rate", c.hint_rate),
        ("--stream-rate", c.stream_rate),
        ("--cleanup-rate", c.cleanup_rate),
        ("--max-concurrent-requests", c.max_concurrent_requests),
        ("--max-client-connections", c.max_client_connections),
        ("--client-timeout", c.client_timeout),
        ("--max-siblings", c.max_siblings),
        ("--anti-entropy-rate", c.anti_entropy_rate),
        ("--block-cache-mb", c.block_cache_mb),
        ("--max-clock-skew", c.max_clock_skew),
    ):
        if not value > 0:
            problems.append(f"{name} must be positive")
    # Security is on unless switched off explicitly.
    if not c.auth_tokens_file and not c.no_auth:
        problems.append("give --auth-tokens-file FILE, or --no-auth true to leave the API open")
    if c.auth_tokens_file and not split_paths(c.auth_tokens_file):
        problems.append("--auth-tokens-file must name at least one file")
    if c.auth_tokens_file and c.no_auth:
        problems.append("--auth-tokens-file and --no-auth true contradict each other")
    if not c.cluster_secret_file and not c.no_peer_auth:
        problems.append(
            "give --cluster-secret-file FILE, or --no-peer-auth true to accept any peer"
        )
    if c.cluster_secret_file and c.no_peer_auth:
        problems.append("--cluster-secret-file and --no-peer-auth true contradict each other")
    if bool(c.tls_cert_file) != bool(c.tls_key_file):
        problems.append("--tls-cert-file and --tls-key-file go together")
    if c.tls_ca_file and not c.tls_cert_file:
        problems.append("--tls-ca-file needs --tls-cert-file and --tls-key-file")
    if not 0 <= c.read_repair_chance <= 1:
        problems.append("--read-repair-chance must be between 0 and 1")
    if not 0 <= c.cache_max_age <= MAX_CACHE_MAX_AGE:
        problems.append(f"--cache-max-age must be between 0 and {MAX_CACHE_MAX_AGE} seconds")
    if not c.speculative_read_delay > 0:
        problems.append("--speculative-read-delay must be positive")
    if c.anti_entropy_interval < 0 or c.tombstone_grace < 0:
        problems.append("--anti-entropy-interval and --tombstone-grace must not be negative")
    if not 0 <= c.default_ttl <= MAX_TTL_SECONDS:
        problems.append(f"--default-ttl must be between 0 and {MAX_TTL_SECONDS} seconds")
    for seed in (*c.seeds, *([c.peer_advertise] if c.peer_advertise else [])):
        seed_host, _, seed_port = seed.rpartition(":")
        if not seed_host or not seed_port.isdigit():
            problems.append(f"seed {seed!r} must be HOST:PEER_PORT")
    return problems
