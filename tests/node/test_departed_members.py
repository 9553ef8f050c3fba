"""How long a node keeps and then quarantines members that departed follows its settings
(``gossip.departure_periods``): the hint window and the tombstone grace, not a constant."""

from __future__ import annotations

from pathlib import Path

from ringkv.core import gossip as g
from ringkv.core.gossip import Gossiper
from ringkv.node.config import NodeConfig
from ringkv.node.membership import Membership
from ringkv.node.storage import Storage


def test_periods_follow_the_hint_window_and_the_tombstone_grace() -> None:
    assert g.departure_periods(3 * 3600.0, 10 * 86400.0, 1.0) == (3 * 3600.0, 10 * 86400.0)
    assert g.departure_periods(600.0, 7200.0, 1.0) == (600.0, 7200.0)
    # A very short hint window still leaves every member time to hear of the departure.
    assert g.departure_periods(0.0, 7200.0, 1.0) == (g.KEEP_DEPARTED_ROUNDS * 1.0, 7200.0)
    assert g.departure_periods(0.0, 7200.0, 2.0) == (g.KEEP_DEPARTED_ROUNDS * 2.0, 7200.0)
    # --tombstone-grace 0: the quarantine never ends before the member is dropped.
    assert g.departure_periods(900.0, 0.0, 1.0) == (900.0, 900.0)


def test_a_node_drops_and_quarantines_departed_members_per_its_settings(tmp_path: Path) -> None:
    config = NodeConfig(
        node_id="a", data_dir=str(tmp_path), hint_window=120.0, tombstone_grace=1000.0
    )
    storage = Storage(str(tmp_path / "db"))
    try:
        member = Membership(config, storage, messaging=None, incarnation=1)  # type: ignore[arg-type]
        assert (member.keep_departed, member.quarantine) == (120.0, 1000.0)
        gone = Gossiper("b", 5, {g.ZONE: "z", g.STATUS: g.LEFT})
        member.gossiper.apply({"b": gone.local.delta_since(-1)})
        member._evict_departed(now=10.0)  # seen departing at 10 s
        member._evict_departed(now=129.0)
        assert "b" in member.gossiper.states  # kept for the hint window
        member._evict_departed(now=130.0)
        assert "b" not in member.gossiper.states
        assert member.gossiper.quarantine["b"] == (5, 1130.0)
        # A stale peer's news of it is ignored for the tombstone grace ...
        member.gossiper.apply({"b": gone.local.delta_since(-1)})
        assert "b" not in member.gossiper.states
        member._evict_departed(now=1129.0)
        assert "b" in member.gossiper.quarantine
        # ... and not after.
        member._evict_departed(now=1130.0)
        assert "b" not in member.gossiper.quarantine
    finally:
        storage.close()
