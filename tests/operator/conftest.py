"""Helpers for the operator's unit tests (no cluster, no nodes)."""

from __future__ import annotations

from typing import Any

import pytest

from ringkv.operator.plan import ClusterReport, Member, Observed, PodState, StatefulSetState
from ringkv.operator.spec import ClusterSpec, parse_spec

ZONES = ["zone-a", "zone-b", "zone-c"]
REV = "rev1"


def make_spec(**overrides: Any) -> ClusterSpec:
    raw: dict[str, Any] = {"zones": ZONES, "replicas": 3, "replicationFactor": 3}
    raw.update(overrides)
    return parse_spec("kv", "ns", raw)


def cluster(
    spec: ClusterSpec,
    counts: dict[str, int],
    *,
    states: dict[str, str] | None = None,
    dead: set[str] = frozenset(),  # type: ignore[assignment]
    not_ready: set[str] = frozenset(),  # type: ignore[assignment]
    no_pod: set[str] = frozenset(),  # type: ignore[assignment]
    revisions: dict[str, str] | None = None,
    update_revision: str = REV,
    extra_members: dict[str, str] | None = None,
    in_progress: str | None = None,
    hints: dict[str, int] | None = None,
    ring: bool = True,
    cleanup_pending: tuple[str, ...] = (),
) -> Observed:
    """An observed cluster: ``counts`` pods per zone, every one a normal, alive, ready member
    unless the keyword arguments say otherwise."""
    states = states or {}
    revisions = revisions or {}
    sts = {z: StatefulSetState(z, counts.get(z, 0), update_revision) for z in spec.zones}
    pods = {}
    members = {}
    for z in spec.zones:
        for i in range(counts.get(z, 0)):
            name = spec.pod_name(z, i)
            if name not in no_pod:
                pods[name] = PodState(
                    name, z, i, ready=name not in not_ready and name not in dead,
                    revision=revisions.get(name, update_revision), ip=f"10.0.0.{len(pods) + 1}",
                )  # fmt: skip
            state = states.get(name, "normal")
            if state != "absent":
                members[name] = Member(name, z, state, alive=name not in dead)
    for name, state in (extra_members or {}).items():
        zone = next(z for z in spec.zones if name.startswith(spec.statefulset_name(z) + "-"))
        members[name] = Member(name, zone, state, alive=True)
    view = (
        ClusterReport(members, in_progress, None, dict(hints or {}), cleanup_pending)
        if ring
        else None
    )
    return Observed(sts, pods, {}, view)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


@pytest.fixture
def spec() -> ClusterSpec:
    return make_spec()
