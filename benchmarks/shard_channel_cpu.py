"""CPU of the shard channel itself: both ends of ``ringkv.node.shard_channel`` on one event
loop (uvloop), so no context switch and no scheduling delay is counted, only the channel's
work (pack, write, read, unpack, match, the extra loop turn) and the wrapper and handler.

    flock /tmp/ringkv-heavy.lock nice -n 10 .venv/bin/python benchmarks/shard_channel_cpu.py

``--callers`` coroutines (30) each send ``--requests``/callers GETs: "handed" through the
channel (RAW mode: the owning end serializes the HTTP answer, the other takes its bytes),
"local" through the same wrapper, trivial handler and HTTP serialization without it; twice
each, alternating. Prints the process's CPU (user + system) per request.

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.node.test_shard_channel import make_shard  # noqa: E402

from ringkv.node.http import Request, Response, _Clock, json_response, serialize  # noqa: E402


class Waiter:
    """Stands in for a client connection: takes the answer the channel hands it."""

    def __init__(self) -> None:
        self.server = type("Server", (), {"closing": False})()
        self.future: asyncio.Future[Any] | None = None

    def answer_raw(self, data: bytes, keep_alive: bool) -> None:
        assert self.future is not None
        self.future.set_result(data)

    def answer(self, request: Request, response: Response) -> None:
        assert self.future is not None
        self.future.set_result(response)


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(args: argparse.Namespace) -> None:
    root = tempfile.mkdtemp(prefix="ringkv-channel-")
    first, second = make_shard(0, root), make_shard(1, root)

    async def handler(request: Request) -> Response:
        return json_response({"key": request.path})

    for shard in (first, second):
        shard.router.add_prefix("GET", "/s1/", handler)
    assert first.channel is not None and second.channel is not None
    await first.channel.start()
    await second.channel.start()
    loop = asyncio.get_running_loop()
    headers = {"host": "t", "authorization": "Bearer good", "user-agent": "wrk"}
    clock = _Clock()
    each = args.requests // args.callers

    async def local() -> None:
        for j in range(each):
            request = Request("GET", f"/s1/k{j}", "r=quorum", headers, None, b"", True)
            response = await first.wrap(request, handler)
            b"".join(serialize(response, False, True, clock.date()))

    async def handed() -> None:
        waiter = Waiter()
        for j in range(each):
            request = Request("GET", f"/s1/k{j}", "r=quorum", headers, None, b"", True)
            waiter.future = loop.create_future()
            first.channel.hand_over_raw(waiter, request, 1)  # type: ignore[union-attr,arg-type]
            await waiter.future

    for name, caller in (("local", local), ("handed", handed)) * 2:
        cpu0, wall0 = cpu(), time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(args.callers)))
        count = each * args.callers
        print(f"{name}: {1e6 * (cpu() - cpu0) / count:.1f} µs CPU per request (both ends), "
              f"{count / (time.perf_counter() - wall0):,.0f} requests/s")  # fmt: skip
    await first.channel.close(1.0)
    await second.channel.close(1.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40000)
    parser.add_argument("--callers", type=int, default=30)
    import uvloop

    uvloop.run(main(parser.parse_args()))
