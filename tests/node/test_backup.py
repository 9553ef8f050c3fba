"""Snapshots, backups to a real S3-compatible store (tests/s3server.py) and restores into a
cluster of another shape, on real multi-process clusters."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ringkv.backup import BackupError, Store, load_manifest, prune, run_backup, run_restore
from ringkv.client import GetResult
from tests.cluster import wait_until
from tests.conftest import MakeCluster
from tests.s3server import S3Server

# the first test may build the S3 gateway (tests/s3server.py) when `make test` did not
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
BUCKET = "ringkv-backups"


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    with S3Server(tmp_path / "s3") as server:
        server.create_bucket(BUCKET)
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        yield server


def _store(s3: S3Server, prefix: str = "prod") -> Store:
    return Store(BUCKET, prefix, endpoint=s3.endpoint)


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw[:1] == b"{" else raw
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_snapshot_endpoints(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(nodes=1, zones=1, replication_factor=1)
    client = cluster.client(0)
    client.put_many({f"k{i}": b"v" * 100 for i in range(500)})
    url = cluster.node(0).url
    status, snap = _http("POST", url + "/v1/admin/snapshot", {"name": "s1"})
    assert status == 201, snap
    assert snap["name"] == "s1" and snap["node"] == "n1" and snap["files"] > 0
    assert _http("POST", url + "/v1/admin/snapshot", {"name": "s1"})[0] == 409
    status, bad = _http("POST", url + "/v1/admin/snapshot", {"name": "../x"})
    assert status == 400 and bad["error"] == "bad_request"
    status, listed = _http("GET", url + "/v1/admin/snapshots")
    assert status == 200 and [s["name"] for s in listed["snapshots"]] == ["s1"]
    assert listed["bytes"] >= snap["bytes"] > 0
    status, detail = _http("GET", url + "/v1/admin/snapshots/s1")
    sst = next(f for f in detail["file_list"] if f["path"].endswith(".sst"))
    assert len(sst["sha256"]) == 64
    status, data = _http("GET", url + f"/v1/admin/snapshots/s1/files/{sst['path']}")
    assert status == 200 and len(data) == sst["size"]
    assert hashlib.sha256(data).hexdigest() == sst["sha256"]
    half = sst["size"] // 2
    ranged = b"".join(  # raw bytes (_http would take an answer starting with "{" for JSON)
        urllib.request.urlopen(
            url + f"/v1/admin/snapshots/s1/files/{sst['path']}?offset={o}&length={n}", timeout=30
        ).read()
        for o, n in ((0, half), (half, sst["size"] - half))
    )
    assert ranged == data
    assert _http("GET", url + "/v1/admin/snapshots/s1/files/..%2F..%2Fetc%2Fpasswd")[0] == 404
    assert client.status()["snapshots"]["count"] == 1
    metrics = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    assert "ringkv_snapshot_bytes" in metrics
    # the snapshot is a point in time: later writes are not in it, and it survives them
    client.put_many({f"later{i}": b"x" for i in range(50)})
    assert _http("GET", url + "/v1/admin/snapshots/s1")[1]["file_list"] == detail["file_list"]
    assert _http("DELETE", url + "/v1/admin/snapshots/s1") == (200, {"deleted": "s1"})
    assert _http("DELETE", url + "/v1/admin/snapshots/s1")[0] == 404
    assert client.status()["snapshots"]["count"] == 0


def _read_all(client: Any, keys: list[str], r: str = "all") -> dict[str, GetResult]:
    out: dict[str, GetResult] = {}
    for start in range(0, len(keys), 100):
        answers = client.get_many(keys[start : start + 100], r=r)
        for key, answer in answers.items():
            assert isinstance(answer, GetResult), (key, answer)
            out[key] = answer
    return out


KEYS = 20_000
SIBLING_KEYS = 1_000
DELETED_KEYS = 2_000


def _write_dataset(client: Any) -> list[str]:
    keys = [f"user/{i:06d}" for i in range(KEYS)]
    for start in range(0, KEYS, 100):
        chunk = keys[start : start + 100]
        errors = client.put_many({k: f"v1-{k}".encode() for k in chunk}, w="all")
        assert all(isinstance(v, str) for v in errors.values())
    # siblings: a second write without a context is concurrent with the first
    for start in range(0, SIBLING_KEYS, 100):
        chunk = keys[start : start + 100]
        client.put_many({k: f"v2-{k}".encode() for k in chunk}, w="all")
    deleted = keys[SIBLING_KEYS : SIBLING_KEYS + DELETED_KEYS]
    for start in range(0, len(deleted), 100):
        client.delete_many(deleted[start : start + 100], w="all")
    return keys


def test_backup_restore_into_another_shape(
    make_cluster: MakeCluster, s3: S3Server, tmp_path: Path
) -> None:
    source = make_cluster(nodes=3, zones=3)
    keys = _write_dataset(source.client(0))
    before = _read_all(source.client(0), keys)
    assert sum(1 for r in before.values() if len(r.siblings) == 2) == SIBLING_KEYS
    assert sum(1 for r in before.values() if not r.found) == DELETED_KEYS
    store = _store(s3)
    reports: list[dict[str, Any]] = []
    first = run_backup(source.urls[0], store, backup_id="b1", cluster="src",
                       on_progress=reports.append)  # fmt: skip
    assert first["cluster"] == "src" and sorted(first["nodes"]) == ["n1", "n2", "n3"]
    assert first["ring"]["replication_factor"] == 3
    assert all(len(n["tokens"]) > 0 for n in first["ring"]["nodes"])
    assert reports[-1]["state"] == "done" and reports[-1]["bytes_done"] == first["bytes"]
    assert all(f["sha256"] for n in first["nodes"].values() for f in n["files"])
    # the node snapshots are gone once uploaded
    assert source.client(0).status()["snapshots"]["count"] == 0
    # incremental: nothing changed, so the SST files are referenced, not uploaded again
    second = run_backup(source.urls[0], store, backup_id="b2", cluster="src")
    assert second["bytes_reused"] > 0.5 * second["bytes"]
    assert second["bytes_uploaded"] < first["bytes_uploaded"]
    # a rerun of a complete backup does nothing
    assert run_backup(source.urls[0], store, backup_id="b2") == second
    source.stop()

    target = make_cluster(nodes=4, zones=2)
    report = run_restore(target.urls[1], store, "b2", workdir=str(tmp_path))
    assert report["state"] == "done" and report["keys_done"] >= KEYS
    after = _read_all(target.client(2), keys)
    for key in keys:
        old, new = before[key], after[key]
        assert new.found == old.found, key
        assert sorted(new.siblings) == sorted(old.siblings), key
    # context semantics: the restored context covers every sibling, so a write with it
    # replaces them all; a write without it adds a sibling
    sample = keys[:5]
    for key in sample:
        target.client(0).put(key, b"resolved", context=after[key].context, w="all")
        assert target.client(1).get(key, r="all").siblings == [b"resolved"]
    deleted = keys[SIBLING_KEYS]
    target.client(0).put(deleted, b"new", w="all")
    assert target.client(0).get(deleted, r="all").siblings == [b"new"]
    # a restore merges with newer data and never overwrites it: restoring again keeps
    # the writes made since
    run_restore(target.urls[0], store, "b2", workdir=str(tmp_path))
    for key in sample:
        assert target.client(1).get(key, r="all").siblings == [b"resolved"]
    assert target.client(0).get(deleted, r="all").siblings == [b"new"]


def test_corrupt_or_partial_backup_is_refused(
    make_cluster: MakeCluster, s3: S3Server, tmp_path: Path
) -> None:
    source = make_cluster(nodes=3, zones=3)
    source.client(0).put_many({f"k{i}": b"v" for i in range(300)}, w="all")
    store = _store(s3, prefix="corrupt")
    manifest = run_backup(source.urls[0], store, backup_id="b1")
    source.stop()
    target = make_cluster(nodes=3, zones=3)
    victim = next(f for f in manifest["nodes"]["n2"]["files"] if f["path"].endswith(".sst"))
    body = s3.client().get_object(Bucket=BUCKET, Key=victim["key"])["Body"].read()
    flipped = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
    s3.client().put_object(Bucket=BUCKET, Key=victim["key"], Body=flipped)
    with pytest.raises(BackupError, match=victim["key"].replace("/", ".")):
        run_restore(target.urls[0], store, "b1", workdir=str(tmp_path))
    assert target.client(0).keys()[0] == []  # nothing was written
    # a missing file is refused too, naming it
    s3.client().delete_object(Bucket=BUCKET, Key=victim["key"])
    with pytest.raises(BackupError, match="incomplete"):
        run_restore(target.urls[0], store, "b1", workdir=str(tmp_path))
    # and a backup without its manifest (interrupted) is not complete
    s3.client().delete_object(Bucket=BUCKET, Key=store.key("b1", "manifest.json"))
    with pytest.raises(BackupError, match="not complete"):
        load_manifest(store, "b1")


def test_prune_keeps_what_newer_backups_reference(make_cluster: MakeCluster, s3: S3Server) -> None:
    cluster = make_cluster(nodes=1, zones=1, replication_factor=1)
    cluster.client(0).put_many({f"k{i}": b"v" * 50 for i in range(200)})
    store = _store(s3, prefix="prune")
    for backup_id in ("a1", "a2", "a3"):
        run_backup(cluster.urls[0], store, backup_id=backup_id)
    assert prune(store, keep=1) == ["a1", "a2"]
    assert [m["backup_id"] for m in store.manifests()] == ["a3"]
    kept = load_manifest(store, "a3")
    for node in kept["nodes"].values():
        for f in node["files"]:
            assert store.head(f["key"]) is not None, f["key"]


def _ringkv(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ringkv", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})  # fmt: skip


def test_cli_backup_list_restore_and_refusal(make_cluster: MakeCluster, s3: S3Server) -> None:
    source = make_cluster(nodes=3, zones=3)
    source.client(0).put_many({f"c{i}": f"v{i}".encode() for i in range(200)}, w="all")
    flags = ["--bucket", BUCKET, "--prefix", "cli", "--s3-endpoint", s3.endpoint]
    done = _ringkv("admin", "backup", "--endpoint", source.urls[0], *flags, "--backup-id", "c1",
                   "--cluster", "src", "--rate", "100", env=s3.env())  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["backup_id"] == "c1" and summary["bytes"] > 0
    assert "ETA" in done.stderr and "rate" in done.stderr  # the progress lines
    assert s3.secret_key not in done.stdout + done.stderr  # credentials are never printed
    listed = _ringkv("admin", "backups", *flags, "--json", env=s3.env())
    assert [r["backup_id"] for r in json.loads(listed.stdout) if r["complete"]] == ["c1"]
    source.stop()
    target = make_cluster(nodes=2, zones=2, replication_factor=2)
    restored = _ringkv("admin", "restore", "c1", "--endpoint", target.urls[0], *flags,
                       env=s3.env())  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert target.client(1).get("c7", r="all").siblings == [b"v7"]
    # a corrupt file: refused, naming it, exit 1
    key = next(o["Key"] for o in s3.client().list_objects_v2(Bucket=BUCKET, Prefix="cli/c1/")[
        "Contents"] if o["Key"].endswith(".sst"))  # fmt: skip
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=b"not an sst file")
    refused = _ringkv("admin", "restore", "c1", "--endpoint", target.urls[0], *flags,
                      env=s3.env())  # fmt: skip
    assert refused.returncode == 1 and key in refused.stderr, refused.stderr
    missing = _ringkv("admin", "restore", "nope", "--endpoint", target.urls[0], *flags,
                      env=s3.env())  # fmt: skip
    assert missing.returncode == 1 and "not complete" in missing.stderr


def test_a_second_snapshot_hashes_only_the_files_written_since(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SST files are immutable and shared (hard links) between the database and its
    snapshots: their checksums are kept by inode, so an incremental backup's listing reads
    only what is new."""
    import ringkv.node.snapshots as snapshots
    from ringkv.node.storage import Storage

    hashed: list[str] = []
    real = snapshots.file_sha256

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(snapshots, "file_sha256", counting)
    storage = Storage(str(tmp_path / "db"))
    snaps = snapshots.Snapshots(str(tmp_path / "db"))
    try:
        for batch in range(3):
            for i in range(200):
                storage.db[b"k%d-%d" % (batch, i)] = os.urandom(100)
            storage.flush()
        snaps.create(storage, "one", {})
        first = {f["path"]: f["sha256"] for f in snaps.describe("one", True)["file_list"]}
        first_ssts = {name for name in hashed if name.endswith(".sst")}
        assert len(first_ssts) >= 3
        hashed.clear()
        storage.db[b"new"] = b"x"
        storage.flush()
        snaps.create(storage, "two", {})
        second = {f["path"]: f["sha256"] for f in snaps.describe("two", True)["file_list"]}
        new_ssts = {p for p in second if p.endswith(".sst")} - set(first)
        assert len(new_ssts) == 1
        assert {name for name in hashed if name.endswith(".sst")} == new_ssts
        for path in first.keys() & second.keys():
            if path.endswith(".sst"):
                assert first[path] == second[path] == real(snaps.root / "two" / path)
    finally:
        storage.close()


def test_a_snapshot_flushes_the_memtables_before_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rocksdict holds the interpreter lock for the whole checkpoint call, which flushes the
    memtables first: that flush would stop the node's event loop. The memtables are written
    out before, without the lock, so the checkpoint finds them empty; the snapshot still holds
    every record, hint and metadata entry written before it."""
    from rocksdict import AccessType, Options, Rdict

    import ringkv.node.snapshots as snapshots
    from ringkv.node.storage import HINTS_CF, META_CF, Storage

    storage = Storage(str(tmp_path / "db"))
    families = {"records": storage.db, "hints": storage.hints}
    at_checkpoint: list[dict[str, int]] = []
    real = snapshots.Checkpoint  # type: ignore[attr-defined]

    class Watched:
        def __init__(self, db: Any) -> None:
            self.inner = real(db)

        def create_checkpoint(self, path: str) -> None:
            at_checkpoint.append({
                name: int(f.property_int_value("rocksdb.num-entries-active-mem-table") or 0)
                for name, f in families.items()
            })  # fmt: skip
            self.inner.create_checkpoint(path)

    monkeypatch.setattr(snapshots, "Checkpoint", Watched)
    snaps = snapshots.Snapshots(str(tmp_path / "db"))
    try:
        for i in range(2000):
            storage.db[b"k%d" % i] = os.urandom(100)
            storage.hints[b"h%d" % i] = b"x"
        storage.put_meta("probe", 7)
        assert storage.db.property_int_value("rocksdb.num-entries-active-mem-table") == 2000
        snaps.create(storage, "s1", {})
        assert at_checkpoint == [{"records": 0, "hints": 0}]
    finally:
        storage.close()
    opened = Rdict(
        str(snaps.root / "s1"),
        Options(raw_mode=True),
        column_families={META_CF: Options(raw_mode=True), HINTS_CF: Options(raw_mode=True)},
        access_type=AccessType.read_only(),
    )
    try:
        assert sum(1 for _ in opened.items()) == 2000
        hints = opened.get_column_family(HINTS_CF)
        meta = opened.get_column_family(META_CF)
        assert sum(1 for _ in hints.items()) == 2000
        assert meta.get(b"probe") is not None
        hints.close()
        meta.close()
    finally:
        opened.close()


def test_a_backup_under_a_quorum_workload_loses_nothing(
    make_cluster: MakeCluster, s3: S3Server, tmp_path: Path
) -> None:
    """Quorum writes run before, during and after a backup: none fails, every write
    acknowledged before the backup began is in it (restored into an empty cluster of another
    shape), and every write acknowledged at all reads back from the source cluster."""
    source = make_cluster(nodes=3, zones=3)
    acked: list[tuple[str, bytes, float]] = []  # key, value, when acknowledged (monotonic)
    failures: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        kv = source.client(0)
        i = 0
        deadline = time.monotonic() + 120  # bounded, whatever happens to the backup
        while not stop.is_set() and time.monotonic() < deadline and i < 20_000:
            key, value = f"live-{i}", b"v%d" % i
            try:
                kv.put(key, value, w="quorum")
            except Exception as exc:  # every failure counts: the assertion below shows them
                failures.append(exc)
            else:
                acked.append((key, value, time.monotonic()))
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_until(lambda: len(acked) >= 200, 60, message="writes before the backup")
        began = time.monotonic()
        run_backup(source.urls[0], _store(s3), backup_id="live")
        after_backup = len(acked)
        wait_until(lambda: len(acked) >= after_backup + 100, 60, message="writes after it")
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:3]
    before = [(k, v) for k, v, at in acked if at < began]
    assert len(before) >= 200 and len(acked) > len(before)
    got = source.client(1).get_many([k for k, _, _ in acked], r="quorum")
    assert all(got[k].value == v for k, v, _ in acked)  # type: ignore[union-attr]
    source.stop()

    target = make_cluster(nodes=4, zones=2)
    run_restore(target.urls[0], _store(s3), "live", workdir=str(tmp_path))
    restored = target.client(2).get_many([k for k, _ in before], r="quorum")
    missing = [k for k, v in before if restored[k].value != v]  # type: ignore[union-attr]
    assert not missing, missing[:10]


def test_a_backup_of_sharded_nodes_holds_every_shard_and_restores_into_shards(
    make_cluster: MakeCluster, s3: S3Server, tmp_path: Path
) -> None:
    """A node of several shards keeps each shard's keys in its own database: its snapshot is
    one checkpoint per shard (files under shard-I/), and a restore into sharded nodes puts
    each key into the shard that serves it."""
    source = make_cluster(nodes=3, zones=3, shards=2)
    keys = _write_dataset(source.client(0))
    before = _read_all(source.client(0), keys)
    url = source.node(0).url
    status, snap = _http("POST", url + "/v1/admin/snapshot", {"name": "s1"})
    assert status == 201, snap
    assert snap["shards"] == 2
    detail = _http("GET", url + "/v1/admin/snapshots/s1")[1]
    tops = {f["path"].split("/")[0] for f in detail["file_list"]}
    assert tops == {"shard-0", "shard-1"}
    assert detail["files"] == len(detail["file_list"])
    assert detail["bytes"] == sum(f["size"] for f in detail["file_list"])
    sst = next(f for f in detail["file_list"] if f["path"].startswith("shard-1/") and
               f["path"].endswith(".sst"))  # fmt: skip
    with urllib.request.urlopen(url + f"/v1/admin/snapshots/s1/files/{sst['path']}") as answer:
        assert hashlib.sha256(answer.read()).hexdigest() == sst["sha256"]
    assert [s["name"] for s in _http("GET", url + "/v1/admin/snapshots")[1]["snapshots"]] == ["s1"]
    # the metrics sum over the shards to the node's values: one snapshot, all of its bytes
    with urllib.request.urlopen(url + "/metrics") as answer:
        families = {f.name: f for f in text_string_to_metric_families(answer.read().decode())}
    for name, whole in (("ringkv_snapshots", 1), ("ringkv_snapshot_bytes", detail["bytes"])):
        samples = families[name].samples
        assert {s.labels.get("shard") for s in samples} == {"0", "1"}, samples
        assert sum(s.value for s in samples) == whole, samples
    assert _http("POST", url + "/v1/admin/snapshot", {"name": "s1"})[0] == 409
    assert _http("DELETE", url + "/v1/admin/snapshots/s1") == (200, {"deleted": "s1"})
    assert _http("GET", url + "/v1/admin/snapshots")[1]["snapshots"] == []
    assert _http("GET", url + "/v1/admin/snapshots/s1")[0] == 404

    store = _store(s3, "sharded")
    manifest = run_backup(source.urls[0], store, backup_id="b1")
    assert all(
        {f["path"].split("/")[0] for f in node["files"]} == {"shard-0", "shard-1"}
        for node in manifest["nodes"].values()
    )
    source.stop()
    target = make_cluster(nodes=3, zones=3, shards=3)
    report = run_restore(target.urls[0], store, "b1", workdir=str(tmp_path))
    assert report["state"] == "done"
    # the node that took the restore wrote its own copies into the shards that serve them:
    # a read at one, answered by that node's own copy, finds every key (before any read
    # at all could repair one)
    here = _read_all(target.client(0), keys, r="one")
    assert [k for k in keys if here[k].found != before[k].found] == []
    after = _read_all(target.client(1), keys)
    for key in keys:
        assert after[key].found == before[key].found, key
        assert sorted(after[key].siblings) == sorted(before[key].siblings), key
