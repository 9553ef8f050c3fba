"""kopf handlers: adopt and create-or-patch the children on create/resume/update, and a timer
that runs one reconcile pass (``reconciler.reconcile``) every few seconds per KVCluster.

Level-based: every pass starts from what it observes, so a missed event or an operator restart
changes nothing. Actions are Kubernetes Events on the KVCluster; reconciles, errors, actions
and durations are Prometheus metrics (``ringkv_operator_*``) on ``RINGKV_OPERATOR_METRICS_PORT``
(default 9090).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from typing import Any

import kopf
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from ringkv.operator import credentials, reconciler
from ringkv.operator.metrics import ClusterMetrics
from ringkv.operator.plan import disruption_budgets, sts_replicas
from ringkv.operator.spec import GROUP, PLURAL, VERSION, SpecError, parse_spec

log = logging.getLogger(__name__)

INTERVAL = float(os.environ.get("RINGKV_OPERATOR_INTERVAL", "5"))
METRICS_PORT = int(os.environ.get("RINGKV_OPERATOR_METRICS_PORT", "9090"))

RECONCILES = Counter("ringkv_operator_reconciles", "Reconcile passes, by result", ["result"])
ERRORS = Counter("ringkv_operator_errors", "Reconcile passes that failed, by exception", ["type"])
ACTIONS = Counter("ringkv_operator_actions", "Actions taken, by kind", ["action"])
DURATION = Histogram(
    "ringkv_operator_reconcile_duration_seconds",
    "Duration of a reconcile pass",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
READY = Gauge("ringkv_operator_ready_nodes", "Ready nodes per KVCluster", ["namespace", "name"])
NODES = Gauge(
    "ringkv_operator_nodes", "Nodes per KVCluster (status.replicas)", ["namespace", "name"]
)
CLUSTERS = ClusterMetrics()

_apis: dict[str, Any] = {}


def kube() -> reconciler.KubeApi:
    if "kube" not in _apis:
        _apis["kube"] = reconciler.KubeApi()
    api: reconciler.KubeApi = _apis["kube"]
    return api


def nodes() -> reconciler.NodeHttp:
    if "nodes" not in _apis:
        _apis["nodes"] = reconciler.NodeHttp()
    api: reconciler.NodeHttp = _apis["nodes"]
    return api


def nodes_for(body: dict[str, Any], name: str, namespace: str) -> reconciler.NodeHttp:
    """The node API client with this cluster's credentials: the operator's admin token, read
    from its Secret, and with TLS the CA from the TLS Secret (re-read every pass, so a rotated
    token or certificate is picked up)."""
    try:
        spec = parse_spec(name, namespace, body.get("spec") or {})
    except SpecError:
        return nodes()  # the pass reports the spec and does not call the nodes
    return nodes().using(credentials.node_access(spec, kube()))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's own bookkeeping goes to annotations: status holds only what the CRD declares.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 120
    settings.execution.max_workers = 8
    if METRICS_PORT:
        try:
            start_http_server(METRICS_PORT)
        except OSError as exc:  # already serving (tests, a second start-up): not fatal
            log.warning("metrics port %d: %s", METRICS_PORT, exc)
    try:
        from kubernetes import config

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
    except Exception as exc:  # kopf has its own login; the client is configured lazily
        log.warning("kubernetes client configuration: %s", exc)


def _plain(body: Any) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


def _emit(body: Any) -> reconciler.Emit:
    def emit(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    return emit


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def apply_children(body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
    """Create or patch the children now (the timer takes the steps that change nodes)."""
    plain = _plain(body)
    namespace = namespace or "default"
    try:
        spec = parse_spec(name, namespace, plain.get("spec") or {})
    except SpecError as exc:
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    memory = reconciler.memory_for(namespace, name)
    with memory.lock:
        observed, _pods = reconciler.observe(spec, kube(), reconciler.PodsOnly())
        reconciler.ensure_children(spec, plain, kube(), sts_replicas(spec, observed),
                                   reconciler.volume_sizes(observed),
                                   disruption_budgets(spec, observed))  # fmt: skip


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL, initial_delay=1.0, sharp=False)
def reconcile_timer(body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
    started = time.monotonic()
    namespace = namespace or "default"
    try:
        plain = _plain(body)
        node_api = nodes_for(plain, name, namespace)
        action, status = reconciler.reconcile(plain, kube(), node_api, _emit(body))
    except Exception as exc:
        ERRORS.labels(type(exc).__name__).inc()
        RECONCILES.labels("error").inc()
        CLUSTERS.failed(namespace, name)
        log.exception("reconcile of %s/%s failed", namespace, name)
        kopf.warn(body, reason="ReconcileError", message=f"{type(exc).__name__}: {exc}")
        return
    finally:
        DURATION.observe(time.monotonic() - started)
    RECONCILES.labels("ok").inc()
    if action.kind != "none":
        ACTIONS.labels(action.kind).inc()
    READY.labels(namespace, name).set(int(status.get("readyReplicas") or 0))
    NODES.labels(namespace, name).set(int(status.get("replicas") or 0))
    CLUSTERS.observe(namespace, name, status)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget(name: str, namespace: str | None, **_: Any) -> None:
    """Children go with the owner (owner references); volumes per spec.storage.deletePolicy
    (the StatefulSets' persistentVolumeClaimRetentionPolicy.whenDeleted)."""
    namespace = namespace or "default"
    for gauge in (READY, NODES):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)
    CLUSTERS.forget(namespace, name)
    reconciler.forget(namespace, name)


from ringkv.operator import backup_handlers  # noqa: E402, F401  (registers the backup handlers)
