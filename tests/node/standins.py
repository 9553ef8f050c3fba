"""Stand-ins for a Coordinator's neighbours, for tests that run one coordinator in-process:
a three-node ring whose members all look up, and the coordinator built over it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ringkv.core.ring import Ring, initial_tokens
from ringkv.node.config import parse_args
from ringkv.node.coordinator import Coordinator
from ringkv.node.hints import HintStore
from ringkv.node.metrics import NodeMetrics
from ringkv.node.parts import NodeParts
from ringkv.node.storage import Storage

NODES = {"n1": "z1", "n2": "z2", "n3": "z3"}
RING = Ring({n: initial_tokens(n, 16) for n in NODES}, NODES)


class AllUp:
    """Membership: NODES on RING, every one up and alive (none convicted); node X listens at
    the address ``addr-X``."""

    ring = future_ring = RING
    unreadable: frozenset[str] = frozenset()

    def up_nodes(self) -> frozenset[str]:
        return frozenset(NODES)

    def is_alive(self, node: str) -> bool:
        return True

    def address_of(self, node: str) -> str:
        return f"addr-{node}"

    def address_for(self, node: str, key: bytes) -> str:
        return self.address_of(node)  # every node is one process

    def sharded(self, node: str) -> bool:
        return False


def coordinator(data_dir: Path, node: str, messaging: Any, *flags: str) -> Coordinator:
    """Node ``node``'s coordinator, with its own RocksDB in ``data_dir``, AllUp membership and
    ``messaging`` for its peers; ``flags`` are further ``ringkv node`` flags."""
    base = ["--node-id", node, "--data-dir", str(data_dir), "--no-auth", "true",
            "--no-peer-auth", "true"]  # fmt: skip
    config = parse_args([*base, *flags])
    storage = Storage(str(data_dir))
    parts = NodeParts(config, storage, AllUp(), messaging, NodeMetrics())  # type: ignore[arg-type]
    return Coordinator(parts, f"{node}.1", HintStore(storage, config.mode))
