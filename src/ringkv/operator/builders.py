"""Pure builders: every child object of a KVCluster as a plain dict, ready to apply.

No Kubernetes access and no clock: the same spec (and owner) always gives the same objects, so
applying them again is a no-op and the operator can re-apply them on every pass (level-based).
The StatefulSets' ``replicas`` is an input, not derived from the spec: the reconcile plan
(``plan.py``) moves it one node at a time.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from ringkv.node.auth import METRICS_ROLE
from ringkv.node.config import SETTINGS
from ringkv.operator.spec import (
    ADMIN_TOKEN_KEY,
    API_VERSION,
    CLUSTER_SECRET_DIR,
    CLUSTER_SECRET_FILE,
    CLUSTER_SECRET_KEY,
    DATA_PATH,
    DATA_VOLUME,
    INSTANCE_LABEL,
    KIND,
    METRICS_PATH,
    METRICS_TOKEN_DIR,
    METRICS_TOKEN_KEY,
    NAME_LABEL,
    NODE_ID_ANNOTATION,
    OPERATOR_TOKEN_DIR,
    OPERATOR_TOKEN_KEY,
    SHARDS_ENV,
    TLS_DIR,
    TOKENS_DIR,
    TOKENS_FILE,
    TOKENS_KEY,
    ZONE_KEY,
    ClusterSpec,
)

Obj = dict[str, Any]

CONTAINER = "ringkv"


def owner_reference(owner: dict[str, Any]) -> Obj:
    """The controller owner reference to a KVCluster (``owner`` holds its name and uid)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": owner["name"],
        "uid": owner["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(spec: ClusterSpec, owner: dict[str, Any] | None, name: str, component: str) -> Obj:
    meta: Obj = {"name": name, "namespace": spec.namespace, "labels": spec.labels(component)}
    if owner is not None:
        meta["ownerReferences"] = [owner_reference(owner)]
    return meta


def config_data(spec: ClusterSpec) -> dict[str, str]:
    """The node settings shared by every node: RINGKV_* variables, set in the pod template
    itself (not through a ConfigMap) so that each StatefulSet revision carries its own: a pod
    of the old revision that restarts in the middle of a roll keeps the old settings, and a
    settings change reaches a node only when the roll restarts it."""
    data = {
        "RINGKV_HOST": "0.0.0.0",
        "RINGKV_PORT": str(spec.client_port),
        "RINGKV_PEER_PORT": str(spec.peer_port),
        "RINGKV_DATA_DIR": f"{DATA_PATH}/db",
        "RINGKV_SEEDS": ",".join(spec.seeds()),
        "RINGKV_REPLICATION_FACTOR": str(spec.replication_factor),
        "RINGKV_VNODES": str(spec.vnodes),
        SHARDS_ENV: str(spec.shards),
        "RINGKV_CONFLICT_MODE": spec.conflict_resolution,
        "RINGKV_DEFAULT_CONSISTENCY": spec.consistency,
        # A pod that starts with no tokens joins by itself, and one that starts on an empty
        # volume under a known id replaces itself; the operator decides *when* a pod starts.
        "RINGKV_AUTO_JOIN": "true",
        # A pod down longer than the tombstone grace would bring deleted data back: it wipes
        # its volume's data and replaces itself instead (see ringkv.node.absence).
        "RINGKV_REPLACE_WHEN_AWAY_TOO_LONG": "true",
    }
    # Nodes refuse to start unless security is configured or switched off explicitly: only
    # file paths here, the Secrets' contents stay out of the pod template.
    sec = spec.security
    if sec.auth:
        data["RINGKV_AUTH_TOKENS_FILE"] = (
            f"{TOKENS_DIR}/{TOKENS_FILE},{OPERATOR_TOKEN_DIR}/{TOKENS_FILE},"
            f"{METRICS_TOKEN_DIR}/{TOKENS_FILE}"
        )
    else:
        data["RINGKV_NO_AUTH"] = "true"
    if sec.peer_auth:
        data["RINGKV_CLUSTER_SECRET_FILE"] = f"{CLUSTER_SECRET_DIR}/{CLUSTER_SECRET_FILE}"
    else:
        data["RINGKV_NO_PEER_AUTH"] = "true"
    if sec.tls:
        data["RINGKV_TLS_CERT_FILE"] = f"{TLS_DIR}/tls.crt"
        data["RINGKV_TLS_KEY_FILE"] = f"{TLS_DIR}/tls.key"
        if sec.tls_verify_peers:
            data["RINGKV_TLS_CA_FILE"] = f"{TLS_DIR}/ca.crt"
    for key, value in spec.settings:
        data[SETTINGS[key].env] = value  # parse_spec refused keys that are no node flag
    return data


# -- Secrets ----------------------------------------------------------------------------------

# Secret volumes are readable by the node's group (fsGroup) only.
SECRET_MODE = 0o440


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def tokens_document(token: str, role: str, name: str) -> str:
    """A tokens file (``--auth-tokens-file``) holding one token."""
    return json.dumps({"tokens": [{"token": token, "role": role, "name": name}]}, indent=2) + "\n"


def _secret(
    spec: ClusterSpec, owner: dict[str, Any] | None, name: str, data: dict[str, str]
) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(spec, owner, name, "credentials"),
        "type": "Opaque",
        "data": {k: _b64(v) for k, v in data.items()},
    }


def build_generated_secrets(
    spec: ClusterSpec, owner: dict[str, Any] | None, new_secret: Callable[[], str]
) -> list[Obj]:
    """The Secrets the operator creates (once: never re-applied, so their random contents stay)
    and owns for this spec, filled from ``new_secret()`` (random in the operator):

    - ``NAME-operator-token`` (auth on): the operator's own admin token, as a tokens file the
      nodes mount next to the users' one, and alone under ``token`` for the operator to read;
    - ``NAME-tokens`` (auth on, no ``tokensSecret``): a tokens file with one generated admin
      token, also alone under ``admin-token`` for ``kubectl get secret``;
    - ``NAME-cluster-secret`` (peer auth on, no ``clusterSecret``): the peers' shared secret;
    - ``NAME-metrics-token`` (auth on): a token of role ``metrics`` for Prometheus, as a
      tokens file the nodes mount, and alone under ``token`` for a PodMonitor or
      ServiceMonitor's ``bearerTokenSecret``.
    """
    out = []
    sec = spec.security
    if sec.auth:
        token = new_secret()
        out.append(_secret(spec, owner, spec.operator_token_secret, {
            TOKENS_KEY: tokens_document(token, "admin", "ringkv-operator"),
            OPERATOR_TOKEN_KEY: token,
        }))  # fmt: skip
        if sec.tokens_secret is None:
            admin = new_secret()
            out.append(_secret(spec, owner, spec.generated_tokens_secret, {
                TOKENS_KEY: tokens_document(admin, "admin", "admin"),
                ADMIN_TOKEN_KEY: admin,
            }))  # fmt: skip
    if sec.peer_auth and sec.cluster_secret is None:
        out.append(_secret(spec, owner, spec.generated_cluster_secret,
                           {CLUSTER_SECRET_KEY: new_secret()}))  # fmt: skip
    if sec.auth:
        scraper = new_secret()
        out.append(_secret(spec, owner, spec.metrics_token_secret, {
            TOKENS_KEY: tokens_document(scraper, METRICS_ROLE, "metrics"),
            METRICS_TOKEN_KEY: scraper,
        }))  # fmt: skip
    return out


def _secret_volume(name: str, secret: str, items: list[tuple[str, str]]) -> Obj:
    return {
        "name": name,
        "secret": {
            "secretName": secret,
            "items": [{"key": key, "path": path} for key, path in items],
            "defaultMode": SECRET_MODE,
        },
    }


def security_volumes(spec: ClusterSpec) -> tuple[list[Obj], list[Obj]]:
    """(volumes, volume mounts) of the node pods for spec.security. Whole directories, never
    subPath: the kubelet then updates the files when a Secret changes, and the nodes reload
    them (tokens, certificates) without a restart. Only a change of these mounts (another
    Secret, another key) changes the pod template and rolls the nodes."""
    sec = spec.security
    volumes: list[Obj] = []
    mounts: list[Obj] = []

    def add(name: str, secret: str, items: list[tuple[str, str]], path: str) -> None:
        volumes.append(_secret_volume(name, secret, items))
        mounts.append({"name": name, "mountPath": path, "readOnly": True})

    if sec.auth:
        add("tokens", spec.tokens_ref.name, [(spec.tokens_ref.key, TOKENS_FILE)], TOKENS_DIR)
        add("operator-token", spec.operator_token_secret, [(TOKENS_KEY, TOKENS_FILE)],
            OPERATOR_TOKEN_DIR)  # fmt: skip
        add("metrics-token", spec.metrics_token_secret, [(TOKENS_KEY, TOKENS_FILE)],
            METRICS_TOKEN_DIR)  # fmt: skip
    if sec.peer_auth:
        ref = spec.cluster_secret_ref
        add("cluster-secret", ref.name, [(ref.key, CLUSTER_SECRET_FILE)], CLUSTER_SECRET_DIR)
    if sec.tls and sec.tls_secret:
        files = ["tls.crt", "tls.key"] + (["ca.crt"] if sec.tls_verify_peers else [])
        add("tls", sec.tls_secret, [(f, f) for f in files], TLS_DIR)
    return volumes, mounts


def build_service_account(spec: ClusterSpec, owner: dict[str, Any] | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(spec, owner, spec.service_account, "node"),
        "automountServiceAccountToken": True,
    }


def build_role(spec: ClusterSpec, owner: dict[str, Any] | None = None) -> Obj:
    """What a node may read for peer discovery through the API: pods and endpoints, no more."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(spec, owner, spec.service_account, "node"),
        "rules": [
            {"apiGroups": [""], "resources": ["pods", "endpoints"],
             "verbs": ["get", "list", "watch"]},
        ],
    }  # fmt: skip


def build_role_binding(spec: ClusterSpec, owner: dict[str, Any] | None = None) -> Obj:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(spec, owner, spec.service_account, "node"),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": spec.service_account,
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": spec.service_account, "namespace": spec.namespace}
        ],
    }


def _ports(spec: ClusterSpec) -> list[Obj]:
    return [
        {"name": "client", "port": spec.client_port, "targetPort": "client", "protocol": "TCP"},
        {"name": "peer", "port": spec.peer_port, "targetPort": "peer", "protocol": "TCP"},
    ]


def build_peer_service(spec: ClusterSpec, owner: dict[str, Any] | None = None) -> Obj:
    """Headless: gives every node pod a stable DNS name, published before the pod is ready
    (nodes must reach each other to become ready)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, owner, spec.peer_service, "peers"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": spec.node_selector_labels(),
            "ports": _ports(spec),
        },
    }


def build_client_service(spec: ClusterSpec, owner: dict[str, Any] | None = None) -> Obj:
    """Ready nodes only; any node coordinates any request."""
    meta = _meta(spec, owner, spec.client_service, "client")
    if spec.service_annotations:
        meta["annotations"] = dict(spec.service_annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": spec.service_type,
            "selector": spec.node_selector_labels(),
            "ports": [
                {"name": "client", "port": spec.client_port, "targetPort": "client",
                 "protocol": "TCP"}
            ],
        },
    }  # fmt: skip


def build_pdb(
    spec: ClusterSpec, zone: str, max_unavailable: int = 1, owner: dict[str, Any] | None = None
) -> Obj:
    """One zone's PodDisruptionBudget (named as its StatefulSet): a drain in one zone is
    judged on that zone's pods, not blocked by another zone's; ``max_unavailable`` is
    ``plan.disruption_budgets``' choice (0 while another zone has a node out)."""
    meta = _meta(spec, owner, spec.statefulset_name(zone), "node")
    meta["labels"][ZONE_KEY] = zone
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta,
        "spec": {
            "maxUnavailable": max_unavailable,
            "selector": {"matchLabels": spec.node_selector_labels(zone)},
        },
    }


def _probe(
    path: str, port: int, period: int, failures: int, delay: int = 0, scheme: str = "HTTP"
) -> Obj:
    return {
        "httpGet": {"path": path, "port": port, "scheme": scheme},
        "initialDelaySeconds": delay,
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def _field(path: str) -> Obj:
    return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}


def scrape_annotations(spec: ClusterSpec) -> dict[str, str]:
    """The ``prometheus.io/*`` annotations a plain Prometheus's pod discovery keys on (with auth
    on it also needs the metrics token: docs/operations.md, Monitoring)."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(spec.client_port),
        "prometheus.io/path": METRICS_PATH,
        "prometheus.io/scheme": spec.client_scheme,
    }


def build_pod_template(spec: ClusterSpec, zone: str) -> Obj:
    """The node pods of one zone."""
    labels = {**dict(spec.pod_labels), **spec.node_selector_labels(zone)}
    # For a plain Prometheus (kubernetes_sd_configs, role pod); the spec's own win.
    annotations = {**scrape_annotations(spec), **dict(spec.pod_annotations)}
    env = [
        {"name": "POD_NAME", "valueFrom": _field("metadata.name")},
        {"name": "POD_NAMESPACE", "valueFrom": _field("metadata.namespace")},
        {"name": "POD_IP", "valueFrom": _field("status.podIP")},
        {"name": "RINGKV_NODE_ID", "value": "$(POD_NAME)"},
        {"name": "RINGKV_ZONE", "value": zone},
        {"name": "RINGKV_ADVERTISE_HOST", "value": "$(POD_IP)"},
        # The stable name, in the same form as the seeds, so a seed pod recognises itself.
        {
            "name": "RINGKV_PEER_ADVERTISE",
            "value": f"$(POD_NAME).{spec.peer_service}.$(POD_NAMESPACE).svc.cluster.local:"
            f"{spec.peer_port}",
        },
    ]
    secret_volumes, secret_mounts = security_volumes(spec)
    scheme = spec.client_scheme.upper()
    container: Obj = {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["ringkv", "node"],
        "env": env + [{"name": k, "value": v} for k, v in sorted(config_data(spec).items())],
        "ports": [
            {"name": "client", "containerPort": spec.client_port, "protocol": "TCP"},
            {"name": "peer", "containerPort": spec.peer_port, "protocol": "TCP"},
        ],
        # Ready = joined a settled ring and serving reads; live = the process answers.
        # (The health endpoints need no token; over TLS the kubelet does not verify.)
        "readinessProbe": _probe("/health/ready", spec.client_port, 5, 3, scheme=scheme),
        "livenessProbe": _probe("/health/live", spec.client_port, 10, 6, scheme=scheme),
        # Opening a large RocksDB can take a while: up to 10 minutes before liveness counts.
        "startupProbe": _probe("/health/live", spec.client_port, 5, 120, scheme=scheme),
        "volumeMounts": [{"name": DATA_VOLUME, "mountPath": DATA_PATH}, *secret_mounts],
    }
    if spec.resources:
        container["resources"] = spec.resources
    affinity: Obj = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [
                        {"key": spec.topology_key, "operator": "In", "values": [zone]}
                    ]}
                ]
            }
        },
        # Prefer one node of the cluster per machine; the zone pin above is the hard rule.
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": spec.node_selector_labels()},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        },
    }  # fmt: skip
    pod_spec: Obj = {
        "serviceAccountName": spec.service_account,
        # A Service named like the RINGKV_* flags would otherwise inject RINGKV_PORT=tcp://...
        "enableServiceLinks": False,
        # The image runs as uid 10001; fsGroup makes the volume writable for it.
        "securityContext": {
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "runAsNonRoot": True,
            "fsGroup": 10001,
            "fsGroupChangePolicy": "OnRootMismatch",
        },
        "terminationGracePeriodSeconds": spec.termination_grace_seconds,
        "affinity": affinity,
        "containers": [container],
    }
    if secret_volumes:
        pod_spec["volumes"] = secret_volumes
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.priority_class:
        pod_spec["priorityClassName"] = spec.priority_class
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in spec.image_pull_secrets]
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}


def build_statefulset(
    spec: ClusterSpec, zone: str, replicas: int, owner: dict[str, Any] | None = None
) -> Obj:
    """One zone's nodes. ``OnDelete`` updates: the operator restarts pods one at a time;
    ``Parallel``: the operator, not the controller, orders creations and removals."""
    if zone not in spec.zones:
        raise ValueError(f"zone {zone!r} is not in spec.zones")
    if replicas < 0:
        raise ValueError("replicas must not be negative")
    meta = _meta(spec, owner, spec.statefulset_name(zone), "node")
    meta["labels"][ZONE_KEY] = zone
    claim: Obj = {
        "metadata": {"name": DATA_VOLUME, "labels": spec.node_selector_labels(zone)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage_size}},
        },
    }
    if spec.storage_class:
        claim["spec"]["storageClassName"] = spec.storage_class
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "serviceName": spec.peer_service,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "selector": {"matchLabels": spec.node_selector_labels(zone)},
            "template": build_pod_template(spec, zone),
            "volumeClaimTemplates": [claim],
            # Volumes of decommissioned nodes are deleted by the operator once they are `left`.
            "persistentVolumeClaimRetentionPolicy": {
                "whenScaled": "Retain",
                "whenDeleted": "Delete" if spec.delete_policy == "Delete" else "Retain",
            },
        },
    }


def node_id_of(spec: ClusterSpec, zone: str, ordinal: int) -> str:
    """The ringkv node id of a pod: its name, ``<cluster>-<zone>-<ordinal>``."""
    return spec.pod_name(zone, ordinal)


def build_pod_monitor(spec: ClusterSpec, owner: dict[str, Any] | None = None) -> Obj:
    """The PodMonitor (Prometheus Operator) of spec.monitoring.podMonitor: the nodes' /metrics
    with the metrics token; ``jobLabel`` makes the job ``ringkv`` (the pods'
    app.kubernetes.io/name), a relabelling sets ``cluster`` to the KVCluster's name. With TLS
    Prometheus verifies the nodes against the TLS Secret's ca.crt, for the client Service's
    name (which the certificate carries: docs/security.md)."""
    meta = _meta(spec, owner, spec.name, "monitoring")
    meta["labels"].update(dict(spec.monitoring.labels))
    endpoint: Obj = {
        "port": "client",
        "path": METRICS_PATH,
        "scheme": spec.client_scheme,
        "interval": spec.monitoring.interval,
        "relabelings": [
            {"sourceLabels": [f"__meta_kubernetes_pod_label_{_label_name(INSTANCE_LABEL)}"],
             "targetLabel": "cluster"},
            {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "pod"},
        ],
    }  # fmt: skip
    sec = spec.security
    if sec.auth:
        token = {"name": spec.metrics_token_secret, "key": METRICS_TOKEN_KEY}
        endpoint["bearerTokenSecret"] = token
    if sec.tls and sec.tls_secret:
        endpoint["tlsConfig"] = {
            "ca": {"secret": {"name": sec.tls_secret, "key": "ca.crt"}},
            "serverName": f"{spec.client_service}.{spec.namespace}.svc",
        }
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": meta,
        "spec": {
            "jobLabel": NAME_LABEL,
            "selector": {"matchLabels": spec.node_selector_labels()},
            "podMetricsEndpoints": [endpoint],
        },
    }


def _label_name(label: str) -> str:
    """A Kubernetes label as Prometheus's service discovery names it."""
    return "".join(c if c.isalnum() else "_" for c in label)


def build_children(
    spec: ClusterSpec,
    owner: dict[str, Any] | None,
    replicas: dict[str, int],
    budgets: dict[str, int] | None = None,
) -> list[Obj]:
    """Every child, in the order to apply them (StatefulSets last, with the given replicas;
    each zone's PodDisruptionBudget with its budget, 1 when not given)."""
    objects = [
        build_service_account(spec, owner),
        build_role(spec, owner),
        build_role_binding(spec, owner),
        build_peer_service(spec, owner),
        build_client_service(spec, owner),
    ]
    objects += [build_pdb(spec, z, (budgets or {}).get(z, 1), owner) for z in spec.zones]
    objects += [build_statefulset(spec, z, replicas.get(z, 0), owner) for z in spec.zones]
    return objects


__all__ = [
    "CONTAINER",
    "NODE_ID_ANNOTATION",
    "build_children",
    "build_client_service",
    "build_generated_secrets",
    "build_pdb",
    "build_peer_service",
    "build_pod_monitor",
    "build_pod_template",
    "build_role",
    "build_role_binding",
    "build_service_account",
    "build_statefulset",
    "config_data",
    "node_id_of",
    "owner_reference",
    "security_volumes",
    "tokens_document",
]
