"""Cluster backups to S3-compatible object storage, and restores from them.

Run from any machine that reaches the nodes' HTTP API and the bucket (the ``ringkv admin
backup`` / ``restore`` commands, or the operator): the credentials stay with whoever runs the
backup and never go to the nodes, and the nodes only take checkpoints and serve their files
(``ringkv.node.snapshot_api``).

Backup (``run_backup``):

1. Snapshot every ring member (``POST /v1/admin/snapshot``, named ``backup-<id>``), one right
   after the other, before anything is copied: the snapshots are as close together as the
   requests allow. A rerun with the same id reuses the snapshots already taken.
2. For each node, list the snapshot's files with their SHA-256, and copy each to
   ``<prefix>/<id>/<node>/<path>`` -- unless an earlier backup's manifest already has a file
   with the same name, size and checksum (RocksDB SST files never change), which is referenced
   instead (incremental), or the object is already there with that checksum (a resumed run).
   Reading from the nodes is throttled by ``rate`` bytes per second.
3. Write ``<prefix>/<id>/manifest.json`` last: format version, cluster name, the ring (nodes,
   zones, tokens), times, and every file with its size, checksum and object key. A backup
   without a manifest is incomplete and cannot be restored.

Restore (``run_restore``): download every file of the manifest and check its size and
SHA-256 -- any missing or corrupt file refuses the restore, naming it, before anything is
written -- then read every record (and every hint) from each node's checkpoint and send them
to ``POST /v1/admin/restore``, which merges each into every replica of its key on the current
ring: any cluster size or zone layout, clocks and siblings kept, tombstones honoured, newer
data never overwritten. Identical copies of a record (the N replicas) are sent once.

Guarantee: every write acknowledged before the backup began (before the first snapshot) is in
the backup; writes acknowledged while the snapshots were taken may or may not be.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgpack

from ringkv.client import Client, RingkvError, error_from_response
from ringkv.core.token_bucket import TokenBucket

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHUNK = 1024 * 1024  # per request for a snapshot file (a node serves at most 1 MiB a request)
RESTORE_BATCH_RECORDS = 500
RESTORE_BATCH_BYTES = 512 * 1024


class BackupError(Exception):
    """A backup or restore that cannot proceed (the message names the cause, e.g. the file)."""


@dataclass
class Store:
    """Where backups live: a bucket and a key prefix, reached with a boto3 S3 client.

    Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SHARED_CREDENTIALS_FILE`` or ``~/.aws/credentials``, ...) unless given here (the
    operator passes a Kubernetes Secret's keys). They are never logged."""

    bucket: str
    prefix: str = "ringkv"
    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    _client: Any = field(default=None, repr=False)

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                config=Config(
                    retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}
                ),
            )
        return self._client

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
            return head
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def get_json(self, key: str) -> Any | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        try:
            return json.loads(body)
        except ValueError as exc:
            raise BackupError(f"{key}: not a valid manifest ({exc})") from None

    def put_json(self, key: str, document: Any) -> None:
        body = json.dumps(document, indent=1, sort_keys=True).encode()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def backup_ids(self) -> list[str]:
        """Every backup id under the prefix (complete or not), oldest name first."""
        ids = []
        paginator = self.client.get_paginator("list_objects_v2")
        base = self.key() + "/" if self.key() else ""
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
            for common in page.get("CommonPrefixes") or []:
                ids.append(common["Prefix"][len(base) :].strip("/"))
        return sorted(ids)

    def manifests(self) -> list[dict[str, Any]]:
        """The complete backups' manifests, oldest first."""
        found = []
        for backup_id in self.backup_ids():
            manifest = self.get_json(self.key(backup_id, MANIFEST))
            if isinstance(manifest, dict):
                found.append(manifest)
        return sorted(found, key=lambda m: (m.get("started_ms", 0), m.get("backup_id", "")))

    def delete_backup(self, backup_id: str, keep: set[str]) -> int:
        """Delete a backup's own objects except those in ``keep`` (referenced by later ones)."""
        paginator = self.client.get_paginator("list_objects_v2")
        doomed = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(backup_id) + "/"):
            for item in page.get("Contents") or []:
                if item["Key"] not in keep or item["Key"].endswith("/" + MANIFEST):
                    doomed.append({"Key": item["Key"]})
        # the manifest first: a half-deleted backup is then incomplete, never wrong
        doomed.sort(key=lambda d: not d["Key"].endswith("/" + MANIFEST))
        for start in range(0, len(doomed), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": doomed[start : start + 1000]}
            )
        return len(doomed)


class RateLimit:
    """``rate`` bytes per second (0: unlimited) with ``ringkv.core.token_bucket``; blocking
    (the backup runs in its own thread or process)."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.bucket = TokenBucket(clock(), rate)

    def take(self, size: int) -> None:
        if self.rate > 0:
            wait = self.bucket.take(size, self.rate, self.clock())
            if wait > 0:
                self.sleep(wait)


@dataclass
class Progress:
    """What a backup or restore has done so far, for the progress line and the operator."""

    op: str
    backup_id: str
    state: str = "running"
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_uploaded: int = 0
    bytes_reused: int = 0
    keys_total: int | None = None
    keys_done: int = 0
    started: float = field(default_factory=time.monotonic)
    error: str | None = None

    def report(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.bytes_done / elapsed
        left: float | None
        if self.op == "restore" and self.keys_total:
            left = (self.keys_total - self.keys_done) / max(self.keys_done / elapsed, 1e-9)
        else:
            left = (self.bytes_total - self.bytes_done) / rate if rate > 0 else None
        return {
            "op": self.op,
            "backup_id": self.backup_id,
            "state": self.state,
            "files_total": self.files_total,
            "files_done": self.files_done,
            "bytes_total": self.bytes_total,
            "bytes_done": self.bytes_done,
            "bytes_uploaded": self.bytes_uploaded,
            "bytes_reused": self.bytes_reused,
            "keys_total": self.keys_total,
            "keys_done": self.keys_done,
            "elapsed_seconds": round(elapsed, 3),
            "rate_bytes_per_second": round(rate, 1),
            "keys_per_second": round(self.keys_done / elapsed, 1),
            "eta_seconds": None if left is None or self.state != "running" else round(left, 1),
            "error": self.error,
        }


Listener = Callable[[dict[str, Any]], None]


def _node_clients(
    endpoints: str, token: str | None, timeout: float
) -> tuple[Client, dict[str, Any]]:
    client = Client(endpoints, token=token, timeout=timeout)
    return client, client.ring()


def _call(
    client: Client,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    status, answer_headers, data = client._request(method, path, body, headers)
    if status >= 300:
        raise error_from_response(status, data)
    return status, answer_headers, data


def _member_url(member: dict[str, Any], scheme: str) -> str:
    return f"{scheme}://{member['address']}"


def new_backup_id(now: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))


def run_backup(
    endpoints: str,
    store: Store,
    *,
    backup_id: str | None = None,
    cluster: str = "ringkv",
    rate: float = 0.0,
    token: str | None = None,
    timeout: float = 30.0,
    keep_snapshots: bool = False,
    on_progress: Listener | None = None,
) -> dict[str, Any]:
    """Back the cluster up (see the module docstring); returns the manifest."""
    backup_id = backup_id or new_backup_id()
    done = store.get_json(store.key(backup_id, MANIFEST))
    if isinstance(done, dict):
        return done  # already complete
    progress = Progress("backup", backup_id)
    started_ms = int(time.time() * 1000)
    entry, ring = _node_clients(endpoints, token, timeout)
    scheme = entry.endpoints[0].scheme
    members = [n for n in ring["nodes"] if n.get("tokens")]
    if not members:
        raise BackupError("the ring has no members")
    snapshot = f"backup-{backup_id}"
    clients = {
        m["id"]: Client(_member_url(m, scheme), token=token, timeout=timeout) for m in members
    }
    try:
        # 1. every snapshot first, close together
        for m in members:
            c = clients[m["id"]]
            try:
                _call(
                    c,
                    "POST",
                    "/v1/admin/snapshot",
                    json.dumps({"name": snapshot}).encode(),
                    {"Content-Type": "application/json"},
                )
            except Exception as exc:
                if getattr(exc, "status", None) != 409:  # 409: taken by an earlier run
                    raise
        listings = {}
        for m in members:
            _, _, data = _call(clients[m["id"]], "GET", f"/v1/admin/snapshots/{snapshot}")
            listings[m["id"]] = json.loads(data)
        # 2. copy, referencing what earlier backups hold
        known: dict[tuple[str, int, str], str] = {}
        for earlier in store.manifests():
            for node in earlier.get("nodes", {}).values():
                for f in node.get("files", []):
                    if f["path"].endswith(".sst"):
                        known[(Path(f["path"]).name, f["size"], f["sha256"])] = f["key"]
        progress.files_total = sum(len(v["file_list"]) for v in listings.values())
        progress.bytes_total = sum(f["size"] for v in listings.values() for f in v["file_list"])
        limit = RateLimit(rate)
        nodes_doc: dict[str, Any] = {}
        for m in members:
            node_id = m["id"]
            listing = listings[node_id]
            files = []
            for f in listing["file_list"]:
                reused = known.get((Path(f["path"]).name, f["size"], f["sha256"]))
                key = reused or store.key(backup_id, node_id, f["path"])
                if reused:
                    progress.bytes_reused += f["size"]
                else:
                    head = store.head(key)
                    if not (
                        head
                        and head.get("ContentLength") == f["size"]
                        and head.get("Metadata", {}).get("sha256") == f["sha256"]
                    ):
                        _copy_file(clients[node_id], snapshot, f, store, key, limit)
                        progress.bytes_uploaded += f["size"]
                    else:
                        progress.bytes_reused += f["size"]
                files.append({**f, "key": key, "reused": bool(reused)})
                progress.files_done += 1
                progress.bytes_done += f["size"]
                if on_progress:
                    on_progress(progress.report())
            nodes_doc[node_id] = {
                "zone": m.get("zone"),
                "tokens": m.get("tokens", []),
                "snapshot": snapshot,
                "snapshot_created_ms": listing.get("created_ms"),
                "ring_version": listing.get("ring_version"),
                "files": files,
                "bytes": sum(f["size"] for f in files),
            }
        manifest = {
            "format_version": FORMAT_VERSION,
            "backup_id": backup_id,
            "cluster": cluster,
            "started_ms": started_ms,
            "finished_ms": int(time.time() * 1000),
            "ring": {
                "version": ring.get("version"),
                "replication_factor": ring.get("replication_factor"),
                "hash": ring.get("hash"),
                "nodes": [
                    {"id": m["id"], "zone": m.get("zone"), "tokens": m.get("tokens", [])}
                    for m in members
                ],
            },
            "nodes": nodes_doc,
            "bytes": progress.bytes_total,
            "bytes_uploaded": progress.bytes_uploaded,
            "bytes_reused": progress.bytes_reused,
            "files": progress.files_total,
        }
        store.put_json(store.key(backup_id, MANIFEST), manifest)
        if not keep_snapshots:
            for c in clients.values():
                # best effort: a snapshot left behind can be deleted by hand
                with contextlib.suppress(RingkvError, OSError):
                    _call(c, "DELETE", f"/v1/admin/snapshots/{snapshot}")
        progress.state = "done"
        if on_progress:
            on_progress(progress.report())
        return manifest
    finally:
        for c in clients.values():
            c.close()
        entry.close()


def _copy_file(
    client: Client, snapshot: str, f: dict[str, Any], store: Store, key: str, limit: RateLimit
) -> None:
    """Read one snapshot file from its node (checking its checksum) and upload it."""
    digest = hashlib.sha256()
    with tempfile.TemporaryFile() as tmp:
        offset = 0
        while offset < f["size"] or offset == 0:
            length = min(CHUNK, max(f["size"] - offset, 0)) or CHUNK
            path = (
                f"/v1/admin/snapshots/{snapshot}/files/{quote(f['path'])}"
                f"?offset={offset}&length={length}"
            )
            _, _, data = _call(client, "GET", path)
            if not data:
                break
            limit.take(len(data))  # what came: a node may answer less than asked
            digest.update(data)
            tmp.write(data)
            offset += len(data)
        if offset != f["size"] or digest.hexdigest() != f["sha256"]:
            raise BackupError(
                f"{f['path']}: read {offset} bytes that do not match the "
                "snapshot's listing (size or SHA-256)"
            )
        tmp.seek(0)
        store.client.upload_fileobj(
            tmp, store.bucket, key, ExtraArgs={"Metadata": {"sha256": f["sha256"]}}
        )


def load_manifest(store: Store, backup_id: str) -> dict[str, Any]:
    manifest = store.get_json(store.key(backup_id, MANIFEST))
    if not isinstance(manifest, dict):
        raise BackupError(
            f"backup {backup_id!r} is not complete: {store.key(backup_id, MANIFEST)} is missing"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"backup {backup_id!r} has format version "
            f"{manifest.get('format_version')}; this ringkv reads {FORMAT_VERSION}"
        )
    return manifest


def download_verified(
    store: Store, manifest: dict[str, Any], into: Path, progress: Progress | None = None
) -> None:
    """Download every file of the backup under ``into/<node>/``, checking size and SHA-256;
    a missing or corrupt file raises ``BackupError`` naming its object key."""
    from botocore.exceptions import ClientError

    for node_id, node in manifest["nodes"].items():
        for f in node["files"]:
            target = into / node_id / f["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            size = 0
            try:
                body = store.client.get_object(Bucket=store.bucket, Key=f["key"])["Body"]
            except ClientError as exc:
                raise BackupError(
                    f"{f['key']}: cannot be read from the bucket "
                    f"({exc.response.get('Error', {}).get('Code')}); "
                    "the backup is incomplete"
                ) from None
            with target.open("wb") as out:
                while chunk := body.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            if size != f["size"] or digest.hexdigest() != f["sha256"]:
                raise BackupError(
                    f"{f['key']}: corrupt (size {size}, SHA-256 "
                    f"{digest.hexdigest()}; the manifest says size {f['size']}, "
                    f"SHA-256 {f['sha256']})"
                )
            if progress is not None:
                progress.files_done += 1
                progress.bytes_done += size


def checkpoint_records(path: Path) -> Iterator[tuple[bytes, list[Any]]]:
    """Every record (key, versions in wire form) of one node's checkpoint: its data, and the
    versions its hints hold for other nodes. A node of several shards has one checkpoint per
    shard, in ``shard-I/``."""
    from ringkv.node.snapshots import SHARD_DIR  # here: the node's modules load rocksdict

    if not (path / "CURRENT").exists():
        parts = sorted(p for p in path.glob(SHARD_DIR.format("*")) if (p / "CURRENT").exists())
        if parts:
            for part in parts:
                yield from _database_records(part)
            return
    yield from _database_records(path)


def _database_records(path: Path) -> Iterator[tuple[bytes, list[Any]]]:
    from rocksdict import AccessType, Options, Rdict

    from ringkv.core.versions import decode_record, version_to_wire

    families = {"meta": Options(raw_mode=True), "hints": Options(raw_mode=True)}
    db = Rdict(
        str(path),
        Options(raw_mode=True),
        column_families=families,
        access_type=AccessType.read_only(),
    )
    try:
        for raw_key, raw in db.items():
            versions = decode_record(bytes(raw))
            if versions:
                yield bytes(raw_key)[8:], [version_to_wire(v) for v in versions]
        hints = db.get_column_family("hints")
        try:
            for raw_key, raw in hints.items():
                _, _, rest = bytes(raw_key).partition(b"\x00")
                _created, wire = msgpack.unpackb(bytes(raw), raw=False)
                if wire:
                    yield rest[8:], wire
        finally:
            hints.close()
    finally:
        db.close()


def run_restore(
    endpoints: str,
    store: Store,
    backup_id: str,
    *,
    token: str | None = None,
    timeout: float = 30.0,
    on_progress: Listener | None = None,
    workdir: str | None = None,
) -> dict[str, Any]:
    """Restore a backup into the running cluster at ``endpoints`` (see the module docstring);
    returns the final progress report."""
    from ringkv.core.versions import MalformedRecord

    manifest = load_manifest(store, backup_id)
    progress = Progress("restore", backup_id)
    progress.files_total = sum(len(n["files"]) for n in manifest["nodes"].values())
    progress.bytes_total = sum(f["size"] for n in manifest["nodes"].values() for f in n["files"])
    with tempfile.TemporaryDirectory(prefix="ringkv-restore-", dir=workdir) as tmp:
        root = Path(tmp)
        download_verified(store, manifest, root, progress)
        # every record decodes before any is written
        total = 0
        for node_id in manifest["nodes"]:
            try:
                total += sum(1 for _ in checkpoint_records(root / node_id))
            except (MalformedRecord, ValueError, Exception) as exc:
                raise BackupError(
                    f"{store.key(backup_id, node_id)}: the checkpoint cannot be read ({exc})"
                ) from None
        progress.keys_total = total
        client = Client(endpoints, token=token, timeout=timeout)
        seen: set[bytes] = set()
        try:
            batch: list[Any] = []
            size = 0

            def flush() -> None:
                nonlocal batch, size
                if batch:
                    body = msgpack.packb({"items": batch}, use_bin_type=True)
                    _send_restore(client, body)
                    batch, size = [], 0

            for node_id in manifest["nodes"]:
                for key, wire in checkpoint_records(root / node_id):
                    progress.keys_done += 1
                    packed = msgpack.packb([key, wire], use_bin_type=True)
                    fingerprint = hashlib.blake2b(packed, digest_size=16).digest()
                    if fingerprint in seen:
                        continue  # another replica's identical copy
                    seen.add(fingerprint)
                    if batch and (
                        len(batch) >= RESTORE_BATCH_RECORDS
                        or size + len(packed) > RESTORE_BATCH_BYTES
                    ):
                        flush()
                        if on_progress:
                            on_progress(progress.report())
                    batch.append([key, wire])
                    size += len(packed)
            flush()
        finally:
            client.close()
    progress.state = "done"
    report = progress.report()
    report["records_sent"] = len(seen)
    if on_progress:
        on_progress(report)
    return report


def _send_restore(client: Client, body: bytes, attempts: int = 5) -> None:
    """One batch; a 503 (a replica down for a moment) is retried: merging is idempotent."""
    for attempt in range(attempts):
        try:
            _call(
                client, "POST", "/v1/admin/restore", body, {"Content-Type": "application/msgpack"}
            )
            return
        except Exception as exc:
            if getattr(exc, "status", None) != 503 or attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def prune(store: Store, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` complete backups (and incomplete ones older than
    the oldest kept), keeping every object a kept backup references; returns the ids."""
    manifests = store.manifests()
    if keep < 1 or len(manifests) <= keep:
        return []
    kept = manifests[-keep:]
    referenced = {f["key"] for m in kept for n in m["nodes"].values() for f in n["files"]}
    removed = []
    for m in manifests[:-keep]:
        store.delete_backup(m["backup_id"], referenced)
        removed.append(m["backup_id"])
    return removed
