"""RocksDB with and without statistics (``Options.enable_statistics``, which the node's block
cache and write-stall metrics need): a get and a put of a 1 KiB value per step over 50,000 keys,
with the node's point-lookup options, in interleaved rounds in one process.

    flock /tmp/ringkv-heavy.lock .venv/bin/python benchmarks/rocksdb_statistics.py [--quick]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time

from rocksdict import Options, Rdict

KEYS, STEPS, ROUNDS = 50_000, 30_000, 7
VALUE = b"x" * 1024


def open_db(path: str, stats: bool) -> Rdict:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.increase_parallelism(2)
    options.set_write_buffer_size(16 << 20)
    options.optimize_for_point_lookup(64)
    if stats:
        options.enable_statistics()
    return Rdict(path, options)


def main() -> None:
    global KEYS, STEPS, ROUNDS
    if "--quick" in sys.argv[1:]:  # a smoke run for the tests
        KEYS, STEPS, ROUNDS = 2_000, 1_000, 2
    dirs = {stats: tempfile.mkdtemp(prefix="ringkv-stats-") for stats in (False, True)}
    dbs = {stats: open_db(path, stats) for stats, path in dirs.items()}
    try:
        for db in dbs.values():
            for i in range(KEYS):
                db[i.to_bytes(8, "big")] = VALUE
            db.flush()
        micros: dict[bool, list[float]] = {False: [], True: []}
        for round_ in range(ROUNDS):
            for stats in (False, True) if round_ % 2 else (True, False):
                db = dbs[stats]
                started = time.perf_counter()
                for i in range(STEPS):
                    key = ((i * 7919) % KEYS).to_bytes(8, "big")
                    db.get(key)
                    db[key] = VALUE
                micros[stats].append((time.perf_counter() - started) / STEPS * 1e6)
        for stats, values in micros.items():
            print(f"statistics={stats}: µs per get+put: min {min(values):.2f} "
                  f"median {statistics.median(values):.2f} max {max(values):.2f} "
                  f"(rounds {', '.join(f'{v:.2f}' for v in values)})")  # fmt: skip
    finally:
        for db in dbs.values():
            db.close()
        for path in dirs.values():
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
