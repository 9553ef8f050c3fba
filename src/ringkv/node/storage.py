"""Storage: one RocksDB (through rocksdict) per node.

Column families:

- ``default``: one record per key, holding the key's sibling versions and their clocks
  (``ringkv.core.versions.encode_record``);
- ``meta``: node-local facts that must survive restarts (incarnation, tokens).

The write-ahead log is always on, so an acknowledged write survives a process crash. With
``fsync=True`` every write batch is also fsynced, which survives power loss at the price of one
disk flush per write (see docs/architecture.md for the measured cost).

RocksDB calls are synchronous and take microseconds; they run on the event loop thread, which
also makes each read-merge-write of a record atomic with respect to other requests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import msgpack
from rocksdict import Options, Rdict, WriteOptions

from ringkv.core.versions import (
    ConflictMode,
    MalformedRecord,
    Version,
    decode_record,
    encode_record,
    merge_siblings,
)

META_CF = "meta"


class Storage:
    def __init__(self, path: str, *, fsync: bool = False) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.create_missing_column_families(True)
        options.increase_parallelism(2)
        self._db = Rdict(path, options, column_families={META_CF: Options(raw_mode=True)})
        self._meta = self._db.get_column_family(META_CF)
        self._write_options = WriteOptions()
        self._write_options.sync = fsync
        self._closed = False

    # -- records ------------------------------------------------------------------------------

    def get(self, key: bytes) -> tuple[Version, ...]:
        raw = self._db.get(key)
        if raw is None:
            return ()
        return decode_record(raw)

    def put(self, key: bytes, versions: Sequence[Version]) -> None:
        self._db.put(key, encode_record(versions), self._write_options)

    def merge(
        self, key: bytes, incoming: Sequence[Version], mode: ConflictMode
    ) -> tuple[tuple[Version, ...], bool]:
        """Merge versions into the stored record; returns (record, whether it changed)."""
        current = self.get(key)
        merged = merge_siblings(current, incoming, mode)
        changed = {v.dot for v in merged} != {v.dot for v in current}
        if changed:
            self.put(key, merged)
        return merged, changed

    def items(self) -> Iterator[tuple[bytes, tuple[Version, ...]]]:
        """Every stored key and record (for anti-entropy and streaming in later issues)."""
        for key, raw in self._db.items():
            try:
                yield bytes(key), decode_record(bytes(raw))  # type: ignore[arg-type]
            except MalformedRecord:
                continue

    # -- node metadata --------------------------------------------------------------------------

    def get_meta(self, name: str) -> object | None:
        raw = self._meta.get(name.encode())
        return None if raw is None else msgpack.unpackb(raw, raw=False)

    def put_meta(self, name: str, value: object) -> None:
        sync = WriteOptions()
        sync.sync = True  # metadata is rare and must not be lost
        self._meta.put(name.encode(), msgpack.packb(value, use_bin_type=True), sync)

    # -- statistics and lifecycle ---------------------------------------------------------------

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
        self._db.flush()
        self._db.flush_wal(True)
        self._db.close()
