"""``ringkv node``: parse the configuration and serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from ringkv.node.config import parse_args
from ringkv.node.server import Api


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s {config.node_id} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    api = Api(config)
    try:
        loop.run_until_complete(_serve(api))
    except OSError as exc:
        logging.getLogger("ringkv").error("cannot start node: %s", exc)
        return 1
    finally:
        loop.close()
    return 0


async def _serve(api: Api) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully: stop accepting, let in-flight
    requests finish (up to 10 s), then stop the node, which flushes and closes RocksDB."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await api.serve(stop, shutdown_timeout=10.0)
