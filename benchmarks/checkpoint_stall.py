"""How long taking a node snapshot stops the node's other threads (its event loop).

rocksdict holds the interpreter lock for the whole ``Checkpoint.create_checkpoint`` call,
which starts by flushing the memtables. A ticker thread wakes every 0.5 ms; its longest gap
while a snapshot is taken is how long no other Python thread of the process could run.
Compared, interleaved (ABBA) on one database, with ``--records`` new records written before
each: ``before``, a bare checkpoint (what ``Snapshots.create`` did), and ``after``,
``Snapshots.create`` (the memtables flushed first without the lock). Prints medians and
spread of the longest gap.

    flock /tmp/ringkv-heavy.lock nice -n 10 .venv/bin/python benchmarks/checkpoint_stall.py \
        [--trials 20] [--records 10000] [--value-bytes 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time

from rocksdict import Checkpoint

from ringkv.node.snapshots import Snapshots
from ringkv.node.storage import Storage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--records", type=int, default=10000)
    parser.add_argument("--value-bytes", type=int, default=1024)
    args = parser.parse_args()
    gaps: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.0005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    results: dict[str, list[float]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="ringkv-checkpoint-stall-") as tmp:
        storage = Storage(f"{tmp}/db")
        snapshots = Snapshots(f"{tmp}/db")
        thread = threading.Thread(target=ticker, daemon=True)
        thread.start()
        try:
            for trial in range(args.trials):
                arm = "after" if trial % 4 in (1, 2) else "before"
                for i in range(args.records):
                    storage.db[b"k%d-%d" % (trial, i)] = os.urandom(args.value_bytes)
                time.sleep(0.05)  # the ticker runs freely again
                gaps.clear()
                if arm == "after":
                    snapshots.create(storage, f"s{trial}", {})
                else:
                    Checkpoint(storage.db).create_checkpoint(f"{tmp}/bare{trial}")
                time.sleep(0.01)
                results[arm].append(max(gaps) * 1000)
        finally:
            stop.set()
            thread.join()
            storage.close()
    print(json.dumps({
        arm: {"median_ms": round(statistics.median(v), 1), "min_ms": round(min(v), 1),
              "max_ms": round(max(v), 1), "trials": [round(x, 1) for x in v]}
        for arm, v in results.items()
    } | {"loadavg": os.getloadavg()}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
