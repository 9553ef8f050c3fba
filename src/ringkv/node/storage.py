"""Storage: one RocksDB (through rocksdict) per node.

Column families:

- ``default``: one record per key, holding the key's sibling versions and their clocks
  (``ringkv.core.versions.encode_record``). The RocksDB key is the key's 64-bit ring position
  (big-endian) followed by the key itself, so the keys of a token range are one contiguous scan:
  anti-entropy and range streaming never read what they do not need.
- ``hints``: versions a fallback (or the coordinator) holds for a replica that was down
  (see ``ringkv.node.hints``).
- ``meta``: node-local facts that must survive restarts (incarnation, tokens, status,
  removal markers, stream positions of an interrupted ring change).

The write-ahead log is always on, so an acknowledged write survives a process crash. With
``fsync=True`` every write batch is also fsynced, which survives power loss at the price of one
disk flush per write (see docs/performance.md for the measured cost).

RocksDB calls are synchronous and take microseconds; they run on the event loop thread, which
also makes each read-merge-write of a record atomic with respect to other requests.

Group commit (``--fsync true``): on the request path (a coordinator's own write, a replica's
``replicate``) the record is written without sync (``merge(..., deferred_sync=True)``) and the
caller awaits ``durable()`` before it acknowledges. ``durable`` collects every caller of one
loop iteration (and those arriving while a sync runs) and makes them durable with one WAL
fsync (``flush_wal(True)``) in a worker thread, so the event loop keeps serving while the disk
flushes and concurrent writes share one flush. Other writers (hints, anti-entropy, streaming,
metadata) still sync each write.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
from rocksdict import Options, Rdict, WriteOptions

from ringkv.core.errors import INSUFFICIENT_STORAGE, RequestFailure, failure
from ringkv.core.ring import RING_SIZE, key_hash
from ringkv.core.versions import (
    ConflictMode,
    MalformedRecord,
    Version,
    decode_record,
    encode_record,
    merge_siblings,
)

WRITE_BUFFER_BYTES = 16 * 1024 * 1024
DEFAULT_BLOCK_CACHE_MB = 64
FREE_SPACE_RECHECK = 0.1  # seconds between free-space measurements while writing
META_CF = "meta"
HINTS_CF = "hints"

#: Called after a record changes: (ring position, key, old record, new record).
ChangeListener = Callable[[int, bytes, Sequence[Version], Sequence[Version]], None]


@failure(INSUFFICIENT_STORAGE)
class StorageFull(OSError, RequestFailure):
    """The disk is full (or RocksDB stopped writing after an I/O error): nothing was written."""

    @classmethod
    def from_fields(cls, message: str, fields: dict[str, Any]) -> StorageFull:
        return cls(errno.ENOSPC, message.removeprefix(f"[Errno {errno.ENOSPC}] "))


class ReopenFailed(RuntimeError):
    """RocksDB could not be reopened after a full disk: only a restart brings writes back."""


def _write_error(exc: Exception) -> Exception:
    text = str(exc)
    if "No space left" in text or "IO error" in text or "NoSpace" in text:
        return StorageFull(errno.ENOSPC, f"storage cannot write: {text}")
    return exc


def storage_key(h: int, key: bytes) -> bytes:
    return h.to_bytes(8, "big") + key


FLUSH_WAIT_SECONDS = 30.0


def _flush_pending(family: Any) -> bool:
    """A memtable of this column family is switched out and not yet written to disk."""
    return any(
        int(family.property_int_value(name) or 0)
        for name in ("rocksdb.num-immutable-mem-table", "rocksdb.mem-table-flush-pending")
    )


class Storage:
    """A node's RocksDB.

    Disk space: every write first checks the free space (``ensure_writable``: a ``statvfs`` at
    most every ``FREE_SPACE_RECHECK`` seconds or quarter of the headroom written) and is
    refused (``StorageFull``, HTTP 507) while less than ``min_free_bytes`` is available -- a
    reserve that also covers RocksDB's own flushes (a memtable of
    ``WRITE_BUFFER_BYTES``) and compactions -- so writes resume by themselves once space is
    freed, reads keep working, and nothing stored is damaged. Should RocksDB still meet ENOSPC,
    it stops writing (its background-error state): writes then answer 507, reads keep working,
    and ``resume_writes`` (tried by ``ringkv.node.disk_guard`` once space is back) lets writes
    through again when a probe write succeeds.
    """

    def __init__(
        self,
        path: str,
        *,
        fsync: bool = False,
        min_free_bytes: int = 0,
        block_cache_mb: int = DEFAULT_BLOCK_CACHE_MB,
    ) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.min_free_bytes = min_free_bytes
        self.fsync = fsync
        self.write_options = WriteOptions()
        self.write_options.sync = fsync
        self._deferred_options = WriteOptions()  # the WAL is written; durable() syncs it
        self._deferred_options.sync = False
        self._sync_waiters: list[asyncio.Future[None]] = []
        self._sync_running = False
        self._sync_pool: ThreadPoolExecutor | None = None
        self._listeners: list[ChangeListener] = []
        self._closed = False
        self._failed = False  # RocksDB refused a write: writes wait for resume_writes()
        self._written = 0  # bytes put since the free space was last measured
        self._write_budget = 0  # what may be put before measuring again (see ensure_writable)
        self._recheck_at = 0.0
        self._block_cache_mb = block_cache_mb
        self._open(block_cache_mb)

    def _open(self, block_cache_mb: int) -> None:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        options.increase_parallelism(2)
        options.set_write_buffer_size(WRITE_BUFFER_BYTES)
        # Every request reads one key (a write reads the record it merges into). RocksDB's
        # point-lookup profile: a 10 bits/key Bloom filter per SST file (a lookup skips the
        # files without the key: ~1 % false positives), hash indexes inside data blocks, a
        # Bloom filter on the memtable, and an LRU block cache of block_cache_mb. Range scans
        # (streaming, anti-entropy) keep working: the blocks keep their binary index.
        options.optimize_for_point_lookup(block_cache_mb)
        # Tickers (block cache hits and misses, stall time) for the node's metrics.
        options.enable_statistics()
        families = {META_CF: Options(raw_mode=True), HINTS_CF: Options(raw_mode=True)}
        self._db = Rdict(self.path, options, column_families=families)
        self._meta = self._db.get_column_family(META_CF)
        self.hints = self._db.get_column_family(HINTS_CF)

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def ensure_writable(self) -> None:
        """Raise ``StorageFull`` when the disk is (nearly) full.

        The filesystem is asked again (``statvfs``) only after ``FREE_SPACE_RECHECK`` seconds
        or once our writes since the last answer reach a quarter of the headroom it showed above
        ``min_free_bytes``: so our own writes can never take the disk below the reserve
        unnoticed, and a busy node does not make one system call per write for it."""
        if self._failed:
            raise StorageFull(
                28, "RocksDB stopped writing after an I/O error; writes resume once space is freed"
            )
        if not self.min_free_bytes:
            return
        if self._written < self._write_budget and time.monotonic() < self._recheck_at:
            return
        free = self.free_bytes()
        if free < self.min_free_bytes:
            self._write_budget = 0  # ask again on every write until space is freed
            raise StorageFull(28, f"less than {self.min_free_bytes} bytes free in {self.path}")
        self._written = 0
        self._write_budget = (free - self.min_free_bytes) // 4
        self._recheck_at = time.monotonic() + FREE_SPACE_RECHECK

    def refusal(self) -> str | None:
        """Why writes are refused now (measured, not cached), or None."""
        if self._failed:
            return "RocksDB stopped writing after an I/O error"
        if self.min_free_bytes and self.free_bytes() < self.min_free_bytes:
            return f"less than {self.min_free_bytes} bytes free in {self.path}"
        return None

    def resume_writes(self) -> bool:
        """After RocksDB refused a write (ENOSPC): once the disk is above ``min_free_bytes``
        again, reopen the database -- RocksDB keeps refusing writes after a failed WAL append
        until it is reopened; the WAL holds every acknowledged write, so nothing is lost.
        Whether writes are possible now. Raises ``ReopenFailed`` when the old database is
        still held (a scan in progress) and could not be reopened: the node must restart."""
        if not self._failed:
            return True
        if self.free_bytes() < max(self.min_free_bytes, WRITE_BUFFER_BYTES):
            return False
        old = self._db
        old.cancel_all_background(True)
        for handle in (self._meta, self.hints):
            with contextlib.suppress(Exception):
                handle.close()
        del old
        self._db = self._meta = self.hints = None
        gc.collect()  # the handles' last references: RocksDB releases its LOCK file
        try:
            self._open(self._block_cache_mb)
        except Exception as exc:
            self._closed = True
            raise ReopenFailed(f"cannot reopen RocksDB after a full disk: {exc}") from exc
        self._failed = False
        self._write_budget = 0  # measure the free space again on the next write
        return True

    def on_change(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    # -- records ------------------------------------------------------------------------------

    def get(self, key: bytes, h: int | None = None) -> tuple[Version, ...]:
        raw = self._db.get(storage_key(key_hash(key) if h is None else h, key))
        if raw is None:
            return ()
        return decode_record(raw)

    def get_raw(self, key: bytes) -> bytes | None:
        """The stored record, encoded (``decode_record`` reads it); None when there is none."""
        raw: bytes | None = self._db.get(storage_key(key_hash(key), key))
        return raw

    def merge(
        self,
        key: bytes,
        incoming: Sequence[Version],
        mode: ConflictMode,
        current: Sequence[Version] | None = None,
        deferred_sync: bool = False,
        raw: bytes | None = None,
    ) -> tuple[tuple[Version, ...], bool]:
        """Merge versions into the stored record; returns (record, whether it changed).

        ``current``: the record as the caller just read it (on the event loop, with nothing in
        between), to save reading it again. ``deferred_sync``: do not fsync this write; the
        caller awaits ``durable()`` before acknowledging it (group commit). ``raw``:
        ``incoming`` encoded (``encode_record``); stored as it is when the merge keeps exactly
        ``incoming``, the usual case for a replicated write, which saves encoding it again."""
        self.ensure_writable()
        h = key_hash(key)
        if current is None:
            current = self.get(key, h)
        merged = merge_siblings(current, incoming, mode)
        changed = [v.dot for v in merged] != [v.dot for v in current]
        if changed:
            options = self._deferred_options if deferred_sync else self.write_options
            if raw is None or [v.dot for v in merged] != [v.dot for v in incoming]:
                raw = encode_record(merged)
            self.put_into(self._db, storage_key(h, key), raw, options)
            for listener in self._listeners:
                listener(h, key, current, merged)
        return merged, changed

    def put_into(
        self, column: Any, raw_key: bytes, value: bytes, options: WriteOptions | None = None
    ) -> None:
        """Write to a column family (records or hints); a full disk becomes ``StorageFull``
        and stops further writes until a restart (RocksDB's background-error state)."""
        self._written += len(raw_key) + len(value)
        try:
            column.put(raw_key, value, options or self.write_options)
        except Exception as exc:  # rocksdict raises plain exceptions for I/O errors
            error = _write_error(exc)
            if isinstance(error, StorageFull):
                self._failed = True
            raise error from exc

    def durable(self) -> asyncio.Future[None]:
        """A future done once every write made so far is on disk (at once without ``fsync``)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if not self.fsync:
            waiter.set_result(None)
            return waiter
        self._sync_waiters.append(waiter)
        if not self._sync_running:
            self._sync_running = True
            loop.call_soon(self._start_sync)  # the other writes of this iteration join in
        return waiter

    def _start_sync(self) -> None:
        waiters, self._sync_waiters = self._sync_waiters, []
        if not waiters or self._closed:
            self._sync_running = False
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(StorageFull(5, "storage is closed"))
            return
        if self._sync_pool is None:
            self._sync_pool = ThreadPoolExecutor(1, thread_name_prefix="ringkv-fsync")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._sync_pool, self._sync_wal)
        future.add_done_callback(lambda f: self._synced(f, waiters))

    def _sync_wal(self) -> None:
        self._db.flush_wal(True)

    def _synced(self, future: asyncio.Future[None], waiters: list[asyncio.Future[None]]) -> None:
        error = future.exception() if not future.cancelled() else StorageFull(5, "sync cancelled")
        if error is not None:
            failure = _write_error(error) if isinstance(error, Exception) else error
            if isinstance(failure, StorageFull):
                self._failed = True
        for waiter in waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(failure)
        if self._sync_waiters:
            self._start_sync()  # the writes that arrived while this sync ran
        else:
            self._sync_running = False

    def remove(self, key: bytes, expected: Sequence[Version]) -> bool:
        """Delete a record (tombstone purge) if it still holds exactly ``expected``."""
        h = key_hash(key)
        current = self.get(key, h)
        if [v.dot for v in current] != [v.dot for v in expected]:
            return False
        self._db.delete(storage_key(h, key), self.write_options)
        for listener in self._listeners:
            listener(h, key, current, ())
        return True

    def scan(self, start: int, end: int) -> Iterator[tuple[int, bytes, tuple[Version, ...]]]:
        """Records whose ring position h satisfies start < h <= end (wrapping when start >= end),
        in ring order: (position, key, versions)."""
        if start < end:
            yield from self._scan_linear(start + 1, end)
        else:
            if start + 1 < RING_SIZE:
                yield from self._scan_linear(start + 1, RING_SIZE - 1)
            yield from self._scan_linear(0, end)

    def _scan_linear(
        self, first: int, last: int
    ) -> Iterator[tuple[int, bytes, tuple[Version, ...]]]:
        for raw_key, raw in self._db.items(from_key=first.to_bytes(8, "big")):
            h = int.from_bytes(raw_key[:8], "big")
            if h > last:
                return
            try:
                yield h, bytes(raw_key[8:]), decode_record(raw)
            except MalformedRecord:
                continue

    def sizes(self, start: int, end: int) -> Iterator[int]:
        """The stored size (key and encoded record) of every record in (start, end], in ring
        order, without decoding them (wrapping when start >= end)."""
        for first, last in ((start + 1, end),) if start < end else (
            (start + 1, RING_SIZE - 1), (0, end)
        ):  # fmt: skip
            if first > last:
                continue
            for raw_key, raw in self._db.items(from_key=first.to_bytes(8, "big")):
                if int.from_bytes(raw_key[:8], "big") > last:
                    break
                yield len(raw_key) - 8 + len(raw)

    def items(self) -> Iterator[tuple[int, bytes, tuple[Version, ...]]]:
        """Every record in ring order."""
        return self._scan_linear(0, RING_SIZE - 1)

    def delete_range(self, lo: int, hi: int) -> None:
        """Delete every record whose ring position lies in [lo, hi] with one RocksDB range
        tombstone (no per-key work; compaction reclaims the space). Change listeners are not
        told: callers delete only ranges no Merkle tree covers."""
        first = lo.to_bytes(8, "big")
        # Past the last position: any key of position hi (8 bytes + a key of at most 256 bytes)
        # sorts before hi's 8 bytes followed by 0xff * 512.
        last = (hi + 1).to_bytes(8, "big") if hi + 1 < RING_SIZE else b"\xff" * 520
        self.ensure_writable()
        self._db.delete_range(first, last, self.write_options)

    def compact(self) -> None:
        """Compact the records (blocking: run it in a worker thread); drops what range deletes
        covered, so disk use and the key estimate fall."""
        self._db.compact_range(None, None)

    def flush(self) -> None:
        """Write the memtables to SST files and wait for it, outside RocksDB as
        ``flush_unlocked`` does (inside it only past that wait's deadline), so the event loop
        keeps running (blocking: run it in a worker thread)."""
        if not self.flush_unlocked():
            self._db.flush()

    def flush_unlocked(self, deadline: float = FLUSH_WAIT_SECONDS) -> bool:
        """Write every column family's memtable to SST files, waiting here rather than inside
        RocksDB: rocksdict holds the interpreter lock through a flush it waits for (and through
        the flush a checkpoint starts with), and that stops this process's event loop for as
        long as the flush takes -- tens of milliseconds, more on a busy disk. Asked not to
        wait, RocksDB only switches the memtables and flushes in its own threads, while this
        one sleeps. Returns whether the flush ended within ``deadline`` seconds (blocking: run
        it in a worker thread)."""
        families = (self._db, self._meta, self.hints)
        for family in families:
            family.flush(False)
        end = time.monotonic() + deadline
        pause = 0.001
        while any(_flush_pending(f) for f in families):
            if time.monotonic() >= end:
                return False
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
        return True

    @property
    def db(self) -> Rdict:
        """The database itself, for checkpoints (``ringkv.node.snapshots``)."""
        return self._db

    def sst_bytes(self) -> int:
        return int(self._db.property_int_value("rocksdb.total-sst-files-size") or 0)

    def disk_bytes(self) -> int:
        """RocksDB's own size on disk: its SST files plus the memtables not flushed yet."""
        mem = self._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        return self.sst_bytes() + int(mem)

    # -- node metadata --------------------------------------------------------------------------

    def get_meta(self, name: str) -> object | None:
        raw = self._meta.get(name.encode())
        return None if raw is None else msgpack.unpackb(raw, raw=False)

    def put_meta(self, name: str, value: object, sync: bool = True) -> None:
        """Metadata is rare and must not be lost: synced, unless the caller says it may be
        (a position saved after every batch of a long job)."""
        options = WriteOptions()
        options.sync = sync
        self._meta.put(name.encode(), msgpack.packb(value, use_bin_type=True), options)

    # -- statistics and lifecycle ---------------------------------------------------------------

    def db_property(self, name: str) -> str | None:
        """A RocksDB property (``rocksdb.*``) of the records' column family, for metrics."""
        value: str | None = self._db.property_value(name)
        return value

    def db_int_property(self, name: str) -> int:
        return int(self._db.property_int_value(name) or 0)

    def sst_files(self) -> list[dict[str, Any]]:
        """The live SST files (name, level, size, ...), for metrics."""
        files: list[dict[str, Any]] = self._db.live_files()
        return files

    def disk_space(self) -> tuple[int, int]:
        """(free, total) bytes of the data directory's filesystem."""
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    def approximate_keys(self) -> int:
        return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def approximate_bytes(self) -> int:
        live = self._db.property_int_value("rocksdb.estimate-live-data-size") or 0
        mem = self._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        return int(live) + int(mem)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sync_pool is not None:
            self._sync_pool.shutdown(wait=True)
        if self._db is None:  # a failed reopen (resume_writes): nothing open to close
            return
        self._db.flush()
        self._db.flush_wal(True)
        # The column-family handles hold the database open (and its LOCK file) until they
        # are closed too, so a closed store could not be opened again in this process.
        self._meta.close()
        self.hints.close()
        self._db.close()
