"""Storage: point lookups and range scans over records spread across the memtable and several
SST files (which carry Bloom filters and block hash indexes), and data written by a store
opened without those options."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from ringkv.core.cleanup import range_bounds
from ringkv.core.ring import RING_SIZE, key_hash
from ringkv.core.versions import VClock, Version, encode_record, new_version
from ringkv.node.config import parse_args
from ringkv.node.storage import Storage, storage_key


def _version(key: bytes, timestamp: int = 1) -> Version:
    return new_version((), VClock.empty(), "n1", b"value of " + key, timestamp)


def _fill(storage: Storage, keys: list[bytes], batches: int) -> dict[bytes, bytes | None]:
    """Write ``keys`` in ``batches`` rounds, flushing the memtable to a new SST file after each
    round but the last; returns each key's value as it must read back."""
    expected: dict[bytes, bytes | None] = {}
    rounds = [keys[i::batches] for i in range(batches)]
    for number, batch in enumerate(rounds):
        for key in batch:
            version = _version(key)
            storage.merge(key, [version], "lww")
            expected[key] = version.value
        if number < batches - 1:
            storage._db.flush()  # a new L0 file: lookups must consult the right one
    return expected


def test_point_lookups_find_every_key_across_files_and_miss_absent_ones(
    tmp_path: Path,
) -> None:
    storage = Storage(str(tmp_path / "db"), block_cache_mb=1)
    keys = [b"key-%05d" % i for i in range(3000)]
    expected = _fill(storage, keys, batches=4)
    assert int(storage._db.property_int_value("rocksdb.num-files-at-level0") or 0) >= 3
    for key in random.Random(7).sample(keys, 600):
        assert [v.value for v in storage.get(key)] == [expected[key]]
        assert storage.get_raw(key) is not None
    for i in range(600):  # absent keys: the filters say no (or a false positive is checked)
        assert storage.get(b"absent-%05d" % i) == ()
        assert storage.get_raw(b"absent-%05d" % i) is None
    storage.close()


def test_range_scans_see_every_record_once_in_ring_order(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "db"))
    keys = [b"scan-%04d" % i for i in range(1500)]
    _fill(storage, keys, batches=3)
    positions = sorted(key_hash(k) for k in keys)
    middle = positions[len(positions) // 2]
    scanned = [(h, key) for h, key, _ in storage.scan(middle, positions[-1])]
    assert [h for h, _ in scanned] == positions[len(positions) // 2 + 1 :]
    wrapped = [key for _, key, _ in storage.scan(middle, middle)]  # the whole ring, wrapping
    assert sorted(wrapped) == sorted(keys)
    assert len(wrapped) == len(keys)
    storage.close()


def test_a_store_written_without_filters_reads_back_in_full(tmp_path: Path) -> None:
    path = tmp_path / "db"
    plain = Options(raw_mode=True)  # as releases before the point-lookup profile wrote it
    plain.create_if_missing(True)
    db = Rdict(str(path), plain)
    records = {}
    for i in range(500):
        key = b"old-%04d" % i
        records[key] = _version(key, timestamp=2)
        db.put(storage_key(key_hash(key), key), encode_record([records[key]]))
    db.flush()
    db.close()
    storage = Storage(str(path))
    for key, version in records.items():
        assert storage.get(key) == (version,)
    newer = new_version(storage.get(b"old-0000"), VClock.empty(), "n1", b"newer", 3)
    storage.merge(b"old-0000", [newer], "lww")
    storage.close()
    reopened = Storage(str(path))
    assert [v.value for v in reopened.get(b"old-0000")] == [b"newer"]
    assert len(list(reopened.items())) == len(records)
    reopened.close()


@pytest.mark.parametrize("value", ["0", "-5"])
def test_block_cache_size_must_be_positive(value: str) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--node-id", "n1", "--no-auth", "true", "--no-peer-auth", "true",
                    "--block-cache-mb", value])  # fmt: skip


def test_block_cache_size_reaches_rocksdb(tmp_path: Path) -> None:
    config = parse_args(["--node-id", "n1", "--no-auth", "true", "--no-peer-auth", "true",
                         "--block-cache-mb", "3"])  # fmt: skip
    storage = Storage(str(tmp_path / "db"), block_cache_mb=config.block_cache_mb)
    capacity = storage._db.property_int_value("rocksdb.block-cache-capacity")
    assert capacity == 3 * 1024 * 1024
    storage.close()


def test_range_deletes_remove_exactly_a_span_and_compaction_reclaims_it(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "db"), min_free_bytes=0)
    try:
        keys = [f"key-{i}".encode() for i in range(3000)]
        _fill(storage, keys, 3)
        positions = sorted(key_hash(k) for k in keys)
        start, end = positions[2500], positions[400]  # wraps past the end of the ring
        inside = [k for k in keys if key_hash(k) > start or key_hash(k) <= end]
        assert sum(1 for _ in storage.sizes(start, end)) == len(inside)
        assert sum(storage.sizes(start, end)) == sum(
            len(k) + len(storage.get_raw(k) or b"") for k in inside
        )
        storage._db.flush()
        before = storage.sst_bytes()
        for lo, hi in range_bounds(start, end):
            storage.delete_range(lo, hi)
        for key in keys:
            assert bool(storage.get(key)) == (key not in inside), key
        assert list(storage.scan(start, end)) == []
        storage.compact()
        assert storage.sst_bytes() < before * (len(keys) - len(inside)) / len(keys) * 1.2
        assert storage.approximate_keys() == len(keys) - len(inside)
        # the very last ring position is deleted too (its end key is past every stored key)
        storage.merge(b"k", [_version(b"k")], "lww")
        last = key_hash(b"k")
        storage.delete_range(last, RING_SIZE - 1)
        assert not storage.get(b"k")
    finally:
        storage.close()


def test_a_flush_waits_outside_rocksdb(tmp_path: Path) -> None:
    """rocksdict holds the interpreter lock through a flush it waits for, which would stop the
    node's event loop: ``Storage.flush`` asks every column family not to wait and waits on its
    own, and the memtables are empty afterwards."""
    storage = Storage(str(tmp_path / "db"))
    asked: list[bool] = []

    class Watched:
        def __init__(self, family: Rdict) -> None:
            self.family = family

        def flush(self, wait: bool = True) -> None:
            asked.append(wait)
            self.family.flush(wait)

        def __getattr__(self, name: str) -> object:
            return getattr(self.family, name)

    real = storage._db, storage._meta, storage.hints
    try:
        for i in range(500):
            storage._db[b"k%d" % i] = b"v"
            storage.hints[b"h%d" % i] = b"x"
        storage._db, storage._meta, storage.hints = (Watched(f) for f in real)  # type: ignore[assignment]
        storage.flush()
        assert asked and not any(asked), asked
        for family in real:
            assert family.property_int_value("rocksdb.num-entries-active-mem-table") == 0
    finally:
        storage._db, storage._meta, storage.hints = real
        storage.close()
