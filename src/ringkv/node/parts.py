"""What every part of a node that works with its peers is built on: the node's settings, its
store, the agreed ring, the peer channel and the instruments, bundled once by ``node``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ringkv.node.guards import clock_guard

if TYPE_CHECKING:
    from ringkv.node.config import NodeConfig
    from ringkv.node.membership import Membership
    from ringkv.node.messaging import MessagingService
    from ringkv.node.metrics import NodeMetrics
    from ringkv.node.shards import ShardLayout
    from ringkv.node.storage import Storage


@dataclass(frozen=True)
class NodeParts:
    config: NodeConfig
    storage: Storage
    membership: Membership
    messaging: MessagingService
    metrics: NodeMetrics
    #: this process is one shard of a node served by several (None: the node is one process)
    layout: ShardLayout | None = None


class NodePart:
    """A coordinator, anti-entropy, ring changes or cleanup: each bounds the clocks it takes
    from peers and judges expiry with the same skew allowance."""

    def __init__(self, parts: NodeParts) -> None:
        config = parts.config
        self.config = config
        self.node_id = config.node_id
        self.mode = config.mode
        self.storage = parts.storage
        self.membership = parts.membership
        self.messaging = parts.messaging
        self.metrics = parts.metrics
        self.layout = parts.layout
        self.clock_guard = clock_guard(config.max_clock_skew, parts.metrics)
        self.skew_ms = int(config.max_clock_skew * 1000)  # expired values: see core.expiry
