"""plan.RULES: each reconcile rule alone (it applies, or it returns None and leaves the pass to
the next rule), and the order of precedence between them. tests/operator/test_plan.py checks
``decide`` as a whole."""

from __future__ import annotations

import dataclasses
from typing import Any

from ringkv.operator import plan
from ringkv.operator.plan import Facts, Observed, PodState, PvcState, facts, iso
from ringkv.operator.spec import ClusterSpec

from .conftest import ZONES, cluster, condition, make_spec

NOW = 1_800_000_000.0
ONE = {"zone-a": 1, "zone-b": 1, "zone-c": 1}
TWO = {"zone-a": 2, "zone-b": 2, "zone-c": 2}
RUNNING = {"phase": "Running"}  # a status of a cluster that has been available


def f_of(spec: ClusterSpec, observed: Observed, prev: dict[str, Any] | None = None,
         now: float = NOW) -> Facts:  # fmt: skip
    return facts(spec, observed, RUNNING if prev is None else prev, now)


def no_rule_but(f: Facts, wanted: plan.Rule) -> None:
    """Only ``wanted`` (among the rules before it) has a verdict for these facts."""
    for rule in plan.RULES:
        if rule is wanted:
            return
        assert rule(f) is None, rule.__name__


def test_the_order_of_precedence() -> None:
    assert [r.__name__ for r in plan.RULES] == [
        "paused",
        "remove_left_node",
        "remove_unjoined_node",
        "delete_removed_volume",
        "restore_removed_node",
        "create_first_node",
        "grow_volumes",
        "cancel_reversed_change",
        "wait_for_ring_change",
        "wait_for_restarted_node",
        "restart_stale_down_node",
        "stop_roll_on_failure",
        "report_zone_down",
        "replace_failed_node",
        "report_down_nodes",
        "wait_for_starting_pods",
        "cluster_unreachable",
        "wait_for_cleanup",
        "roll_one_pod",
        "scale_up",
        "scale_down",
    ]
    assert all(r.__name__ in (plan.__doc__ or "") for r in plan.RULES)


def test_a_settled_cluster_gets_no_verdict() -> None:
    spec = make_spec()
    f = f_of(spec, cluster(spec, ONE))
    assert [r.__name__ for r in plan.RULES if r(f) is not None] == []


def test_paused() -> None:
    spec = make_spec(paused=True, replicas=6)
    f = f_of(spec, cluster(spec, ONE))
    v = plan.paused(f)
    assert v is not None and v.action.kind == plan.NONE and v.progressing is not None
    assert v.progressing[0] == "Paused"
    assert plan.paused(f_of(make_spec(), cluster(make_spec(), ONE))) is None
    assert plan.scale_up(f) is not None  # what pausing holds back


def test_remove_left_node() -> None:
    spec = make_spec()
    counts = {"zone-a": 1, "zone-b": 1, "zone-c": 2}
    v = plan.remove_left_node(f_of(spec, cluster(spec, counts, states={"kv-zone-c-1": "left"})))
    assert v is not None
    assert (v.action.kind, v.action.zone, v.action.replicas) == (plan.SCALE, "zone-c", 1)
    assert v.progressing == ("ScalingDown", v.action.message)
    for state in ("normal", "leaving", "joining", "replacing", "starting"):
        f = f_of(spec, cluster(spec, counts, states={"kv-zone-c-1": state}))
        assert plan.remove_left_node(f) is None


def test_delete_removed_volume() -> None:
    spec = make_spec()
    obs = cluster(spec, ONE, extra_members={"kv-zone-a-1": "left"})
    pvcs = {"data-kv-zone-a-1": PvcState("data-kv-zone-a-1")}
    with_volume = dataclasses.replace(obs, pvcs=pvcs)
    v = plan.delete_removed_volume(f_of(spec, with_volume))
    assert v is not None and (v.action.kind, v.action.pvc) == (plan.DELETE_PVC, "data-kv-zone-a-1")
    # not while the node holds data, not without the nodes' word, not twice
    holding = cluster(spec, ONE, extra_members={"kv-zone-a-1": "normal"})
    assert plan.delete_removed_volume(f_of(spec, dataclasses.replace(holding, pvcs=pvcs))) is None
    assert (
        plan.delete_removed_volume(f_of(spec, dataclasses.replace(with_volume, ring=None))) is None
    )
    deleting = {"data-kv-zone-a-1": PvcState("data-kv-zone-a-1", deleting=True)}
    assert plan.delete_removed_volume(f_of(spec, dataclasses.replace(obs, pvcs=deleting))) is None


def test_a_volume_of_a_node_nobody_knows_is_kept() -> None:
    """A KVCluster deleted with deletePolicy Retain and created again starts one node at a
    time: the kept volumes of the nodes not started yet have no pod and no member, and must
    not be deleted (they hold the data). A node that left and was forgotten since (the last
    status says it left) still has its volume deleted."""
    spec = make_spec()
    first = cluster(spec, {"zone-a": 1, "zone-b": 0, "zone-c": 0})
    kept = {f"data-kv-zone-{z}-0": PvcState(f"data-kv-zone-{z}-0") for z in "abc"}
    f = f_of(spec, dataclasses.replace(first, pvcs=kept))
    assert plan.delete_removed_volume(f) is None
    d = plan.decide(spec, dataclasses.replace(first, pvcs=kept), None, NOW)
    assert d.action.kind == plan.SCALE and d.action.zone == "zone-b", d.action
    forgotten = {"members": [{"id": "kv-zone-b-0", "state": "left"}]}
    v = plan.delete_removed_volume(f_of(spec, dataclasses.replace(first, pvcs=kept), forgotten))
    assert v is not None and v.action.pvc == "data-kv-zone-b-0"


def test_restore_removed_node() -> None:
    spec = make_spec()
    f = f_of(spec, cluster(spec, ONE, extra_members={"kv-zone-b-1": "leaving"}))
    v = plan.restore_removed_node(f)
    assert v is not None and (v.action.kind, v.action.zone, v.action.replicas) == (
        plan.SCALE,
        "zone-b",
        2,
    )
    assert v.degraded is not None and v.degraded[0] == "NodeRemovedUnsafely"
    gone = f_of(spec, cluster(spec, ONE, extra_members={"kv-zone-b-1": "left"}))
    assert plan.restore_removed_node(gone) is None


def test_create_first_node() -> None:
    spec = make_spec()
    v = plan.create_first_node(f_of(spec, Observed({}, ring=None), prev={}))
    assert v is not None and (v.action.kind, v.action.node) == (plan.SCALE, "kv-zone-a-0")
    assert v.progressing is not None and v.progressing[0] == "Creating"
    assert plan.create_first_node(f_of(spec, cluster(spec, {"zone-a": 1}))) is None


def test_wait_for_ring_change() -> None:
    spec = make_spec(replicas=4)
    four = {"zone-a": 2, "zone-b": 1, "zone-c": 1}
    f = f_of(spec, cluster(spec, four, states={"kv-zone-a-1": "joining"}))
    no_rule_but(f, plan.wait_for_ring_change)
    v = plan.wait_for_ring_change(f)
    assert v is not None and v.action.kind == plan.NONE
    assert v.progressing == ("Joining", "kv-zone-a-1 is joining")
    elsewhere = f_of(spec, cluster(spec, ONE, in_progress="n9 is removing n8"))
    v = plan.wait_for_ring_change(elsewhere)
    assert v is not None and v.progressing == ("RingChange", "n9 is removing n8")
    assert plan.wait_for_ring_change(f_of(spec, cluster(spec, four))) is None


def _restarted(node: str, action: str = plan.RESTART, seconds_ago: float = 10) -> dict[str, Any]:
    last = {"action": action, "node": node, "time": iso(NOW - seconds_ago)}
    return {**RUNNING, "lastAction": last, "members": [{"id": node, "ready": False}]}


def test_wait_for_restarted_node() -> None:
    spec = make_spec()
    down = cluster(spec, ONE, no_pod={"kv-zone-a-0"})
    f = f_of(spec, down, _restarted("kv-zone-a-0"))
    no_rule_but(f, plan.wait_for_restarted_node)
    v = plan.wait_for_restarted_node(f)
    assert v is not None
    assert v.progressing == ("RollingUpdate", "waiting for restarted kv-zone-a-0 to come back")
    replaced = plan.wait_for_restarted_node(
        f_of(spec, down, _restarted("kv-zone-a-0", plan.REPLACE))
    )
    assert replaced is not None and replaced.progressing is not None
    assert replaced.progressing[0] == "Replacing"
    # another node down too, or the grace over: not just the restart
    both = cluster(spec, ONE, no_pod={"kv-zone-a-0"}, dead={"kv-zone-b-0"})
    assert plan.wait_for_restarted_node(f_of(spec, both, _restarted("kv-zone-a-0"))) is None
    late = _restarted("kv-zone-a-0", seconds_ago=3600)
    assert plan.wait_for_restarted_node(f_of(spec, down, late)) is None


def test_restart_stale_down_node() -> None:
    spec = make_spec()
    obs = cluster(spec, ONE, dead={"kv-zone-b-0"}, revisions={"kv-zone-b-0": "rev0"})
    v = plan.restart_stale_down_node(f_of(spec, obs))
    assert v is not None and (v.action.kind, v.action.node) == (plan.RESTART, "kv-zone-b-0")
    current = cluster(spec, ONE, dead={"kv-zone-b-0"}, revisions={"kv-zone-c-0": "rev0"})
    assert plan.restart_stale_down_node(f_of(spec, current)) is None


def test_stop_roll_on_failure() -> None:
    spec = make_spec()
    obs = cluster(spec, ONE, dead={"kv-zone-b-0"}, revisions={"kv-zone-c-0": "rev0"})
    f = f_of(spec, obs)
    no_rule_but(f, plan.stop_roll_on_failure)
    v = plan.stop_roll_on_failure(f)
    assert v is not None and v.action.kind == plan.NONE and v.degraded is not None
    assert v.degraded[0] == "UpgradeStalled" and "kv-zone-b-0" in v.degraded[1]
    not_rolling = cluster(spec, ONE, dead={"kv-zone-b-0"})
    assert plan.stop_roll_on_failure(f_of(spec, not_rolling)) is None


def _down_since(node: str, seconds_ago: float) -> dict[str, Any]:
    return {**RUNNING, "members": [{"id": node, "downSince": iso(NOW - seconds_ago)}]}


def test_replace_failed_node() -> None:
    spec = make_spec(failureReplacement={"after": "5m"})
    obs = cluster(spec, ONE, dead={"kv-zone-b-0"})
    f = f_of(spec, obs, _down_since("kv-zone-b-0", 301))
    no_rule_but(f, plan.replace_failed_node)
    v = plan.replace_failed_node(f)
    assert v is not None and (v.action.kind, v.action.node) == (plan.REPLACE, "kv-zone-b-0")
    assert v.action.pvc == "data-kv-zone-b-0"
    assert v.degraded is not None and v.degraded[0] == "NodeDown"
    assert plan.replace_failed_node(f_of(spec, obs, _down_since("kv-zone-b-0", 100))) is None
    # a lost volume does not wait
    lost = dataclasses.replace(obs, pvcs={"data-kv-zone-b-0": PvcState("data-kv-zone-b-0", "Lost")})
    assert plan.replace_failed_node(f_of(spec, lost, _down_since("kv-zone-b-0", 1))) is not None
    # not with a second node down, not when disabled
    two = cluster(spec, ONE, dead={"kv-zone-b-0", "kv-zone-c-0"})
    prev = {**RUNNING, "members": [{"id": n, "downSince": iso(NOW - 999)}
                                   for n in ("kv-zone-b-0", "kv-zone-c-0")]}  # fmt: skip
    assert plan.replace_failed_node(f_of(spec, two, prev)) is None
    off = make_spec(failureReplacement={"enabled": False})
    assert plan.replace_failed_node(f_of(off, obs, _down_since("kv-zone-b-0", 9999))) is None


def test_report_down_nodes() -> None:
    spec = make_spec(failureReplacement={"after": "5m"})
    v = plan.report_down_nodes(f_of(spec, cluster(spec, ONE, dead={"kv-zone-b-0"})))
    assert v is not None and v.action.kind == plan.NONE and v.degraded is not None
    assert v.degraded[0] == "NodeDown" and "replaced after 300 s" in v.degraded[1]
    assert plan.report_down_nodes(f_of(spec, cluster(spec, ONE))) is None


def test_node_down_names_the_member_and_why() -> None:
    """The Degraded message says which member is down and on whose word (the node the
    operator asked, the pod's state), so a transient one can be told from a real one."""
    spec = make_spec()
    obs = cluster(spec, ONE, dead={"kv-zone-b-0"})
    obs = dataclasses.replace(obs, ring=dataclasses.replace(obs.ring, source="kv-zone-a-0"))
    v = plan.report_down_nodes(f_of(spec, obs))
    assert v is not None and v.degraded is not None
    assert "kv-zone-b-0 (0 s: normal, dead to kv-zone-a-0, pod not ready)" in v.degraded[1]
    pods = {**obs.pods, "kv-zone-b-0": dataclasses.replace(obs.pods["kv-zone-b-0"],
                                                           phase="Pending")}  # fmt: skip
    v = plan.report_down_nodes(f_of(spec, dataclasses.replace(obs, pods=pods)))
    assert v is not None and v.degraded is not None
    assert "kv-zone-b-0 (0 s: pod Pending)" in v.degraded[1]


def test_wait_for_starting_pods() -> None:
    spec = make_spec()
    f = f_of(spec, cluster(spec, ONE, not_ready={"kv-zone-c-0"}))
    no_rule_but(f, plan.wait_for_starting_pods)
    v = plan.wait_for_starting_pods(f)
    assert v is not None
    assert v.progressing == ("WaitingForNodes", "waiting for kv-zone-c-0 to become ready")
    fresh = f_of(spec, cluster(spec, ONE, not_ready={"kv-zone-c-0"}), prev={})
    v = plan.wait_for_starting_pods(fresh)
    assert v is not None and v.progressing is not None and v.progressing[0] == "Creating"
    assert plan.wait_for_starting_pods(f_of(spec, cluster(spec, ONE))) is None


def test_cluster_unreachable() -> None:
    spec = make_spec()
    f = f_of(spec, cluster(spec, ONE, ring=False))
    v = plan.cluster_unreachable(f)
    assert v is not None and v.degraded is not None and v.degraded[0] == "ClusterUnreachable"
    assert plan.cluster_unreachable(f_of(spec, cluster(spec, ONE))) is None


def test_wait_for_cleanup() -> None:
    spec = make_spec(replicas=4)
    f = f_of(spec, cluster(spec, ONE, cleanup_pending=("kv-zone-a-0",)))
    no_rule_but(f, plan.wait_for_cleanup)
    v = plan.wait_for_cleanup(f)
    assert v is not None and v.action.kind == plan.NONE and v.progressing is not None
    assert v.progressing[0] == "CleaningUp" and v.progress is not None
    assert v.progress["operation"] == "cleanup"
    assert plan.wait_for_cleanup(f_of(spec, cluster(spec, ONE))) is None


def test_roll_one_pod() -> None:
    spec = make_spec()
    old = {f"kv-{z}-0": "rev0" for z in ZONES}
    f = f_of(spec, cluster(spec, ONE, revisions=old))
    no_rule_but(f, plan.roll_one_pod)
    v = plan.roll_one_pod(f)
    assert v is not None and (v.action.kind, v.action.node) == (plan.RESTART, "kv-zone-a-0")
    assert v.progress is not None and v.progress["operation"] == "upgrade"
    hints = plan.roll_one_pod(f_of(spec, cluster(spec, ONE, revisions=old, hints={"x": 3})))
    assert hints is not None and hints.action.kind == plan.NONE
    assert hints.progressing is not None and "hints" in hints.progressing[1]
    assert plan.roll_one_pod(f_of(spec, cluster(spec, ONE))) is None


def _template_shards(observed: Observed, shards: int) -> Observed:
    pods = {n: dataclasses.replace(p, shards=shards) for n, p in observed.pods.items()}
    return dataclasses.replace(observed, pods=pods)


def test_roll_one_pod_to_another_shard_count_recreates_the_volume() -> None:
    spec = make_spec(shards=2)
    old = {f"kv-{z}-0": "rev0" for z in ZONES}
    f = f_of(spec, _template_shards(cluster(spec, ONE, revisions=old), 1))
    no_rule_but(f, plan.roll_one_pod)
    v = plan.roll_one_pod(f)
    assert v is not None and (v.action.kind, v.action.node) == (plan.RESHARD, "kv-zone-a-0")
    assert v.action.pvc == "data-kv-zone-a-0" and "from 1 to 2 shards" in v.action.message
    assert v.progress is not None and v.progress["operation"] == "upgrade"
    # the same count (another setting changed): a plain restart
    same = f_of(spec, _template_shards(cluster(spec, ONE, revisions=old), 2))
    v = plan.roll_one_pod(same)
    assert v is not None and v.action.kind == plan.RESTART
    # with no other replica to refill from, refused and said why
    lone = make_spec(shards=2, replicationFactor=1)
    v = plan.roll_one_pod(f_of(lone, _template_shards(cluster(lone, ONE, revisions=old), 1)))
    assert v is not None and v.action.kind == plan.NONE and v.degraded is not None
    assert v.degraded[0] == "ReshardRefused" and "replicationFactor 1" in v.degraded[1]
    # then the roll waits for the node to come back, as for a restart
    down = cluster(spec, ONE, no_pod={"kv-zone-a-0"}, revisions=old)
    w = plan.wait_for_restarted_node(f_of(spec, down, _restarted("kv-zone-a-0", plan.RESHARD)))
    assert w is not None and w.progressing is not None and w.progressing[0] == "RollingUpdate"


def test_scale_up() -> None:
    spec = make_spec(replicas=4)
    f = f_of(spec, cluster(spec, ONE))
    no_rule_but(f, plan.scale_up)
    v = plan.scale_up(f)
    assert v is not None and (v.action.kind, v.action.zone, v.action.replicas) == (
        plan.SCALE,
        "zone-a",
        2,
    )
    assert plan.scale_up(f_of(make_spec(), cluster(make_spec(), ONE))) is None


def test_scale_down() -> None:
    spec = make_spec(replicas=3)
    f = f_of(spec, cluster(spec, {"zone-a": 2, "zone-b": 1, "zone-c": 1}))
    no_rule_but(f, plan.scale_down)
    v = plan.scale_down(f)
    assert v is not None and (v.action.kind, v.action.node) == (plan.DECOMMISSION, "kv-zone-a-1")
    assert plan.scale_down(f_of(spec, cluster(spec, ONE))) is None


def test_precedence_decides_between_rules_that_both_apply() -> None:
    """Where two rules have a verdict, the earlier one decides the pass."""
    spec = make_spec(replicas=6, paused=True)
    f = f_of(spec, cluster(spec, ONE, states={"kv-zone-a-0": "joining"}))
    assert plan.scale_up(f) is not None and plan.wait_for_ring_change(f) is not None
    assert plan.decide(spec, f.observed, RUNNING, NOW).action.kind == plan.NONE  # paused first
    spec = make_spec(replicas=6)
    d = plan.decide(spec, f.observed, RUNNING, NOW)  # the ring change before the scale-up
    assert d.action.kind == plan.NONE and condition(d.status, "Progressing")["reason"] == "Joining"
    # a node down during a roll: the roll stops instead of restarting the next pod
    old = {f"kv-{z}-0": "rev0" for z in ZONES}
    rolling = cluster(make_spec(), ONE, revisions=old, dead={"kv-zone-b-0"})
    f = f_of(make_spec(), rolling)
    assert plan.roll_one_pod(f) is not None
    assert (
        plan.decide(make_spec(), rolling, RUNNING, NOW).action.kind == plan.RESTART
    )  # the stale one
    assert plan.decide(make_spec(), rolling, RUNNING, NOW).action.node == "kv-zone-b-0"


def test_a_pod_that_is_deleting_is_not_ready() -> None:
    spec = make_spec()
    obs = cluster(spec, ONE)
    pods = dict(obs.pods)
    p = pods["kv-zone-a-0"]
    pods[p.name] = PodState(p.name, p.zone, p.ordinal, deleting=True, revision=p.revision)
    f = f_of(spec, dataclasses.replace(obs, pods=pods))
    assert [n.id for n in f.nodes if not n.ready] == ["kv-zone-a-0"]


def test_the_volume_of_a_scale_up_reversed_before_anyone_heard_of_the_node_is_deleted() -> None:
    """3 -> 4 turned back to 3 so fast that no node ever heard of the fourth: its pod is gone
    and its (new) volume is deleted; a volume of a node nobody knows is otherwise kept."""
    spec = make_spec(replicas=3)
    obs = dataclasses.replace(cluster(spec, ONE), pvcs={
        "data-kv-zone-a-1": PvcState("data-kv-zone-a-1")})  # fmt: skip
    removed = {**RUNNING, "lastAction": {"action": plan.SCALE, "node": "kv-zone-a-1",
                                         "zone": "zone-a", "time": iso(NOW - 10)}}  # fmt: skip
    v = plan.delete_removed_volume(f_of(spec, obs, removed))
    assert v is not None and (v.action.kind, v.action.pvc) == (plan.DELETE_PVC, "data-kv-zone-a-1")
    other = {**removed, "lastAction": {**removed["lastAction"], "node": "kv-zone-b-0"}}
    assert plan.delete_removed_volume(f_of(spec, obs, other)) is None
    assert plan.delete_removed_volume(f_of(spec, obs)) is None
    # while its pod is still there, not yet
    four = {"zone-a": 2, "zone-b": 1, "zone-c": 1}
    with_pod = dataclasses.replace(cluster(spec, four, states={"kv-zone-a-1": "absent"}),
                                   pvcs=obs.pvcs)  # fmt: skip
    assert plan.delete_removed_volume(f_of(spec, with_pod, removed)) is None


def test_remove_unjoined_node_alone() -> None:
    spec = make_spec(replicas=3)
    four = {"zone-a": 2, "zone-b": 1, "zone-c": 1}
    f = f_of(spec, cluster(spec, four, not_ready={"kv-zone-a-1"},
                           states={"kv-zone-a-1": "starting"}))  # fmt: skip
    no_rule_but(f, plan.remove_unjoined_node)
    v = plan.remove_unjoined_node(f)
    assert v is not None and (v.action.kind, v.action.replicas) == (plan.SCALE, 1)
    # wanted (a scale-up under way), joined, or holding tokens: not this rule's
    assert plan.remove_unjoined_node(f_of(make_spec(replicas=4), f.observed)) is None
    joined = cluster(spec, four, not_ready={"kv-zone-a-1"}, states={"kv-zone-a-1": "joining"})
    assert plan.remove_unjoined_node(f_of(spec, joined)) is None


def test_cancel_reversed_change_alone() -> None:
    spec = make_spec(replicas=6)
    leaving = cluster(spec, TWO, states={"kv-zone-b-1": "leaving"},
                      in_progress="kv-zone-b-1 is leaving")  # fmt: skip
    f = f_of(spec, leaving)
    no_rule_but(f, plan.cancel_reversed_change)
    v = plan.cancel_reversed_change(f)
    assert v is not None and (v.action.kind, v.action.node) == (plan.CANCEL, "kv-zone-b-1")
    # still wanted: a scale-down to 3 lets the decommission run; a dead leaver is not asked
    assert plan.cancel_reversed_change(f_of(make_spec(replicas=3), leaving)) is None
    dead = cluster(spec, TWO, states={"kv-zone-b-1": "leaving"}, dead={"kv-zone-b-1"})
    assert plan.cancel_reversed_change(f_of(spec, dead)) is None
    # a joiner is cancelled only when its pod is no longer wanted
    four = {"zone-a": 2, "zone-b": 1, "zone-c": 1}
    joining = cluster(spec, four, not_ready={"kv-zone-a-1"}, states={"kv-zone-a-1": "joining"})
    assert plan.cancel_reversed_change(f_of(spec, joining)) is None
    v = plan.cancel_reversed_change(f_of(make_spec(replicas=3), joining))
    assert v is not None and (v.action.kind, v.action.node) == (plan.CANCEL, "kv-zone-a-1")


def test_a_refused_volume_change_stops_no_other_rule() -> None:
    spec = make_spec(replicas=4, storage={"size": "2Gi"})
    obs = cluster(spec, ONE)
    pvcs = {spec.pvc_name(z, 0): PvcState(spec.pvc_name(z, 0), requested=2.0**30,
                                          capacity=2.0**30, storage_class="local-path")
            for z in ZONES}  # fmt: skip
    f = f_of(spec, dataclasses.replace(obs, pvcs=pvcs))
    assert (f.volumes.ok, f.volumes.reason) == (False, "VolumeExpansionNotSupported")
    assert plan.grow_volumes(f) is None
    d = plan.decide(spec, f.observed, RUNNING, NOW)
    assert d.action.kind == plan.SCALE  # the scale-up goes on
    cond = condition(d.status, plan.VOLUMES_CONDITION)
    assert (cond["status"], cond["reason"]) == ("False", "VolumeExpansionNotSupported")
    # an expandable class: the claims are raised first
    f = f_of(spec, dataclasses.replace(obs, pvcs=pvcs, expandable={"local-path": True}))
    no_rule_but(f, plan.grow_volumes)
    v = plan.grow_volumes(f)
    assert v is not None and v.action.kind == plan.RESIZE_PVC and len(v.action.pvcs) == 3


def test_a_node_whose_disk_is_full_is_degraded_not_starting_and_blocks_no_remedy() -> None:
    spec = make_spec(replicas=4)
    obs = cluster(spec, ONE, not_ready={"kv-zone-b-0"})
    assert obs.ring is not None
    m = obs.ring.members["kv-zone-b-0"]
    members = {**obs.ring.members, m.id: dataclasses.replace(m, writes_refused="disk full")}
    obs = dataclasses.replace(obs, ring=dataclasses.replace(obs.ring, members=members))
    f = f_of(spec, obs)
    assert plan.wait_for_starting_pods(f) is None
    d = plan.decide(spec, obs, RUNNING, NOW)
    assert d.action.kind == plan.SCALE  # adding a node is not held up by it
    degraded = condition(d.status, "Degraded")
    assert degraded["reason"] == "DiskFull" and "kv-zone-b-0: disk full" in degraded["message"]
    assert d.status["phase"] == "Degraded"


def test_disruption_budgets_close_the_other_zones_while_a_node_is_out() -> None:
    """A zone's budget is 1 while every node of the other zones is ready: nodes out in one
    zone leave each range a quorum, nodes out in two zones may not."""
    spec = make_spec()
    assert plan.disruption_budgets(spec, cluster(spec, ONE)) == {z: 1 for z in ZONES}
    out_b = cluster(spec, ONE, not_ready={"kv-zone-b-0"})
    assert plan.disruption_budgets(spec, out_b) == {"zone-a": 0, "zone-b": 1, "zone-c": 0}
    gone = dataclasses.replace(out_b, pods={k: v for k, v in out_b.pods.items()
                                            if k != "kv-zone-b-0"})  # fmt: skip
    assert plan.disruption_budgets(spec, gone) == {"zone-a": 0, "zone-b": 1, "zone-c": 0}
    two = cluster(spec, ONE, not_ready={"kv-zone-b-0", "kv-zone-c-0"})
    assert plan.disruption_budgets(spec, two) == {z: 0 for z in ZONES}


def test_report_zone_down_names_the_zone_and_does_not_replace() -> None:
    """Every machine of a zone not Ready: its nodes are not replaced (they would have nowhere
    to run, and they keep their data); Degraded names the zone. A failed machine in a zone
    that has another Ready one is replaced as before."""
    spec = make_spec(failureReplacement={"after": "1m"})
    obs = cluster(spec, ONE, dead={"kv-zone-c-0"}, not_ready={"kv-zone-c-0"})
    prev = _down_since("kv-zone-c-0", 9999)
    zone_out = dataclasses.replace(obs, machines={"zone-a": (1, 1), "zone-b": (1, 1),
                                                  "zone-c": (0, 2)})  # fmt: skip
    f = f_of(spec, zone_out, prev)
    assert plan.replace_failed_node(f) is None  # its clock stands still while the zone is out
    v = plan.report_zone_down(f)
    assert v is not None and v.action.kind == plan.NONE and v.degraded is not None
    assert v.degraded[0] == "ZoneDown" and "zone zone-c is down" in v.degraded[1]
    d = plan.decide(spec, zone_out, prev, NOW)
    assert d.action.kind == plan.NONE and d.status["phase"] == "Degraded"
    assert condition(d.status, "Degraded")["reason"] == "ZoneDown"
    # one machine of the zone still Ready: a failed machine, replaced
    spare = dataclasses.replace(obs, machines={"zone-a": (1, 1), "zone-b": (1, 1),
                                               "zone-c": (1, 2)})  # fmt: skip
    assert plan.report_zone_down(f_of(spec, spare, prev)) is None
    assert plan.decide(spec, spare, prev, NOW).action.kind == plan.REPLACE
    # machines not observed (no RBAC for nodes): as before
    assert plan.report_zone_down(f_of(spec, obs, prev)) is None


def test_a_node_of_a_zone_back_is_replaced_only_after_the_grace_from_its_return() -> None:
    """While its zone is out a node's clock towards failureReplacement.after does not run: once
    the zone is back and the node still restarting, it is not replaced at once."""
    spec = make_spec(failureReplacement={"after": "1m"})
    obs = cluster(spec, ONE, dead={"kv-zone-c-0"}, not_ready={"kv-zone-c-0"})
    out = dataclasses.replace(obs, machines={"zone-a": (1, 1), "zone-b": (1, 1),
                                             "zone-c": (0, 2)})  # fmt: skip
    back = dataclasses.replace(out, machines={"zone-a": (1, 1), "zone-b": (1, 1),
                                              "zone-c": (2, 2)})  # fmt: skip
    status = plan.decide(spec, out, _down_since("kv-zone-c-0", 600), NOW - 300).status
    for t in range(-295, 1, 5):  # the zone out for 5 minutes
        status = plan.decide(spec, out, status, NOW + t).status
    d = plan.decide(spec, back, status, NOW + 5)
    assert d.action.kind == plan.NONE, d.action
    assert condition(d.status, "Degraded")["reason"] == "NodeDown"
    d = plan.decide(spec, back, d.status, NOW + 70)
    assert d.action.kind == plan.REPLACE, d.action
