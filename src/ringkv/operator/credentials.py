"""The KVCluster's credentials: the Secrets the operator generates, and how it reaches nodes.

- ``ensure_secrets`` creates the Secrets the operator generates for a spec (random tokens and
  cluster secret, owned by the KVCluster) if they are missing -- never overwriting one, so
  their contents are stable -- and checks that the Secrets the spec names exist with their
  keys. It runs before the StatefulSets are applied, so a pod never waits for a Secret.
- ``node_access`` reads what the operator needs to call the nodes' API: its own admin token
  (from ``NAME-operator-token``) and, with TLS, the CA in the TLS Secret's ``ca.crt``.
- ``NodeClient`` is ``ringkv.client.Client`` with that SSL context.

Secret values never reach a log line, an event, the status or an exception message: errors
name Secrets and keys, never contents, and Kubernetes API errors are re-raised without their
response bodies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ringkv.client import Client
from ringkv.operator import builders
from ringkv.operator.spec import (
    INSTANCE_LABEL,
    OPERATOR_TOKEN_KEY,
    ClusterSpec,
    SecretKeyRef,
)

log = logging.getLogger(__name__)


class CredentialsError(RuntimeError):
    """A Secret the cluster needs is missing or incomplete (the message names it, no value)."""


class SecretsApi(Protocol):
    """The part of the Kubernetes API this module uses (``reconciler.Kube`` has it)."""

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create(self, obj: dict[str, Any]) -> None: ...
    def list_statefulsets(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...


def new_secret() -> str:
    """A fresh random token or cluster secret: 256 bits, URL-safe text."""
    return secrets.token_urlsafe(32)


def secret_value(secret: dict[str, Any] | None, key: str) -> bytes | None:
    """The decoded value of ``key`` in a Secret as the API returns it, or None."""
    raw = ((secret or {}).get("data") or {}).get(key)
    if not isinstance(raw, str):
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None


def _has_nodes(spec: ClusterSpec, api: SecretsApi) -> bool:
    selector = f"{INSTANCE_LABEL}={spec.name},app.kubernetes.io/component=node"
    return any(
        int((s.get("spec") or {}).get("replicas") or 0) > 0
        for s in api.list_statefulsets(spec.namespace, selector)
    )


def ensure_secrets(spec: ClusterSpec, owner: dict[str, Any] | None, api: SecretsApi) -> None:
    """Create the missing generated Secrets; check the ones the spec names.

    A generated cluster secret is only created for a cluster without nodes: nodes read the
    secret at start-up, so a new one under running nodes would split the cluster at the next
    restart. Raises ``CredentialsError`` then (and for a missing named Secret or key)."""
    ns = spec.namespace
    for obj in builders.build_generated_secrets(spec, owner, new_secret):
        name = obj["metadata"]["name"]
        if api.get_secret(ns, name) is not None:
            continue
        if name == spec.generated_cluster_secret and _has_nodes(spec, api):
            raise CredentialsError(
                f"Secret {ns}/{name} (the cluster secret) is gone but nodes run with it: "
                "restore it from a backup; a new secret would split the cluster"
            )
        api.create(obj)
        log.info("%s/%s: created Secret %s", ns, spec.name, name)
    sec = spec.security
    named: list[tuple[str, SecretKeyRef]] = []
    if sec.auth and sec.tokens_secret is not None:
        named.append(("spec.security.auth.tokensSecret", sec.tokens_secret))
    if sec.peer_auth and sec.cluster_secret is not None:
        named.append(("spec.security.peerAuth.clusterSecret", sec.cluster_secret))
    if sec.tls and sec.tls_secret:
        named.append(("spec.security.tls.secretName", SecretKeyRef(sec.tls_secret, "tls.crt")))
        named.append(("spec.security.tls.secretName", SecretKeyRef(sec.tls_secret, "tls.key")))
        if sec.tls_verify_peers:
            named.append(("spec.security.tls.verifyPeers", SecretKeyRef(sec.tls_secret, "ca.crt")))
    for path, ref in named:
        secret = api.get_secret(ns, ref.name)
        if secret is None:
            raise CredentialsError(f"{path}: Secret {ns}/{ref.name} not found")
        if secret_value(secret, ref.key) is None:
            raise CredentialsError(f"{path}: Secret {ns}/{ref.name} has no key {ref.key!r}")


# -- reaching the nodes ---------------------------------------------------------------------


@dataclass(frozen=True)
class NodeAccess:
    """How the operator calls one cluster's nodes: its bearer token, and the TLS context
    (None: plain HTTP)."""

    token: str | None = None
    ssl_context: ssl.SSLContext | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def __repr__(self) -> str:  # never the token
        token = "set" if self.token else None
        return f"NodeAccess(token={token}, tls={self.ssl_context is not None})"


_contexts: dict[bytes, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def tls_context(ca: bytes | None) -> ssl.SSLContext:
    """A client context for the nodes' TLS API. With a CA (the TLS Secret's ``ca.crt``) the
    node's certificate must chain to it and carry the name the operator dials (the pod's DNS
    name through the headless peer Service, see ``reconciler.endpoints_of``). Without one the
    traffic is encrypted but the node is not verified."""
    key = hashlib.sha256(ca).digest() if ca else b""
    with _contexts_lock:
        if key not in _contexts:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if ca:
                ctx.load_verify_locations(cadata=ca.decode("ascii", "replace"))
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.check_hostname = True
            else:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            _contexts[key] = ctx
        return _contexts[key]


def node_access(spec: ClusterSpec, api: SecretsApi) -> NodeAccess:
    """The operator's token (from ``NAME-operator-token``) and TLS context for a cluster. The
    token is None before the operator has created its Secret (no node runs yet then)."""
    token = None
    if spec.security.auth:
        raw = secret_value(api.get_secret(spec.namespace, spec.operator_token_secret),
                           OPERATOR_TOKEN_KEY)  # fmt: skip
        token = raw.decode("utf-8", "replace").strip() if raw else None
    context = None
    if spec.security.tls and spec.security.tls_secret:
        ca = secret_value(api.get_secret(spec.namespace, spec.security.tls_secret), "ca.crt")
        context = tls_context(ca)
    return NodeAccess(token, context)


class NodeClient(Client):
    """``Client`` with an explicit token (never ``$RINGKV_TOKEN``) and SSL context."""

    def __init__(
        self, endpoints: str | Sequence[str], access: NodeAccess, *, timeout: float = 5.0
    ) -> None:
        super().__init__(
            endpoints, timeout=timeout, token=access.token or "", ssl_context=access.ssl_context
        )
