"""plan.decide: the next single action and the status, for each situation."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.operator import plan
from ringkv.operator.plan import (
    CANCEL,
    DECOMMISSION,
    DELETE_PVC,
    NONE,
    REPLACE,
    RESTART,
    SCALE,
    ClusterReport,
    Member,
    Observed,
    PvcState,
    decide,
    iso,
)
from ringkv.operator.spec import ClusterSpec

from .conftest import ZONES, cluster, condition, make_spec

NOW = 1_800_000_000.0
ONE = {"zone-a": 1, "zone-b": 1, "zone-c": 1}
TWO = {"zone-a": 2, "zone-b": 2, "zone-c": 2}


def step(spec: ClusterSpec, observed: Observed, prev: dict[str, Any] | None = None,
         now: float = NOW) -> plan.Decision:  # fmt: skip
    return decide(spec, observed, prev, now, generation=1)


# -- create ------------------------------------------------------------------------------


def test_fresh_create_starts_with_the_first_node_of_the_first_zone(spec: ClusterSpec) -> None:
    d = step(spec, Observed({}, ring=None))
    assert d.action.kind == SCALE
    assert (d.action.zone, d.action.replicas, d.action.node) == ("zone-a", 1, "kv-zone-a-0")
    assert d.status["phase"] == "Pending"
    assert condition(d.status, "Available")["status"] == "False"
    assert condition(d.status, "Progressing")["reason"] == "Creating"


def test_create_waits_for_each_node_then_adds_the_next_zone(spec: ClusterSpec) -> None:
    starting = cluster(spec, {"zone-a": 1}, not_ready={"kv-zone-a-0"},
                       states={"kv-zone-a-0": "absent"}, ring=False)  # fmt: skip
    d = step(spec, starting)
    assert d.action.kind == NONE
    assert d.status["phase"] == "Creating"
    one = cluster(spec, {"zone-a": 1})
    d = step(spec, one)
    assert (d.action.kind, d.action.zone, d.action.replicas) == (SCALE, "zone-b", 1)
    assert condition(d.status, "Available")["status"] == "False"  # 1 node < RF 3
    d = step(spec, cluster(spec, {"zone-a": 1, "zone-b": 1}))
    assert (d.action.kind, d.action.zone, d.action.replicas) == (SCALE, "zone-c", 1)


def test_formed_cluster_is_available_and_idle(spec: ClusterSpec) -> None:
    d = step(spec, cluster(spec, ONE))
    assert d.action.kind == NONE
    s = d.status
    assert s["phase"] == "Running"
    assert (s["replicas"], s["readyReplicas"], s["updatedReplicas"]) == (3, 3, 3)
    assert s["selector"] == ("app.kubernetes.io/component=node,app.kubernetes.io/instance=kv,"
                             "app.kubernetes.io/name=ringkv")  # fmt: skip
    assert condition(s, "Available")["status"] == "True"
    assert condition(s, "Progressing")["status"] == "False"
    assert condition(s, "Degraded")["status"] == "False"
    assert [z["replicas"] for z in s["zones"]] == [1, 1, 1]
    assert {m["state"] for m in s["members"]} == {"normal"}
    assert s["observedGeneration"] == 1


# -- scale up ------------------------------------------------------------------------------


def test_scale_up_3_to_6_adds_one_node_at_a_time_in_zone_order() -> None:
    spec = make_spec(replicas=6)
    counts = dict(ONE)
    added = []
    for _ in range(3):
        d = step(spec, cluster(spec, counts))
        assert d.action.kind == SCALE
        assert d.action.replicas == counts[d.action.zone] + 1
        added.append(d.action.node)
        assert condition(d.status, "Progressing")["reason"] == "ScalingUp"
        # the new pod is starting: nothing else happens until it is ready
        counts[d.action.zone] += 1
        new = d.action.node
        waiting = cluster(spec, counts, not_ready={new}, states={new: "absent"})
        assert step(spec, waiting).action.kind == NONE
        joining = cluster(spec, counts, not_ready={new}, states={new: "joining"},
                          in_progress=f"{new} is joining")  # fmt: skip
        dj = step(spec, joining)
        assert dj.action.kind == NONE
        assert condition(dj.status, "Progressing")["reason"] == "Joining"
        assert dj.status["phase"] == "Scaling"
    assert added == ["kv-zone-a-1", "kv-zone-b-1", "kv-zone-c-1"]
    d = step(spec, cluster(spec, counts))
    assert d.action.kind == NONE and d.status["phase"] == "Running"


def test_scale_out_is_done_only_once_cleanup_is_and_the_next_step_waits_for_it() -> None:
    """After a join the old owners delete what they gave away: until every node is done the
    cluster is Progressing (CleaningUp) and neither the next node nor a roll starts."""
    spec = make_spec(replicas=5)
    four = {"zone-a": 2, "zone-b": 1, "zone-c": 1}
    cleaning = cluster(spec, four, cleanup_pending=("kv-zone-a-0",))
    report = {"node": "kv-zone-a-0", "state": "running", "bytes_done": 300, "bytes_total": 1200}
    cleaning = dataclasses.replace(
        cleaning,
        ring=dataclasses.replace(cleaning.ring, cleanup=(report,)),  # type: ignore[type-var]
    )
    d = step(spec, cleaning)
    assert d.action.kind == NONE
    progressing = condition(d.status, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "CleaningUp")
    assert "kv-zone-a-0" in progressing["message"] and "25.0%" in progressing["message"]
    assert d.status["phase"] == "Scaling"
    assert d.status["progress"]["operation"] == "cleanup"
    assert d.status["progress"]["percent"] == 25.0
    assert plan.scaling_blocked(make_spec(replicas=4), cleaning)
    rolling = cluster(spec, four, cleanup_pending=("kv-zone-a-0",),
                      revisions={"kv-zone-b-0": "old"})  # fmt: skip
    assert step(spec, rolling).action.kind == NONE  # no restart on top of a cleanup either
    # once cleanup is done, the next step (the fifth node) starts
    d = step(spec, cluster(spec, four))
    assert d.action.kind == SCALE and d.action.node == "kv-zone-b-1"
    done = step(make_spec(replicas=4), cluster(make_spec(replicas=4), four))
    assert done.status["phase"] == "Running"
    assert condition(done.status, "Progressing")["status"] == "False"


def test_join_progress_is_reported(spec: ClusterSpec) -> None:
    spec = make_spec(replicas=4)
    obs = cluster(
        spec,
        {"zone-a": 2, "zone-b": 1, "zone-c": 1},
        not_ready={"kv-zone-a-1"},
        states={"kv-zone-a-1": "joining"},
        in_progress="kv-zone-a-1 is joining",
    )
    change = {"op": "join", "node": "kv-zone-a-1", "state": "running", "transfers": 10,
              "transfers_done": 4, "bytes_sent": 250, "bytes_total": 1000,
              "rate_bytes_per_second": 50.0, "eta_seconds": 15.0}  # fmt: skip
    obs = Observed(obs.statefulsets, obs.pods, obs.pvcs,
                   ClusterReport(obs.ring.members, obs.ring.in_progress, change))  # type: ignore[union-attr]  # fmt: skip
    d = step(spec, obs)
    p = d.status["progress"]
    assert (p["operation"], p["node"], p["percent"], p["transfersDone"]) == (
        "join", "kv-zone-a-1", 25.0, 4)  # fmt: skip
    assert "25.0%" in condition(d.status, "Progressing")["message"]


def _fourth_node_unready_and_unheard(spec: ClusterSpec, **states: str) -> Observed:
    """4 nodes; kv-zone-a-1's pod runs but is not ready, and the node asked calls it dead."""
    return cluster(
        spec,
        {"zone-a": 2, "zone-b": 1, "zone-c": 1},
        not_ready={"kv-zone-a-1"},
        dead={"kv-zone-a-1"},
        states=states,
    )


def test_a_joiner_still_starting_and_not_yet_heard_is_waited_for_not_down() -> None:
    """Gossip spreads a join before the joiner's first heartbeat reaches the node asked: a
    joining member whose pod is running but not ready is starting, not a node down."""
    spec = make_spec(replicas=4)
    d = step(spec, _fourth_node_unready_and_unheard(spec, **{"kv-zone-a-1": "joining"}))
    assert condition(d.status, "Degraded")["reason"] == "AsExpected", d.status
    assert d.action.kind != REPLACE


def test_a_new_node_just_joined_and_not_yet_reached_is_waited_for_not_down() -> None:
    """The scale-up's new node, normal (its join done) but its pod not ready yet, that the
    node asked has not reached yet (a first connection to a new pod's name can fail): starting,
    not down -- within the grace of the scale-up; another node in that state is down."""
    spec = make_spec(replicas=4)
    obs = _fourth_node_unready_and_unheard(spec)
    added = {
        "phase": "Scaling",
        "lastAction": {
            "action": "scale",
            "node": "kv-zone-a-1",
            "zone": "zone-a",
            "time": iso(NOW - 30),
        },
    }
    d = plan.decide(spec, obs, added, NOW)
    assert condition(d.status, "Degraded")["reason"] == "AsExpected", d.status
    assert d.action.kind != REPLACE
    d = plan.decide(spec, obs, {"phase": "Running"}, NOW)
    assert condition(d.status, "Degraded")["reason"] == "NodeDown", d.status
    late = {**added, "lastAction": {**added["lastAction"], "time": iso(NOW - 3600)}}
    d = plan.decide(spec, obs, late, NOW)
    assert condition(d.status, "Degraded")["reason"] == "NodeDown", d.status


# -- scale down ----------------------------------------------------------------------------


def test_scale_down_6_to_3_decommissions_before_shrinking() -> None:
    spec = make_spec(replicas=3)
    counts = dict(TWO)
    removed = []
    for _ in range(3):
        d = step(spec, cluster(spec, counts))
        assert d.action.kind == DECOMMISSION, d.action
        node = d.action.node
        assert node is not None
        zone = d.action.zone
        assert zone is not None
        assert node == spec.pod_name(zone, counts[zone] - 1)
        # leaving: never shrink the StatefulSet, just wait
        leaving = cluster(spec, counts, states={node: "leaving"}, in_progress=f"{node} is leaving")
        d2 = step(spec, leaving)
        assert d2.action.kind == NONE
        assert condition(d2.status, "Progressing")["reason"] == "Decommissioning"
        # still normal (the request not seen yet): at most the same decommission again
        d3 = step(spec, cluster(spec, counts))
        assert (d3.action.kind, d3.action.node) == (DECOMMISSION, node)
        # left: now shrink, by one
        d4 = step(spec, cluster(spec, counts, states={node: "left"}))
        assert (d4.action.kind, d4.action.zone, d4.action.replicas) == (
            SCALE, zone, counts[zone] - 1)  # fmt: skip
        counts[zone] -= 1
        removed.append(node)
        # its volume goes once the pod is gone
        obs = cluster(spec, counts, extra_members={node: "left"})
        obs = Observed(obs.statefulsets, obs.pods,
                       {f"data-{node}": PvcState(f"data-{node}")}, obs.ring)  # fmt: skip
        d5 = step(spec, obs)
        assert (d5.action.kind, d5.action.pvc) == (DELETE_PVC, f"data-{node}")
    assert removed == ["kv-zone-c-1", "kv-zone-b-1", "kv-zone-a-1"]
    assert step(spec, cluster(spec, counts)).action.kind == NONE


def test_no_statefulset_shrinks_unless_its_top_node_has_left() -> None:
    spec = make_spec(replicas=3)
    for state in ("normal", "leaving", "joining", "replacing", "starting"):
        obs = cluster(spec, TWO, states={"kv-zone-c-1": state})
        assert obs.ring is not None
        top = obs.ring.members["kv-zone-c-1"]
        # (a starting member with tokens holds data: a replacement waiting to be asked)
        members = {**obs.ring.members, top.id: dataclasses.replace(top, tokens=(1, 2))}
        obs = dataclasses.replace(obs, ring=dataclasses.replace(obs.ring, members=members))
        d = step(spec, obs)
        assert d.action.kind != SCALE or d.action.replicas > 2  # type: ignore[operator]


# -- scaling reversed half-way --------------------------------------------------------------


def test_scale_up_reversed_while_the_new_node_joins_cancels_the_join_then_removes_it() -> None:
    spec = make_spec(replicas=3)  # was 6; kv-zone-a-1 (the 4th node) is joining
    four = {"zone-a": 2, "zone-b": 1, "zone-c": 1}
    joining = cluster(spec, four, not_ready={"kv-zone-a-1"}, states={"kv-zone-a-1": "joining"},
                      in_progress="kv-zone-a-1 is joining")  # fmt: skip
    d = step(spec, joining)
    assert (d.action.kind, d.action.node) == (CANCEL, "kv-zone-a-1")
    assert condition(d.status, "Progressing")["reason"] == "ScalingDown"
    # the join is undone: the node gave its tokens back and waits, not ready: its pod goes
    cancelled = cluster(spec, four, not_ready={"kv-zone-a-1"},
                        states={"kv-zone-a-1": "starting"})  # fmt: skip
    d = step(spec, cancelled)
    assert (d.action.kind, d.action.zone, d.action.replicas) == (SCALE, "zone-a", 1)
    # then its volume (it never held data of its own)
    gone = cluster(spec, ONE, extra_members={"kv-zone-a-1": "starting"})
    gone = dataclasses.replace(gone, pvcs={"data-kv-zone-a-1": PvcState("data-kv-zone-a-1")})
    d = step(spec, gone)
    assert (d.action.kind, d.action.pvc) == (DELETE_PVC, "data-kv-zone-a-1")
    assert step(spec, cluster(spec, ONE)).action.kind == NONE


def test_scale_up_reversed_before_the_new_pod_started_removes_it_at_once() -> None:
    spec = make_spec(replicas=3)
    four = {"zone-a": 2, "zone-b": 1, "zone-c": 1}
    starting = cluster(spec, four, not_ready={"kv-zone-a-1"}, states={"kv-zone-a-1": "absent"})
    d = step(spec, starting)  # not "waiting for kv-zone-a-1 to become ready" forever
    assert (d.action.kind, d.action.zone, d.action.replicas) == (SCALE, "zone-a", 1)
    # without the nodes' word, nothing is removed
    blind = cluster(spec, four, not_ready={"kv-zone-a-1"}, states={"kv-zone-a-1": "absent"},
                    ring=False)  # fmt: skip
    assert step(spec, blind).action.kind == NONE


def test_scale_down_reversed_mid_decommission_cancels_it() -> None:
    spec = make_spec(replicas=6)  # was 3; kv-zone-c-1 is leaving
    leaving = cluster(spec, TWO, states={"kv-zone-c-1": "leaving"},
                      in_progress="kv-zone-c-1 is leaving")  # fmt: skip
    d = step(spec, leaving)
    assert (d.action.kind, d.action.node) == (CANCEL, "kv-zone-c-1")
    # a leaving node whose zone is still to shrink is waited for
    five = make_spec(replicas=5)
    d = step(five, leaving)
    assert d.action.kind == NONE
    assert condition(d.status, "Progressing")["reason"] == "Decommissioning"
    # cancelled: normal again, nothing more to do
    assert step(spec, cluster(spec, TWO)).action.kind == NONE


def test_scale_up_after_a_node_left_waits_for_its_volume_to_go() -> None:
    """6 -> 3 -> 6 reversed just after a node left: a pod started on the left node's volume
    would be a left node, removed again and again."""
    spec = make_spec(replicas=6)
    counts = {"zone-a": 2, "zone-b": 2, "zone-c": 1}
    obs = cluster(spec, counts, extra_members={"kv-zone-c-1": "left"})
    pvc = {"data-kv-zone-c-1": PvcState("data-kv-zone-c-1")}
    terminating = dataclasses.replace(obs, pvcs=pvc, pods={
        **obs.pods, "kv-zone-c-1": dataclasses.replace(
            obs.pods["kv-zone-a-0"], name="kv-zone-c-1", zone="zone-c", ordinal=1,
            deleting=True),
    })  # fmt: skip
    d = step(spec, terminating)
    assert d.action.kind == NONE
    assert "waiting for the volume data-kv-zone-c-1" in condition(d.status, "Progressing")[
        "message"]  # fmt: skip
    d = step(spec, dataclasses.replace(obs, pvcs=pvc))  # the pod is gone: the volume goes
    assert (d.action.kind, d.action.pvc) == (DELETE_PVC, "data-kv-zone-c-1")
    deleting = {"data-kv-zone-c-1": PvcState("data-kv-zone-c-1", deleting=True)}
    assert step(spec, dataclasses.replace(obs, pvcs=deleting)).action.kind == NONE
    d = step(spec, obs)  # gone: the node comes back, empty, and joins
    assert (d.action.kind, d.action.zone, d.action.replicas) == (SCALE, "zone-c", 2)


def test_volume_of_a_node_holding_data_is_never_deleted() -> None:
    spec = make_spec(replicas=3)
    # someone shrank the StatefulSet under a normal node: it is brought back, volume kept
    obs = cluster(spec, ONE, extra_members={"kv-zone-a-1": "normal"})
    obs = Observed(obs.statefulsets, obs.pods,
                   {"data-kv-zone-a-1": PvcState("data-kv-zone-a-1")}, obs.ring)  # fmt: skip
    d = step(spec, obs)
    assert (d.action.kind, d.action.zone, d.action.replicas) == (SCALE, "zone-a", 2)
    assert condition(d.status, "Degraded")["reason"] == "NodeRemovedUnsafely"


# -- failures ------------------------------------------------------------------------------


def test_node_down_less_than_after_waits_then_is_replaced() -> None:
    spec = make_spec(failureReplacement={"after": "5m"})
    down = cluster(spec, ONE, dead={"kv-zone-b-0"})
    d = step(spec, down)
    assert d.action.kind == NONE
    assert condition(d.status, "Degraded")["reason"] == "NodeDown"
    assert d.status["phase"] == "Degraded"
    member = next(m for m in d.status["members"] if m["id"] == "kv-zone-b-0")
    assert member["downSince"] == iso(NOW)
    # 4 minutes later: still waiting (the first sighting is remembered in the status)
    d2 = step(spec, down, d.status, NOW + 240)
    assert d2.action.kind == NONE
    assert next(m for m in d2.status["members"] if m["id"] == "kv-zone-b-0")["downSince"] == iso(
        NOW
    )
    # past `after`: replace
    d3 = step(spec, down, d2.status, NOW + 301)
    assert d3.action.kind == REPLACE
    assert (d3.action.node, d3.action.pvc) == ("kv-zone-b-0", "data-kv-zone-b-0")
    assert d3.status["replacements"] == 1
    assert d3.status["progress"]["operation"] == "replace"
    # the replacement is not replaced again right away while it comes back
    gone = cluster(spec, ONE, dead={"kv-zone-b-0"}, no_pod={"kv-zone-b-0"})
    d4 = step(spec, gone, d3.status, NOW + 310)
    assert d4.action.kind == NONE
    # the new pod took the id over and streams: Progressing, not replaced again
    refill = cluster(spec, ONE, not_ready={"kv-zone-b-0"}, states={"kv-zone-b-0": "replacing"},
                     in_progress="kv-zone-b-0 is replacing")  # fmt: skip
    d5 = step(spec, refill, d4.status, NOW + 1000)
    assert d5.action.kind == NONE
    assert condition(d5.status, "Progressing")["reason"] == "Replacing"


def test_pod_gone_counts_as_down() -> None:
    spec = make_spec(failureReplacement={"after": "1m"})
    obs = cluster(spec, ONE, dead={"kv-zone-a-0"}, no_pod={"kv-zone-a-0"})
    first = step(spec, obs)
    assert step(spec, obs, first.status, NOW + 61).action.kind == REPLACE


def test_lost_volume_is_replaced_at_once() -> None:
    spec = make_spec()
    obs = cluster(spec, ONE, dead={"kv-zone-c-0"})
    obs = Observed(
        obs.statefulsets,
        obs.pods,
        {"data-kv-zone-c-0": PvcState("data-kv-zone-c-0", phase="Lost")},
        obs.ring,
    )
    d = step(spec, obs)
    assert (d.action.kind, d.action.node) == (REPLACE, "kv-zone-c-0")
    assert "volume is lost" in d.action.message


def test_no_replacement_when_disabled_or_two_nodes_down() -> None:
    spec = make_spec(failureReplacement={"enabled": False, "after": "1m"})
    obs = cluster(spec, ONE, dead={"kv-zone-a-0"})
    first = step(spec, obs)
    assert step(spec, obs, first.status, NOW + 3600).action.kind == NONE
    spec = make_spec(replicas=6, failureReplacement={"after": "1m"})
    obs = cluster(spec, TWO, dead={"kv-zone-a-0", "kv-zone-b-0"})
    first = step(spec, obs)
    d = step(spec, obs, first.status, NOW + 3600)
    assert d.action.kind == NONE
    assert condition(d.status, "Degraded")["status"] == "True"


def test_no_scaling_while_a_node_is_down() -> None:
    spec = make_spec(replicas=6)
    d = step(spec, cluster(spec, ONE, dead={"kv-zone-a-0"}))
    assert d.action.kind == NONE


def test_available_needs_a_quorum_of_every_range() -> None:
    spec = make_spec()
    one_down = step(spec, cluster(spec, ONE, dead={"kv-zone-a-0"}))
    assert condition(one_down.status, "Available")["status"] == "True"
    two_down = step(spec, cluster(spec, ONE, dead={"kv-zone-a-0", "kv-zone-b-0"}))
    assert condition(two_down.status, "Available")["status"] == "False"


def members_with_tokens() -> dict[str, Member]:
    """Two normal, alive members in each zone, each with 16 tokens."""
    from ringkv.core.allocation import allocate_tokens
    from ringkv.core.ring import Ring

    ring = Ring({}, {})
    members = {}
    for z in ZONES:
        for i in range(2):
            node = f"kv-{z}-{i}"
            tokens = allocate_tokens(ring, node, 16)
            ring = ring.with_node(node, z, tokens)
            members[node] = Member(node, z, "normal", True, tuple(tokens))
    return members


def test_available_from_tokens() -> None:
    """With tokens, every range's preference list is checked (zone-aware placement)."""
    members = members_with_tokens()
    assert plan.quorum_available(members, 3)[0]
    # a whole zone down: every range still has 2 of 3 replicas (one per zone)
    zone_down = {k: Member(m.id, m.zone, m.state, m.zone != "zone-a", m.tokens)
                 for k, m in members.items()}  # fmt: skip
    assert plan.quorum_available(zone_down, 3)[0]
    # two zones down: no quorum anywhere
    two = {k: Member(m.id, m.zone, m.state, m.zone == "zone-c", m.tokens)
           for k, m in members.items()}  # fmt: skip
    ok, message = plan.quorum_available(two, 3)
    assert not ok and "lack a serving quorum" in message


def test_a_starting_member_holding_tokens_keeps_its_place_in_the_ring() -> None:
    """As on the nodes (``ringkv.core.gossip.in_ring``): a ``starting`` member with tokens (a
    replacement waiting for ``replace``) owns its ranges but serves none of them, so its
    ranges are not handed to another node of its zone when the quorum is counted."""
    members = members_with_tokens()
    a0, b0 = members["kv-zone-a-0"], members["kv-zone-b-0"]
    members["kv-zone-a-0"] = Member(a0.id, a0.zone, "starting", True, a0.tokens)
    assert plan.quorum_available(members, 3)[0]  # a0's ranges: 2 of 3 still serve
    members["kv-zone-b-0"] = Member(b0.id, b0.zone, "normal", False, b0.tokens)
    ok, message = plan.quorum_available(members, 3)
    assert not ok and "lack a serving quorum" in message  # ranges on both a0 and b0
    # without tokens a starting member is no ring member (it is still meeting its seeds)
    tokenless = {**members, "kv-zone-a-0": Member(a0.id, a0.zone, "starting", True)}
    gaps = plan.quorum_gaps(tokenless, 3)
    assert gaps is not None and gaps[0] == 0


# -- rolling update ------------------------------------------------------------------------


def test_image_change_rolls_one_pod_at_a_time() -> None:
    spec = make_spec(image="ringkv:0.2.0")
    old = {f"kv-{z}-0": "rev0" for z in ZONES}
    restarted = []
    prev: dict[str, Any] | None = None
    now = NOW
    for _ in range(3):
        d = step(spec, cluster(spec, ONE, revisions=old), prev, now)
        assert d.action.kind == RESTART, d.action
        node = d.action.node
        assert node is not None
        restarted.append(node)
        assert d.status["phase"] == "Upgrading"
        prev, now = d.status, now + 5
        # the pod is going down and coming back: wait, not Degraded
        d2 = step(spec, cluster(spec, ONE, revisions=old, dead={node}, no_pod={node}), prev, now)
        assert d2.action.kind == NONE
        assert condition(d2.status, "Degraded")["status"] == "False"
        assert condition(d2.status, "Progressing")["reason"] == "RollingUpdate"
        prev, now = d2.status, now + 5
        del old[node]
        # back on the new revision but not ready yet: wait
        d3 = step(spec, cluster(spec, ONE, revisions=old, not_ready={node}), prev, now)
        assert d3.action.kind == NONE
        prev, now = d3.status, now + 5
        # ready, but hints for it are still pending elsewhere: wait
        if old:
            d4 = step(spec, cluster(spec, ONE, revisions=old, hints={node: 7}), prev, now)
            assert d4.action.kind == NONE
            assert "hints" in condition(d4.status, "Progressing")["message"]
            prev, now = d4.status, now + 5
    assert sorted(restarted) == sorted(f"kv-{z}-0" for z in ZONES)
    d = step(spec, cluster(spec, ONE), prev, now)
    assert d.action.kind == NONE and d.status["phase"] == "Running"
    assert d.status["updatedReplicas"] == 3


def test_failed_node_stops_the_roll_with_degraded() -> None:
    spec = make_spec(image="ringkv:bad", failureReplacement={"after": "1m"})
    revisions = {"kv-zone-b-0": "rev0", "kv-zone-c-0": "rev0"}
    # kv-zone-a-0 was restarted long ago on the new image and is still dead
    prev = {"lastAction": {"action": RESTART, "node": "kv-zone-a-0", "time": iso(NOW - 3600)}}
    obs = cluster(spec, ONE, revisions=revisions, dead={"kv-zone-a-0"})
    d = step(spec, obs, prev)
    d = step(spec, obs, d.status, NOW + 3600)
    assert d.action.kind == NONE  # neither the next restart nor a replacement
    assert condition(d.status, "Degraded")["reason"] == "UpgradeStalled"


def test_restarted_pod_that_keeps_crashing_stalls_the_roll_at_once() -> None:
    """A pod the roll restarted whose container keeps exiting (a template that cannot start)
    stops the roll with UpgradeStalled right away, not after the restart grace; a pod that
    is merely slow to come back is still waited for."""
    spec = make_spec(settings={"stream-rate": "0"}, failureReplacement={"after": "20s"})
    revisions = {"kv-zone-b-0": "rev0", "kv-zone-c-0": "rev0"}
    prev = {"lastAction": {"action": RESTART, "node": "kv-zone-a-0", "time": iso(NOW - 20)}}
    obs = cluster(spec, ONE, revisions=revisions, dead={"kv-zone-a-0"})
    slow = step(spec, obs, prev)
    assert slow.action.kind == NONE
    assert condition(slow.status, "Degraded")["status"] == "False"
    assert condition(slow.status, "Progressing")["reason"] == "RollingUpdate"
    assert slow.status["phase"] == "Upgrading"
    pod = dataclasses.replace(obs.pods["kv-zone-a-0"], restarts=2)
    crashing = dataclasses.replace(obs, pods={**obs.pods, "kv-zone-a-0": pod})
    d = step(spec, crashing, slow.status, NOW + 5)
    assert d.action.kind == NONE  # no next restart, and no replacement either
    deg = condition(d.status, "Degraded")
    assert (deg["status"], deg["reason"]) == ("True", "UpgradeStalled")
    assert "kv-zone-a-0 keeps crashing (2 restarts)" in deg["message"]
    assert d.status["phase"] == "Degraded"
    # long past failureReplacement.after: still stalled, never replaced (the volume is kept)
    d = step(spec, crashing, d.status, NOW + 3600)
    assert d.action.kind == NONE
    assert condition(d.status, "Degraded")["reason"] == "UpgradeStalled"
    # fixed (the pod on the current template is ready again): the roll goes on
    fixed = cluster(spec, ONE, revisions=revisions)
    d = step(spec, fixed, d.status, NOW + 3700)
    assert d.action.kind == RESTART and d.action.node in revisions
    assert condition(d.status, "Degraded")["status"] == "False"


def test_phase_while_a_node_becomes_ready_says_why() -> None:
    """A pod that is not ready yet after a roll's restart, a replacement, a scale-up or a
    restart of its own: the phase says which (a replacement is not "Scaling")."""
    spec = make_spec()
    settled = step(spec, cluster(spec, ONE)).status
    node = "kv-zone-c-0"

    def waiting(action: str | None, **kw: Any) -> dict[str, Any]:
        prev = dict(settled)
        if action:  # as the acting pass writes it: the node reported not ready from then on
            prev["lastAction"] = {"action": action, "node": node, "time": iso(NOW - 30)}
            prev["members"] = [{**m, "ready": m["id"] != node} for m in settled["members"]]
        d = step(spec, cluster(spec, ONE, not_ready={node}, **kw), prev)
        assert d.action.kind == NONE
        return d.status

    def why(status: dict[str, Any]) -> tuple[str, str]:
        return status["phase"], condition(status, "Progressing")["reason"]

    # the last pod of a roll restarted on the new template (nothing is outdated any more)
    assert why(waiting(RESTART)) == ("Upgrading", "RollingUpdate")
    # the operator replaced it: refilled, not ready yet
    assert why(waiting(REPLACE)) == ("Replacing", "Replacing")
    # its pod was killed and came back on its volume: nothing scales
    st_ = waiting(None)
    assert why(st_) == ("Running", "WaitingForNodes")
    assert condition(st_, "Degraded")["status"] == "False"
    # a new node of a scale-up, not in the ring yet, or joined and not ready yet
    assert why(waiting(SCALE, states={node: "absent"})) == ("Scaling", "ScalingUp")
    assert why(waiting(SCALE)) == ("Scaling", "ScalingUp")
    # restarted, came back (a status reported it ready), then killed 30 s later: a failure of
    # its own, not the restart -- not "Upgrading", and a down node is NodeDown, not waited for
    back = {**settled, "lastAction": {"action": RESTART, "node": node, "time": iso(NOW - 30)}}
    assert why(step(spec, cluster(spec, ONE, not_ready={node}), back).status) == (
        "Running",
        "WaitingForNodes",
    )
    d = step(spec, cluster(spec, ONE, dead={node}, no_pod={node}), back)
    assert condition(d.status, "Degraded")["reason"] == "NodeDown"
    # the acting pass itself reports the node it restarts as not ready
    spec2 = make_spec(image="ringkv:0.2.0")
    d = step(spec2, cluster(spec2, ONE, revisions={f"kv-{z}-0": "rev0" for z in ZONES}))
    assert d.action.kind == RESTART
    assert [m["ready"] for m in d.status["members"] if m["id"] == d.action.node] == [False]
    # long after the restart: a pod not ready is no longer the roll's
    prev = {**settled, "lastAction": {"action": RESTART, "node": node, "time": iso(NOW - 3600)}}
    d = step(spec, cluster(spec, ONE, not_ready={node}), prev)
    assert d.status["phase"] == "Running"


def test_paused_takes_no_action() -> None:
    spec = make_spec(replicas=6, paused=True)
    d = step(spec, cluster(spec, ONE))
    assert d.action.kind == NONE and d.status["phase"] == "Paused"


def test_condition_transition_times_are_kept() -> None:
    spec = make_spec()
    d1 = step(spec, cluster(spec, ONE), None, NOW)
    d2 = step(spec, cluster(spec, ONE), d1.status, NOW + 100)
    assert condition(d2.status, "Available")["lastTransitionTime"] == iso(NOW)
    d3 = step(spec, cluster(spec, ONE, dead={"kv-zone-a-0", "kv-zone-b-0"}), d2.status, NOW + 200)
    assert condition(d3.status, "Available")["lastTransitionTime"] == iso(NOW + 200)


# -- properties ----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(start=st.integers(1, 12), goal=st.integers(1, 12), zones=st.integers(1, 4))
def test_scaling_converges_one_node_at_a_time_and_stays_balanced(
    start: int, goal: int, zones: int
) -> None:
    """Whatever the start and goal, following the plan (and the nodes doing what they are
    told) reaches the goal's even spread; every step changes one StatefulSet by one, and a
    StatefulSet only shrinks past a node that has left."""
    names = [f"z{i}" for i in range(zones)]
    spec = make_spec(zones=names, replicas=goal, replicationFactor=1)
    counts = spec.zone_targets(start)
    states: dict[str, str] = {}
    for _ in range(4 * (abs(goal - start) + 2)):
        d = step(spec, cluster(spec, counts, states=states))
        a = d.action
        if a.kind == NONE:
            break
        if a.kind == SCALE:
            assert a.zone is not None and a.replicas is not None
            assert abs(a.replicas - counts[a.zone]) == 1
            if a.replicas < counts[a.zone]:
                assert states.get(spec.pod_name(a.zone, a.replicas)) == "left"
            counts[a.zone] = a.replicas
            states = {k: v for k, v in states.items() if k != a.node}
        elif a.kind == DECOMMISSION:
            assert a.node is not None
            states[a.node] = "left"  # the node streamed its data away
        else:
            raise AssertionError(a)
    assert counts == spec.zone_targets(goal)
    assert sum(counts.values()) == goal


@given(replicas=st.integers(3, 30))
def test_status_replicas_match_statefulsets(replicas: int) -> None:
    spec = make_spec(replicas=replicas)
    counts = spec.zone_targets()
    s = step(spec, cluster(spec, counts)).status
    assert s["replicas"] == replicas == s["readyReplicas"]
    assert [z["replicas"] for z in s["zones"]] == [counts[z] for z in ZONES]


def test_autoscale_decisions() -> None:
    spec = make_spec(autoscaling={"enabled": True, "minReplicas": 3, "maxReplicas": 5,
                                  "targetRequestsPerSecondPerNode": 100,
                                  "cooldownSeconds": 60})  # fmt: skip
    assert plan.autoscale(spec, 3, 1000.0, None, None, NOW, False) == 4  # one at a time
    assert plan.autoscale(spec, 5, 1000.0, None, None, NOW, False) is None  # at max
    assert plan.autoscale(spec, 3, 1000.0, None, NOW - 10, NOW, False) is None  # cool-down
    assert plan.autoscale(spec, 3, 1000.0, None, None, NOW, True) is None  # change running
    assert plan.autoscale(spec, 3, 310.0, None, None, NOW, False) is None  # within tolerance
    assert plan.autoscale(spec, 4, 10.0, None, None, NOW, False) == 3  # down, not below min
    assert plan.autoscale(spec, 3, 10.0, None, None, NOW, False) is None
    off = make_spec()
    assert plan.autoscale(off, 3, 1e6, None, None, NOW, False) is None


def test_autoscaling_waits_for_a_settled_cluster() -> None:
    """Autoscaling moves spec.replicas only when nothing else runs: not while the previous
    step is still to be carried out, a node joins or is not ready yet after its join, a ring
    change runs, or a node is down."""
    spec = make_spec(replicas=4)
    four = {"zone-a": 2, "zone-b": 1, "zone-c": 1}
    assert not plan.scaling_blocked(spec, cluster(spec, four))
    assert plan.scaling_blocked(spec, cluster(spec, ONE))  # the step 3 -> 4 not taken yet
    new = "kv-zone-a-1"
    starting = cluster(spec, four, not_ready={new}, states={new: "absent"})
    assert plan.scaling_blocked(spec, starting)  # the new pod starts
    assert plan.scaling_blocked(spec, cluster(spec, four, states={new: "joining"}))
    joined = cluster(spec, four, not_ready={new})  # joined, not ready yet: still blocked
    assert plan.scaling_blocked(spec, joined)
    assert plan.scaling_blocked(spec, cluster(spec, four, in_progress="kv-zone-a-1 joining"))
    assert plan.scaling_blocked(spec, cluster(spec, four, dead={"kv-zone-b-0"}))
    assert plan.scaling_blocked(spec, cluster(spec, four, ring=False))
    assert plan.scaling_blocked(spec, cluster(spec, four, extra_members={"kv-zone-c-1": "leaving"}))


def test_request_rate_needs_every_node_both_times() -> None:
    """A node whose /metrics scrape fails (a loaded node answering slowly) must not read as
    the load going away -- or coming back as a burst the next pass."""
    first, sample = plan.request_rate(None, {"a": 100.0, "b": 10.0}, NOW)
    assert first is None and sample == {"a": (NOW, 100.0), "b": (NOW, 10.0)}
    rate, sample2 = plan.request_rate(sample, {"a": 600.0, "b": 60.0}, NOW + 5)
    assert rate == 110.0  # (500 + 50) / 5 s
    # the busy node did not answer: no rate (and the next pass starts over)
    assert plan.request_rate(sample2, {"a": None, "b": 70.0}, NOW + 10) == (None, None)
    # a node joined (not in the last sample), or restarted (its counter went back): no rate
    assert plan.request_rate(sample2, {"a": 700.0, "b": 70.0, "c": 0.0}, NOW + 10)[0] is None
    assert plan.request_rate(sample2, {"a": 3.0, "b": 70.0}, NOW + 10)[0] is None
    assert plan.request_rate(sample2, {}, NOW + 10) == (None, None)


def test_node_failing_after_its_restart_came_back_is_a_failure() -> None:
    """Restarted by the roll, back (a pass records ``lastAction.done``), then its machine
    fails a minute later, well within the restart grace: Degraded NodeDown and replaced after
    ``failureReplacement.after``, not "waiting for the restarted node" for 3 minutes."""
    spec = make_spec(image="ringkv:0.2.0", failureReplacement={"after": "20s"})
    node = "kv-zone-c-0"
    # the last pod of the roll: restarted ...
    d = step(spec, cluster(spec, ONE, revisions={node: "rev0"}))
    assert (d.action.kind, d.action.node) == (RESTART, node)
    # ... down while it restarts: waited for
    d = step(spec, cluster(spec, ONE, dead={node}, no_pod={node}), d.status, NOW + 5)
    assert condition(d.status, "Progressing")["reason"] == "RollingUpdate"
    assert not d.status["lastAction"].get("done")
    # ... back: the restart is done
    d = step(spec, cluster(spec, ONE), d.status, NOW + 15)
    assert d.status["lastAction"]["done"] is True and d.status["phase"] == "Running"
    # its machine fails: the pod is no longer ready, then the others see it dead
    d = step(spec, cluster(spec, ONE, not_ready={node}), d.status, NOW + 60)
    assert (d.status["phase"], condition(d.status, "Progressing")["reason"]) == (
        "Running",
        "WaitingForNodes",
    )
    d = step(spec, cluster(spec, ONE, dead={node}), d.status, NOW + 65)
    assert condition(d.status, "Degraded")["reason"] == "NodeDown"
    assert d.status["lastAction"]["done"] is True  # kept
    d = step(spec, cluster(spec, ONE, dead={node}), d.status, NOW + 86)
    assert (d.action.kind, d.action.node) == (REPLACE, node)


def test_pod_down_on_an_outdated_template_is_restarted_onto_the_current_one() -> None:
    """After a stall the user reverts the spec: the crash-looping pod is now on an outdated
    template, and with OnDelete nothing but the operator would move it to the fixed one."""
    spec = make_spec(failureReplacement={"after": "20s"})
    revisions = {"kv-zone-a-0": "rev-bad"}
    prev = {"lastAction": {"action": RESTART, "node": "kv-zone-a-0", "time": iso(NOW - 60)}}
    obs = cluster(spec, ONE, revisions=revisions, dead={"kv-zone-a-0"})
    pod = dataclasses.replace(obs.pods["kv-zone-a-0"], restarts=5)
    obs = dataclasses.replace(obs, pods={**obs.pods, "kv-zone-a-0": pod})
    d = step(spec, obs, prev)
    assert (d.action.kind, d.action.node) == (RESTART, "kv-zone-a-0")
    assert condition(d.status, "Degraded")["status"] == "False"
    # a pod already being deleted (its Kubernetes node is gone, say) is not restarted again
    gone = dataclasses.replace(pod, deleting=True)
    obs2 = dataclasses.replace(obs, pods={**obs.pods, "kv-zone-a-0": gone})
    d2 = step(spec, obs2, prev)
    assert d2.action.kind == NONE


# -- zones and replica load ----------------------------------------------------------------


def test_status_says_when_zones_cannot_balance_replica_load() -> None:
    even = make_spec(replicas=6)
    status = plan.decide(
        even, cluster(even, {"zone-a": 2, "zone-b": 2, "zone-c": 2}), None, NOW
    ).status
    assert (status["zoneSizes"], status["replicaLoadBound"]) == ("2/2/2", "1.00")
    assert status["zoneBalance"] == "zones allow an even replica load"
    uneven = make_spec(replicas=4)
    status = plan.decide(
        uneven, cluster(uneven, {"zone-a": 2, "zone-b": 1, "zone-c": 1}), None, NOW
    ).status
    assert (status["zoneSizes"], status["replicaLoadBound"]) == ("2/1/1", "1.33")
    assert (
        "1.33x the mean" in status["zoneBalance"] and "scaleByWholeZones" in status["zoneBalance"]
    )


def test_status_says_whether_each_nodes_shards_can_carry_equal_loads() -> None:
    """status.shardBalance: tokens claimed slice by slice need vnodes / shards >= 16 and zones
    whose own sub-ring decides a node's load."""

    def said(**overrides: Any) -> str:
        spec = make_spec(replicas=3, **overrides)
        counts = {"zone-a": 1, "zone-b": 1, "zone-c": 1}
        message: str = plan.decide(spec, cluster(spec, counts), None, NOW).status["shardBalance"]
        return message

    assert said() == "one shard per node"
    assert said(shards=8) == "each of the 8 shards claims 16 tokens in its own slice"
    few = said(shards=16)
    assert "fewer than 16 tokens for each of the 16 shards" in few and "vnodes 256" in few
    assert said(shards=16, vnodes=256) == "each of the 16 shards claims 16 tokens in its own slice"
    spec = make_spec(replicas=4, zones=["zone-a", "zone-b"], shards=2)
    two = plan.decide(spec, cluster(spec, {"zone-a": 2, "zone-b": 2}), None, NOW).status
    assert "2 zones and replicationFactor 3" in two["shardBalance"]


def test_scale_by_whole_zones_rounds_the_node_count_up() -> None:
    spec = make_spec(replicas=4, scaleByWholeZones=True)
    assert spec.node_count() == 6
    assert spec.zone_targets() == {"zone-a": 2, "zone-b": 2, "zone-c": 2}
    four = {"zone-a": 2, "zone-b": 1, "zone-c": 1}
    decision = plan.decide(spec, cluster(spec, four), None, NOW)
    assert decision.action.kind == plan.SCALE and decision.action.zone == "zone-b"
    assert decision.status["replicaLoadBound"] == "1.00"
    assert plan.scaling_blocked(spec, cluster(spec, four))  # 6 wanted, 4 running
    assert make_spec(replicas=4).node_count() == 4  # off by default


def test_autoscale_by_whole_zones_steps_one_node_per_zone() -> None:
    spec = make_spec(scaleByWholeZones=True,
                     autoscaling={"enabled": True, "minReplicas": 3, "maxReplicas": 9,
                                  "targetRequestsPerSecondPerNode": 100})  # fmt: skip
    assert plan.autoscale(spec, 3, 1000.0, None, None, NOW, False) == 6
    assert plan.autoscale(spec, 4, 1000.0, None, None, NOW, False) == 6  # to the next multiple
    assert plan.autoscale(spec, 9, 1e6, None, None, NOW, False) is None  # at max
    assert plan.autoscale(spec, 6, 10.0, None, None, NOW, False) == 3
    assert plan.autoscale(spec, 3, 10.0, None, None, NOW, False) is None  # not below min
    capped = make_spec(scaleByWholeZones=True,
                       autoscaling={"enabled": True, "minReplicas": 3, "maxReplicas": 8,
                                    "targetRequestsPerSecondPerNode": 100})  # fmt: skip
    assert plan.autoscale(capped, 6, 1e6, None, None, NOW, False) is None  # 9 > max
