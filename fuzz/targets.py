"""Fuzz targets: every decoder that takes bytes from outside, each with the property it must keep.

Each target is ``one_input(data: bytes) -> None`` and raises ``AssertionError`` (or lets an
unexpected exception escape) when the property is broken; the fuzzer (``fuzz/run.py``, atheris)
reports that input as a crash. The documented refusals -- ``MalformedContext``,
``MalformedRecord``, ``ClockSkew``, ``BadFrame``, ``FrameAuthError``, ``JsonInputError``,
``TokenFileError`` -- are the expected outcome for bad input, never a crash.

- ``http``: raw bytes into a real single-node cluster's HTTP layer (the node's own router,
  handlers, auth, storage), split at a fuzzed point: every answer is well-formed HTTP/1.1 and
  none is a 5xx other than 503, and a key no input names keeps its stored record.
- ``context``: the ``X-Ringkv-Context`` header, decoded and bounded.
- ``record``: stored records and stored hints.
- ``frame``: peer frames (plain, and on an authenticated connection), and the bodies of the
  verbs that write (``replicate``, ``replicate_batch``) through a real coordinator.
- ``admin_json``: admin request bodies.
- ``tokens``: tokens files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from typing import Any

from ringkv.core.clock_bounds import ClockSkew, check_clock, check_versions
from ringkv.core.json_input import JsonInputError, parse_json
from ringkv.core.versions import MalformedContext, MalformedRecord, decode_context, decode_record
from ringkv.node.auth import TokenFileError, parse_tokens
from ringkv.node.frame_auth import FrameAuthError, FrameOpener, FrameSealer
from ringkv.node.hints import HintStore
from ringkv.node.messaging import MAX_FRAME, BadFrame, take_frames

WALL_MS = 1_700_000_000_000  # seeds are dated before any real clock reading
SKEW_MS = 5_000
KEY = b"k" * 32

# -- pure decoders -----------------------------------------------------------------------------


def context(data: bytes) -> None:
    token = data.decode("latin-1")
    try:
        clock = decode_context(token)
        check_clock(clock, WALL_MS, SKEW_MS)
    except (MalformedContext, ClockSkew):
        return
    assert len(clock) <= 200


def record(data: bytes) -> None:
    try:
        versions = decode_record(data)
    except MalformedRecord:
        pass
    else:
        with contextlib.suppress(ClockSkew):
            check_versions(versions, WALL_MS, SKEW_MS)
    with contextlib.suppress(MalformedRecord):
        HintStore._decode(data)


def admin_json(data: bytes) -> None:
    with contextlib.suppress(JsonInputError):
        parse_json(data)


def tokens(data: bytes) -> None:
    try:
        table = parse_tokens(data.decode("utf-8", "replace"))
    except TokenFileError as exc:
        assert "token" in str(exc)
        return
    for principal in table.values():
        assert principal.role in ("read", "readwrite", "admin")


# -- peer frames -------------------------------------------------------------------------------

_COORDINATOR: Any = None


def _coordinator() -> Any:
    """A real coordinator over its own RocksDB (stand-in membership, no peers)."""
    global _COORDINATOR
    if _COORDINATOR is None:
        from ringkv.core.ring import Ring, initial_tokens
        from ringkv.node.config import parse_args
        from ringkv.node.coordinator import Coordinator
        from ringkv.node.metrics import NodeMetrics
        from ringkv.node.parts import NodeParts
        from ringkv.node.storage import Storage

        class _Alone:
            ring = future_ring = Ring({"f1": initial_tokens("f1", 8)}, {"f1": "z1"})
            unreadable: frozenset[str] = frozenset()

            def up_nodes(self) -> frozenset[str]:
                return frozenset({"f1"})

            def is_alive(self, node: str) -> bool:
                return True

            def address_of(self, node: str) -> str:
                return "nowhere:1"

            def address_for(self, node: str, key: bytes) -> str:
                return "nowhere:1"

        data_dir = tempfile.mkdtemp(prefix="ringkv-fuzz-frame-")
        config = parse_args(["--node-id", "f1", "--data-dir", data_dir, "--no-auth", "true",
                             "--no-peer-auth", "true"])  # fmt: skip
        storage = Storage(data_dir)
        parts = NodeParts(config, storage, _Alone(), None, NodeMetrics())  # type: ignore[arg-type]
        _COORDINATOR = Coordinator(
            parts, "f1#1", HintStore(storage, config.mode),
        )  # fmt: skip
    return _COORDINATOR


_KEY = bytes(32)


def frame(data: bytes) -> None:
    # plain frames, as before authentication
    try:
        frames = take_frames(bytearray(data), MAX_FRAME)
    except BadFrame:
        frames = []
    # the same bytes on an authenticated connection: nothing is decoded without its tag
    sealer, opener = FrameSealer(_KEY), FrameOpener(_KEY)
    try:
        decoded = take_frames(bytearray(data), MAX_FRAME, opener)
    except (FrameAuthError, BadFrame):
        decoded = []
    assert decoded == [], "a frame without a valid tag was decoded"
    # a well-tagged frame passes the check (then decodes or is BadFrame)
    sealed = sealer.seal(len(data).to_bytes(4, "big") + data)
    with contextlib.suppress(BadFrame):
        take_frames(bytearray(sealed), MAX_FRAME, FrameOpener(_KEY))
    # the writing verbs' bodies: refused with an error (answered as an ERROR frame), or applied
    coordinator = _coordinator()
    for kind, _rid, verb, body in frames:
        for handle in (coordinator.handle_replicate, coordinator.handle_replicate_batch):
            try:
                handle(body)
            except Exception as exc:  # messaging answers any of these as an ERROR frame
                assert not isinstance(exc, AssertionError)
        del kind, verb


# -- HTTP through a real node ------------------------------------------------------------------

WRITE_TOKEN = "fuzz-readwrite-token-0123456789"
ADMIN_TOKEN = "fuzz-admin-token-0123456789abcd"


class _Transport:
    """What ``_Connection`` writes to, kept in memory."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.write(part)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _HttpNode:
    def __init__(self) -> None:
        from ringkv.node.config import parse_args
        from ringkv.node.node import Node

        self.dir = tempfile.mkdtemp(prefix="ringkv-fuzz-http-")
        tokens_file = os.path.join(self.dir, "tokens.json")
        with open(tokens_file, "w") as f:
            json.dump({"tokens": [{"token": WRITE_TOKEN, "role": "readwrite"},
                                  {"token": ADMIN_TOKEN, "role": "admin"}]}, f)  # fmt: skip
        secret = os.path.join(self.dir, "secret")
        with open(secret, "w") as f:
            f.write("fuzz-cluster-secret-0123456789")
        with socket.socket() as sock:  # the peer port is opened (loopback), the client
            sock.bind(("127.0.0.1", 0))  # port never is: the fuzzer feeds the connection
            peer_port = sock.getsockname()[1]
        config = parse_args([
            "--node-id", "f1", "--zone", "z1", "--data-dir", os.path.join(self.dir, "data"),
            "--port", "1", "--peer-port", str(peer_port), "--host", "127.0.0.1",
            "--replication-factor",
            "1", "--auth-tokens-file", tokens_file, "--cluster-secret-file", secret,
            "--max-value-bytes", "4096", "--anti-entropy-interval", "0",
        ])  # fmt: skip
        self.loop = asyncio.new_event_loop()
        self.node = Node(config)
        self.loop.run_until_complete(self.node.start())
        self.loop.run_until_complete(self._until_ready())
        # A key no input names: whatever is sent, its stored record must not change.
        from ringkv.core.quorum import Quorum
        from ringkv.core.versions import VClock

        put = self.node.coordinator.put(SENTINEL, b"precious", VClock.empty(), Quorum(1, 1))
        self.loop.run_until_complete(put)
        self.sentinel = self.node.storage.get_raw(SENTINEL)

    async def _until_ready(self) -> None:
        for _ in range(400):
            if self.node.membership.ready:
                return
            await asyncio.sleep(0.025)
        raise RuntimeError("the fuzz node did not become ready")

    def run(self, chunks: list[bytes]) -> tuple[bytes, bool]:
        return self.loop.run_until_complete(self._run(chunks))

    async def _run(self, chunks: list[bytes]) -> tuple[bytes, bool]:
        from ringkv.node.http import _Connection

        transport = _Transport()
        conn = _Connection(self.node.api.server)
        conn.connection_made(transport)  # type: ignore[arg-type]
        for chunk in chunks:
            conn.data_received(chunk)
            await asyncio.sleep(0)
        for _ in range(2000):  # let the handlers finish (bounded)
            if not conn.queue and (conn.idle() or conn.discarding):
                break
            await asyncio.sleep(0)
        conn.flush()
        conn.connection_lost(None)
        return b"".join(transport.out), transport.closed

    def close(self) -> None:
        self.loop.run_until_complete(self.node.stop())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)


_HTTP: _HttpNode | None = None
SENTINEL = b"sentinel-zz"


def _statuses(raw: bytes) -> list[int]:
    """The status of every answer in ``raw`` (asserting each is well-formed)."""
    statuses = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"an answer without the end of its head: {raw[:200]!r}"
        first, *lines = head.split(b"\r\n")
        version, status, _reason = first.split(b" ", 2)
        assert version == b"HTTP/1.1", first
        statuses.append(int(status))
        length = 0
        for line in lines:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        if 100 <= int(status) < 200:
            raw = rest
            continue
        raw = rest[length:]
    return statuses


def http(data: bytes) -> None:
    global _HTTP
    if _HTTP is None:
        _HTTP = _HttpNode()
    cut = data[0] * len(data) // 256 if data else 0
    chunks = [c for c in (data[1:cut], data[cut:]) if c]
    raw, _closed = _HTTP.run(chunks)
    for status in _statuses(raw):
        assert status < 500 or status == 503, f"answered {status} to {data[:300]!r}: {raw[:500]!r}"
    if b"sentinel" not in data:
        stored = _HTTP.node.storage.get_raw(SENTINEL)
        assert stored == _HTTP.sentinel, f"a stored value changed after {data[:300]!r}"


TARGETS: dict[str, Callable[[bytes], None]] = {
    "http": http,
    "context": context,
    "record": record,
    "frame": frame,
    "admin_json": admin_json,
    "tokens": tokens,
}
