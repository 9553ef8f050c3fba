"""Per-cluster Prometheus metrics of the operator: each KVCluster's phase, its last actions,
and its failed reconcile passes (labels: namespace and name of the KVCluster, the phase from
``plan.PHASES``, the action kinds of ``plan``: all bounded)."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from ringkv.operator.plan import PHASES, parse_iso


class ClusterMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.phase = Gauge(
            "ringkv_operator_cluster_phase",
            "1 for the KVCluster's current phase (status.phase), 0 for the others",
            ["namespace", "name", "phase"],
            registry=registry,
        )
        self.last_action = Gauge(
            "ringkv_operator_last_action_timestamp_seconds",
            "When the operator last took each kind of action on the KVCluster (status.lastAction)",
            ["namespace", "name", "action"],
            registry=registry,
        )
        self._actions: dict[tuple[str, str], set[str]] = {}  # the action series per cluster
        self.errors = Counter(
            "ringkv_operator_cluster_reconcile_errors",
            "Reconcile passes of the KVCluster that failed",
            ["namespace", "name"],
            registry=registry,
        )

    def observe(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Record a pass's status: its phase and, when there is one, its last action."""
        current = status.get("phase")
        for phase in PHASES:
            self.phase.labels(namespace, name, phase).set(1 if phase == current else 0)
        last = status.get("lastAction") or {}
        when = parse_iso(last.get("time")) if isinstance(last, dict) else None
        if when is not None and last.get("action"):
            action = str(last["action"])
            self.last_action.labels(namespace, name, action).set(when)
            self._actions.setdefault((namespace, name), set()).add(action)
        self.errors.labels(namespace, name)  # the series exists (at 0) before any error

    def failed(self, namespace: str, name: str) -> None:
        self.errors.labels(namespace, name).inc()

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted KVCluster's series."""
        series: list[tuple[Any, tuple[str, ...]]] = [
            (self.phase, (namespace, name, p)) for p in PHASES
        ]
        series += [(self.last_action, (namespace, name, a))
                   for a in self._actions.pop((namespace, name), ())]  # fmt: skip
        series.append((self.errors, (namespace, name)))
        for metric, labels in series:
            with contextlib.suppress(KeyError):
                metric.remove(*labels)
