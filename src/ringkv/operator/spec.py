"""The KVCluster spec as a typed value, its defaults, and the names of everything derived from it.

Pure: no Kubernetes access. The API server applies the CRD's defaults; ``parse_spec`` applies the
same ones again so that the operator behaves the same on an object that skipped them (tests,
an older CRD).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

from ringkv.node.config import SETTINGS

GROUP = "ringkv.io"
VERSION = "v1alpha1"
PLURAL = "kvclusters"
KIND = "KVCluster"
API_VERSION = f"{GROUP}/{VERSION}"

DEFAULT_IMAGE = "ringkv:0.1.0"
ZONE_LABEL = "topology.kubernetes.io/zone"
DATA_VOLUME = "data"
DATA_PATH = "/var/lib/ringkv"
FIELD_MANAGER = "ringkv-operator"

# Labels on every child; the node pods also get COMPONENT=node and ZONE_KEY=<zone>.
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
ZONE_KEY = "ringkv.io/zone"
NODE_ID_ANNOTATION = "ringkv.io/node-id"


def _node_default(flag: str) -> Any:
    """The node's default for a flag: a KVCluster field that sets it has the same default."""
    return SETTINGS[flag].default


# spec.shards: worker processes (one per core) serving each node, passed on as RINGKV_SHARDS.
SHARDS_FLAG = "shards"
SHARDS_ENV = "RINGKV_SHARDS"


def _max_shards() -> int:
    """spec.shards' upper bound: the node's --shards bound once the node declares the flag (as
    N's range is the node's); before that the node ignores RINGKV_SHARDS and this one holds."""
    node = SETTINGS.get(SHARDS_FLAG)
    return int(node.high) if node is not None and node.high is not None else 256


# The operator always passes an explicit count (its default comes from the pod's CPU), so 1 is
# its lower bound even where the node reads 0 as "detect the CPUs".
MIN_SHARDS, MAX_SHARDS = 1, _max_shards()

# Node flags the operator sets itself (security flags from spec.security, the shard count from
# spec.shards); spec.settings may not override them.
RESERVED_SETTINGS = frozenset(s.flag for s in SETTINGS.values() if s.operator) | {SHARDS_FLAG}


# Where the node pods find the files mounted from Secrets (directories: a Secret volume mounted
# without subPath is updated in place when the Secret changes, and the nodes reload tokens and
# certificates from it without a restart).
TOKENS_DIR = "/etc/ringkv/tokens"
OPERATOR_TOKEN_DIR = "/etc/ringkv/operator-token"
METRICS_TOKEN_DIR = "/etc/ringkv/metrics-token"
CLUSTER_SECRET_DIR = "/etc/ringkv/cluster-secret"
TLS_DIR = "/etc/ringkv/tls"
TOKENS_FILE = "tokens.json"  # the file name in TOKENS_DIR and OPERATOR_TOKEN_DIR
CLUSTER_SECRET_FILE = "cluster-secret"  # the file name in CLUSTER_SECRET_DIR
# Keys of the Secrets the operator generates.
TOKENS_KEY = "tokens.json"  # a tokens file, as nodes read it
ADMIN_TOKEN_KEY = "admin-token"  # the generated admin token alone (NAME-tokens)
OPERATOR_TOKEN_KEY = "token"  # the operator's admin token alone (NAME-operator-token)
METRICS_TOKEN_KEY = "token"  # the scrapers' metrics token alone (NAME-metrics-token)
METRICS_PATH = "/metrics"
CLUSTER_SECRET_KEY = "cluster-secret"
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE])?$")
_QUANTITY_UNITS = {
    "": 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "P": 1e15, "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
    "Ei": 2**60,
}  # fmt: skip


class SpecError(ValueError):
    """A spec the operator cannot act on (the CRD's validation should have refused it)."""


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as ``10m``, ``1h30m``, ``45s``, ``500ms``."""
    text = str(text).strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise SpecError(f"{text!r} is not a duration such as 10m, 1h30m or 45s")
    return total


def parse_quantity(value: int | float | str) -> float:
    """A Kubernetes quantity (``10Gi``, ``500M``, ``1.5``) as a number."""
    if isinstance(value, int | float):
        return float(value)
    m = _QUANTITY.match(str(value).strip())
    if not m:
        raise SpecError(f"{value!r} is not a quantity such as 10Gi")
    return float(m.group(1)) * _QUANTITY_UNITS[m.group(2) or ""]


def _cpu_cores(value: Any) -> Decimal | None:
    """A CPU quantity (``2``, ``2500m``, ``1.5``) in cores, exactly (``3000m`` is 3, not a hair
    above it as a float would make it); None if it is not one."""
    m = _QUANTITY.match(str(value).strip())
    if not m or m.group(2) not in (None, "m"):
        return None
    try:
        cores = Decimal(m.group(1))
    except InvalidOperation:
        return None
    return cores / 1000 if m.group(2) == "m" else cores


def default_shards(resources: dict[str, Any]) -> int:
    """spec.shards when the spec names none: one shard per core the container may use, that is
    its CPU limit rounded up (``limits.cpu: 2500m`` gives 3). Without a limit the container may
    burst onto every core of its machine, which it does not own: its CPU request (what the
    scheduler reserved for it) rounded up, and with neither 1, as a node ran before shards.
    Clamped to the range."""
    for section in ("limits", "requests"):
        cpu = _cpu_cores(dict(resources.get(section) or {}).get("cpu", ""))
        if cpu is not None and cpu > 0:
            whole = int(cpu.to_integral_value(rounding=ROUND_CEILING))
            return max(MIN_SHARDS, min(MAX_SHARDS, whole))
    return MIN_SHARDS


@dataclass(frozen=True)
class Autoscaling:
    enabled: bool = False
    min_replicas: int = 3
    max_replicas: int = 9
    target_rps_per_node: float | None = None
    target_disk_bytes_per_node: float | None = None
    cooldown_seconds: float = 300.0


@dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Secret in the KVCluster's namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class Security:
    """spec.security: client tokens, the peer secret and TLS, each wired from Secrets.

    ``tokens_secret`` / ``cluster_secret`` None means: the operator generates (and owns) one.
    With auth on, the operator always mounts its own admin token as a second tokens file."""

    auth: bool = True
    tokens_secret: SecretKeyRef | None = None
    peer_auth: bool = True
    cluster_secret: SecretKeyRef | None = None
    tls: bool = False
    tls_secret: str | None = None  # a kubernetes.io/tls Secret: tls.crt, tls.key (ca.crt)
    tls_verify_peers: bool = False  # mutual TLS between nodes against the Secret's ca.crt


@dataclass(frozen=True)
class Monitoring:
    """spec.monitoring.podMonitor: a PodMonitor (Prometheus Operator) for the nodes."""

    pod_monitor: bool = False
    interval: str = "30s"
    labels: tuple[tuple[str, str], ...] = ()


_SCRAPE_INTERVAL = re.compile(r"^[0-9]+(ms|s|m|h)$")


@dataclass(frozen=True)
class ClusterSpec:
    """One KVCluster's spec, defaulted and checked."""

    name: str
    namespace: str
    zones: tuple[str, ...]
    replicas: int = 3
    replication_factor: int = _node_default("replication-factor")
    consistency: str = _node_default("default-consistency")
    conflict_resolution: str = _node_default("conflict-mode")
    vnodes: int = _node_default("vnodes")
    shards: int = MIN_SHARDS  # spec.shards, or default_shards(resources)
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    client_port: int = _node_default("port")
    peer_port: int = _node_default("peer-port")
    topology_key: str = ZONE_LABEL
    resources: dict[str, Any] = field(default_factory=dict)
    storage_size: str = "1Gi"
    storage_class: str | None = None
    delete_policy: str = "Retain"
    replace_enabled: bool = True
    replace_after_seconds: float = 600.0
    autoscaling: Autoscaling = Autoscaling()
    paused: bool = False
    settings: tuple[tuple[str, str], ...] = ()
    service_type: str = "ClusterIP"
    service_annotations: tuple[tuple[str, str], ...] = ()
    pod_labels: tuple[tuple[str, str], ...] = ()
    pod_annotations: tuple[tuple[str, str], ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[dict[str, Any], ...] = ()
    priority_class: str | None = None
    termination_grace_seconds: int = 30
    security: Security = Security()
    monitoring: Monitoring = Monitoring()
    scale_by_whole_zones: bool = False

    # -- names ----------------------------------------------------------------------------------

    def statefulset_name(self, zone: str) -> str:
        return f"{self.name}-{zone}"

    def pod_name(self, zone: str, ordinal: int) -> str:
        """Also the node id: ``<cluster>-<zone>-<ordinal>``."""
        return f"{self.statefulset_name(zone)}-{ordinal}"

    def pvc_name(self, zone: str, ordinal: int) -> str:
        return f"{DATA_VOLUME}-{self.pod_name(zone, ordinal)}"

    @property
    def peer_service(self) -> str:
        return f"{self.name}-peers"

    @property
    def client_service(self) -> str:
        return self.name

    @property
    def service_account(self) -> str:
        return f"{self.name}-node"

    @property
    def pdb_name(self) -> str:
        return self.name

    @property
    def generated_tokens_secret(self) -> str:
        """The users' tokens the operator generates when spec.security.auth names none."""
        return f"{self.name}-tokens"

    @property
    def generated_cluster_secret(self) -> str:
        return f"{self.name}-cluster-secret"

    @property
    def operator_token_secret(self) -> str:
        """The operator's own admin token, mounted into the nodes as a second tokens file."""
        return f"{self.name}-operator-token"

    @property
    def metrics_token_secret(self) -> str:
        """A token of role ``metrics`` for Prometheus (a PodMonitor's bearerTokenSecret),
        mounted into the nodes as a third tokens file."""
        return f"{self.name}-metrics-token"

    @property
    def tokens_ref(self) -> SecretKeyRef:
        """The users' tokens file the nodes mount (named in the spec, or generated)."""
        return self.security.tokens_secret or SecretKeyRef(self.generated_tokens_secret, TOKENS_KEY)

    @property
    def cluster_secret_ref(self) -> SecretKeyRef:
        return self.security.cluster_secret or SecretKeyRef(
            self.generated_cluster_secret, CLUSTER_SECRET_KEY
        )

    @property
    def client_scheme(self) -> str:
        return "https" if self.security.tls else "http"

    def peer_host(self, pod: str) -> str:
        """The stable DNS name of a node pod through the headless peer Service."""
        return f"{pod}.{self.peer_service}.{self.namespace}.svc.cluster.local"

    def seeds(self) -> tuple[str, ...]:
        """Peer addresses of the first pod of each of the first three zones."""
        return tuple(
            f"{self.peer_host(self.pod_name(zone, 0))}:{self.peer_port}" for zone in self.zones[:3]
        )

    # -- labels ---------------------------------------------------------------------------------

    def labels(self, component: str | None = None) -> dict[str, str]:
        out = {NAME_LABEL: "ringkv", INSTANCE_LABEL: self.name, MANAGED_BY_LABEL: "ringkv-operator"}
        if component:
            out[COMPONENT_LABEL] = component
        return out

    def node_selector_labels(self, zone: str | None = None) -> dict[str, str]:
        """The labels that select this cluster's node pods (of one zone)."""
        out = {NAME_LABEL: "ringkv", INSTANCE_LABEL: self.name, COMPONENT_LABEL: "node"}
        if zone is not None:
            out[ZONE_KEY] = zone
        return out

    @property
    def selector_string(self) -> str:
        """The scale subresource's status.selector."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.node_selector_labels().items()))

    def node_count(self, replicas: int | None = None) -> int:
        """The nodes to run for ``replicas`` (default spec.replicas): with
        ``scaleByWholeZones``, rounded up to a multiple of the zone count, so that every zone
        has as many nodes and replica load can be even (with one replica of each key per zone,
        a zone with fewer nodes loads each of them more)."""
        total = self.replicas if replicas is None else replicas
        if self.scale_by_whole_zones:
            zones = len(self.zones)
            total = -(-total // zones) * zones
        return total

    def zone_targets(self, replicas: int | None = None) -> dict[str, int]:
        """Nodes each zone should run: an even spread, the first zones get one more."""
        total = self.node_count(replicas)
        base, extra = divmod(total, len(self.zones))
        return {zone: base + (1 if i < extra else 0) for i, zone in enumerate(self.zones)}


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    if not value:
        return ()
    if not isinstance(value, dict):
        raise SpecError(f"expected a map of strings, got {value!r}")
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


def _map(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{path} must be an object")
    return dict(value)


def _flag(section: dict[str, Any], key: str, default: bool, path: str) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise SpecError(f"{path}.{key} must be true or false")
    return value


def _secret_name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _SECRET_NAME.match(value):
        raise SpecError(f"{path} must name a Secret (a DNS subdomain), got {value!r}")
    return value


def _secret_ref(value: Any, default_key: str, path: str) -> SecretKeyRef | None:
    if value is None:
        return None
    ref = _map(value, path)
    key = ref.get("key", default_key)
    if not isinstance(key, str) or not _SECRET_KEY.match(key):
        raise SpecError(f"{path}.key must be a Secret key (letters, digits, '-', '_', '.')")
    return SecretKeyRef(_secret_name(ref.get("name"), f"{path}.name"), key)


def parse_security(value: Any) -> Security:
    """spec.security, defaulted: auth and peer auth on (with generated Secrets), TLS off."""
    sec = _map(value, "spec.security")
    auth = _map(sec.get("auth"), "spec.security.auth")
    peer = _map(sec.get("peerAuth"), "spec.security.peerAuth")
    tls = _map(sec.get("tls"), "spec.security.tls")
    out = Security(
        auth=_flag(auth, "enabled", True, "spec.security.auth"),
        tokens_secret=_secret_ref(
            auth.get("tokensSecret"), TOKENS_KEY, "spec.security.auth.tokensSecret"
        ),
        peer_auth=_flag(peer, "enabled", True, "spec.security.peerAuth"),
        cluster_secret=_secret_ref(
            peer.get("clusterSecret"), CLUSTER_SECRET_KEY, "spec.security.peerAuth.clusterSecret"
        ),
        tls=_flag(tls, "enabled", False, "spec.security.tls"),
        tls_secret=(
            _secret_name(tls["secretName"], "spec.security.tls.secretName")
            if tls.get("secretName") is not None
            else None
        ),
        tls_verify_peers=_flag(tls, "verifyPeers", False, "spec.security.tls"),
    )
    if out.tokens_secret and not out.auth:
        raise SpecError("spec.security.auth.tokensSecret is set but auth.enabled is false")
    if out.cluster_secret and not out.peer_auth:
        raise SpecError("spec.security.peerAuth.clusterSecret is set but peerAuth.enabled is false")
    if out.tls and not out.tls_secret:
        raise SpecError("spec.security.tls.enabled needs tls.secretName (a TLS Secret)")
    if out.tls_secret and not out.tls:
        raise SpecError("spec.security.tls.secretName is set but tls.enabled is false")
    if out.tls_verify_peers and not out.tls:
        raise SpecError("spec.security.tls.verifyPeers needs tls.enabled")
    return out


def parse_spec(name: str, namespace: str, spec: dict[str, Any]) -> ClusterSpec:
    """The typed, defaulted spec; raises SpecError for what the CRD's validation refuses."""
    spec = dict(spec or {})
    zones = tuple(str(z) for z in spec.get("zones") or ())
    if not zones:
        raise SpecError("spec.zones must name at least one zone")
    if len(set(zones)) != len(zones):
        raise SpecError("spec.zones must be unique")
    for zone in zones:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", zone) or len(zone) > 20:
            raise SpecError(f"zone {zone!r} must be a DNS label of at most 20 characters")
    replicas = int(spec.get("replicas", 3))
    rf = int(spec.get("replicationFactor", _node_default("replication-factor")))
    if replicas < 1:
        raise SpecError("spec.replicas must be at least 1")
    rf_problem = SETTINGS["replication-factor"].problem(rf)  # N's range: the node's
    if rf_problem:
        raise SpecError(rf_problem.replace("--replication-factor", "spec.replicationFactor"))
    if rf > replicas:
        raise SpecError(f"spec.replicationFactor {rf} exceeds spec.replicas {replicas}")
    if len(name) > 40:
        raise SpecError("metadata.name must be at most 40 characters")
    storage = dict(spec.get("storage") or {})
    failure = dict(spec.get("failureReplacement") or {})
    auto = dict(spec.get("autoscaling") or {})
    service = dict(spec.get("service") or {})
    pod = dict(spec.get("podTemplate") or {})
    pod_monitor = dict(dict(spec.get("monitoring") or {}).get("podMonitor") or {})
    interval = str(pod_monitor.get("interval", "30s"))
    if not _SCRAPE_INTERVAL.match(interval):
        raise SpecError(f"spec.monitoring.podMonitor.interval {interval!r} must be like 30s or 1m")
    settings = _pairs(spec.get("settings"))
    bad = sorted(k for k, _ in settings if k in RESERVED_SETTINGS)
    if bad:
        raise SpecError(f"spec.settings must not set {', '.join(bad)} (the operator sets them)")
    # A misspelt flag would be ignored by the nodes (an unknown RINGKV_* variable) unnoticed.
    unknown = sorted(k for k, _ in settings if k not in SETTINGS)
    if unknown:
        raise SpecError(f"spec.settings: {', '.join(unknown)} is not a node flag (ringkv node "
                        "--help lists them)")  # fmt: skip
    target_disk = auto.get("targetDiskBytesPerNode")
    autoscaling = Autoscaling(
        enabled=bool(auto.get("enabled", False)),
        min_replicas=int(auto.get("minReplicas", 3)),
        max_replicas=int(auto.get("maxReplicas", 9)),
        target_rps_per_node=(
            float(auto["targetRequestsPerSecondPerNode"])
            if auto.get("targetRequestsPerSecondPerNode") is not None
            else None
        ),
        target_disk_bytes_per_node=(
            parse_quantity(target_disk) if target_disk is not None else None
        ),
        cooldown_seconds=float(auto.get("cooldownSeconds", 300)),
    )
    if autoscaling.enabled and not (rf <= autoscaling.min_replicas <= autoscaling.max_replicas):
        raise SpecError("autoscaling needs replicationFactor <= minReplicas <= maxReplicas")
    client_port = int(spec.get("clientPort", _node_default("port")))
    peer_port = int(spec.get("peerPort", _node_default("peer-port")))
    if client_port == peer_port:
        raise SpecError("spec.clientPort and spec.peerPort must differ")
    size = storage.get("size", "1Gi")
    parse_quantity(size)
    resources = _map(spec.get("resources"), "spec.resources")
    shards = spec.get("shards")
    if shards is None:
        shards = default_shards(resources)
    elif isinstance(shards, bool) or not isinstance(shards, int):
        raise SpecError(f"spec.shards must be a whole number, got {shards!r}")
    elif not MIN_SHARDS <= shards <= MAX_SHARDS:
        raise SpecError(f"spec.shards must be between {MIN_SHARDS} and {MAX_SHARDS}")
    return ClusterSpec(
        name=name,
        namespace=namespace,
        zones=zones,
        replicas=replicas,
        replication_factor=rf,
        consistency=str(spec.get("consistency", _node_default("default-consistency"))),
        conflict_resolution=str(spec.get("conflictResolution", _node_default("conflict-mode"))),
        vnodes=int(spec.get("vnodes", _node_default("vnodes"))),
        shards=shards,
        image=str(spec.get("image") or DEFAULT_IMAGE),
        image_pull_policy=str(spec.get("imagePullPolicy", "IfNotPresent")),
        image_pull_secrets=tuple(
            str(s["name"]) for s in spec.get("imagePullSecrets") or () if s.get("name")
        ),
        client_port=client_port,
        peer_port=peer_port,
        topology_key=str(spec.get("topologyKey") or ZONE_LABEL),
        resources=resources,
        storage_size=str(size),
        storage_class=storage.get("storageClassName") or None,
        delete_policy=str(storage.get("deletePolicy", "Retain")),
        replace_enabled=bool(failure.get("enabled", True)),
        replace_after_seconds=parse_duration(str(failure.get("after", "10m"))),
        autoscaling=autoscaling,
        paused=bool(spec.get("paused", False)),
        settings=settings,
        service_type=str(service.get("type", "ClusterIP")),
        service_annotations=_pairs(service.get("annotations")),
        pod_labels=_pairs(pod.get("labels")),
        pod_annotations=_pairs(pod.get("annotations")),
        node_selector=_pairs(pod.get("nodeSelector")),
        tolerations=tuple(dict(t) for t in pod.get("tolerations") or ()),
        priority_class=pod.get("priorityClassName") or None,
        termination_grace_seconds=int(pod.get("terminationGracePeriodSeconds", 30)),
        security=parse_security(spec.get("security")),
        monitoring=Monitoring(
            pod_monitor=bool(pod_monitor.get("enabled", False)),
            interval=interval,
            labels=_pairs(pod_monitor.get("labels")),
        ),
        scale_by_whole_zones=_flag(spec, "scaleByWholeZones", False, "spec"),
    )
