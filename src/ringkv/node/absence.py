"""Absence: a node records that it is alive, and at start-up refuses to rejoin with its data
when it was away longer than ``--tombstone-grace`` (the rule is ``ringkv.core.absence``).

The refusal says why and what to do: wipe the data directory and start the node again, so that
it replaces itself (``ringkv admin replace`` when it runs with ``--auto-join false``). With
``--replace-when-away-too-long true`` (the Kubernetes operator sets it) the node does that by
itself: it logs why, wipes its data directory and starts as a replacement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from typing import Any

from ringkv.core.absence import alive_interval, away_too_long
from ringkv.node.config import NodeConfig
from ringkv.node.messaging import MessagingService, PeerError
from ringkv.node.storage import Storage

log = logging.getLogger(__name__)

META_KEY = "last_alive_ms"
UPTIME_VERB = "uptime"


class AwayTooLong(Exception):
    """The node must not rejoin with the data it has (the message says why and what to do)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _peer_uptimes(config: NodeConfig, messaging: MessagingService) -> list[float]:
    async def ask(address: str) -> float | None:
        try:
            answer: Any = await messaging.request(address, UPTIME_VERB, {}, 2.0)
            return float(answer["uptime_seconds"])
        except (PeerError, KeyError, TypeError, ValueError):
            return None

    seeds = [s for s in config.seeds if s != config.peer_address]
    answers = await asyncio.gather(*(ask(s) for s in seeds))
    return [a for a in answers if a is not None]


async def check_at_start(config: NodeConfig, storage: Storage, messaging: MessagingService) -> None:
    """Raise ``AwayTooLong`` when this node must not rejoin with its data."""
    last = storage.get_meta(META_KEY)
    last_ms = last if isinstance(last, int) else None
    if last_ms is None or _now_ms() - last_ms <= config.tombstone_grace * 1000:
        return
    why = away_too_long(
        last_ms, _now_ms(), config.tombstone_grace, await _peer_uptimes(config, messaging)
    )
    if why is None:
        log.warning("this node was down longer than --tombstone-grace, but no peer ran all that "
                    "time (the cluster was down too): starting with its data")  # fmt: skip
        return
    raise AwayTooLong(
        f"{config.node_id} refuses to rejoin: {why}. To bring it back, wipe its data directory "
        f"({config.data_dir}) and start it again: it then replaces itself (same id and tokens) "
        "and streams its data from the other replicas (with --auto-join false, run "
        f"`ringkv admin replace {config.node_id}`)."
    )


def wipe(data_dir: str) -> None:
    """Remove everything in the data directory (the directory itself may be a mount point)."""
    for entry in os.scandir(data_dir):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def record_alive(storage: Storage) -> None:
    with contextlib.suppress(Exception):  # a closed or full store: the next round retries
        storage.put_meta(META_KEY, _now_ms())


async def keep_recording(config: NodeConfig, storage: Storage) -> None:
    interval = alive_interval(config.tombstone_grace)
    while True:
        record_alive(storage)
        await asyncio.sleep(interval)
