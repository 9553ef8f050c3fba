"""CPU per request of the coordinator alone, two source trees interleaved: for each round, each
tree runs in its own process (PYTHONPATH=TREE/src, the tree's tests/node/standins.py) a
coordinator over a three-node ring whose peers answer at once (no sockets), and times quorum
reads and writes with ``time.process_time``. Only the coordinator's own work is measured: the
round, placement, storage of its copy, the callbacks; not HTTP, not the peer link.

    flock /tmp/ringkv-heavy.lock .venv/bin/python benchmarks/coordinator_ab.py \\
        --a main=/work/main --b branch=. --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import asyncio, json, sys, tempfile, time
from pathlib import Path
from ringkv.core.quorum import Quorum
from ringkv.core.versions import VClock
from tests.node.standins import coordinator

class Peers:
    storage = None  # the coordinator's own: replicas answer with the same record (no repair)
    def is_connected(self, address): return True
    def supports(self, address, feature): return True
    def call(self, address, verb, body, timeout):
        future = asyncio.get_running_loop().create_future()
        future.set_result(self.storage.get_raw(body["key"]) or b"" if verb == "read" else True)
        return future

ops = int(sys.argv[1])
peers = Peers()
c = coordinator(Path(tempfile.mkdtemp()), "n1", peers, "--read-repair-chance", "0")
peers.storage = c.storage
quorum = Quorum(3, 2, False)
keys = [b"k%d" % i for i in range(1000)]

async def run():
    for key in keys:  # warm-up, and every key exists
        await c.put(key, b"v" * 1024, VClock.empty(), quorum)
    out = {}
    for name in ("get", "put"):
        started = time.process_time()
        for i in range(ops):
            key = keys[i % len(keys)]
            if name == "get":
                await c.get(key, quorum)
            else:
                await c.put(key, b"v" * 1024, VClock.empty(), quorum)
        out[name] = (time.process_time() - started) / ops * 1e6
    await c.drain(1.0)
    print(json.dumps(out))

asyncio.run(run())
"""


def side(text: str) -> tuple[str, Path]:
    name, _, tree = text.partition("=")
    if not tree:
        raise argparse.ArgumentTypeError("give NAME=PATH")
    return name, Path(tree).resolve()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=side, required=True, metavar="NAME=TREE")
    parser.add_argument("--b", type=side, required=True, metavar="NAME=TREE")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sides = [args.a, args.b]
    results: dict[str, dict[str, list[float]]] = {n: {"get": [], "put": []} for n, _ in sides}
    for round_ in range(args.rounds):
        order = sides if round_ % 2 == 0 else sides[::-1]  # ABBA: no side always goes first
        for name, tree in order:
            env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree}"}
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.ops)], env=env,
                                 cwd=tree, check=True, capture_output=True, text=True)  # fmt: skip
            for op, us in json.loads(out.stdout.strip().splitlines()[-1]).items():
                results[name][op].append(us)
        print(f"round {round_}: " + ", ".join(
            f"{n} get {r['get'][-1]:.1f} put {r['put'][-1]:.1f} us" for n, r in results.items()
        ), flush=True)  # fmt: skip
    (a, _), (b, _) = sides
    for op in ("get", "put"):
        ma, mb = (statistics.median(results[s][op]) for s in (a, b))
        ratios = [y / x for x, y in zip(results[a][op], results[b][op], strict=True)]
        print(f"{op}: {a} median {ma:.1f} us (min-max {min(results[a][op]):.1f}-"
              f"{max(results[a][op]):.1f}), {b} median {mb:.1f} us (min-max "
              f"{min(results[b][op]):.1f}-{max(results[b][op]):.1f}); {b}/{a} {mb / ma:.3f}, "
              f"same-round ratios {min(ratios):.3f}-{max(ratios):.3f} "
              f"(median {statistics.median(ratios):.3f})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
