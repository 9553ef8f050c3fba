"""A confused or compromised peer cannot poison a node's clock: replicated versions from too
far in the future are refused (alone) or skipped (in a batch), and never observed or stored."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ringkv.core.clock_bounds import ClockSkew
from ringkv.core.versions import HLC_LOGICAL_BITS, VClock, Version, version_to_wire
from tests.node.standins import coordinator


def _version(actor: str, wall_ms: int, value: bytes) -> Version:
    ts = wall_ms << HLC_LOGICAL_BITS
    return Version(actor, ts, VClock({}), value, ts)


def test_future_versions_from_a_peer_are_refused_and_never_observed(tmp_path: Path) -> None:
    node = coordinator(tmp_path / "n1", "n1", None)
    try:
        now = int(time.time() * 1000)
        good = _version("n2#1", now, b"good")
        evil = _version("n3#1", 2**42, b"evil")  # in the 22nd century
        node.handle_replicate({"key": b"k", "versions": [version_to_wire(good)]})
        hlc = node._hlc
        with pytest.raises(ClockSkew):
            node.handle_replicate({"key": b"k", "versions": [version_to_wire(evil)]})
        assert [v.value for v in node.storage.get(b"k")] == [b"good"]
        assert node._hlc == hlc  # not observed
        batch = {"items": [[b"a", [version_to_wire(evil)]], [b"b", [version_to_wire(good)]]]}
        assert node.handle_replicate_batch(batch) == 1  # the good one applied, the evil skipped
        assert node.storage.get(b"a") == ()
        assert [v.value for v in node.storage.get(b"b")] == [b"good"]
        # a forwarded write's context from the future
        future_context = {"x": [1, now + 3600_000]}
        with pytest.raises(ClockSkew):
            import asyncio

            asyncio.run(node.handle_coordinate_put(
                {"key": b"c", "value": b"v", "context": future_context, "required": 1}
            ))  # fmt: skip
        assert node.storage.get(b"c") == ()
        refused = node.metrics.refused_input.labels("peer", "clock")._value.get()
        assert refused == 3
    finally:
        node.storage.close()
