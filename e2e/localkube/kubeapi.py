"""A minimal Kubernetes REST client on the standard library (no third-party deps).

Enough for the harness: get/list/create/patch/replace/delete and watch, with
client-certificate or bearer-token authentication, JSON only.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, body: str, method: str, path: str):
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body

    @property
    def reason(self) -> str:
        try:
            return str(json.loads(self.body).get("reason", ""))
        except ValueError:
            return ""


@dataclass
class Creds:
    host: str
    port: int
    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None


class KubeAPI:
    """One connection per thread; safe to share between threads."""

    def __init__(self, creds: Creds, timeout: float = 30.0):
        self.creds = creds
        self.timeout = timeout
        ctx = ssl.create_default_context(cafile=creds.ca_file)
        if creds.cert_file:
            ctx.load_cert_chain(creds.cert_file, creds.key_file)
        self._ctx = ctx
        self._local = threading.local()

    # -- transport -------------------------------------------------------
    def _conn(self, timeout: float | None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self.creds.host, self.creds.port, context=self._ctx, timeout=timeout
        )

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        h = {"Accept": "application/json", "User-Agent": "ringkv-localkube"}
        if content_type:
            h["Content-Type"] = content_type
        if self.creds.token:
            h["Authorization"] = f"Bearer {self.creds.token}"
        return h

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        if params:
            path = path + "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._conn(self.timeout)
            try:
                conn.request(method, path, body=data,
                             headers=self._headers(content_type if data else None))
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
                continue
            if resp.status >= 400:
                raise ApiError(resp.status, raw.decode(errors="replace"), method, path)
            return json.loads(raw) if raw else None
        raise AssertionError("unreachable")

    # -- verbs -----------------------------------------------------------
    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def create(self, path: str, obj: Any) -> Any:
        return self.request("POST", path, obj)

    def replace(self, path: str, obj: Any) -> Any:
        return self.request("PUT", path, obj)

    def patch(self, path: str, patch: Any, kind: str = "merge") -> Any:
        ctype = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[kind]
        return self.request("PATCH", path, patch, content_type=ctype)

    def delete(self, path: str, body: Any = None, missing_ok: bool = True) -> Any:
        try:
            return self.request("DELETE", path, body)
        except ApiError as e:
            if e.status == 404 and missing_ok:
                return None
            raise

    def watch(
        self, path: str, resource_version: str | None = None, timeout_seconds: int = 60,
        stop: threading.Event | None = None, **params: Any,
    ) -> Iterator[dict[str, Any]]:
        """Yield watch events until the server closes the stream (or timeout)."""
        q: dict[str, Any] = {"watch": "1", "timeoutSeconds": str(timeout_seconds),
                             "allowWatchBookmarks": "true", **params}
        if resource_version:
            q["resourceVersion"] = resource_version
        conn = self._conn(timeout_seconds + 15)
        try:
            conn.request("GET", path + "?" + urllib.parse.urlencode(q), headers=self._headers())
            resp = conn.getresponse()
            if resp.status >= 400:
                raise ApiError(resp.status, resp.read().decode(errors="replace"), "WATCH", path)
            while not (stop and stop.is_set()):
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()


def load_kubeconfig_creds(kubeconfig: str, workdir: str | None = None) -> Creds:
    """Creds from a kubeconfig written by cluster.py (file references, JSON/YAML-less).

    Only handles the shape this harness writes (JSON kubeconfig with *-file refs).
    """
    with open(kubeconfig) as f:
        cfg = json.load(f)
    ctx_name = cfg["current-context"]
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    u = urllib.parse.urlsplit(cluster["server"])
    return Creds(
        host=u.hostname or "127.0.0.1", port=u.port or 443,
        ca_file=cluster["certificate-authority"],
        cert_file=user.get("client-certificate"), key_file=user.get("client-key"),
        token=user.get("token"),
    )
