"""Disk guard: a node whose disk refuses writes says so, and the others route around it.

A node whose data disk is below ``--min-free-bytes`` (or whose RocksDB stopped writing after
ENOSPC) still serves reads, and answers the writes it would have to store with ``507
insufficient_storage`` (``ringkv.node.storage.StorageFull``). So that writes go elsewhere
rather than fail, ``DiskGuard`` checks the disk every ``CHECK_INTERVAL`` seconds and:

- publishes it in gossip (``WRITES_REFUSED``: the reason, "" when writes are taken), so every
  coordinator leaves the node out of write rounds (``writable``): a fallback takes its copy as a
  hint, delivered when the node takes writes again -- no failed replica sends, no timeouts;
- makes the readiness probe fail (``/health/ready``: 503 ``insufficient_storage``), so the
  Kubernetes Service stops sending clients to the pod (the peers' headless Service still
  publishes it, so reads and hint delivery keep working);
- shows it in ``ringkv_writes_refused`` (the ``RingkvDiskFull`` alert) and in
  ``/v1/status`` (``node.writes_refused``, and each member's ``writes_refused``);
- recovers by itself: once space is back the flag is cleared; after an ENOSPC inside RocksDB
  (which then refuses every write until it is reopened) the database is reopened in place
  (``Storage.resume_writes``), or, should a scan still hold it, the node stops so that its
  supervisor restarts it (the WAL holds every acknowledged write).

A client given several endpoints retries a 507 on the next one (nothing was written).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Mapping

from ringkv.core import gossip as g
from ringkv.node.storage import ReopenFailed, Storage

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.5  # seconds between disk checks (a statvfs each)


def refusing(states: Mapping[str, g.EndpointState]) -> frozenset[str]:
    """The members whose gossip says their disk refuses writes."""
    return frozenset(node for node, state in states.items() if state.get(g.WRITES_REFUSED))


class DiskGuard:
    def __init__(self, storage: Storage, gossiper: g.Gossiper) -> None:
        self.storage = storage
        self.gossiper = gossiper
        self.reason: str = ""  # why this node refuses writes ("" when it takes them)
        self.since: float | None = None  # wall-clock time it started refusing
        self._refusing: frozenset[str] = frozenset()

    def check(self, now: float) -> None:
        """Measure this node's disk, publish what changed, and see which peers refuse."""
        storage = self.storage
        storage.resume_writes()  # nothing to do unless RocksDB stopped writing
        reason = storage.refusal() or ""
        if reason != self.reason:
            if reason:
                log.error("refusing writes (507) and reporting not ready: %s", reason)
                self.since = now
            else:
                log.warning("the disk takes writes again after %.0f s", now - (self.since or now))
                self.since = None
            self.reason = reason
            self.gossiper.set_app(g.WRITES_REFUSED, reason)
        self._refusing = refusing(self.gossiper.states) - {self.gossiper.node_id}

    def writable(self, up: frozenset[str]) -> frozenset[str]:
        """``up`` without the peers whose disks refuse writes. This node itself stays: the
        writes it coordinates for keys it replicates then answer 507 (``StorageFull``), so the
        client goes to another node; placing them on a fallback instead would turn a full disk
        into a node that silently stops holding its own keys."""
        refusing_ = self._refusing
        return up - refusing_ if refusing_ else up

    async def run(self) -> None:
        while True:
            try:
                self.check(time.time())
            except ReopenFailed as exc:
                # The WAL holds every acknowledged write: a restart (the supervisor's, or
                # Kubernetes') reopens RocksDB and writes work again.
                log.critical("%s; stopping the node so that it restarts", exc)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            except Exception:  # a failed statvfs must not stop the guard
                log.exception("disk check failed")
            await asyncio.sleep(CHECK_INTERVAL)
