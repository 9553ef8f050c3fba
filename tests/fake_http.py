"""`ThreadedApp`: an aiohttp application served on 127.0.0.1 from its own thread and event
loop, so that synchronous code under test (the CLI, the sync client) can call it."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from aiohttp import web


class ThreadedApp:
    """Serves ``app`` until `close`; ``url`` is where it listens."""

    def __init__(self, app: web.Application, **runner_options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.runner: web.AppRunner = self.call(self._start(app, runner_options))
        self.port: int = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"

    def call(self, coro: Any) -> Any:
        """Run ``coro`` on the app's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    @staticmethod
    async def _start(app: web.Application, options: dict[str, Any]) -> web.AppRunner:
        # No access log: the CLI's log handler writes to a test's captured stderr, which a
        # request finishing after its test would find closed.
        runner = web.AppRunner(app, access_log=None, **options)
        await runner.setup()
        # Bound without SO_REUSEADDR (TCPSite sets it), so the kernel never hands this
        # listener a port another socket still holds.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        return runner

    def close(self) -> None:
        self.call(self.runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
