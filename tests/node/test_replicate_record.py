"""The "record" feature: a replicated write carries the encoded record, only to peers that
announced it, and a replica stores it as it is only when the merge keeps exactly it."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from ringkv.core.placement import Replica
from ringkv.core.versions import VClock, decode_record, encode_record, new_version
from ringkv.node import messaging
from ringkv.node.coordinator import Coordinator
from ringkv.node.messaging import MessagingService
from tests.node.standins import coordinator


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _coordinator(tmp_path: Path, node: str, mode: str, messaging_: Any = None) -> Coordinator:
    return coordinator(tmp_path / node, node, messaging_, "--conflict-mode", mode)


class _Recorder:
    """A MessagingService stand-in: records what would be sent, answers True."""

    def __init__(self, features: set[str]) -> None:
        self.features = features
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def supports(self, address: str, feature: str) -> bool:
        return feature in self.features

    def call(self, address: str, verb: str, body: Any, timeout: float) -> asyncio.Future[Any]:
        self.sent.append((address, verb, body))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(True)
        return future


@pytest.mark.parametrize("mode", ["lww", "siblings"])
def test_replicated_record_is_stored_as_sent(tmp_path: Path, mode: str) -> None:
    new_form, old_form = _Recorder({"record"}), _Recorder(set())
    replica = _coordinator(tmp_path, "r1", mode)
    other = _coordinator(tmp_path, "r2", mode)
    versions = (new_version((), VClock.empty(), "c.1", b"value", 1 << 20),)
    record = encode_record(versions)

    async def send() -> None:
        for recorder in (new_form, old_form):
            coordinator = _coordinator(tmp_path, f"c-{len(recorder.features)}", mode, recorder)
            await coordinator._replicate_call(Replica("r1"), b"k", record, versions)

    asyncio.run(send())
    (_, verb, new_body), (_, _, old_body) = new_form.sent[0], old_form.sent[0]
    assert verb == "replicate"
    assert new_body == {"key": b"k", "record": record}  # encoded once, sent as it is
    assert set(old_body) == {"key", "versions"}  # a peer without the feature: wire form
    replica.handle_replicate(new_body)
    other.handle_replicate(old_body)
    assert replica.storage.get_raw(b"k") == record
    assert other.storage.get_raw(b"k") == record  # both forms store the same bytes


def test_a_record_that_does_not_win_is_merged_not_copied(tmp_path: Path) -> None:
    replica = _coordinator(tmp_path, "r1", "siblings")
    mine = new_version((), VClock.empty(), "r1.1", b"mine", 1 << 20)
    replica.storage.merge(b"k", [mine], "siblings")
    theirs = new_version((), VClock.empty(), "c.1", b"theirs", 2 << 20)  # concurrent
    replica.handle_replicate({"key": b"k", "record": encode_record([theirs])})
    stored = decode_record(replica.storage.get_raw(b"k") or b"")
    assert {v.value for v in stored} == {b"mine", b"theirs"}  # siblings, nothing lost


def test_garbage_record_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    replica = _coordinator(tmp_path, "r1", "lww")
    with pytest.raises(ValueError):
        replica.handle_replicate({"key": b"k", "record": b"\xc1 not msgpack"})
    assert replica.storage.get_raw(b"k") is None


def test_hello_announces_features_and_supports_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def connect(features: tuple[str, ...]) -> tuple[bool, bool]:
        monkeypatch.setattr(messaging, "FEATURES", features)

        async def handler(verb: str, body: Any) -> Any:
            return body

        server = MessagingService("s", "127.0.0.1", _free_port(), handler)
        await server.start()
        client = MessagingService("c", "127.0.0.1", _free_port(), handler)
        await client.start()
        address = f"127.0.0.1:{server.port}"
        try:
            before = client.supports(address, "record")
            assert await client.request(address, "echo", {"x": 1}, 5.0) == {"x": 1}
            return before, client.supports(address, "record")
        finally:
            await client.stop()
            await server.stop()

    assert asyncio.run(connect(("record",))) == (False, True)
    assert asyncio.run(connect(())) == (False, False)  # an older peer: the first protocol
