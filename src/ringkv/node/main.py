"""``ringkv node``: parse the configuration and serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence

from ringkv.node import logs, shards
from ringkv.node.absence import AwayTooLong
from ringkv.node.config import parse_args
from ringkv.node.node import Node
from ringkv.node.shards import ShardLayout

FD_RESERVE = 4096  # descriptors beyond client connections: peers, RocksDB files, logs


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (up to the hard limit, which needs no
    privilege); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return wanted if soft == resource.RLIM_INFINITY else soft


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    logs.configure(config.node_id, config.log_level, config.log_format)
    layout: ShardLayout | None = None
    if shards.shard_count(config) > 1:
        if shards.SHARD_INDEX_ENV not in os.environ:
            return shards.supervise(config, list(sys.argv[1:] if argv is None else argv))
        layout = ShardLayout.of(config)
        config = layout.worker_config(config)
    else:
        try:
            shards.check_recorded(config.data_dir, 1)
        except shards.ShardCountChanged as exc:
            logging.getLogger("ringkv").error("%s", exc)
            return 1
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # Client connections, peer connections and RocksDB's files all take descriptors.
    wanted = config.max_client_connections + FD_RESERVE
    have = raise_open_files_limit(wanted)
    if have < wanted:
        logging.getLogger("ringkv").warning(
            "only %d open files allowed (ulimit -n); --max-client-connections %d wants %d",
            have, config.max_client_connections, wanted,
        )  # fmt: skip
    node = Node(config, layout)
    try:
        loop.run_until_complete(_serve(node))
    except OSError as exc:
        logging.getLogger("ringkv").error("cannot start node: %s", exc)
        return 1
    except AwayTooLong as exc:
        logging.getLogger("ringkv").error("%s", exc)
        return 1
    finally:
        loop.close()
    return 0


async def _serve(node: Node) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully: stop accepting, let in-flight
    requests finish (up to 10 s), then stop the node, which flushes and closes RocksDB."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await node.serve(stop, shutdown_timeout=10.0)
