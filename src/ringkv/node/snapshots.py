"""Node snapshots: RocksDB checkpoints of every column family (records, hints, meta).

A checkpoint hard-links the live SST files (immutable in RocksDB) into a new directory and
copies the small rest (MANIFEST, OPTIONS, the WAL's tail), so taking one costs a memtable flush
and a few file operations: traffic is not paused, and the snapshot is consistent for this node
(one RocksDB sequence number). The memtables are flushed first without the interpreter lock
(``Storage.flush_unlocked``): rocksdict holds the lock through the checkpoint call, which would
otherwise include the flush and stop the node's event loop for its whole length.

Snapshots live beside the data directory, on the same filesystem (hard links cannot cross
filesystems): ``<data-dir>-snapshots/<name>/``, each with a ``ringkv-snapshot.json``
describing it (node, time, the ring's version and this node's tokens) and, once asked for, the
SHA-256 of every file.

A node of several shards keeps each shard's keys in its own database, so its snapshot is one
checkpoint per shard, taken under the same name by each shard's process
(``<data-dir>/shard-I-snapshots/<name>/``). ``ShardedSnapshots`` shows them as one snapshot
whose files are ``shard-I/<path>``: complete only when every shard holds its part.

Disk use: ``bytes`` counts every file of every snapshot; ``exclusive_bytes`` counts only files
no longer linked from the live database (their link count is 1): what deleting the snapshots
would free.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rocksdict import Checkpoint

if TYPE_CHECKING:
    from ringkv.node.storage import Storage

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
INFO_FILE = "ringkv-snapshot.json"
CHUNK = 1024 * 1024
MAX_SHARED_DIGESTS = 100_000


class SnapshotError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def snapshots_dir(data_dir: str) -> Path:
    data = Path(data_dir).resolve()
    return data.parent / f"{data.name}-snapshots"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != INFO_FILE:
            yield path


class _Listed:
    """What every kind of snapshots lists the same way, from its ``names`` and ``describe``."""

    def names(self) -> list[str]:
        raise NotImplementedError

    def describe(self, name: str, checksums: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    def list(self) -> list[dict[str, Any]]:
        out = []
        for name in self.names():
            try:
                out.append(self.describe(name))
            except (SnapshotError, OSError):
                continue  # deleted meanwhile
        return out

    def usage(self) -> tuple[int, int, int]:
        """(snapshots, bytes, exclusive bytes) over every snapshot."""
        listed = self.list()
        return (
            len(listed),
            sum(s["bytes"] for s in listed),
            sum(s["exclusive_bytes"] for s in listed),
        )


class Snapshots(_Listed):
    """The snapshots of one node's database (blocking file work: call from a worker thread)."""

    def __init__(self, data_dir: str) -> None:
        self.root = snapshots_dir(data_dir)
        # SHA-256 of the files shared with the live database (RocksDB's SST files, hard
        # links of one immutable inode), by inode: the next snapshot shares most of them, so
        # an incremental backup hashes only the files written since the last one.
        self._shared_digests: dict[tuple[int, int, int, int], str] = {}

    def _path(self, name: str) -> Path:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise SnapshotError(
                400,
                "bad_request",
                "a snapshot name is 1-100 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit",
            )
        return self.root / name

    def create(self, storage: Storage, name: str, info: dict[str, Any]) -> dict[str, Any]:
        """Checkpoint ``storage``'s database as ``name``; ``info`` is stored with it."""
        path = self._path(name)
        if path.exists():
            raise SnapshotError(409, "conflict", f"snapshot {name!r} already exists")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        started = time.monotonic()
        # what the checkpoint then flushes (the writes since) is small: its time under the
        # interpreter lock is short
        storage.flush_unlocked()
        Checkpoint(storage.db).create_checkpoint(str(tmp))
        record = {
            **info,
            "name": name,
            "created_ms": int(time.time() * 1000),
            "checkpoint_seconds": round(time.monotonic() - started, 3),
        }
        (tmp / INFO_FILE).write_text(json.dumps(record))
        os.rename(tmp, path)  # a crash mid-way leaves only a hidden .tmp, never half a snapshot
        return self.describe(name)

    def info(self, name: str) -> dict[str, Any]:
        path = self._path(name)
        try:
            info: dict[str, Any] = json.loads((path / INFO_FILE).read_text())
        except FileNotFoundError:
            raise SnapshotError(404, "not_found", f"no snapshot named {name!r}") from None
        return info

    def describe(self, name: str, checksums: bool = False) -> dict[str, Any]:
        """The snapshot's info and sizes; with ``checksums``, every file with its SHA-256
        (computed once, then kept in the info file: the files never change)."""
        info = self.info(name)
        path = self._path(name)
        files = list(_files(path))
        size = exclusive = 0
        for f in files:
            st = f.stat()
            size += st.st_size
            exclusive += st.st_size if st.st_nlink == 1 else 0
        out = {**info, "files": len(files), "bytes": size, "exclusive_bytes": exclusive}
        out.pop("checksums", None)
        if checksums:
            known = info.get("checksums") or {}
            listed = []
            for f in files:
                rel = f.relative_to(path).as_posix()
                st = f.stat()
                digest = known.get(rel) or self._digest(f, st)
                known[rel] = digest
                listed.append({"path": rel, "size": st.st_size, "sha256": digest})
            if info.get("checksums") != known:
                info["checksums"] = known
                (path / INFO_FILE).write_text(json.dumps(info))
            out["file_list"] = listed
        return out

    def _digest(self, path: Path, st: os.stat_result) -> str:
        if st.st_nlink == 1:  # a file of this snapshot alone (a copied log or manifest)
            return file_sha256(path)
        inode = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        digest = self._shared_digests.get(inode)
        if digest is None:
            digest = self._shared_digests[inode] = file_sha256(path)
            if len(self._shared_digests) > MAX_SHARED_DIGESTS:  # oldest first: long gone
                for old in list(self._shared_digests)[: MAX_SHARED_DIGESTS // 2]:
                    del self._shared_digests[old]
        return digest

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / INFO_FILE).exists()
        )

    def delete(self, name: str) -> None:
        path = self._path(name)
        if not (path / INFO_FILE).exists():
            raise SnapshotError(404, "not_found", f"no snapshot named {name!r}")
        trash = self.root / f".{name}.deleting"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def read(self, name: str, rel: str, offset: int, length: int) -> tuple[bytes, int]:
        """Up to ``length`` bytes of one file from ``offset``, and the file's size."""
        path = self._path(name)
        if not (path / INFO_FILE).exists():
            raise SnapshotError(404, "not_found", f"no snapshot named {name!r}")
        target = (path / rel).resolve()
        if not rel or path.resolve() not in target.parents or not target.is_file():
            raise SnapshotError(404, "not_found", f"snapshot {name!r} has no file {rel!r}")
        with target.open("rb") as f:
            f.seek(offset)
            return f.read(length), target.stat().st_size


SHARD_DIR = "shard-{}"  # where a shard's files are in a node's snapshot (and its data)


class ShardedSnapshots(_Listed):
    """The snapshots of a node of several shards, from any one of its processes: each shard's
    checkpoints (``Snapshots`` of its own data directory; the shards share the filesystem), one
    snapshot per name. Taking one is each shard's own work (``Snapshots.create`` in its
    process); the rest is file work done here."""

    def __init__(self, shard_data_dirs: list[str]) -> None:
        self.shards = [Snapshots(d) for d in shard_data_dirs]

    def exists_anywhere(self, name: str) -> bool:
        return any((s._path(name) / INFO_FILE).exists() for s in self.shards)

    def describe(self, name: str, checksums: bool = False) -> dict[str, Any]:
        """As ``Snapshots.describe``, over every shard's part (404 if one is missing); the
        files are ``shard-I/<path>``."""
        parts = [s.describe(name, checksums) for s in self.shards]
        out = {
            **parts[0],
            "shards": len(parts),
            "files": sum(p["files"] for p in parts),
            "bytes": sum(p["bytes"] for p in parts),
            "exclusive_bytes": sum(p["exclusive_bytes"] for p in parts),
            "checkpoint_seconds": max(p.get("checkpoint_seconds", 0.0) for p in parts),
        }
        if checksums:
            out["file_list"] = [
                {**f, "path": f"{SHARD_DIR.format(i)}/{f['path']}"}
                for i, part in enumerate(parts)
                for f in part["file_list"]
            ]
        return out

    def names(self) -> list[str]:
        """The snapshots every shard holds its part of."""
        common = set(self.shards[0].names())
        for shard in self.shards[1:]:
            common &= set(shard.names())
        return sorted(common)

    def delete(self, name: str) -> None:
        """Delete every shard's part (also of a snapshot some shard failed to take)."""
        if not self.exists_anywhere(name):
            raise SnapshotError(404, "not_found", f"no snapshot named {name!r}")
        for shard in self.shards:
            if (shard._path(name) / INFO_FILE).exists():
                shard.delete(name)

    def read(self, name: str, rel: str, offset: int, length: int) -> tuple[bytes, int]:
        top, _, rest = rel.partition("/")
        for i, shard in enumerate(self.shards):
            if top == SHARD_DIR.format(i) and rest:
                return shard.read(name, rest, offset, length)
        if name not in self.names():
            raise SnapshotError(404, "not_found", f"no snapshot named {name!r}")
        raise SnapshotError(404, "not_found", f"snapshot {name!r} has no file {rel!r}")
