"""Pure reconcile decisions: from the spec and what is observed, the next single action and the
status to report.

Nothing here talks to Kubernetes or to a node, and the time is an argument: ``decide`` is to the
operator what riak_core's ``get_apl`` is to a request -- a function of its inputs, tested on its
own, next to the code that fetches those inputs (``reconciler.py``).

``decide`` gathers what a pass knows (``facts``) and asks the rules of ``RULES`` in order; the
first that returns a ``Verdict`` (an action, or a reason to wait) decides: one action per pass.
Each rule is a small function, tested alone. In order of precedence:

1. ``paused``: nothing.
2. ``remove_left_node``, ``remove_unjoined_node``, ``delete_removed_volume``: finish a
   scale-down: the highest pod of a zone whose node reports ``left`` (or never joined: a
   scale-up reversed before the join) is removed by lowering that StatefulSet's replicas;
   then the volumes of removed ``left`` (or never joined) nodes are deleted (never a volume
   of a node nobody knows: kept volumes a re-created KVCluster adopts).
3. ``restore_removed_node``: a node that still holds data but whose pod is outside its
   StatefulSet (someone shrank it) is brought back.
4. ``create_first_node`` of a new cluster. ``grow_volumes``: spec.storage.size raised: every
   node's volume claim is raised (where its StorageClass allows expansion), then each
   StatefulSet is re-created with the new volume template, its pods orphaned (not restarted).
   A refused change (shrinking, a class without expansion) is the ``VolumesResized``
   condition's (``volume_check``), and stops nothing else.
5. ``cancel_reversed_change``: a scaling reversed while its ring change runs (3 -> 6 -> 3
   while a node joins, 6 -> 3 -> 6 while one leaves): the change is cancelled.
   ``wait_for_ring_change``: while a member is joining, leaving or replacing.
6. Nodes down: ``wait_for_restarted_node`` (the one the operator just restarted or replaced);
   during a roll ``restart_stale_down_node`` (down on an outdated template: onto the current
   one) or ``stop_roll_on_failure`` (``Degraded``); else ``replace_failed_node`` once it has
   been down ``failureReplacement.after`` (or its volume is lost) and every other node is up
   (its pod and volume are deleted; the new pod on an empty volume takes over the node id and
   streams the data back), or ``report_down_nodes``; nodes of a zone none of whose
   machines is Ready are not replaced (``report_zone_down``: a zone outage).
7. ``wait_for_starting_pods``: pods not ready yet; ``cluster_unreachable``: no node answered.
8. ``wait_for_cleanup``: after a ring change, until every node has cleaned the ranges it no
   longer replicates (``cleanup_pending``), so a scale-out is reported done only once the disk
   space is reclaimed, and the next step never starts on top of it.
9. ``roll_one_pod``: restart one outdated pod, once every node is up, normal and no hints are
   pending; a pod whose template changes the shard count gets an empty volume too (the node
   refills from the other replicas), and with N = 1 that is refused.
10. ``scale_up``: one node, in the zone furthest below its share (zone order breaks ties).
    It waits while the volume of a node that left from the same place is still there.
11. ``scale_down``: decommission the highest-ordinal node of the zone furthest above its
    share; its StatefulSet shrinks only once the node reports ``left`` (rule 2).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ringkv.core.allocation import MIN_TOKENS_PER_SLICE, tokens_per_slice_suffice
from ringkv.core.gossip import (
    CHANGE_STATUSES,
    DATA_STATUSES,
    JOINING,
    LEAVING,
    LEFT,
    NORMAL,
    READABLE_STATUSES,
    REPLACING,
    STARTING,
    in_ring,
)
from ringkv.core.placement import preference_list, replica_balance_bound, zone_quotas
from ringkv.core.quorum import majority
from ringkv.core.ring import Ring
from ringkv.operator.spec import DATA_VOLUME, ClusterSpec, parse_quantity

# Action kinds
# status.phase: what the KVCluster is doing (the CRD's description lists them).
PHASES = ("Pending", "Creating", "Running", "Scaling", "Upgrading", "Replacing", "Degraded",
          "Paused")  # fmt: skip
NONE = "none"
SCALE = "scale"  # set a zone's StatefulSet replicas
DECOMMISSION = "decommission"  # POST /v1/admin/decommission for node
DELETE_PVC = "delete_pvc"  # delete the volume claim `pvc`
REPLACE = "replace"  # delete node's volume claim and pod: it comes back empty and refills
RESTART = "restart"  # delete node's pod: the StatefulSet recreates it on the new template
# delete node's volume claim, then its pod (gracefully): it comes back empty on the new
# template, with another shard count, and refills (its data is partitioned by that count)
RESHARD = "reshard"
# the actions of a rolling update: a node restarted on the new template, with its data or not
ROLLING = (RESTART, RESHARD)
CANCEL = "cancel"  # POST /v1/admin/cancel for node: undo its join or decommission
RESIZE_PVC = "resize_pvc"  # raise the volume claims `pvcs` to spec.storage.size (online)
# delete the zone's StatefulSet, orphaning its pods and volumes: the next pass creates it again
# with the new volume template (a StatefulSet's volumeClaimTemplates cannot be changed)
RECREATE_STATEFULSET = "recreate_statefulset"

#: The condition about the volumes' size against spec.storage.size, and the reasons it is False
#: because the operator refuses (with a Warning event), not because it is under way.
VOLUMES_CONDITION = "VolumesResized"
VOLUME_REFUSALS = ("VolumeShrinkRefused", "VolumeExpansionNotSupported")

# How long a pod the operator restarted (or replaced) may stay down before it counts as failed.
ROLL_GRACE_SECONDS = 180.0
# A pod whose container has exited this many times has failed to start, whatever the grace:
# a roll onto a template that cannot start stops at once instead of after the grace.
CRASH_LOOP_RESTARTS = 2


# -- observed state ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PodState:
    name: str
    zone: str
    ordinal: int
    phase: str = "Running"
    ready: bool = True
    deleting: bool = False
    revision: str = ""  # the controller-revision-hash label
    ip: str | None = None
    restarts: int = 0  # container restarts of this pod (restartCount)
    shards: int | None = None  # the shard count its template passes (None: not read)


@dataclass(frozen=True)
class StatefulSetState:
    zone: str
    replicas: int
    update_revision: str = ""
    volume_size: str = ""  # its volume template's size, as written ("": not read)
    deleting: bool = False


@dataclass(frozen=True)
class PvcState:
    name: str
    phase: str = "Bound"  # Pending, Bound, Lost
    deleting: bool = False
    requested: float | None = None  # spec.resources.requests.storage, bytes
    capacity: float | None = None  # status.capacity.storage, bytes (what the volume has)
    storage_class: str = ""


@dataclass(frozen=True)
class Member:
    id: str
    zone: str
    state: str
    alive: bool = True
    tokens: tuple[int, ...] = ()
    writes_refused: str = ""  # why its disk refuses writes (ringkv.node.disk_guard), or ""


@dataclass(frozen=True)
class ClusterReport:
    """What the nodes report: the members (from one live node's /v1/ring), the change under
    way (/v1/admin/progress) and hints pending per target (summed over the nodes reached)."""

    members: dict[str, Member]
    in_progress: str | None = None
    change: dict[str, Any] | None = None
    hints_pending: dict[str, int] = field(default_factory=dict)
    # ring members that have not finished cleaning the ranges they gave away (progress'
    # ``cleanup_pending``); their reports (``cleanup``) give the progress
    cleanup_pending: tuple[str, ...] = ()
    cleanup: tuple[dict[str, Any], ...] = ()
    # the node whose view ``members`` is (its pod name), named when it calls a member dead
    source: str = ""


@dataclass(frozen=True)
class Observed:
    statefulsets: dict[str, StatefulSetState]  # by zone; a missing zone has no StatefulSet yet
    pods: dict[str, PodState] = field(default_factory=dict)  # by name
    pvcs: dict[str, PvcState] = field(default_factory=dict)  # by name
    ring: ClusterReport | None = None  # None: no node answered
    desired_replicas: int | None = None  # autoscaling's choice; None: spec.replicas
    # StorageClass name -> its allowVolumeExpansion (read for the classes of volumes to grow)
    expandable: dict[str, bool] = field(default_factory=dict)
    # Kubernetes nodes (machines) per zone: (Ready, all); None when not observed
    machines: dict[str, tuple[int, int]] | None = None


@dataclass(frozen=True)
class Action:
    kind: str = NONE
    zone: str | None = None
    node: str | None = None
    replicas: int | None = None
    pvc: str | None = None
    pvcs: tuple[str, ...] = ()
    size: str = ""  # the size volumes are raised to
    reason: str = ""  # the Kubernetes Event reason
    message: str = ""


@dataclass(frozen=True)
class Decision:
    action: Action
    status: dict[str, Any]


# -- helpers ----------------------------------------------------------------------------------


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def pvc_owner(spec: ClusterSpec, pvc_name: str) -> tuple[str, int] | None:
    """(zone, ordinal) of a node volume claim of this cluster, else None."""
    for zone in spec.zones:
        prefix = f"{DATA_VOLUME}-{spec.statefulset_name(zone)}-"
        rest = pvc_name[len(prefix) :]
        if pvc_name.startswith(prefix) and rest.isdigit():
            return zone, int(rest)
    return None


def sts_replicas(spec: ClusterSpec, observed: Observed) -> dict[str, int]:
    """Pods per zone: its StatefulSet's replicas; for a zone without one, the pods it left
    (its StatefulSet was deleted with its pods orphaned, to be created again), so that the
    StatefulSet is re-created with them rather than with none."""
    counts = {}
    for z in spec.zones:
        if z in observed.statefulsets:
            counts[z] = observed.statefulsets[z].replicas
        else:
            ordinals = [p.ordinal + 1 for p in observed.pods.values() if p.zone == z]
            counts[z] = max(ordinals, default=0)
    return counts


def expected_nodes(spec: ClusterSpec, counts: dict[str, int]) -> list[tuple[str, int, str]]:
    """(zone, ordinal, node id) of every pod the StatefulSets should run."""
    return [(z, i, spec.pod_name(z, i)) for z in spec.zones for i in range(counts[z])]


def quorum_gaps(members: dict[str, Member], rf: int) -> tuple[int, int] | None:
    """(ranges lacking a serving read quorum, ranges) of the ring the members form, or None
    when no member reported tokens. A range is served by its preference-list replicas that are
    alive and ``normal`` or ``leaving``; it needs ``majority(rf)`` of them."""
    ring_members = {m.id: m for m in members.values() if m.tokens and in_ring(m.state, True)}
    if not ring_members:
        return None
    try:
        ring = Ring({m.id: m.tokens for m in ring_members.values()},
                    {m.id: m.zone for m in ring_members.values()})  # fmt: skip
    except ValueError:
        return None
    need = majority(rf)
    gaps = 0
    ranges = ring.ranges()
    for r in ranges:
        serving = sum(
            1
            for rep in preference_list(ring, r.end, rf)
            if ring_members[rep.node].alive and ring_members[rep.node].state in READABLE_STATUSES
        )
        if serving < need:
            gaps += 1
    return gaps, len(ranges)


def quorum_available(members: dict[str, Member], rf: int) -> tuple[bool, str]:
    """Whether a quorum of every range is serving, and why (for the Available condition)."""
    gaps = quorum_gaps(members, rf)
    need = majority(rf)
    if gaps is not None:
        missing, total = gaps
        if missing:
            return False, f"{missing} of {total} token ranges lack a serving quorum of {need}"
        return True, f"every one of {total} token ranges has a serving quorum of {need}"
    # No tokens reported: count serving nodes (exact when every range has rf distinct nodes).
    ring_members = [m for m in members.values() if in_ring(m.state, bool(m.tokens))]
    serving = [m for m in ring_members if m.alive and m.state in READABLE_STATUSES]
    down = len(ring_members) - len(serving)
    if len(serving) >= majority(rf) and down <= rf - majority(rf):
        return True, f"{len(serving)} of {len(ring_members)} nodes serving"
    return False, f"{len(serving)} of {len(ring_members)} nodes serving; quorum {majority(rf)}"


def change_progress(change: dict[str, Any] | None) -> dict[str, Any] | None:
    """The status.progress of a ring change report (/v1/admin/progress ``changes[]``)."""
    if not change:
        return None
    out: dict[str, Any] = {
        "operation": str(change.get("op", "")),
        "node": str(change.get("node", "")),
        "state": str(change.get("state", "")),
    }
    for src, dst in (
        ("transfers", "transfers"), ("transfers_done", "transfersDone"),
        ("keys_sent", "keysSent"), ("keys_total", "keysTotal"),
        ("bytes_sent", "bytesSent"), ("bytes_total", "bytesTotal"),
    ):  # fmt: skip
        if isinstance(change.get(src), int):
            out[dst] = change[src]
    for src, dst in (
        ("rate_bytes_per_second", "rateBytesPerSecond"),
        ("eta_seconds", "etaSeconds"),
    ):
        if isinstance(change.get(src), int | float):
            out[dst] = float(change[src])
    if out.get("bytesTotal"):
        out["percent"] = round(100.0 * out.get("bytesSent", 0) / out["bytesTotal"], 1)
    elif out.get("transfers"):
        out["percent"] = round(100.0 * out.get("transfersDone", 0) / out["transfers"], 1)
    elif out["state"] == "done":
        out["percent"] = 100.0
    return out


def cleanup_progress(ring: ClusterReport) -> dict[str, Any]:
    """The status.progress of the cleanup after a ring change (the nodes' reports summed)."""
    pending = set(ring.cleanup_pending)
    reports = [r for r in ring.cleanup if r.get("node") in pending]
    done = sum(int(r.get("bytes_done") or 0) for r in reports)
    total = sum(int(r.get("bytes_total") or 0) for r in reports)
    return {
        "operation": "cleanup",
        "node": ",".join(ring.cleanup_pending),
        "state": "running",
        "bytesSent": done,
        "bytesTotal": total,
        "percent": round(100.0 * done / total, 1) if total else 0.0,
    }


def _condition(
    previous: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: float,
    generation: int | None,
) -> dict[str, Any]:
    value = "True" if status else "False"
    before = next((c for c in previous if c.get("type") == type_), None)
    since = (
        before["lastTransitionTime"]
        if before and before.get("status") == value and before.get("lastTransitionTime")
        else iso(now)
    )
    cond: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def scale_up_zone(spec: ClusterSpec, counts: dict[str, int], desired: int) -> str | None:
    """The zone that gets the next node: the one furthest below its share, zone order first."""
    targets = spec.zone_targets(desired)
    short = [z for z in spec.zones if counts[z] < targets[z]]
    if not short:
        return None
    return min(short, key=lambda z: (counts[z] - targets[z], counts[z], spec.zones.index(z)))


def scale_down_zone(spec: ClusterSpec, counts: dict[str, int], desired: int) -> str | None:
    """The zone that loses the next node: the one furthest above its share, last zone first
    (the reverse of scale-up, so 3 -> 6 -> 3 returns to the same pods)."""
    targets = spec.zone_targets(desired)
    over = [z for z in spec.zones if counts[z] > targets[z]]
    if not over:
        return None
    return max(over, key=lambda z: (counts[z] - targets[z], counts[z], spec.zones.index(z)))


# -- the decision -----------------------------------------------------------------------------


@dataclass
class _Node:
    zone: str
    ordinal: int
    id: str
    pod: PodState | None
    member: Member | None
    down_since: float | None = None
    new: bool = False  # the node the last scale-up added, within its grace

    @property
    def ready(self) -> bool:
        return self.pod is not None and self.pod.ready and not self.pod.deleting

    @property
    def busy(self) -> bool:
        """Running a ring change of its own (joining, leaving, replacing) and alive."""
        m = self.member
        return m is not None and m.alive and m.state in CHANGE_STATUSES and self.pod is not None

    @property
    def up(self) -> bool:
        return self.ready and self.member is not None and self.member.alive

    @property
    def crash_looping(self) -> bool:
        """Its container keeps exiting: the pod cannot start, waiting longer will not help."""
        return self.pod is not None and not self.ready and self.pod.restarts >= CRASH_LOOP_RESTARTS

    @property
    def down(self) -> bool:
        """Holds data, runs no change of its own, and its pod is gone or not running or the
        nodes see it dead. (A pod that never joined is starting, not down; a running pod that
        is alive but not ready is waited for, not replaced.)"""
        m = self.member
        if m is None or m.state not in DATA_STATUSES or self.busy:
            return False
        if self.pod is None or self.pod.deleting or self.pod.phase != "Running":
            return True
        if (m.state == JOINING or self.new) and not self.ready and not self.crash_looping:
            # A joiner, or a scale-up's new node just past its join, whose pod is not ready
            # yet: the node asked may not have reached it yet (gossip spread the join first,
            # a first connection to a new pod's name may fail); waited for, not down.
            return False
        return not m.alive

    def down_reason(self, source: str) -> str:
        """Why it counts as down, for the Degraded message: its pod, or who holds it dead."""
        if self.pod is None:
            return "no pod"
        if self.pod.deleting:
            return "pod terminating"
        if self.pod.phase != "Running":
            return f"pod {self.pod.phase}"
        state = self.member.state if self.member else "absent"
        ready = "ready" if self.ready else "not ready"
        return f"{state}, dead to {source or 'the node asked'}, pod {ready}"


@dataclass
class Facts:
    """What one pass knows: the spec, what it observed, the last status, and what follows from
    them (computed once, read by every rule)."""

    spec: ClusterSpec
    observed: Observed
    prev: dict[str, Any]
    now: float
    counts: dict[str, int]  # StatefulSet replicas by zone
    desired: int  # nodes to run (autoscaling's choice or spec.replicas)
    nodes: list[_Node]  # every pod the StatefulSets should run, with its member
    outdated: list[_Node]  # pods not on their StatefulSet's update revision
    last: dict[str, Any]  # status.lastAction
    last_pending: bool  # the last action's node may still be down because of it
    last_done: bool  # the last action's node has been seen back up
    volumes: VolumeCheck  # the volumes against spec.storage.size

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ring(self) -> ClusterReport | None:
        return self.observed.ring

    @property
    def members(self) -> dict[str, Member]:
        return self.ring.members if self.ring is not None else {}

    @property
    def rolling(self) -> bool:
        return bool(self.outdated)

    @property
    def down(self) -> list[_Node]:
        return [n for n in self.nodes if n.down]

    @property
    def just_restarted(self) -> bool:
        """The last action restarted or replaced a node that may still be coming back."""
        return self.last_pending and self.last.get("action") in (*ROLLING, REPLACE)

    @property
    def zones_out(self) -> list[str]:
        return zones_out(self.spec, self.observed)

    def lost_volume(self, n: _Node) -> bool:
        pvc = self.observed.pvcs.get(self.spec.pvc_name(n.zone, n.ordinal))
        return pvc is not None and pvc.phase == "Lost"


def zones_out(spec: ClusterSpec, observed: Observed) -> list[str]:
    """Zones none of whose machines is Ready (a zone outage, not a failed machine)."""
    machines = observed.machines
    if machines is None or len(spec.zones) < 2:
        return []
    return [z for z in spec.zones if machines.get(z, (0, 0))[1] and not machines[z][0]]


def facts(
    spec: ClusterSpec, observed: Observed, previous_status: dict[str, Any] | None, now: float
) -> Facts:
    """Everything the rules read, from the inputs of ``decide``."""
    prev = dict(previous_status or {})
    counts = sts_replicas(spec, observed)
    desired = spec.node_count(
        observed.desired_replicas if observed.desired_replicas is not None else spec.replicas
    )
    members = observed.ring.members if observed.ring is not None else {}
    prev_members = [m for m in prev.get("members") or () if isinstance(m, dict)]
    prev_down = {m.get("id"): parse_iso(m.get("downSince")) for m in prev_members}
    nodes = [
        _Node(z, i, nid, observed.pods.get(nid), members.get(nid))
        for z, i, nid in expected_nodes(spec, counts)
    ]
    outdated = [
        n
        for n in nodes
        if n.pod is not None
        and observed.statefulsets.get(n.zone) is not None
        and observed.statefulsets[n.zone].update_revision
        and n.pod.revision != observed.statefulsets[n.zone].update_revision
    ]
    # The operator's last action on a node (restart, replace, scale-up) explains that node
    # being down or not ready -- for a while (the grace), and only until the node is back:
    # once a pass sees it up, ``lastAction.done`` records so and a later failure of the same
    # node is a failure of its own (not "waiting for the restarted node"). Without ``done``
    # (an older status) the node's ``ready`` in the last status says it: the acting pass
    # writes it as not ready.
    last = dict(prev.get("lastAction") or {})
    last_time = parse_iso(last.get("time"))
    grace = max(ROLL_GRACE_SECONDS, 4.0 * spec.termination_grace_seconds)
    last_node = next((n for n in nodes if n.id == last.get("node")), None)
    last_done = bool(last.get("done")) or (
        last_node is not None and last_node.up and last_node.member is not None
        and last_node.member.state == NORMAL
    )  # fmt: skip
    prev_ready = {m.get("id"): bool(m.get("ready")) for m in prev_members}
    last_pending = (
        last_time is not None and now - last_time < grace and not last_done
        and not prev_ready.get(last.get("node"), False)
    )  # fmt: skip
    if last_pending and last.get("action") == SCALE and last_node is not None:
        last_node.new = True
    out = zones_out(spec, observed)
    for n in nodes:
        if n.down:
            # A node of a zone that is out is not failing on its own: its clock towards
            # failureReplacement.after starts when its zone is back.
            n.down_since = now if n.zone in out else (prev_down.get(n.id) or now)
    return Facts(spec, observed, prev, now, counts, desired, nodes, outdated, last, last_pending,
                 last_done, volume_check(spec, observed, counts))  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """What a rule decided: an action (or none: wait), and what the status says about it."""

    action: Action = Action()
    progressing: tuple[str, str] | None = None  # reason, message
    degraded: tuple[str, str] | None = None  # reason, message
    progress: dict[str, Any] | None = None  # status.progress


def _act(action: Action, progressing: str | None = None, degraded: str | None = None) -> Verdict:
    """An action, reported as Progressing (and/or Degraded) with its message."""
    return Verdict(
        action,
        (progressing, action.message) if progressing else None,
        (degraded, action.message) if degraded else None,
    )


# -- the rules, each alone; ``RULES`` gives their order -----------------------------------------


def paused(f: Facts) -> Verdict | None:
    if f.spec.paused:
        return Verdict(progressing=("Paused", "spec.paused is true: the operator takes no action"))
    return None


def remove_left_node(f: Facts) -> Verdict | None:
    """Finish a scale-down: shrink a StatefulSet past its top pod once that node is ``left``."""
    spec, counts = f.spec, f.counts
    for z in spec.zones:
        if counts[z] == 0:
            continue
        top = spec.pod_name(z, counts[z] - 1)
        m = f.members.get(top)
        if m is not None and m.state == LEFT:
            return _act(Action(
                SCALE, zone=z, node=top, replicas=counts[z] - 1, reason="NodeRemoved",
                message=f"{top} has left the ring; removing its pod "
                f"({spec.statefulset_name(z)} {counts[z]} -> {counts[z] - 1})",
            ), "ScalingDown")  # fmt: skip
    return None


def delete_removed_volume(f: Facts) -> Verdict | None:
    """Then delete the volume of a removed node: no pod, and it left -- as the nodes say, or,
    once they have forgotten it, as the last status said -- or it never joined. A volume of a
    node nobody knows is kept: it may hold the only copy of its data (a KVCluster deleted with
    ``deletePolicy: Retain`` and created again adopts its volumes one node at a time, so the
    volumes of the nodes not started yet look unused; the nodes started first know them from
    their own saved state) -- unless the operator's last action scaled that very node's pod
    up or away (a scale-up reversed before the new node was heard of: its volume is new)."""
    if f.ring is None:
        return None  # without the nodes' word, a volume's node may still hold data
    prev_left = {
        str(m.get("id")) for m in f.prev.get("members") or ()
        if isinstance(m, dict) and m.get("state") == LEFT
    }  # fmt: skip
    for pvc in sorted(f.observed.pvcs.values(), key=lambda p: p.name):
        owner = pvc_owner(f.spec, pvc.name)
        if owner is None or pvc.deleting:
            continue
        z, ordinal = owner
        if ordinal < f.counts[z]:
            continue
        node_id = f.spec.pod_name(z, ordinal)
        m = f.members.get(node_id)
        if m is not None:
            gone = m.state == LEFT or _never_joined(m)
        else:
            gone = node_id in prev_left or (
                f.last.get("action") == SCALE and f.last.get("node") == node_id
            )
        if gone and node_id not in f.observed.pods:
            return _act(Action(
                DELETE_PVC, zone=z, node=node_id, pvc=pvc.name, reason="VolumeDeleted",
                message=f"deleting the volume of removed node {node_id} ({pvc.name})",
            ), "ScalingDown")  # fmt: skip
    return None


def restore_removed_node(f: Facts) -> Verdict | None:
    """A node that holds data but has no place in its StatefulSet (someone shrank it): bring
    it back."""
    spec = f.spec
    for m in sorted(f.members.values(), key=lambda m: m.id):
        if m.state not in DATA_STATUSES:
            continue
        for z in spec.zones:
            prefix = spec.statefulset_name(z) + "-"
            rest = m.id[len(prefix) :]
            if m.id.startswith(prefix) and rest.isdigit() and int(rest) >= f.counts[z]:
                return _act(Action(
                    SCALE, zone=z, node=m.id, replicas=int(rest) + 1, reason="NodeRestored",
                    message=f"{m.id} is {m.state} and holds data, but its pod was removed "
                    f"from {spec.statefulset_name(z)}; restoring it",
                ), degraded="NodeRemovedUnsafely")  # fmt: skip
    return None


def create_first_node(f: Facts) -> Verdict | None:
    if f.total == 0 and f.desired > 0:
        z = f.spec.zones[0]
        return _act(Action(
            SCALE, zone=z, node=f.spec.pod_name(z, 0), replicas=1, reason="ScaleUp",
            message=f"creating the first node {f.spec.pod_name(z, 0)}",
        ), "Creating")  # fmt: skip
    return None


def _never_joined(m: Member | None) -> bool:
    """A member that holds no ranges and none of the data of its own: not heard of yet, or
    ``starting`` without tokens (before its join, or after a cancelled one)."""
    return m is None or (m.state == STARTING and not m.tokens)


def remove_unjoined_node(f: Facts) -> Verdict | None:
    """Scale-down reversed before the new node joined (or after its join was cancelled): its
    pod is removed at once -- there is nothing to decommission, and waiting for it to become
    ready would wait for a join that must not happen."""
    if f.ring is None or f.total <= f.desired:
        return None
    targets = f.spec.zone_targets(f.desired)
    for z in reversed(f.spec.zones):
        if f.counts[z] <= targets[z]:
            continue
        top = f.spec.pod_name(z, f.counts[z] - 1)
        if _never_joined(f.members.get(top)):
            return _act(Action(
                SCALE, zone=z, node=top, replicas=f.counts[z] - 1, reason="NodeRemoved",
                message=f"{top} has not joined and is no longer wanted; removing its pod "
                f"({f.spec.statefulset_name(z)} {f.counts[z]} -> {f.counts[z] - 1})",
            ), "ScalingDown")  # fmt: skip
    return None


@dataclass(frozen=True)
class VolumeCheck:
    """The node volumes against spec.storage.size: the condition to report (``ok``,
    ``reason``, ``message``), the claims to raise and the StatefulSets to re-create."""

    ok: bool
    reason: str
    message: str
    grow: tuple[str, ...] = ()
    recreate: tuple[str, ...] = ()  # zones


def _gib(n: float) -> str:
    return f"{n / 2**30:g}Gi"


def volume_check(spec: ClusterSpec, observed: Observed, counts: dict[str, int]) -> VolumeCheck:
    """Shrinking is refused (a volume cannot shrink); growing is done online by raising each
    claim where its StorageClass allows expansion, else refused; once every claim asks for the
    size, StatefulSets whose volume template still has the old size are re-created."""
    want = parse_quantity(spec.storage_size)
    claims = []
    for pvc in sorted(observed.pvcs.values(), key=lambda p: p.name):
        owner = pvc_owner(spec, pvc.name)
        if owner is None or owner[1] >= counts[owner[0]] or pvc.deleting or pvc.requested is None:
            continue
        claims.append(pvc)
    larger = [p for p in claims if p.requested is not None and p.requested > want]
    if larger:
        biggest = max(p.requested or 0 for p in larger)
        return VolumeCheck(False, "VolumeShrinkRefused", (
            f"spec.storage.size {spec.storage_size} is smaller than {len(larger)} volume(s) "
            f"({', '.join(p.name for p in larger)}, up to {_gib(biggest)}): volumes cannot "
            f"shrink; set spec.storage.size back to at least {_gib(biggest)}"
        ))  # fmt: skip
    grow = [p for p in claims if p.requested is not None and p.requested < want]
    if grow:
        expandable = observed.expandable
        fixed = sorted({p.storage_class for p in grow if not expandable.get(p.storage_class)})
        if fixed:
            names = ", ".join(c or "(default)" for c in fixed)
            return VolumeCheck(False, "VolumeExpansionNotSupported", (
                f"cannot grow {len(grow)} volume(s) to {spec.storage_size}: StorageClass "
                f"{names} does not allow volume expansion (allowVolumeExpansion is not true); "
                "use a class that does, or set spec.storage.size back"
            ))  # fmt: skip
        return VolumeCheck(False, "VolumeExpanding", (
            f"expanding {', '.join(p.name for p in grow)} to {spec.storage_size}"
        ), grow=tuple(p.name for p in grow))  # fmt: skip
    stale = tuple(
        z for z in spec.zones
        if z in observed.statefulsets and observed.statefulsets[z].volume_size
        and parse_quantity(observed.statefulsets[z].volume_size) != want
    )  # fmt: skip
    if stale:
        return VolumeCheck(False, "VolumeExpanding", (
            "re-creating the StatefulSets of " + ", ".join(stale) + " with volumes of "
            f"{spec.storage_size} (their pods keep running)"
        ), recreate=stale)  # fmt: skip
    filling = [p for p in claims if p.capacity is not None and p.requested is not None
               and p.capacity < p.requested]  # fmt: skip
    if filling:
        return VolumeCheck(False, "VolumeExpanding", (
            f"waiting for {', '.join(p.name for p in filling)} to reach {spec.storage_size} "
            "(the storage provider and the kubelet grow them)"
        ))  # fmt: skip
    return VolumeCheck(True, "VolumesMatchSpec", f"every volume has {spec.storage_size}")


def grow_volumes(f: Facts) -> Verdict | None:
    """spec.storage.size raised: raise every node's volume claim (online, where the
    StorageClass allows it), then re-create each StatefulSet with the new volume template,
    orphaning its pods (they are adopted again, not restarted). Refusals are the condition's,
    not a verdict: they do not stop the other rules."""
    if any(s.deleting for s in f.observed.statefulsets.values()):
        return Verdict(progressing=("ExpandingVolumes", "waiting for a StatefulSet to be "
                                    "deleted (its pods orphaned) to create it again"))  # fmt: skip
    check = f.volumes
    if check.grow:
        return _act(Action(
            RESIZE_PVC, pvcs=check.grow, size=f.spec.storage_size, reason="VolumeExpansion",
            message=f"expanding {len(check.grow)} volume(s) to {f.spec.storage_size} online: "
            + ", ".join(check.grow),
        ), "ExpandingVolumes")  # fmt: skip
    if check.recreate:
        z = check.recreate[0]
        return _act(Action(
            RECREATE_STATEFULSET, zone=z, size=f.spec.storage_size,
            reason="VolumeTemplateUpdated",
            message=f"re-creating StatefulSet {f.spec.statefulset_name(z)} with volumes of "
            f"{f.spec.storage_size}; its pods are orphaned and adopted again, not restarted",
        ), "ExpandingVolumes")  # fmt: skip
    return None


def cancel_reversed_change(f: Facts) -> Verdict | None:
    """The scaling was reversed while its ring change runs: a node joining whose pod is no
    longer wanted, or a node leaving whose zone is no longer to shrink. The change is
    cancelled (the joiner gives its tokens back, the leaver turns normal again) instead of
    finishing it and then undoing it, which would stream the same data twice."""
    if f.ring is None:
        return None
    targets = f.spec.zone_targets(f.desired)
    for n in f.nodes:
        m = n.member
        if m is None or not m.alive or n.pod is None:
            continue
        if m.state == JOINING and n.ordinal >= targets[n.zone]:
            why = f"its pod is no longer wanted ({f.total} -> {f.desired} nodes)"
        elif m.state == LEAVING and f.counts[n.zone] <= targets[n.zone]:
            why = f"{n.zone} is no longer to shrink ({f.desired} nodes wanted)"
        else:
            continue
        op = "join" if m.state == JOINING else "decommission"
        return _act(Action(
            CANCEL, zone=n.zone, node=n.id, reason="RingChangeCancelled",
            message=f"cancelling the {op} of {n.id}: {why}",
        ), "ScalingDown" if m.state == JOINING else "ScalingUp")  # fmt: skip
    return None


def wait_for_ring_change(f: Facts) -> Verdict | None:
    """A ring change under way (a member joining, leaving or replacing): wait for it."""
    busy = [n for n in f.nodes if n.busy]
    ring = f.ring
    if ring is None or not (ring.in_progress or busy):
        return None
    progress = change_progress(ring.change)
    state = busy[0].member.state if busy and busy[0].member else ""
    what = ring.in_progress or f"{busy[0].id} is {state}"
    reason = {
        JOINING: "Joining", LEAVING: "Decommissioning", REPLACING: "Replacing",
    }.get(state, "RingChange")  # fmt: skip
    pct = f" ({progress['percent']}%)" if progress and "percent" in progress else ""
    return Verdict(progressing=(reason, f"{what}{pct}"), progress=progress)


def wait_for_restarted_node(f: Facts) -> Verdict | None:
    """Every node down is the one the operator just restarted or replaced: wait for it (a
    pod the roll restarted that keeps crashing is not waited for: the roll is stalled)."""
    down = f.down
    expected = [
        n for n in down if f.just_restarted and n.id == f.last.get("node")
        and not (f.rolling and n.crash_looping)
    ]  # fmt: skip
    if not down or expected != down:
        return None
    restart = f.last.get("action") in ROLLING
    what, reason = ("restarted", "RollingUpdate") if restart else ("replaced", "Replacing")
    return Verdict(progressing=(reason, f"waiting for {what} {down[0].id} to come back"))


def restart_stale_down_node(f: Facts) -> Verdict | None:
    """A pod down on an outdated template (the spec was reverted or fixed after a stall, or
    it failed by itself mid-roll) is moved to the current template: with OnDelete, nothing
    else would ever restart it onto the fix."""
    stale_ids = {o.id for o in f.outdated}
    stale = [n for n in f.down if n.id in stale_ids and n.pod is not None and not n.pod.deleting]
    if not (f.rolling and stale):
        return None
    n = stale[0]
    return _act(Action(
        RESTART, zone=n.zone, node=n.id, reason="RollingUpdate",
        message=f"restarting {n.id} on the current pod template: it is down on an outdated one",
    ), "RollingUpdate")  # fmt: skip


def _down_for(f: Facts, down: list[_Node]) -> str:
    source = f.ring.source if f.ring is not None else ""
    return ", ".join(
        f"{n.id} ({int(f.now - (n.down_since or f.now))} s: {n.down_reason(source)})" for n in down
    )


def stop_roll_on_failure(f: Facts) -> Verdict | None:
    """A node down during a roll (not one just restarted): stop the roll, say so."""
    down = f.down
    if not (f.rolling and down):
        return None
    crashing = "".join(
        f"; {n.id} keeps crashing ({n.pod.restarts} restarts)"
        for n in down if n.crash_looping and n.pod is not None
    )  # fmt: skip
    return Verdict(degraded=(
        "UpgradeStalled",
        f"rolling update stopped: {_down_for(f, down)} down{crashing}; fix the image or settings",
    ))  # fmt: skip


def _long_down(f: Facts) -> list[_Node]:
    return [
        n for n in f.down if n.down_since is not None
        and (f.now - n.down_since >= f.spec.replace_after_seconds or f.lost_volume(n))
    ]  # fmt: skip


def report_zone_down(f: Facts) -> Verdict | None:
    """Nodes down in a zone none of whose machines is Ready: a zone outage. They are not
    replaced -- a replacement would have nowhere to run, and the nodes keep their data and
    rejoin with it when the zone returns (hints fill in what they missed); replacing them
    would stream every range of the zone again -- and the zone is named."""
    out = f.zones_out
    down = [n for n in f.down if n.zone in out]
    if not down:
        return None
    zones = ", ".join(sorted({n.zone for n in down}))
    others = [n for n in f.down if n.zone not in out]
    more = f"; also down: {_down_for(f, others)}" if others else ""
    return Verdict(degraded=(
        "ZoneDown",
        f"zone {zones} is down (no Ready machine): {_down_for(f, down)}; not replaced while "
        f"their zone is out, they rejoin when it returns{more}",
    ))  # fmt: skip


def replace_failed_node(f: Facts) -> Verdict | None:
    """One node down for ``failureReplacement.after`` (or its volume lost), every other node
    up: replace it (delete its pod and volume; it comes back empty and refills)."""
    down = f.down
    long_down = _long_down(f)
    others_up = all(n.up for n in f.nodes if n not in down)
    if not (f.spec.replace_enabled and long_down and others_up and len(down) == 1):
        return None
    n = long_down[0]
    why = "its volume is lost" if f.lost_volume(n) else (
        f"down for {int(f.now - (n.down_since or f.now))} s "
        f"(failureReplacement.after {int(f.spec.replace_after_seconds)} s)"
    )  # fmt: skip
    return _act(Action(
        REPLACE, zone=n.zone, node=n.id, pvc=f.spec.pvc_name(n.zone, n.ordinal),
        reason="ReplacingNode",
        message=f"replacing {n.id}: {why}; its pod and volume are recreated empty "
        "and it streams its ranges back from the other replicas",
    ), "Replacing", degraded="NodeDown")  # fmt: skip


def report_down_nodes(f: Facts) -> Verdict | None:
    """Nodes down and not (yet) replaced: wait, and say when they will be."""
    down = f.down
    if not down:
        return None
    spec = f.spec
    others_up = all(n.up for n in f.nodes if n not in down)
    if spec.replace_enabled and _long_down(f) and not others_up:
        note = "not replaced while other nodes are down too"
    elif spec.replace_enabled:
        note = f"replaced after {int(spec.replace_after_seconds)} s"
    else:
        note = "failureReplacement is disabled"
    return Verdict(degraded=("NodeDown", f"down: {_down_for(f, down)}; {note}"))


def wait_for_starting_pods(f: Facts) -> Verdict | None:
    """Pods not ready yet: wait, saying why they start (the phase follows): the node the
    operator just restarted or replaced, a new node of a scale-up, or one restarting itself.
    (A node unready because its disk is full is not starting: it serves reads, and adding
    nodes or growing volumes is what helps it; ``decide`` reports it as Degraded.)"""
    starting = [n for n in f.nodes if not n.ready and not _disk_full(n)]
    if not starting:
        return None
    ids = {n.id for n in starting}
    last = f.last
    if not _ever_available(f.prev):
        reason = "Creating"
    elif f.just_restarted and last.get("node") in ids:
        reason = "RollingUpdate" if last.get("action") in ROLLING else "Replacing"
    elif any(n.member is None or n.member.state not in DATA_STATUSES for n in starting) or (
        f.last_pending and last.get("action") == SCALE and last.get("node") in ids
    ):
        reason = "ScalingUp"  # a new node, before or just after its join
    else:
        reason = "WaitingForNodes"
    names = ", ".join(n.id for n in starting)
    return Verdict(progressing=(reason, f"waiting for {names} to become ready"))


def _disk_full(n: _Node) -> bool:
    m = n.member
    return m is not None and m.alive and m.state == NORMAL and bool(m.writes_refused)


def cluster_unreachable(f: Facts) -> Verdict | None:
    if f.ring is None:
        return Verdict(degraded=("ClusterUnreachable", "no node answered the operator"))
    return None


def wait_for_cleanup(f: Facts) -> Verdict | None:
    """After a ring change, until every node has cleaned the ranges it gave away: wait, so a
    scale-out is done only once the space is reclaimed and no step starts on top of it."""
    ring = f.ring
    if ring is None or not ring.cleanup_pending:
        return None
    progress = cleanup_progress(ring)
    cleaning = ", ".join(ring.cleanup_pending)
    return Verdict(progressing=(
        "CleaningUp",
        f"waiting for {cleaning} to delete the ranges they no longer replicate "
        f"({progress['percent']}%)",
    ), progress=progress)  # fmt: skip


def roll_one_pod(f: Facts) -> Verdict | None:
    """Rolling update: restart one outdated pod, once every node is normal and alive and no
    hints are pending."""
    if not f.rolling or f.ring is None:
        return None
    nodes, spec = f.nodes, f.spec
    pending = {k: v for k, v in f.ring.hints_pending.items() if v}
    not_normal = [n.id for n in nodes if n.member is None or n.member.state != NORMAL
                  or not n.member.alive]  # fmt: skip
    updated = len(nodes) - len(f.outdated)
    progress = {"operation": "upgrade", "state": "running", "updatedReplicas": updated,
                "percent": round(100.0 * updated / max(1, len(nodes)), 1)}  # fmt: skip
    if pending:
        hints = ", ".join(f"{k} ({v})" for k, v in sorted(pending.items()))
        return Verdict(progressing=("RollingUpdate", f"waiting for hints to be delivered to "
                                    f"{hints}"), progress=progress)  # fmt: skip
    if not_normal:
        return Verdict(progressing=("RollingUpdate", "waiting for " + ", ".join(not_normal)
                                    + " to be normal"), progress=progress)  # fmt: skip
    order = {z: i for i, z in enumerate(spec.zones)}
    n = sorted(f.outdated, key=lambda n: (order[n.zone], -n.ordinal))[0]
    was = n.pod.shards if n.pod is not None else None
    if was is None or was == spec.shards:
        action = Action(
            RESTART, zone=n.zone, node=n.id, reason="RollingUpdate",
            message=f"restarting {n.id} on the new pod template ({updated}/{len(nodes)} updated)",
        )  # fmt: skip
        return Verdict(action, ("RollingUpdate", action.message), progress=progress)
    # A node refuses data written with another shard count: it restarts on an empty volume
    # and streams its ranges back from the other replicas, which only exist when N > 1.
    if spec.replication_factor < 2:
        return Verdict(progressing=("RollingUpdate", "stopped"), progress=progress, degraded=(
            "ReshardRefused",
            f"spec.shards {was} -> {spec.shards} needs every node to refill from other replicas, "
            "and replicationFactor 1 has none: set spec.shards back to "
            f"{was}, or raise replicationFactor first",
        ))  # fmt: skip
    action = Action(
        RESHARD, zone=n.zone, node=n.id, pvc=spec.pvc_name(n.zone, n.ordinal),
        reason="Resharding",
        message=f"moving {n.id} from {was} to {spec.shards} shards: its volume and pod are "
        "recreated, empty, and it streams its ranges back from the other replicas "
        f"({updated}/{len(nodes)} updated)",
    )  # fmt: skip
    return Verdict(action, ("RollingUpdate", action.message), progress=progress)


def scale_up(f: Facts) -> Verdict | None:
    """One node more, in the zone furthest below its share."""
    total, desired = f.total, f.desired
    z = scale_up_zone(f.spec, f.counts, desired) if total < desired else None
    if z is None:
        return None
    node_id = f.spec.pod_name(z, f.counts[z])
    stale = f.observed.pvcs.get(f.spec.pvc_name(z, f.counts[z]))
    m = f.members.get(node_id)
    if stale is not None and (stale.deleting or (m is not None and m.state == LEFT)):
        # The volume of the node that left from this place is still being deleted: a pod now
        # would start on it, as a node that has left, and be removed again.
        return Verdict(progressing=("ScalingUp", f"waiting for the volume {stale.name} of "
                                    f"removed node {node_id} to be deleted"))  # fmt: skip
    return _act(Action(
        SCALE, zone=z, node=node_id, replicas=f.counts[z] + 1, reason="ScaleUp",
        message=f"adding {node_id} ({total} -> {total + 1} of {desired} nodes)",
    ), "ScalingUp")  # fmt: skip


def scale_down(f: Facts) -> Verdict | None:
    """Decommission the top node of the zone furthest above its share; its StatefulSet
    shrinks once it reports ``left`` (``remove_left_node``)."""
    total, desired = f.total, f.desired
    z = scale_down_zone(f.spec, f.counts, desired) if total > desired else None
    if z is None:
        return None
    node_id = f.spec.pod_name(z, f.counts[z] - 1)
    return _act(Action(
        DECOMMISSION, zone=z, node=node_id, reason="Decommission",
        message=f"decommissioning {node_id} ({total} -> {total - 1} of {desired} nodes); "
        "its pod is removed once it reports left",
    ), "ScalingDown")  # fmt: skip


Rule = Callable[[Facts], Verdict | None]

#: The rules in order of precedence: the first that returns a verdict decides the pass.
RULES: tuple[Rule, ...] = (
    paused,
    remove_left_node,
    remove_unjoined_node,
    delete_removed_volume,
    restore_removed_node,
    create_first_node,
    grow_volumes,
    cancel_reversed_change,
    wait_for_ring_change,
    wait_for_restarted_node,
    restart_stale_down_node,
    stop_roll_on_failure,
    report_zone_down,
    replace_failed_node,
    report_down_nodes,
    wait_for_starting_pods,
    cluster_unreachable,
    wait_for_cleanup,
    roll_one_pod,
    scale_up,
    scale_down,
)


def decide(
    spec: ClusterSpec,
    observed: Observed,
    previous_status: dict[str, Any] | None,
    now: float,
    generation: int | None = None,
) -> Decision:
    """The next action and the status to write (pure; ``now`` in seconds since the epoch):
    the verdict of the first rule that has one."""
    f = facts(spec, observed, previous_status, now)
    verdict = next((v for v in (rule(f) for rule in RULES) if v is not None), Verdict())
    full = [n for n in f.nodes if _disk_full(n)]
    if full and verdict.degraded is None:
        why = "; ".join(f"{n.id}: {n.member.writes_refused}" for n in full if n.member)
        verdict = dataclasses.replace(verdict, degraded=("DiskFull", (
            f"refusing writes (507), serving reads: {why}; grow spec.storage.size or free space"
        )))  # fmt: skip
    action = verdict.action
    replacements = int(f.prev.get("replacements") or 0)
    if action.kind == REPLACE:
        replacements += 1
        for n in f.nodes:
            if n.id == action.node:
                n.down_since = None  # its replacement starts now
    status = _status(
        spec, observed, f.prev, f.nodes, f.counts, now, generation, action, verdict.progressing,
        verdict.degraded, verdict.progress, replacements, f.rolling, f.desired,
    )  # fmt: skip
    if action.kind == NONE and f.last and f.last_done and status.get("lastAction"):
        status["lastAction"] = {**status["lastAction"], "done": True}
    prev_conditions = [c for c in f.prev.get("conditions") or () if isinstance(c, dict)]
    v = f.volumes
    status["conditions"].append(
        _condition(prev_conditions, VOLUMES_CONDITION, v.ok, v.reason, v.message, now, generation)
    )
    return Decision(action, status)


def _ever_available(prev: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Available" and c.get("status") == "True"
        for c in prev.get("conditions") or ()
    ) or prev.get("phase") in ("Running", "Scaling", "Upgrading", "Replacing", "Degraded")


def _status(
    spec: ClusterSpec,
    observed: Observed,
    prev: dict[str, Any],
    nodes: list[_Node],
    counts: dict[str, int],
    now: float,
    generation: int | None,
    action: Action,
    progressing: tuple[str, str] | None,
    degraded: tuple[str, str] | None,
    progress: dict[str, Any] | None,
    replacements: int,
    rolling: bool,
    desired: int,
) -> dict[str, Any]:
    ring = observed.ring
    members = ring.members if ring is not None else {}
    ready = sum(1 for n in nodes if n.ready)
    targets = spec.zone_targets(desired)
    sizes = [targets[z] for z in spec.zones]
    bound = replica_balance_bound({z: n for z, n in targets.items() if n}, spec.replication_factor)
    zones = [
        {
            "name": z,
            "desired": targets[z],
            "replicas": counts[z],
            "readyReplicas": sum(1 for n in nodes if n.zone == z and n.ready),
        }
        for z in spec.zones
    ]
    listed: dict[str, dict[str, Any]] = {}
    for n in nodes:
        entry: dict[str, Any] = {
            "id": n.id, "zone": n.zone, "pod": n.id, "ready": n.ready,
            "state": n.member.state if n.member else "absent",
            "alive": bool(n.member.alive) if n.member else False,
        }  # fmt: skip
        if n.pod is not None and n.pod.ip:
            entry["podIP"] = n.pod.ip
        if n.down_since is not None:
            entry["downSince"] = iso(n.down_since)
        if action.kind in (RESTART, REPLACE) and action.node == n.id:
            entry["ready"] = False  # going down now (see just_restarted in decide)
        listed[n.id] = entry
    for m in sorted(members.values(), key=lambda m: m.id):
        if m.id not in listed and (m.state != LEFT or m.id in observed.pods):
            listed[m.id] = {"id": m.id, "zone": m.zone, "state": m.state, "alive": m.alive,
                            "ready": False}  # fmt: skip
    if ring is not None:
        available, avail_msg = quorum_available(members, spec.replication_factor)
        avail_reason = "QuorumAvailable" if available else "QuorumUnavailable"
    else:
        available, avail_reason = False, "NoNodeReachable"
        avail_msg = "no node answered" if nodes else "no nodes yet"
    if available and len([m for m in members.values() if in_ring(m.state, bool(m.tokens))]) < min(
        spec.replication_factor, desired
    ):
        available, avail_reason = False, "Forming"
        avail_msg = "fewer ring members than the replication factor yet"
    if action.kind == REPLACE:
        progress = {"operation": "replace", "node": action.node or "", "state": "starting"}
    prev_conditions = [c for c in prev.get("conditions") or () if isinstance(c, dict)]
    conditions = [
        _condition(prev_conditions, "Available", available, avail_reason, avail_msg, now,
                   generation),
        _condition(
            prev_conditions, "Progressing", progressing is not None and progressing[0] != "Paused",
            progressing[0] if progressing else "Reconciled",
            progressing[1] if progressing else f"{sum(counts.values())} nodes match the spec",
            now, generation,
        ),
        _condition(
            prev_conditions, "Degraded", degraded is not None,
            degraded[0] if degraded else "AsExpected",
            degraded[1] if degraded else "every node is up",
            now, generation,
        ),
    ]  # fmt: skip
    if spec.paused:
        phase = "Paused"
    elif degraded is not None:
        phase = "Degraded"
    elif progressing is not None and progressing[0] == "Creating":
        phase = "Creating" if sum(counts.values()) else "Pending"
    elif progressing is not None and progressing[0] in ("Replacing",):
        phase = "Replacing"
    elif rolling or (progressing is not None and progressing[0] == "RollingUpdate"):
        phase = "Upgrading"  # also while the last restarted pod comes back
    elif progressing is not None and progressing[0] == "WaitingForNodes":
        # a node restarting by itself (its pod was killed or crashed): nothing is scaling
        phase = "Running" if available else "Degraded"
    elif progressing is not None:
        phase = "Scaling" if available or _ever_available(prev) else "Creating"
    else:
        phase = "Running" if available else "Degraded"
    status: dict[str, Any] = {
        "phase": phase,
        "replicas": sum(counts.values()),
        "readyReplicas": ready,
        "updatedReplicas": len(nodes) - sum(
            1 for n in nodes if n.pod is not None and observed.statefulsets.get(n.zone)
            and observed.statefulsets[n.zone].update_revision
            and n.pod.revision != observed.statefulsets[n.zone].update_revision
        ),
        "selector": spec.selector_string,
        "image": spec.image,
        "shards": spec.shards,
        "zones": zones,
        "members": list(listed.values()),
        "progress": progress,  # None deletes it in a merge patch
        "replacements": replacements,
        "conditions": conditions,
        "zoneSizes": "/".join(str(n) for n in sizes),
        "replicaLoadBound": f"{bound:.2f}",
        "zoneBalance": zone_balance_message(sizes, spec.replication_factor, bound),
        "shardBalance": shard_balance_message(spec.vnodes, spec.shards, sizes,
                                              spec.replication_factor),
    }  # fmt: skip
    if generation is not None:
        status["observedGeneration"] = generation
    if action.kind != NONE:
        status["lastAction"] = {
            "action": action.kind, "node": action.node or "", "zone": action.zone or "",
            "message": action.message, "time": iso(now),
        }  # fmt: skip
    elif prev.get("lastAction"):
        status["lastAction"] = prev["lastAction"]
    if prev.get("lastScaleTime"):
        status["lastScaleTime"] = prev["lastScaleTime"]
    return status


def zone_balance_message(sizes: list[int], rf: int, bound: float) -> str:
    """Why replica load can or cannot be even with these zone sizes (status.zoneBalance)."""
    if bound <= 1.005:
        return "zones allow an even replica load"
    return (
        f"with {sum(sizes)} nodes over {len(sizes)} zones ({'/'.join(map(str, sizes))}) and "
        f"replicationFactor {rf}, each zone holds its share of every key, so the busiest node "
        f"stores at least {bound:.2f}x the mean; spec.scaleByWholeZones keeps zones equal"
    )


def shard_balance_message(vnodes: int, shards: int, sizes: list[int], rf: int) -> str:
    """Whether each node's shards carry equal loads (status.shardBalance): a joining node
    claims its tokens slice by slice only with enough of them per shard, and only where its
    zone's own sub-ring decides its load (``allocate_tokens``)."""
    if shards == 1:
        return "one shard per node"
    if not tokens_per_slice_suffice(vnodes, shards):
        return (
            f"vnodes {vnodes} is fewer than {MIN_TOKENS_PER_SLICE} tokens for each of the "
            f"{shards} shards: a joining node's tokens are placed over the whole ring, so its "
            "shards carry unequal loads (the busiest up to about twice the mean); a cluster "
            f"created with vnodes {MIN_TOKENS_PER_SLICE * shards} or more avoids it"
        )
    zones = {f"zone-{i}": n for i, n in enumerate(sizes) if n}
    if zones and zone_quotas(zones, rf)[2]:
        return (
            f"with {len(zones)} zones and replicationFactor {rf} a zone holds an extra replica "
            "of part of the keys only, so tokens are chosen against the whole ring and a "
            "node's shards carry unequal loads; zones as many as the replicas (or one) avoid it"
        )
    return f"each of the {shards} shards claims {vnodes // shards} tokens in its own slice"


# -- disruption budgets -------------------------------------------------------------------------


def disruption_budgets(spec: ClusterSpec, observed: Observed) -> dict[str, int]:
    """Each zone's PodDisruptionBudget ``maxUnavailable``: 1 while every node of the other
    zones is ready, else 0.

    Zone-aware placement keeps a replica of each range per zone (with as many zones as
    replicas), so any number of nodes out in one zone leave every range a quorum, and nodes
    out in two zones may not. Per-zone budgets let a zone's maintenance (a drain) go on
    whatever the other zones' budgets, one node at a time in the zone; a node out elsewhere
    (drained, failed, restarting) closes them, so a second zone is not drained on top of it.
    The budgets follow the pods each pass: two evictions in different zones within one pass
    can both pass (the PodDisruptionBudget API has no cross-budget limit)."""
    counts = sts_replicas(spec, observed)
    not_ready = {
        z for z, _, node_id in expected_nodes(spec, counts)
        if (p := observed.pods.get(node_id)) is None or not p.ready or p.deleting
    }  # fmt: skip
    return {z: 0 if not_ready - {z} else 1 for z in spec.zones}


# -- autoscaling --------------------------------------------------------------------------------


def scaling_blocked(spec: ClusterSpec, observed: Observed) -> bool:
    """Whether autoscaling must leave spec.replicas alone now: a scaling step not carried out
    yet (the StatefulSets do not add up to spec.replicas), a ring change under way or its
    cleanup not finished, or a node that is not up -- a pod missing or not ready (a new node
    before and after its join), a member not alive or not ``normal``. Only a settled cluster
    gets its next step."""
    counts = sts_replicas(spec, observed)
    if sum(counts.values()) != spec.node_count():
        return True
    ring = observed.ring
    if ring is None or ring.in_progress or ring.cleanup_pending:
        return True
    for _, _, node_id in expected_nodes(spec, counts):
        pod = observed.pods.get(node_id)
        member = ring.members.get(node_id)
        if pod is None or not pod.ready or pod.deleting:
            return True
        if member is None or member.state != NORMAL or not member.alive:
            return True
    return any(m.state in CHANGE_STATUSES for m in ring.members.values())


def request_rate(
    before: dict[str, tuple[float, float]] | None,
    counts: dict[str, float | None],
    now: float,
) -> tuple[float | None, dict[str, tuple[float, float]] | None]:
    """The cluster's client request rate from each node's request counter, and the sample to
    keep for the next pass: ``(rate or None, sample)``.

    The rate is the sum of each node's counter increase over the time since ``before``; it is
    None -- no autoscaling decision this pass -- unless every node answered both times, the
    same nodes both times, and no counter went backwards (a node restarted). A total over
    whichever nodes answered would move with a slow node's scrape: a loaded node missing
    once reads as the load vanishing, and back the next pass as a burst."""
    if not counts or any(v is None for v in counts.values()):
        return None, None
    sample = {name: (now, float(v)) for name, v in counts.items() if v is not None}
    if before is None or set(before) != set(sample):
        return None, sample
    total = 0.0
    for name, (t0, c0) in before.items():
        t1, c1 = sample[name]
        if t1 <= t0 or c1 < c0:
            return None, sample
        total += (c1 - c0) / (t1 - t0)
    return total, sample


def autoscale(
    spec: ClusterSpec,
    current: int,
    requests_per_second: float | None,
    disk_bytes: float | None,
    last_scale_time: float | None,
    now: float,
    ring_change_running: bool,
) -> int | None:
    """The replicas autoscaling wants, or None to leave spec.replicas alone.

    ``requests_per_second`` and ``disk_bytes`` are cluster totals measured from the nodes'
    metrics. Like the HorizontalPodAutoscaler: desired = ceil(total / target per node), the
    largest over the targets, clamped to [minReplicas, maxReplicas]; a 10% tolerance band;
    nothing during the cool-down or while a ring change runs; one node at a time.
    """
    a = spec.autoscaling
    if not a.enabled or ring_change_running:
        return None
    if last_scale_time is not None and now - last_scale_time < a.cooldown_seconds:
        return None
    wanted: list[int] = []
    for total, target in (
        (requests_per_second, a.target_rps_per_node),
        (disk_bytes, a.target_disk_bytes_per_node),
    ):
        if total is None or not target:
            continue
        ratio = total / (target * max(1, current))
        if abs(ratio - 1.0) <= 0.1:
            wanted.append(current)
        else:
            wanted.append(math.ceil(total / target))
    target_count = max(wanted) if wanted else current
    target_count = max(a.min_replicas, min(a.max_replicas, target_count))
    # One node at a time, or with scaleByWholeZones one node per zone (to the next multiple).
    step = len(spec.zones) if spec.scale_by_whole_zones else 1
    if target_count > current:
        result = (current // step + 1) * step
        if result > a.max_replicas:
            return None
    elif target_count < current:
        result = (current - 1) // step * step
        if result < max(a.min_replicas, spec.replication_factor):
            return None
    else:
        return None
    return result


__all__ = [
    "Action",
    "ClusterReport",
    "Decision",
    "Member",
    "Observed",
    "PodState",
    "PvcState",
    "StatefulSetState",
    "autoscale",
    "change_progress",
    "cleanup_progress",
    "decide",
    "disruption_budgets",
    "expected_nodes",
    "iso",
    "parse_iso",
    "pvc_owner",
    "quorum_available",
    "quorum_gaps",
    "request_rate",
    "scale_down_zone",
    "scale_up_zone",
    "scaling_blocked",
    "zone_balance_message",
]
