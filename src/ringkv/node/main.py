"""``ringkv node``: parse the configuration and serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from ringkv.node.config import parse_args
from ringkv.node.server import NODE_KEY, create_app


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
    try:
        # run_app turns SIGTERM/SIGINT into a graceful shutdown: stop accepting, wait for
        # in-flight requests (up to shutdown_timeout), then run the cleanup that flushes RocksDB.
        app = create_app(config)
        tls = app[NODE_KEY].tls
        web.run_app(
            app,
            ssl_context=tls.server if tls is not None else None,
            host=config.host,
            port=config.port,
            shutdown_timeout=10.0,
            access_log=None,
            print=None,
            handle_signals=True,
            reuse_address=True,
            loop=loop,
        )
    except OSError as exc:
        logging.getLogger("ringkv").error("cannot start node: %s", exc)
        return 1
    return 0
