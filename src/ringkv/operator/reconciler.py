"""One reconcile pass: fetch what is observed, ask ``plan.decide`` for the next action, carry
it out, write the status.

The I/O sits behind two small interfaces, ``Kube`` (the Kubernetes API) and ``Nodes`` (the
ringkv nodes' HTTP API), so a pass can run against fakes in unit tests; ``KubeApi`` and
``NodeHttp`` are the real ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from ringkv.client import Client, RingkvError
from ringkv.operator import builders, credentials
from ringkv.operator.plan import (
    CANCEL,
    DECOMMISSION,
    DELETE_PVC,
    NONE,
    RECREATE_STATEFULSET,
    REPLACE,
    RESHARD,
    RESIZE_PVC,
    RESTART,
    SCALE,
    VOLUME_REFUSALS,
    VOLUMES_CONDITION,
    Action,
    ClusterReport,
    Member,
    Observed,
    PodState,
    PvcState,
    StatefulSetState,
    autoscale,
    decide,
    disruption_budgets,
    iso,
    parse_iso,
    request_rate,
    scaling_blocked,
    sts_replicas,
)
from ringkv.operator.spec import (
    GROUP,
    INSTANCE_LABEL,
    PLURAL,
    SHARDS_ENV,
    VERSION,
    ZONE_KEY,
    ClusterSpec,
    SpecError,
    parse_quantity,
    parse_spec,
)

log = logging.getLogger(__name__)

Emit = Callable[[str, str, str], None]  # (type Normal|Warning, reason, message)


class Kube(Protocol):
    def apply(self, obj: dict[str, Any]) -> None: ...
    def list_statefulsets(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    def list_pvcs(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    def delete_pod(self, namespace: str, name: str, force: bool = False) -> None: ...
    def delete_pvc(self, namespace: str, name: str) -> None: ...
    def delete_pdb(self, namespace: str, name: str) -> None: ...
    def list_nodes(self) -> list[dict[str, Any]] | None: ...
    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    def patch_replicas(self, namespace: str, name: str, replicas: int) -> None: ...
    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create(self, obj: dict[str, Any]) -> None: ...
    def resize_pvc(self, namespace: str, name: str, size: str) -> None: ...
    def delete_statefulset_orphan(self, namespace: str, name: str) -> None: ...
    def storage_class_expandable(self, name: str) -> bool: ...


class Nodes(Protocol):
    def ring_view(self, endpoints: list[str]) -> ClusterReport | None: ...
    def decommission(self, endpoints: list[str], node: str) -> None: ...
    def cancel(self, endpoints: list[str], node: str) -> None: ...
    def load(self, endpoints: list[str]) -> tuple[float | None, float | None]: ...


# -- reading Kubernetes objects -------------------------------------------------------------


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(key)
    return default if obj is None else obj


def pod_state(spec: ClusterSpec, pod: dict[str, Any]) -> PodState | None:
    name = _get(pod, "metadata", "name", default="")
    zone = _get(pod, "metadata", "labels", ZONE_KEY, default="")
    if zone not in spec.zones:
        return None
    prefix = spec.statefulset_name(zone) + "-"
    rest = name[len(prefix) :]
    if not name.startswith(prefix) or not rest.isdigit():
        return None
    conditions = _get(pod, "status", "conditions", default=[])
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return PodState(
        name=name,
        zone=zone,
        ordinal=int(rest),
        phase=_get(pod, "status", "phase", default="Pending"),
        ready=ready,
        deleting=_get(pod, "metadata", "deletionTimestamp") is not None,
        revision=_get(pod, "metadata", "labels", "controller-revision-hash", default=""),
        ip=_get(pod, "status", "podIP"),
        restarts=sum(
            int(c.get("restartCount") or 0)
            for c in _get(pod, "status", "containerStatuses", default=[])
        ),
        shards=_template_shards(pod),
    )


def _template_shards(pod: dict[str, Any]) -> int | None:
    """The shard count a pod's template passes its node (``RINGKV_SHARDS``), if it says."""
    for container in _get(pod, "spec", "containers", default=[]):
        for env in container.get("env") or ():
            if env.get("name") == SHARDS_ENV:
                value = str(env.get("value") or "")
                return int(value) if value.isdigit() else None
    return None


def machines_by_zone(spec: ClusterSpec, nodes: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """(Ready, all) Kubernetes nodes per zone of the spec, by the label ``spec.topologyKey``."""
    out: dict[str, tuple[int, int]] = {z: (0, 0) for z in spec.zones}
    for node in nodes:
        zone = _get(node, "metadata", "labels", spec.topology_key, default="")
        if zone not in out:
            continue
        conditions = _get(node, "status", "conditions", default=[])
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        have_ready, have = out[zone]
        out[zone] = (have_ready + int(ready), have + 1)
    return out


class PodsOnly:
    """``Nodes`` for a pass that needs the pods and children only, not the nodes' answers."""

    def ring_view(self, endpoints: list[str]) -> None:
        return None

    def decommission(self, endpoints: list[str], node: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def cancel(self, endpoints: list[str], node: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def load(self, endpoints: list[str]) -> tuple[None, None]:  # pragma: no cover
        return None, None


def observe(spec: ClusterSpec, kube: Kube, nodes: Nodes) -> tuple[Observed, dict[str, PodState]]:
    ns = spec.namespace
    selector = f"{INSTANCE_LABEL}={spec.name},app.kubernetes.io/component=node"
    statefulsets = {}
    for sts in kube.list_statefulsets(ns, selector):
        zone = _get(sts, "metadata", "labels", ZONE_KEY, default="")
        if zone in spec.zones and _get(sts, "metadata", "name") == spec.statefulset_name(zone):
            templates = _get(sts, "spec", "volumeClaimTemplates", default=[])
            template = templates[0] if templates else {}
            statefulsets[zone] = StatefulSetState(
                zone=zone,
                replicas=int(_get(sts, "spec", "replicas", default=0)),
                update_revision=_get(sts, "status", "updateRevision", default=""),
                volume_size=str(_get(template, "spec", "resources", "requests", "storage") or ""),
                deleting=_get(sts, "metadata", "deletionTimestamp") is not None,
            )
    pods = {}
    for raw in kube.list_pods(ns, selector):
        p = pod_state(spec, raw)
        if p is not None:
            pods[p.name] = p
    pvcs = {}
    for raw in kube.list_pvcs(ns, f"{INSTANCE_LABEL}={spec.name}"):
        name = _get(raw, "metadata", "name", default="")
        pvcs[name] = PvcState(
            name=name,
            phase=_get(raw, "status", "phase", default="Pending"),
            deleting=_get(raw, "metadata", "deletionTimestamp") is not None,
            requested=_quantity(_get(raw, "spec", "resources", "requests", "storage")),
            capacity=_quantity(_get(raw, "status", "capacity", "storage")),
            storage_class=_get(raw, "spec", "storageClassName", default=""),
        )
    # Whether the StorageClass allows expansion, read only for the volumes to grow.
    want = parse_quantity(spec.storage_size)
    classes = {p.storage_class for p in pvcs.values() if p.requested and p.requested < want}
    expandable = {c: kube.storage_class_expandable(c) for c in sorted(classes) if c}
    machines = kube.list_nodes()
    ring = nodes.ring_view(endpoints_of(spec, pods.values()))
    if ring is not None and ring.source:  # the endpoint that answered: name its pod
        named = next((p.name for p in pods.values() if endpoints_of(spec, [p]) == [ring.source]),
                     ring.source)  # fmt: skip
        ring = dataclasses.replace(ring, source=named)
    machines_seen = None if machines is None else machines_by_zone(spec, machines)
    return Observed(
        statefulsets, pods, pvcs, ring, expandable=expandable, machines=machines_seen
    ), pods


def _quantity(value: Any) -> float | None:
    try:
        return parse_quantity(value) if value is not None else None
    except SpecError:
        return None


def endpoints_of(spec: ClusterSpec, pods: Iterable[PodState], only: str | None = None) -> list[str]:
    """Client URLs of the pods with an IP: ready ones first (or only the pod ``only``). Over
    TLS a pod is dialled by its DNS name (the headless peer Service publishes it before the pod
    is ready), the name its certificate carries, so the operator can verify it."""
    usable = [p for p in pods if p.ip and not p.deleting and (only is None or p.name == only)]
    usable.sort(key=lambda p: (not p.ready, p.zone, p.ordinal))
    if spec.security.tls:
        return [f"https://{spec.peer_host(p.name)}:{spec.client_port}" for p in usable]
    return [f"{spec.client_scheme}://{p.ip}:{spec.client_port}" for p in usable]


# -- the pass -------------------------------------------------------------------------------


@dataclass
class _Memory:
    """What a pass remembers for the next one (only for autoscaling's request rate)."""

    requests: dict[str, tuple[float, float]] | None = None  # pod -> (time, requests counter)
    # The status this process wrote last (the watched object may not show it yet).
    status: dict[str, Any] | None = None
    generation: int | None = None
    legacy_pdb_gone: bool = False  # the cluster-wide PodDisruptionBudget deleted
    lock: threading.Lock = field(default_factory=threading.Lock)


_memory: dict[tuple[str, str], _Memory] = {}
_memory_lock = threading.Lock()


def memory_for(namespace: str, name: str) -> _Memory:
    with _memory_lock:
        return _memory.setdefault((namespace, name), _Memory())


def forget(namespace: str, name: str) -> None:
    with _memory_lock:
        _memory.pop((namespace, name), None)


def owner_of(body: dict[str, Any]) -> dict[str, Any]:
    return {"name": body["metadata"]["name"], "uid": body["metadata"]["uid"]}


def volume_sizes(observed: Observed) -> dict[str, str]:
    """The volume template size of each zone's StatefulSet. It is applied unchanged: the API
    refuses to change a StatefulSet's volumeClaimTemplates (``plan.grow_volumes`` re-creates
    the StatefulSet to change it)."""
    return {z: s.volume_size for z, s in observed.statefulsets.items() if s.volume_size}


def _keep_volume_size(obj: dict[str, Any], sizes: dict[str, str]) -> dict[str, Any]:
    size = sizes.get(_get(obj, "metadata", "labels", ZONE_KEY, default=""))
    if obj.get("kind") == "StatefulSet" and size:
        obj["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = size
    return obj


def ensure_children(
    spec: ClusterSpec,
    body: dict[str, Any],
    kube: Kube,
    replicas: dict[str, int],
    sizes: dict[str, str] | None = None,
    budgets: dict[str, int] | None = None,
) -> None:
    """Create or patch every child (server-side apply), StatefulSets with ``replicas`` (and
    the volume template ``sizes`` they have, see ``volume_sizes``), the zones'
    PodDisruptionBudgets with ``budgets``; first the Secrets the operator generates (created
    once, never re-applied)."""
    credentials.ensure_secrets(spec, owner_of(body), kube)
    for obj in builders.build_children(spec, owner_of(body), replicas, budgets):
        kube.apply(_keep_volume_size(obj, sizes or {}))
    if spec.monitoring.pod_monitor:
        _apply_pod_monitor(spec, builders.build_pod_monitor(spec, owner_of(body)), kube)


_POD_MONITOR_WARNED: set[tuple[str, str]] = set()


def _apply_pod_monitor(spec: ClusterSpec, obj: dict[str, Any], kube: Kube) -> None:
    """A PodMonitor is optional: without the Prometheus Operator's CRD (or the RBAC for it)
    the cluster runs unmonitored rather than stopping every pass; said once in the log."""
    key = (spec.namespace, spec.name)
    try:
        kube.apply(obj)
    except Exception as exc:
        if key not in _POD_MONITOR_WARNED:
            _POD_MONITOR_WARNED.add(key)
            log.warning(
                "%s/%s: cannot apply its PodMonitor (%s); is the Prometheus Operator installed?",
                spec.namespace, spec.name, type(exc).__name__,
            )  # fmt: skip
    else:
        _POD_MONITOR_WARNED.discard(key)


def reconcile(
    body: dict[str, Any],
    kube: Kube,
    nodes: Nodes,
    emit: Emit,
    now: float | None = None,
    act: bool = True,
) -> tuple[Action, dict[str, Any]]:
    """One pass for one KVCluster (``body`` as the API returns it): children, observe, decide,
    act (when ``act``), status. Returns the action taken and the status written."""
    now = time.time() if now is None else now
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    generation = meta.get("generation")
    memory = memory_for(namespace, name)
    with memory.lock:
        previous = dict(body.get("status") or {})
        if memory.status is not None and _newer(memory.status, previous):
            previous = dict(memory.status)
        try:
            spec = parse_spec(name, namespace, body.get("spec") or {})
        except SpecError as exc:
            status = invalid_spec_status(previous, str(exc), now, generation)
            kube.patch_status(namespace, name, status)
            emit("Warning", "InvalidSpec", str(exc))
            return Action(), status
        observed, pods = observe(spec, kube, nodes)
        # (a zone whose StatefulSet was deleted, orphaning its pods, counts its pods: it is
        # created again with them -- see plan.sts_replicas)
        counts = sts_replicas(spec, observed)
        sizes = volume_sizes(observed)
        ensure_children(spec, body, kube, counts, sizes, disruption_budgets(spec, observed))
        if not memory.legacy_pdb_gone:
            # the one cluster-wide budget of earlier versions: a pod under two budgets
            # cannot be evicted at all
            kube.delete_pdb(namespace, spec.pdb_name)
            memory.legacy_pdb_gone = True
        decision = decide(spec, observed, previous, now, generation)
        action, status = decision.action, decision.status
        refusal = _new_refusal(previous, status)
        if act and refusal is not None:
            emit("Warning", refusal["reason"], refusal["message"])
        if act and action.kind != NONE:
            execute(spec, body, action, kube, nodes, pods, counts, sizes)
            kind = "Warning" if action.kind == REPLACE else "Normal"
            emit(kind, action.reason, action.message)
        if act and action.kind == NONE and observed.ring is not None:
            wanted = autoscale_step(spec, observed, previous, memory, nodes, pods, now)
            if wanted is not None:
                kube.patch_replicas(namespace, name, wanted)
                status["lastScaleTime"] = iso(now)
                emit("Normal", "Autoscale", f"replicas {spec.replicas} -> {wanted}")
        kube.patch_status(namespace, name, status)
        memory.status = status
        return action, status


def _new_refusal(previous: dict[str, Any], status: dict[str, Any]) -> dict[str, Any] | None:
    """The volumes condition when it turned to a refusal this pass (said once, as an event)."""

    def volumes(s: dict[str, Any]) -> dict[str, Any]:
        found = [c for c in s.get("conditions") or () if c.get("type") == VOLUMES_CONDITION]
        return found[0] if found else {}

    now, before = volumes(status), volumes(previous)
    if now.get("reason") in VOLUME_REFUSALS and (
        now.get("reason"), now.get("message")) != (before.get("reason"), before.get("message")
    ):  # fmt: skip
        return now
    return None


def _newer(mine: dict[str, Any], seen: dict[str, Any]) -> bool:
    """Whether the status this process wrote is at least as recent as the one on the object."""
    a = parse_iso((mine.get("lastAction") or {}).get("time")) or 0.0
    b = parse_iso((seen.get("lastAction") or {}).get("time")) or 0.0
    return a >= b


def execute(
    spec: ClusterSpec,
    body: dict[str, Any],
    action: Action,
    kube: Kube,
    nodes: Nodes,
    pods: dict[str, PodState],
    counts: dict[str, int],
    sizes: dict[str, str] | None = None,
) -> None:
    ns = spec.namespace
    log.info("%s/%s: %s", ns, spec.name, action.message)
    if action.kind == SCALE:
        assert action.zone is not None and action.replicas is not None
        sts = builders.build_statefulset(spec, action.zone, action.replicas, owner_of(body))
        kube.apply(_keep_volume_size(sts, sizes or {}))
    elif action.kind in (DECOMMISSION, CANCEL):
        assert action.node is not None
        own = endpoints_of(spec, pods.values(), only=action.node)
        change = nodes.decommission if action.kind == DECOMMISSION else nodes.cancel
        change(own + endpoints_of(spec, pods.values()), action.node)
    elif action.kind == DELETE_PVC:
        assert action.pvc is not None
        kube.delete_pvc(ns, action.pvc)
    elif action.kind in (REPLACE, RESHARD):
        assert action.pvc is not None and action.node is not None
        # The claim goes first (it stays Terminating until the pod is gone), then the pod: the
        # StatefulSet recreates both, empty. A replaced node's Kubernetes node may be down, so
        # its pod goes forcefully; a resharded node is healthy and stops gracefully.
        kube.delete_pvc(ns, action.pvc)
        kube.delete_pod(ns, action.node, force=action.kind == REPLACE)
    elif action.kind == RESTART:
        assert action.node is not None
        kube.delete_pod(ns, action.node)
    elif action.kind == RESIZE_PVC:
        for pvc in action.pvcs:
            kube.resize_pvc(ns, pvc, action.size)
    elif action.kind == RECREATE_STATEFULSET:
        assert action.zone is not None
        # Its pods and volumes stay (orphaned); the next pass applies it again, with the
        # new volume template, and it adopts them: no pod restarts.
        kube.delete_statefulset_orphan(ns, spec.statefulset_name(action.zone))


def autoscale_step(
    spec: ClusterSpec,
    observed: Observed,
    previous: dict[str, Any],
    memory: _Memory,
    nodes: Nodes,
    pods: dict[str, PodState],
    now: float,
) -> int | None:
    if not spec.autoscaling.enabled:
        return None
    # Only a settled cluster is scaled (no step pending, no ring change, every node up), and
    # the request rate is measured between two settled passes from every node's own counter
    # (plan.request_rate): a node missing from a sum must not read as the load going away.
    busy = scaling_blocked(spec, observed)
    counts: dict[str, float | None] = {}
    disks: list[float | None] = []
    for pod in sorted((p for p in pods.values() if p.ready), key=lambda p: p.name):
        requests, disk = nodes.load(endpoints_of(spec, [pod]))
        counts[pod.name] = requests
        disks.append(disk)
    rate, memory.requests = request_rate(None if busy else memory.requests, counts, now)
    if busy:
        memory.requests = None
    disk_total = sum(d for d in disks if d is not None) if disks and None not in disks else None
    return autoscale(
        spec, spec.replicas, rate, disk_total, parse_iso(previous.get("lastScaleTime")), now, busy
    )


def invalid_spec_status(
    previous: dict[str, Any], message: str, now: float, generation: int | None
) -> dict[str, Any]:
    conditions = [c for c in previous.get("conditions") or () if c.get("type") != "Degraded"]
    conditions.append(
        {"type": "Degraded", "status": "True", "reason": "InvalidSpec", "message": message,
         "lastTransitionTime": iso(now)}
    )  # fmt: skip
    status: dict[str, Any] = {"phase": "Degraded", "conditions": conditions}
    if generation is not None:
        status["observedGeneration"] = generation
    return status


# -- the real Kubernetes API ----------------------------------------------------------------


#: How long one list of the Kubernetes nodes serves every pass (``KubeApi.list_nodes``).
NODE_LIST_SECONDS = 10.0


class KubeApi:
    """``Kube`` over the official client; children are applied server-side (field manager
    ``ringkv-operator``, conflicts forced: the operator owns what it sets)."""

    def __init__(self, api_client: Any = None) -> None:
        from kubernetes import client, dynamic

        self._client = client
        self.api = api_client or client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.policy = client.PolicyV1Api(self.api)
        self.dynamic = dynamic.DynamicClient(self.api)  # type: ignore[no-untyped-call]
        self._resources: dict[tuple[str, str], Any] = {}
        self._nodes: tuple[float, list[dict[str, Any]] | None] | None = None
        self.clock = time.monotonic

    def _resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        if key not in self._resources:
            self._resources[key] = self.dynamic.resources.get(api_version=api_version, kind=kind)
        return self._resources[key]

    def apply(self, obj: dict[str, Any]) -> None:
        res = self._resource(obj["apiVersion"], obj["kind"])
        res.server_side_apply(
            body=obj,
            name=obj["metadata"]["name"],
            namespace=obj["metadata"].get("namespace"),
            field_manager="ringkv-operator",
            force_conflicts=True,
        )

    def _list(self, fn: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = fn(namespace, label_selector=selector, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(result.data).get("items", [])
        return items

    def list_statefulsets(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._list(self.apps.list_namespaced_stateful_set, namespace, selector)

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._list(self.core.list_namespaced_pod, namespace, selector)

    def list_pvcs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._list(self.core.list_namespaced_persistent_volume_claim, namespace, selector)

    def _ignore_404(self, fn: Callable[[], Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            fn()
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_pod(self, namespace: str, name: str, force: bool = False) -> None:
        kw: dict[str, Any] = {"grace_period_seconds": 0} if force else {}
        self._ignore_404(lambda: self.core.delete_namespaced_pod(name, namespace, **kw))

    def delete_pvc(self, namespace: str, name: str) -> None:
        self._ignore_404(
            lambda: self.core.delete_namespaced_persistent_volume_claim(name, namespace)
        )

    def resize_pvc(self, namespace: str, name: str, size: str) -> None:
        body = {"spec": {"resources": {"requests": {"storage": size}}}}
        self._ignore_404(
            lambda: self.core.patch_namespaced_persistent_volume_claim(name, namespace, body)
        )

    def delete_statefulset_orphan(self, namespace: str, name: str) -> None:
        options = self._client.V1DeleteOptions(propagation_policy="Orphan")
        self._ignore_404(
            lambda: self.apps.delete_namespaced_stateful_set(name, namespace, body=options)
        )

    def storage_class_expandable(self, name: str) -> bool:
        """A StorageClass's allowVolumeExpansion (False when there is no such class)."""
        from kubernetes.client.exceptions import ApiException

        try:
            sc = self._client.StorageV1Api(self.api).read_storage_class(name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return bool(sc.allow_volume_expansion)

    def list_nodes(self) -> list[dict[str, Any]] | None:
        """The Kubernetes nodes, or None where the operator may not list them (its RBAC).

        Every pass of every KVCluster asks; on a cluster of a thousand machines a list is
        megabytes. So one list serves all passes for ``NODE_LIST_SECONDS`` (a node's Ready
        condition itself changes only after the kubelet's grace period, tens of seconds), and
        it is read from the API server's watch cache (``resourceVersion=0``), not from etcd."""
        from kubernetes.client.exceptions import ApiException

        cached = self._nodes
        now = self.clock()
        if cached is not None and now - cached[0] < NODE_LIST_SECONDS:
            return cached[1]
        try:
            result = self.core.list_node(resource_version="0", _preload_content=False)
        except ApiException as exc:
            if exc.status in (401, 403):
                self._nodes = (now, None)
                return None
            raise
        data = result.data  # type: ignore[attr-defined]
        items: list[dict[str, Any]] = json.loads(data).get("items", [])
        self._nodes = (now, items)
        return items

    def delete_pdb(self, namespace: str, name: str) -> None:
        self._ignore_404(
            lambda: self.policy.delete_namespaced_pod_disruption_budget(name, namespace)
        )

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )

    def patch_replicas(self, namespace: str, name: str, replicas: int) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"spec": {"replicas": replicas}}
        )

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret as the API returns it (``data`` base64), None when there is none."""
        import json

        from kubernetes.client.exceptions import ApiException

        try:
            result: Any = self.core.read_namespaced_secret(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        secret: dict[str, Any] = json.loads(result.data)
        return secret

    def create(self, obj: dict[str, Any]) -> None:
        """Create ``obj`` (a Secret: never applied over an existing one, whose contents stay);
        one that exists already is left alone. Errors carry no request or response body."""
        from kubernetes.client.exceptions import ApiException

        meta = obj["metadata"]
        res = self._resource(obj["apiVersion"], obj["kind"])
        try:
            res.create(body=obj, namespace=meta.get("namespace"))
        except ApiException as exc:
            if exc.status == 409:
                return
            raise credentials.CredentialsError(
                f"creating {obj['kind']} {meta.get('namespace')}/{meta['name']} failed: "
                f"HTTP {exc.status} {exc.reason}"
            ) from None


# -- the real node API ----------------------------------------------------------------------


class NodeHttp:
    """``Nodes`` over ``ringkv.client.Client``: short timeouts, the first node that answers.
    Every request carries the cluster's ``access`` (the operator's bearer token, the TLS
    context); ``using`` gives one for another cluster, sharing the thread pool."""

    def __init__(
        self,
        timeout: float = 2.0,
        access: credentials.NodeAccess | None = None,
        pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self.timeout = timeout
        self.access = access or credentials.NodeAccess()
        self.pool = pool or ThreadPoolExecutor(max_workers=8, thread_name_prefix="ringkv-probe")

    def using(self, access: credentials.NodeAccess) -> NodeHttp:
        return NodeHttp(self.timeout, access, self.pool)

    def _client(self, endpoint: str, timeout: float | None = None) -> Client:
        return credentials.NodeClient(endpoint, self.access, timeout=timeout or self.timeout)

    def _status(self, endpoint: str) -> dict[str, Any] | None:
        try:
            with self._client(endpoint) as c:
                return c.status()
        except (RingkvError, OSError, ValueError):
            return None

    def ring_view(self, endpoints: list[str]) -> ClusterReport | None:
        for endpoint in endpoints:
            try:
                with self._client(endpoint) as c:
                    ring = c.ring()
                    progress = c.progress()
            except (RingkvError, OSError, ValueError):
                continue
            members = {}
            for n in ring.get("nodes") or ():
                members[str(n["id"])] = Member(
                    id=str(n["id"]),
                    zone=str(n.get("zone")),
                    state=str(n.get("state")),
                    alive=bool(n.get("alive")),
                    tokens=tuple(int(t) for t in n.get("tokens") or ()),
                    writes_refused=str(n.get("writes_refused") or ""),
                )
            running = [c for c in progress.get("changes") or () if c.get("state") == "running"]
            change = running[0] if running else None
            hints: dict[str, int] = {}
            for status in self.pool.map(self._status, endpoints):
                if status:
                    for target, count in dict(_get(status, "hints", "by_target") or {}).items():
                        hints[str(target)] = hints.get(str(target), 0) + int(count)
            return ClusterReport(
                members, progress.get("in_progress"), change, hints,
                tuple(str(n) for n in progress.get("cleanup_pending") or ()),
                tuple(r for r in progress.get("cleanup") or () if isinstance(r, dict)),
                source=endpoint,
            )  # fmt: skip
        return None

    def decommission(self, endpoints: list[str], node: str) -> None:
        self._change(endpoints, "decommission", node)

    def cancel(self, endpoints: list[str], node: str) -> None:
        """Cancel the join or decommission ``node`` drives (the node undoes it)."""
        self._change(endpoints, "cancel", node)

    def _change(self, endpoints: list[str], action: str, node: str) -> None:
        for endpoint in endpoints:
            try:
                with self._client(endpoint, max(self.timeout, 10.0)) as c:
                    c.admin(action, node)
                return
            except RingkvError as exc:
                if exc.status == 409:  # already done, or another change runs: next pass
                    log.info("%s of %s refused for now: %s", action, node, exc)
                    return
                if exc.status:  # an answer other than a connection failure
                    raise
            except (OSError, ValueError):
                continue
        raise ConnectionError(f"no node answered the {action} of {node}")

    def load(self, endpoints: list[str]) -> tuple[float | None, float | None]:
        """(client requests served, stored bytes), summed over the nodes' /metrics."""
        import http.client
        from urllib.parse import urlsplit

        from prometheus_client.parser import text_string_to_metric_families

        def scrape(endpoint: str) -> tuple[float, float] | None:
            u = urlsplit(endpoint)
            conn: http.client.HTTPConnection
            try:
                if u.scheme == "https":
                    conn = http.client.HTTPSConnection(u.hostname or "", u.port,
                        timeout=self.timeout, context=self.access.ssl_context)  # fmt: skip
                else:
                    conn = http.client.HTTPConnection(u.hostname or "", u.port,
                                                      timeout=self.timeout)  # fmt: skip
                conn.request("GET", "/metrics", headers=self.access.headers())
                response = conn.getresponse()
                text = response.read().decode()
                conn.close()
            except OSError:
                return None
            if response.status != 200:
                return None
            req = disk = 0.0
            for fam in text_string_to_metric_families(text):
                for s in fam.samples:
                    if s.name == "ringkv_requests_total":
                        req += s.value
                    elif s.name == "ringkv_stored_bytes":
                        disk += s.value
            return req, disk

        results = [r for r in self.pool.map(scrape, endpoints) if r is not None]
        if not results:
            return None, None
        return sum(r[0] for r in results), sum(r[1] for r in results)
