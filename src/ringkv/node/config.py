"""Node configuration: one table of settings, and the command line and environment read from it.

Every ``NodeConfig`` field is declared once, with ``setting(...)``: its type (the annotation), its
default, its range or choices and its help. From that table come ``--FLAG`` on the command line
(``build_parser``), ``RINGKV_FLAG`` in the environment (flags win), the range checks with their
messages (``validate``), docs/node-flags.md (``docs_table``, checked by a test) and what the
operator needs: its defaults and N's range for the KVCluster fields that set a flag
(``Setting.crd``), the flags it sets itself (``Setting.operator``), and the names
``spec.settings`` may use.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ringkv.core.clock_bounds import DEFAULT_MAX_CLOCK_SKEW
from ringkv.core.expiry import MAX_TTL_SECONDS
from ringkv.core.quorum import PRESETS
from ringkv.core.ring import DEFAULT_VNODES
from ringkv.core.sharding import MAX_SHARDS
from ringkv.core.versions import CONFLICT_MODES, ConflictMode
from ringkv.node.auth import split_paths
from ringkv.node.logs import LOG_FORMATS

BOOL = ("true", "false")
LOG_LEVELS = ("debug", "info", "warning", "error")
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

#: Largest --cache-max-age (seconds): a day; reads that stale are better served by max_staleness.
MAX_CACHE_MAX_AGE = 86400
MIB = 1024 * 1024


@dataclass(frozen=True)
class Setting:
    """One node flag: ``--{flag}``, also read from ``RINGKV_{FLAG}``. Filled in from the
    ``NodeConfig`` field that declares it (name, type, default) and its ``setting(...)``."""

    help: str
    low: float | None = None  # inclusive bounds
    high: float | None = None
    positive: bool = False  # must be > 0
    choices: tuple[str, ...] = ()
    #: the message for a value out of range, with {flag}, {value}, {low} and {high}
    error: str = ""
    required: bool = False
    #: the help's default, when it is not the field's default (``--peer-port``)
    shown_default: str | None = None
    #: the KVCluster spec field that sets this flag (the operator passes it on)
    crd: str = ""
    #: the operator sets this flag on every node pod itself: ``spec.settings`` may not
    operator: bool = False
    # From the NodeConfig field:
    name: str = ""
    kind: str = ""  # int, float, str, bool, list (comma-separated)
    default: Any = None

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "RINGKV_" + self.name.upper()

    def parse(self, text: str) -> Any:
        """The value of a flag's text (ValueError if it is not one)."""
        if self.kind == "int":
            return int(text)
        if self.kind == "float":
            return float(text)
        if self.kind == "bool":
            if text.lower() not in BOOL:
                raise ValueError(f"--{self.flag} {text!r} must be one of {', '.join(BOOL)}")
            return text.lower() == "true"
        if self.kind == "list":
            return tuple(s.strip() for s in text.split(",") if s.strip())
        if self.choices and text not in self.choices:
            raise ValueError(f"--{self.flag} {text!r} must be one of {', '.join(self.choices)}")
        return text

    def problem(self, value: Any) -> str | None:
        """What is wrong with a parsed value (its range), or None."""
        if self.low is not None and self.high is not None:
            bad = not self.low <= value <= self.high
        elif self.low is not None:
            bad = value < self.low
        else:
            bad = self.positive and not value > 0
        if not bad:
            return None
        if self.error:
            return self.error.format(
                flag="--" + self.flag, value=value, low=_num(self.low), high=_num(self.high)
            )
        if self.positive:
            return f"--{self.flag} must be positive"
        return f"--{self.flag} must be between {_num(self.low)} and {_num(self.high)}"


def _num(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


def setting(default: Any = dataclasses.MISSING, help: str = "", **kw: Any) -> Any:
    """A ``NodeConfig`` field that is also a flag (see ``Setting`` for the keywords)."""
    meta = {"setting": Setting(help=help, required=default is dataclasses.MISSING, **kw)}
    return field(default=default, metadata=meta)


_POSITIVE = {"positive": True}
# (one message for the two, as it has always been)
_NOT_NEGATIVE = {"low": 0, "error": "--anti-entropy-interval and --tombstone-grace must not be "
                 "negative"}  # fmt: skip
_PORT = {"low": 1, "high": 65535, "error": "{flag} {value} is not a TCP port"}
_SECONDS = "{flag} must be between {low} and {high} seconds"


@dataclass(frozen=True)
class NodeConfig:
    """The node's settings: each field is a flag ``--field-name`` (the table)."""

    node_id: str = setting(help="stable node id, e.g. n1 (letters, digits, . _ -)", operator=True)
    host: str = setting("127.0.0.1", "address to bind the client API and peer port to",
                        operator=True)  # fmt: skip
    port: int = setting(7001, "client HTTP API port", crd="clientPort", operator=True, **_PORT)
    peer_port: int = setting(8001, "node-to-node port (default: --port + 1000)",
                             shown_default="--port + 1000", crd="peerPort", operator=True,
                             **_PORT)  # fmt: skip
    advertise_host: str = setting("", "address others use to reach this node (default --host)",
                                  operator=True)  # fmt: skip
    peer_advertise: str = setting(
        "", "HOST:PORT other nodes dial to reach this node's peer port, when that is not "
        "--advertise-host:--peer-port (behind a proxy or NAT)", operator=True,
    )  # fmt: skip
    zone: str = setting("default", "failure zone (rack / availability zone)", operator=True)
    data_dir: str = setting("./data", "RocksDB directory; created if missing", operator=True)
    shards: int = setting(
        1, "worker processes (shards) serving this node, one per core; each holds a fixed slice "
        "of the token space in DATA_DIR/shard-I on peer port --peer-port + I (0: the CPUs this "
        "process may use); the data directory records it", low=0, high=MAX_SHARDS,
    )  # fmt: skip
    seeds: tuple[str, ...] = setting(
        (), "comma-separated peer addresses HOST:PEER_PORT to join through", operator=True
    )
    replication_factor: int = setting(3, "N, copies of every key (default 3)", low=1, high=15,
                                      crd="replicationFactor", operator=True)  # fmt: skip
    vnodes: int = setting(DEFAULT_VNODES, f"tokens per node (default {DEFAULT_VNODES})", low=1,
                          high=4096, crd="vnodes", operator=True)  # fmt: skip
    max_value_bytes: int = setting(MIB, "largest value accepted (1 MiB)", low=1, high=64 * MIB,
                                   error="{flag} must be between 1 and 64 MiB")  # fmt: skip
    conflict_mode: str = setting("siblings", "siblings or lww", choices=CONFLICT_MODES,
                                 crd="conflictResolution", operator=True)  # fmt: skip
    default_consistency: str = setting(
        "balanced", "preset used when a request names none", choices=tuple(sorted(PRESETS)),
        crd="consistency", operator=True,
    )  # fmt: skip
    request_timeout: float = setting(2.0, "seconds to wait for replicas", **_POSITIVE)
    gossip_interval: float = setting(1.0, "seconds between gossip rounds", **_POSITIVE)
    heartbeat_interval: float = setting(0.5, "seconds between heartbeats", **_POSITIVE)
    phi_threshold: float = setting(8.0, "phi accrual conviction threshold", **_POSITIVE)
    fsync: bool = setting(False, "fsync every write batch (durable against power loss; costs a "
                          "disk flush per write)")  # fmt: skip
    auto_join: bool = setting(
        True, "join an existing cluster (or replace this id's dead node) at start-up; with "
        "false the node waits for POST /v1/admin/join or /v1/admin/replace", operator=True,
    )  # fmt: skip
    stream_rate: float = setting(50.0 * MIB, "bytes per second a ring change may stream, at "
                                 "most (50 MiB/s)", **_POSITIVE)  # fmt: skip
    cleanup_rate: float = setting(32.0 * MIB, "bytes per second cleanup may delete (handing "
                                  "them off first), at most (32 MiB/s)", **_POSITIVE)  # fmt: skip
    cluster_secret_file: str = setting(
        "", "file holding the shared secret peers must prove (HMAC) to talk to this node; "
        "without it peer traffic is unauthenticated", operator=True,
    )  # fmt: skip
    auth_tokens_file: str = setting(
        "", 'JSON file {"tokens": [{"token", "role": metrics|read|readwrite|admin}]} for the '
        "client API, reloaded when it changes; several files comma-separated (their tokens "
        "together); without it the API is open", operator=True,
    )  # fmt: skip
    no_auth: bool = setting(False, "run the client API without authentication (must be said "
                            "explicitly)", operator=True)  # fmt: skip
    no_peer_auth: bool = setting(False, "accept peers without the cluster secret (must be said "
                                 "explicitly)", operator=True)  # fmt: skip
    max_concurrent_requests: int = setting(512, "client requests served at once; beyond it 503 "
                                           "with Retry-After", **_POSITIVE)  # fmt: skip
    max_client_connections: int = setting(4096, "open client connections at once; more get 503 "
                                          "and are closed", **_POSITIVE)  # fmt: skip
    read_repair_chance: float = setting(
        0.1, "share of reads that ask every live replica, to repair the ones a read does not "
        "need (0.1; 0: only anti-entropy compares them)", low=0, high=1,
    )  # fmt: skip
    speculative_read_delay: float = setting(0.1, "seconds before a read also asks the replicas "
                                            "it skipped (0.1)", **_POSITIVE)  # fmt: skip
    cache_max_age: int = setting(
        0, "seconds reads may be served from HTTP caches without revalidation "
        "(Cache-Control: max-age); 0: no-cache, every reuse revalidates (0)", low=0,
        high=MAX_CACHE_MAX_AGE, error=_SECONDS,
    )  # fmt: skip
    client_timeout: float = setting(30.0, "seconds a client may take to send a request body",
                                    **_POSITIVE)  # fmt: skip
    max_siblings: int = setting(100, "refuse writes that would leave a key with more siblings "
                                "(warns at 25)", **_POSITIVE)  # fmt: skip
    min_free_bytes: int = setting(64 * MIB, "refuse writes (507) while the data disk has less "
                                  "free space (64 MiB)")  # fmt: skip
    block_cache_mb: int = setting(64, "RocksDB block cache in MiB (64); production nodes want "
                                  "about 1024", **_POSITIVE)  # fmt: skip
    tls_cert_file: str = setting("", "PEM certificate: serve the client API and peer port over "
                                 "TLS (reloaded when the file changes)", operator=True)  # fmt: skip
    tls_key_file: str = setting("", "PEM private key for --tls-cert-file", operator=True)
    tls_ca_file: str = setting(
        "", "CA bundle: peers must present a certificate it signed (mutual TLS); clients of the "
        "API may use it to verify nodes", operator=True,
    )  # fmt: skip
    hint_window: float = setting(3 * 3600.0, "seconds hints are kept (3 h)", **_POSITIVE)
    hint_rate: float = setting(2000.0, "hints delivered per second, at most", **_POSITIVE)
    anti_entropy_interval: float = setting(
        30.0, "seconds between Merkle-tree exchanges with the next peer (0 disables)",
        **_NOT_NEGATIVE,
    )  # fmt: skip
    anti_entropy_rate: float = setting(5000.0, "records per second anti-entropy may move, at "
                                       "most", **_POSITIVE)  # fmt: skip
    tombstone_grace: float = setting(10 * 86400.0, "seconds a tombstone is kept at least "
                                     "(10 days)", **_NOT_NEGATIVE)  # fmt: skip
    default_ttl: int = setting(0, "seconds until a written value expires when the PUT gives no "
                               "ttl= (0: never, the default)", low=0, high=MAX_TTL_SECONDS,
                               error=_SECONDS)  # fmt: skip
    max_clock_skew: float = setting(
        DEFAULT_MAX_CLOCK_SKEW, "seconds a clock from a client context or a peer may run ahead "
        "of ours; beyond it the request is refused (5)", **_POSITIVE,
    )  # fmt: skip
    replace_when_away_too_long: bool = setting(
        False, "a node down longer than --tombstone-grace while the cluster ran wipes its data "
        "and replaces itself (else it refuses to start, saying why)",
    )  # fmt: skip
    log_level: str = setting("info", "how much the node logs", choices=LOG_LEVELS)
    log_format: str = setting(
        "text", "text (human-readable, the default) or json (one object a line: time, level, "
        "node, message, request_id when the client sent X-Request-Id)", choices=LOG_FORMATS,
    )  # fmt: skip

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


_KINDS = {"int": "int", "float": "float", "str": "str", "bool": "bool", "tuple[str, ...]": "list"}


def _table() -> dict[str, Setting]:
    out = {}
    for f in dataclasses.fields(NodeConfig):
        s = dataclasses.replace(
            f.metadata["setting"],
            name=f.name,
            kind=_KINDS[str(f.type)],
            default=None if f.default is dataclasses.MISSING else f.default,
        )
        if s.kind == "bool":
            s = dataclasses.replace(s, choices=BOOL)
        out[s.flag] = s
    return out


#: The table: every node flag by name (``replication-factor``), in declaration order.
SETTINGS: dict[str, Setting] = _table()


def _text(s: Setting, value: Any) -> str:
    """A value as it is written on the command line."""
    if s.kind == "bool":
        return "true" if value else "false"
    if s.kind == "list":
        return ",".join(value)
    if s.kind == "float" and float(value).is_integer():
        return str(int(value))
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ringkv node",
        description="Run one ringkv storage node. Every flag can also be set with the environment "
        "variable RINGKV_<FLAG> (for example RINGKV_NODE_ID, RINGKV_SEEDS); flags win.",
    )
    for s in SETTINGS.values():
        kw: dict[str, Any] = {"help": s.help}
        env = os.environ.get(s.env)
        if s.required and env is None:
            kw["required"] = True
        elif env is not None:
            kw["default"] = env  # converted by argparse like a flag's text
        elif s.shown_default is not None:
            kw["default"] = None  # derived in parse_args
        else:
            kw["default"] = _text(s, s.default)
        if s.kind in ("int", "float"):
            kw["type"] = int if s.kind == "int" else float
        if s.choices:
            kw["choices"] = s.choices
            if s.kind == "bool":
                kw["type"] = str.lower
        p.add_argument("--" + s.flag, **kw)
    return p


def parse_args(argv: Sequence[str] | None) -> NodeConfig:
    parser = build_parser()
    ns = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    problems: list[str] = []
    for s in SETTINGS.values():
        raw = ns[s.name]
        if raw is None and s.name == "peer_port":
            values[s.name] = values["port"] + 1000
            continue
        try:
            # argparse checks `choices` only for values given as flags, not for RINGKV_* defaults
            values[s.name] = s.parse(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        parser.error("; ".join(problems))
    config = NodeConfig(**values)
    problems = validate(config)
    if problems:
        parser.error("; ".join(problems))
    return config


def validate(c: NodeConfig) -> list[str]:
    problems = []
    if not _NODE_ID.match(c.node_id):
        problems.append(f"--node-id {c.node_id!r} must be 1-63 letters, digits, '.', '_' or '-'")
    for s in SETTINGS.values():
        problem = s.problem(getattr(c, s.name))
        if problem is not None and problem not in problems:
            problems.append(problem)
    if c.port == c.peer_port:
        problems.append("--port and --peer-port must differ")
    if not c.zone:
        problems.append("--zone must not be empty")
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
    for seed in (*c.seeds, *([c.peer_advertise] if c.peer_advertise else [])):
        seed_host, _, seed_port = seed.rpartition(":")
        if not seed_host or not seed_port.isdigit():
            problems.append(f"seed {seed!r} must be HOST:PEER_PORT")
    return problems


def docs_table() -> str:
    """The table of node flags in docs/node-flags.md (a test checks that the file has it)."""
    rows = [
        "| flag | environment | default | values | operator | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for s in SETTINGS.values():
        if s.required:
            default = "(required)"
        elif s.shown_default is not None:
            default = s.shown_default
        else:
            default = f"`{_text(s, s.default)}`" if _text(s, s.default) else "(empty)"
        if s.choices:
            values = ", ".join(f"`{c}`" for c in s.choices)
        elif s.low is not None and s.high is not None:
            values = f"{_num(s.low)} .. {_num(s.high)}"
        elif s.low is not None:
            values = f">= {_num(s.low)}"
        elif s.positive:
            values = "> 0"
        else:
            values = ""
        operator = f"`spec.{s.crd}`" if s.crd else ("set by it" if s.operator else "`settings`")
        meaning = s.help.replace("|", "\\|")
        rows.append(f"| `--{s.flag}` | `{s.env}` | {default} | {values} | {operator} | {meaning} |")
    return "\n".join(rows) + "\n"
