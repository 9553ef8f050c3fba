"""Streaming throughput of a ring change: preload a 3-node cluster, start a 4th node, and time
its join (records and bytes streamed per second, from the change's own progress report).

    .venv/bin/python benchmarks/streaming.py [--keys 20000] [--value-bytes 1024]

A benchmark, not a test (tests/test_benchmarks_smoke.py runs it with --keys 200).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import Cluster, wait_until

from ringkv.client import AsyncClient, Client


async def preload(urls: list[str], keys: int, value: bytes) -> None:
    client = AsyncClient(urls)
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with gate:
            await client.put(f"k{i}", value, w="all")

    await asyncio.gather(*(one(i) for i in range(keys)))
    await client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=20000)
    parser.add_argument("--value-bytes", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ringkv-stream-") as tmp:
        cluster = Cluster(Path(tmp), nodes=4, zones=3, extra_args=["--anti-entropy-interval", "0"])
        try:
            for node in cluster.nodes[:3]:
                node.start()
            cluster.wait_ready(60)
            started = time.monotonic()
            asyncio.run(preload(cluster.urls[:3], args.keys, os.urandom(args.value_bytes)))
            print(f"preloaded {args.keys} keys in {time.monotonic() - started:.1f} s")
            joining = cluster.node(3)
            joining.start()

            def done() -> dict | None:  # type: ignore[type-arg]
                for change in Client(joining.url).progress()["changes"]:
                    if (change.get("op"), change.get("node"), change.get("state")) == (
                        "join",
                        joining.node_id,
                        "done",
                    ):
                        return change
                return None

            change = wait_until(done, 600, interval=0.2, message="join done")
            seconds = max((change["finished_ms"] - change["started_ms"]) / 1000, 1e-3)
            print(
                f"join streamed {change['keys_sent']} records, {change['bytes_sent'] / 1e6:.1f} MB "
                f"in {seconds:.2f} s: {change['keys_sent'] / seconds:.0f} records/s, "
                f"{change['bytes_sent'] / 1e6 / seconds:.2f} MB/s; load {os.getloadavg()[0]:.1f}"
            )
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
