"""End-to-end: scheduled backups to a real S3-compatible store, and a restore into a new
KVCluster after the old one was deleted with its volumes (ringkv.operator.backup).

The store is the Versity S3 Gateway (tests/s3server.py) on this machine, listening where the
pods reach the host: the gateway of kind's container network (podman's or Docker's ``kind``
network), with a route on the host to every node's pod CIDR through that node so that the
host can answer pods (this project's kind pod network does not masquerade). The operator
comes from manifests/ as in test_operator_e2e.py (whose fixtures and helpers this module
shares).
"""

from __future__ import annotations

import calendar
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_operator_e2e import (  # noqa: F401  (operator: a fixture)
    EXAMPLE,
    NAME,
    admin_token,
    endpoints,
    operator,
    save_logs,
    settled,
    wait_for,
)

from ringkv.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.s3server import S3Server

pytestmark = [pytest.mark.slow]
BUCKET = "ringkv-e2e"
PREFIX = "e2e/example"


def host_for_pods(k8s: Any) -> str:
    """An address of this machine that the pods reach: the IPv4 gateway of the ``kind``
    network (Docker: IPAM.Config[].Gateway, podman: subnets[].gateway)."""
    out = subprocess.run([k8s.engine, "network", "inspect", "kind"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    net = json.loads(out)[0]
    for sub in (net.get("IPAM") or {}).get("Config") or net.get("subnets") or []:
        gateway = sub.get("Gateway") or sub.get("gateway")
        if gateway and ":" not in gateway:
            return str(gateway)
    raise AssertionError(f"no IPv4 gateway on the kind network: {out}")


@contextmanager
def routes_to_pods(k8s: Any) -> Iterator[None]:
    """Routes on this machine to every node's pod CIDR through that node, so that answers
    to pods find them (removed afterwards)."""
    nodes = json.loads(k8s.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    added = []
    for n in nodes:
        cidr = n["spec"].get("podCIDR")
        ip = next((a["address"] for a in n["status"].get("addresses") or []
                   if a["type"] == "InternalIP"), None)  # fmt: skip
        if cidr and ip:
            subprocess.run(["ip", "route", "replace", cidr, "via", ip], check=True, timeout=30)
            added.append((cidr, ip))
    try:
        yield
    finally:
        for cidr, ip in added:
            subprocess.run(["ip", "route", "del", cidr, "via", ip], check=False, timeout=30)


@pytest.fixture
def s3(k8s: Any, tmp_path: Path) -> Iterator[S3Server]:
    with routes_to_pods(k8s), S3Server(tmp_path / "s3", host=host_for_pods(k8s)) as server:
        server.create_bucket(BUCKET)
        yield server


def apply_cluster(k8s: Any, ns: str, backup: dict[str, Any]) -> None:
    text = EXAMPLE.read_text()
    text = re.sub(r"(?m)^(\s+namespace:\s*)default\s*$", rf"\g<1>{ns}", text)
    body = json.loads(k8s.kubectl("create", "--dry-run=client", "-o", "json", "-f", "-",
                                  input=text).stdout)  # fmt: skip
    body["spec"]["backup"] = backup
    k8s.kubectl("apply", "-f", "-", input=json.dumps(body))


def create_credentials(k8s: Any, ns: str, s3: S3Server) -> None:
    k8s.kubectl("-n", ns, "create", "secret", "generic", "s3-credentials",
                f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
                f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}")  # fmt: skip


def get(k8s: Any, ns: str, kind: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        k8s.kubectl("-n", ns, "get", kind, "-o", "json").stdout)["items"]  # fmt: skip
    return items


def table(k8s: Any, ns: str, kind: str) -> list[dict[str, str]]:
    lines = k8s.kubectl("-n", ns, "get", kind).stdout.splitlines()
    if not lines:
        return []
    header = lines[0].split()
    return [dict(zip(header, line.split(), strict=False)) for line in lines[1:]]


@pytest.mark.usefixtures("operator")
def test_scheduled_backup_then_restore_into_a_new_cluster(k8s: Any, s3: S3Server) -> None:
    ns = "e2e-bk-" + uuid.uuid4().hex[:6]
    namespaces = [ns]
    k8s.kubectl("create", "namespace", ns)
    previous = os.environ.get("RINGKV_TOKEN")
    try:
        create_credentials(k8s, ns, s3)
        backup = {"bucket": BUCKET, "prefix": PREFIX, "endpoint": s3.endpoint,
                  "credentialsSecret": {"name": "s3-credentials"},
                  "schedule": "* * * * *", "retention": 3}  # fmt: skip
        apply_cluster(k8s, ns, backup)
        os.environ["RINGKV_TOKEN"] = wait_for(lambda: admin_token(k8s, ns), 120, "tokens")
        wait_for(lambda: settled(k8s, ns, 3), 600, "the cluster settled at 3 nodes", every=2)
        data = {f"k{i}": f"value-{i}-{uuid.uuid4().hex}".encode() for i in range(300)}
        deleted = [f"k{i}" for i in range(0, 300, 10)]
        with Client(endpoints(k8s, ns), timeout=10) as c:
            for key, value in data.items():
                c.put(key, value, w="all")
            for key in deleted:
                c.delete(key, w="all")
        written = time.time()

        def backed_up() -> dict[str, Any] | None:
            for item in get(k8s, ns, "kvbackups"):
                stamp = item["metadata"]["creationTimestamp"]
                created = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
                phase = (item.get("status") or {}).get("phase")
                assert phase != "Failed", item.get("status")
                if created >= written and phase == "Succeeded":
                    return item
            return None

        done = wait_for(backed_up, 240, "a scheduled backup after the writes", every=3)
        backup_id = done["status"]["backupId"]
        assert done["status"]["bytes"] > 0
        assert done["metadata"]["labels"]["ringkv.io/scheduled"] == "true"
        rows = {r["NAME"]: r for r in table(k8s, ns, "kvbackups")}
        row = rows[done["metadata"]["name"]]
        assert row["PHASE"] == "Succeeded" and row["SIZE"] == done["status"]["size"]
        assert "AGE" in row
        # the manifest is in the bucket
        manifest = json.loads(s3.client().get_object(
            Bucket=BUCKET, Key=f"{PREFIX}/{backup_id}/manifest.json")["Body"].read())  # fmt: skip
        assert sorted(manifest["nodes"]) and manifest["cluster"] == NAME

        # the cluster goes, with its volumes
        k8s.kubectl("-n", ns, "delete", "kvc", NAME, "--wait=true", "--timeout=300s",
                    timeout=320)  # fmt: skip
        wait_for(lambda: not get(k8s, ns, "pods") and not get(k8s, ns, "pvc"), 300,
                 "the old pods and volumes to be gone", every=2)  # fmt: skip

        # a new cluster elsewhere (its own namespace, no schedule), then a restore into it from
        # the old cluster's bucket and prefix (spec.source)
        ns2 = ns + "-new"
        namespaces.append(ns2)
        k8s.kubectl("create", "namespace", ns2)
        create_credentials(k8s, ns2, s3)
        apply_cluster(k8s, ns2, {k: v for k, v in backup.items() if k != "schedule"} | {
            "prefix": PREFIX + "-new"})  # fmt: skip
        restore = {"apiVersion": "ringkv.io/v1alpha1", "kind": "KVRestore",
                   "metadata": {"name": "from-backup", "namespace": ns2},
                   "spec": {"cluster": NAME, "backupId": backup_id,
                            "source": {k: backup[k] for k in ("bucket", "prefix", "endpoint",
                                                              "credentialsSecret")}}}  # fmt: skip
        k8s.kubectl("apply", "-f", "-", input=json.dumps(restore))
        os.environ["RINGKV_TOKEN"] = wait_for(lambda: admin_token(k8s, ns2), 120, "new tokens")
        wait_for(lambda: settled(k8s, ns2, 3), 600, "the new cluster settled", every=2)
        ns = ns2

        def restored() -> dict[str, Any] | None:
            [item] = get(k8s, ns, "kvrestores")
            status = item.get("status") or {}
            assert status.get("phase") != "Failed", status
            return item if status.get("phase") == "Succeeded" else None

        result = wait_for(restored, 300, "the restore", every=3)
        assert result["status"]["records"] >= len(data)
        with Client(endpoints(k8s, ns), timeout=10) as c:
            for key, value in data.items():
                got = c.get(key, r="all")
                if key in deleted:
                    assert not got.found, key
                else:
                    assert got.found and got.siblings == [value], key
    finally:
        if previous is None:
            os.environ.pop("RINGKV_TOKEN", None)
        else:
            os.environ["RINGKV_TOKEN"] = previous
        for name in namespaces:
            save_logs(k8s, name, name)
            k8s.kubectl("delete", "namespace", name, "--wait=false", check=False)
