"""Backup and restore throughput, the incremental saving, and what a backup costs a quorum
workload's tail latency.

    flock /tmp/ringkv-heavy.lock .venv/bin/python benchmarks/backup.py \
        [--keys 50000] [--value-bytes 1024] [--rounds 3] [--rate 300] [--backup-rate MB_S]
        [--json out.json]

A 3-node cluster (N=3) and the Versity S3 Gateway (tests/s3server.py) on loopback. Preload
``--keys`` values, then for each round: an open-loop quorum workload (`ringkv bench --rate
--consistency balanced`) runs for the same time once alone and once while a full backup (a new
prefix, so nothing is referenced) runs beside it, the two in alternating order; p99 of each is
recorded. Then: a second backup after rewriting 1 % of the keys (the incremental saving), and a
restore into a fresh 4-node cluster (MB/s, keys/s). Reports medians and spread over rounds.

A benchmark, not a test (tests/test_benchmarks_smoke.py runs it tiny).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import Cluster
from tests.s3server import S3Server

import ringkv.backup as backup_module
from ringkv.backup import RateLimit, Store, _call, _node_clients, run_backup, run_restore
from ringkv.client import AsyncClient, Client, RingkvError

BUCKET = "bench-backups"


class _Done(Exception):
    """--skip-restore: the loaded rounds are all that was asked for."""


async def preload(urls: list[str], keys: int, value_bytes: int, prefix: str = "k") -> None:
    client = AsyncClient(urls)
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with gate:
            for attempt in range(5):  # a loaded machine may time a write out: write it again
                try:
                    await client.put(f"{prefix}{i}", os.urandom(value_bytes), w="quorum")
                    return
                except RingkvError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.5)

    await asyncio.gather(*(one(i) for i in range(keys)))
    await client.close()


def workload(
    urls: list[str], args: argparse.Namespace, seconds: float, out: Path
) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "ringkv", "bench", "--endpoint", ",".join(urls),
        "--rate", str(args.rate), "--duration", str(seconds), "--warmup", "0.5",
        "--keys", str(args.keys), "--key-prefix", "k", "--value-bytes", str(args.value_bytes),
        "--consistency", "balanced", "--json", str(out), "--quiet",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=seconds + 120)
    run = json.loads(out.read_text())["runs"][0]
    return {"p99_ms": run["latency_ms"]["p99"], "p50_ms": run["latency_ms"]["p50"],
            "throughput": run["throughput"], "errors": run["error_count"]}  # fmt: skip


def node_side_only(endpoint: str, reads: bool, rate: float) -> int:
    """What a backup asks of the nodes, without the upload: snapshot and checksum listing on
    every node, then (``reads``) every file read through the API at ``rate``; snapshots
    deleted. Returns the bytes read. Attributes a backup's cost to the nodes or the rest."""
    entry, ring = _node_clients(endpoint, None, 30.0)
    members = [m for m in ring["nodes"] if m.get("tokens")]
    name = f"attr-{time.monotonic_ns()}"
    limit, done = RateLimit(rate), 0
    with contextlib.ExitStack() as stack:
        stack.callback(entry.close)
        for m in members:
            c = Client(f"http://{m['address']}", timeout=30.0)
            stack.callback(c.close)
            _call(c, "POST", "/v1/admin/snapshot", json.dumps({"name": name}).encode(),
                  {"Content-Type": "application/json"})  # fmt: skip
            _, _, data = _call(c, "GET", f"/v1/admin/snapshots/{name}")
            for f in json.loads(data)["file_list"] if reads else []:
                chunk = backup_module.CHUNK
                for offset in range(0, f["size"], chunk):
                    length = min(chunk, f["size"] - offset)
                    limit.take(length)
                    path = f"/v1/admin/snapshots/{name}/files/{quote(f['path'])}"
                    done += len(_call(c, "GET", f"{path}?offset={offset}&length={length}")[2])
            _call(c, "DELETE", f"/v1/admin/snapshots/{name}")
    return done


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=50000)
    parser.add_argument("--value-bytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=300.0, help="workload requests/s")
    parser.add_argument(
        "--backup-rate",
        type=float,
        default=0.0,
        help="MB/s the backups under load read at (0: unlimited)",
    )
    parser.add_argument(
        "--under",
        choices=["backup", "snapshots", "reads"],
        default="backup",
        help="what runs beside the loaded phase: whole backups (default), or only their node "
        "side: snapshots with checksum listings, or those plus reading every file (no upload)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the S3 gateway and the backup thread (they share the nodes' cores "
        "here; in a deployment they run elsewhere)",
    )
    parser.add_argument(
        "--chunk-mb", type=float, default=0, help="bytes per file read of a backup (0: as built)"
    )
    parser.add_argument("--skip-restore", action="store_true", help="only the loaded rounds")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.chunk_mb:
        backup_module.CHUNK = int(args.chunk_mb * 1024 * 1024)
    result: dict[str, Any] = {"keys": args.keys, "value_bytes": args.value_bytes,
                              "rate": args.rate, "backup_rate_mb": args.backup_rate,
                              "under": args.under, "nice": args.nice, "chunk_mb": args.chunk_mb,
                              "uptime_before": os.getloadavg()}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ringkv-backup-bench-") as tmp:
        root = Path(tmp)
        s3 = S3Server(root / "s3", nice=args.nice).start()
        source = Cluster(root / "src", nodes=3, zones=3)
        target = Cluster(root / "dst", nodes=4, zones=2)
        try:
            s3.create_bucket(BUCKET)
            os.environ.update(s3.env())
            source.start(60)
            started = time.monotonic()
            asyncio.run(preload(source.urls, args.keys, args.value_bytes))
            print(f"preloaded {args.keys} keys in {time.monotonic() - started:.1f} s", flush=True)
            endpoint = source.urls[0]
            rounds = []
            for i in range(args.rounds):
                store = Store(BUCKET, f"full{i}", endpoint=s3.endpoint)
                backups: list[dict[str, Any]] = []

                def backup_loop(stop: threading.Event, store: Store = store,
                                backups: list[dict[str, Any]] = backups) -> None:  # fmt: skip
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), args.nice)
                    n = 0
                    while not stop.is_set():
                        t0 = time.monotonic()
                        if args.under != "backup":
                            read = node_side_only(endpoint, args.under == "reads",
                                                  args.backup_rate * 1e6)  # fmt: skip
                            backups.append({"seconds": time.monotonic() - t0, "bytes": read})
                            n += 1
                            continue
                        m = run_backup(
                            endpoint, store, backup_id=f"r{n}", rate=args.backup_rate * 1e6
                        )
                        backups.append({"seconds": time.monotonic() - t0, "bytes": m["bytes"],
                                        "uploaded": m["bytes_uploaded"]})  # fmt: skip
                        store.prefix = f"{store.prefix}-{n}"  # the next one is full again
                        n += 1

                # one full backup alone first: how long the loaded phases must be
                t0 = time.monotonic()
                alone = run_backup(endpoint, Store(BUCKET, f"alone{i}", endpoint=s3.endpoint),
                                   backup_id="a")  # fmt: skip
                alone_seconds = time.monotonic() - t0
                seconds = max(10.0, 1.5 * alone_seconds)
                order = ["quiet", "backup"] if i % 2 == 0 else ["backup", "quiet"]
                row: dict[str, Any] = {"backup_alone_seconds": round(alone_seconds, 2),
                                       "backup_bytes": alone["bytes"]}  # fmt: skip
                for phase in order:
                    out = root / f"bench-{i}-{phase}.json"
                    if phase == "quiet":
                        row["quiet"] = workload(source.urls, args, seconds, out)
                    else:
                        stop = threading.Event()
                        worker = threading.Thread(target=backup_loop, args=(stop,))
                        worker.start()
                        row["backup"] = workload(source.urls, args, seconds, out)
                        stop.set()
                        worker.join()
                        row["backups_during_load"] = len(backups)
                print(json.dumps(row), flush=True)
                rounds.append(row)
            result["rounds"] = rounds
            quiet = [r["quiet"]["p99_ms"] for r in rounds]
            loaded = [r["backup"]["p99_ms"] for r in rounds]
            slowdowns = [b / q - 1 for q, b in zip(quiet, loaded, strict=True)]
            result["p99_quiet_ms"] = spread(quiet)
            result["p99_backup_ms"] = spread(loaded)
            result["p99_slowdown"] = spread(slowdowns)
            mbps = [r["backup_bytes"] / r["backup_alone_seconds"] / 1e6 for r in rounds]
            keys_s = [args.keys / r["backup_alone_seconds"] for r in rounds]
            result["backup_mb_per_s"] = spread(mbps)
            result["backup_keys_per_s"] = spread(keys_s)
            if args.skip_restore:
                raise _Done
            # incremental: rewrite 1 % of the keys, back up again under the same prefix
            store = Store(BUCKET, "incremental", endpoint=s3.endpoint)
            first = run_backup(endpoint, store, backup_id="i1")
            asyncio.run(preload(source.urls, max(1, args.keys // 100), args.value_bytes))
            second = run_backup(endpoint, store, backup_id="i2")
            result["incremental"] = {
                "full_bytes": first["bytes_uploaded"], "second_bytes": second["bytes"],
                "second_uploaded": second["bytes_uploaded"],
                "saving": round(1 - second["bytes_uploaded"] / second["bytes"], 4),
            }  # fmt: skip
            print(json.dumps(result["incremental"]), flush=True)
            source.stop()
            target.start(60)
            report = run_restore(target.urls[0], store, "i2", workdir=tmp)
            result["restore"] = {
                "seconds": report["elapsed_seconds"], "bytes": report["bytes_total"],
                "records_read": report["keys_done"], "records_sent": report["records_sent"],
                "mb_per_s": round(report["bytes_total"] / report["elapsed_seconds"] / 1e6, 2),
                "keys_per_s": round(args.keys / report["elapsed_seconds"], 1),
            }  # fmt: skip
            print(json.dumps(result["restore"]), flush=True)
        except _Done:
            pass
        finally:
            source.stop()
            target.stop()
            s3.stop()
    result["uptime_after"] = os.getloadavg()
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
