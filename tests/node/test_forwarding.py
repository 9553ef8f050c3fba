"""A coordinator that is not a replica forwards the write; when the forward cannot even be sent
(the replica just died and the failure detector has not convicted it yet), the write is placed
again without that node, so a fallback takes it with a hint (sloppy quorum), instead of failing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ringkv.core.errors import ReplicationMismatch, from_peer
from ringkv.core.placement import preference_list, sloppy_preference_list
from ringkv.core.quorum import Quorum
from ringkv.core.ring import key_hash
from ringkv.core.versions import VClock
from ringkv.node.coordinator import Coordinator, QuorumTimeout
from ringkv.node.messaging import QUORUM_FEATURE, PeerError, PeerNotReached, PeerTimeout
from tests.node.standins import RING, coordinator


class _Messaging:
    """Forwards to n3 fail with ``failure``; nothing else is expected to be sent."""

    def __init__(self, failure: PeerError) -> None:
        self.failure = failure
        self.sent: list[tuple[str, str]] = []

    async def request(self, address: str, verb: str, body: Any, timeout: float) -> Any:
        self.sent.append((address, verb))
        if address == "addr-n3":
            raise self.failure
        raise AssertionError(f"unexpected {verb} to {address}")

    def supports(self, address: str, feature: str) -> bool:
        return False


def _key_of_n3() -> tuple[bytes, str]:
    """A key whose only replica (N=1) is n3, and the node that stands in for n3 on it."""
    for i in range(10_000):
        key = f"k{i}".encode()
        h = key_hash(key)
        if preference_list(RING, h, 1)[0].node == "n3":
            (fallback,) = sloppy_preference_list(RING, h, 1, {"n1", "n2"})
            assert fallback.hint_for == "n3"
            return key, fallback.node
    raise AssertionError("no key on n3")


def _coordinator(tmp_path: Path, node: str, messaging: _Messaging) -> Coordinator:
    # Every node still looks alive (AllUp): n3 died a moment ago and is not convicted yet.
    return coordinator(tmp_path, node, messaging, "--replication-factor", "1")


def test_forward_that_cannot_be_sent_goes_to_a_fallback(tmp_path: Path) -> None:
    key, me = _key_of_n3()
    messaging = _Messaging(PeerNotReached("cannot connect to addr-n3: refused"))
    coordinator = _coordinator(tmp_path, me, messaging)
    clock = asyncio.run(coordinator.put(key, b"value", VClock.empty(), Quorum(1, 1, False)))
    assert messaging.sent == [("addr-n3", "coordinate_put")]  # tried the replica once
    held = coordinator.hints.get("n3", key)  # then took the write as n3's fallback
    assert [v.value for v in held] == [b"value"]
    assert list(clock.entries) == [f"{me}.1"]  # the fallback wrote the version


def test_strict_write_whose_replica_cannot_be_reached_is_unavailable(tmp_path: Path) -> None:
    from ringkv.node.coordinator import Unavailable

    key, me = _key_of_n3()
    coordinator = _coordinator(tmp_path, me, _Messaging(PeerNotReached("refused")))
    with pytest.raises(Unavailable):  # strict: primaries only, and n3 is the only one
        asyncio.run(coordinator.put(key, b"value", VClock.empty(), Quorum(1, 1, True)))
    assert coordinator.hints.get("n3", key) == ()


def test_forward_that_may_have_been_applied_is_not_placed_again(tmp_path: Path) -> None:
    key, me = _key_of_n3()
    messaging = _Messaging(PeerTimeout("coordinate_put to addr-n3 timed out"))
    coordinator = _coordinator(tmp_path, me, messaging)
    with pytest.raises(QuorumTimeout):  # sent: n3 may have written it; do not write twice
        asyncio.run(coordinator.put(key, b"value", VClock.empty(), Quorum(1, 1, False)))
    assert messaging.sent == [("addr-n3", "coordinate_put")]
    assert coordinator.hints.get("n3", key) == ()


class _Forwarder:
    """Records the forwarded body and answers it with ``answer``; ``features``: what the
    receiving peer announced."""

    def __init__(self, features: set[str], answer: dict[str, Any]) -> None:
        self.features = features
        self.answer = answer
        self.bodies: list[dict[str, Any]] = []

    async def request(self, address: str, verb: str, body: Any, timeout: float) -> Any:
        assert verb == "coordinate_put"
        self.bodies.append(body)
        return self.answer

    def supports(self, address: str, feature: str) -> bool:
        return feature in self.features


def test_forward_carries_the_resolved_quorum_as_it_is(tmp_path: Path) -> None:
    key, _ = _key_of_n3()
    quorum = Quorum(1, 1, True)
    for features, expected in (({QUORUM_FEATURE}, {"quorum": [1, 1, True]}),
                               (set(), {"required": 1, "strict": True})):  # fmt: skip
        messaging = _Forwarder(features, {"context": VClock.empty().to_wire()})
        coordinator = _coordinator(tmp_path / str(len(features)), "n1", messaging)
        asyncio.run(coordinator.put(key, b"v", VClock.empty(), quorum))
        (body,) = messaging.bodies
        assert {k: body[k] for k in expected} == expected
        assert not ({"quorum", "required", "strict"} - set(expected)) & set(body)


class _Replicas:
    """Replica writes that never answer (so only the coordinator's own ack counts)."""

    def supports(self, address: str, feature: str) -> bool:
        return True

    def call(self, address: str, verb: str, body: Any, timeout: float) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()


def _coordinator_n3(tmp_path: Path, node: str, messaging: Any, *flags: str) -> Coordinator:
    return coordinator(tmp_path, node, messaging, "--replication-factor", "3", *flags)


def _key_on(node: str, n: int) -> bytes:
    for i in range(10_000):
        key = f"k{i}".encode()
        if node in {r.node for r in preference_list(RING, key_hash(key), n)}:
            return key
    raise AssertionError(f"no key on {node}")


def test_the_receiver_uses_the_forwarded_quorum(tmp_path: Path) -> None:
    coordinator = _coordinator_n3(tmp_path, "n1", _Replicas(), "--request-timeout", "0.2")
    body = {"key": _key_on("n1", 3), "value": b"v", "context": VClock.empty().to_wire()}
    one = asyncio.run(coordinator.handle_coordinate_put({**body, "quorum": [3, 1, False]}))
    assert "context" in one  # W=1: its own copy is enough
    three = asyncio.run(coordinator.handle_coordinate_put({**body, "quorum": [3, 3, True]}))
    del three["message"]
    assert three == {"error": "timeout", "required": 3, "acks": 1}  # W=3, as sent


def test_a_quorum_for_another_n_is_refused(tmp_path: Path) -> None:
    coordinator = _coordinator_n3(tmp_path, "n1", _Replicas())
    key = _key_on("n1", 3)
    body = {"key": key, "value": b"v", "context": VClock.empty().to_wire(), "quorum": [5, 3, False]}
    answer = asyncio.run(coordinator.handle_coordinate_put(body))
    assert answer["error"] == "replication_mismatch"
    assert (answer["expected"], answer["got"]) == (3, 5)
    assert coordinator.storage.get(key) == ()  # nothing written
    with pytest.raises(ReplicationMismatch):  # the sender raises it again for its client
        raise from_peer(answer)
    with pytest.raises(ReplicationMismatch):  # a local request is checked alike
        asyncio.run(coordinator.get(key, Quorum(5, 3, False)))
