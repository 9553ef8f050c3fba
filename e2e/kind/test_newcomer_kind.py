"""The README's Kubernetes section, step by step, on the kind cluster from ``make kind-up``.

Runs the documented commands (kubectl from the session, the ``ringkv`` CLI from this
virtualenv) exactly as a newcomer types them:

    kubectl apply -k manifests/
    kubectl wait --for=condition=Established crd/kvclusters.ringkv.io
    kubectl apply -f manifests/example/kvcluster.yaml
    kubectl wait kvc/example --for=condition=Available --timeout=10m
    kubectl get kvc
    kubectl port-forward svc/example 7001:7001      (here: a free local port)
    export RINGKV_TOKEN=$(kubectl get secret example-tokens \
        -o jsonpath='{.data.admin-token}' | base64 -d)
    ringkv put hello world && ringkv get hello

then removes the example cluster. Needs ``--cluster=kind`` (e2e/kind/run-e2e.sh).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.kind_only, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RINGKV = str(Path(sys.executable).with_name("ringkv"))


def _ready(p: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (p.get("status") or {}).get("conditions") or ())


@pytest.mark.timeout(1200)
def test_readme_kubernetes_steps(k8s: Any) -> None:
    kc = k8s.kubectl
    r = kc("apply", "-k", str(ROOT / "manifests"), check=False)
    assert r.returncode == 0, r.stderr
    kc("wait", "--for=condition=Established", "crd/kvclusters.ringkv.io", "--timeout=60s")
    example = str(ROOT / "manifests" / "example" / "kvcluster.yaml")
    r = kc("apply", "-f", example, check=False)
    assert r.returncode == 0, r.stderr
    try:
        t0 = time.monotonic()
        r = kc("wait", "kvc/example", "--for=condition=Available", "--timeout=10m",
               check=False, timeout=660)
        assert r.returncode == 0, (r.stdout, r.stderr, kc("get", "kvc,pods", "-o", "wide",
                                                            check=False).stdout)
        print(f"\nexample Available after {time.monotonic() - t0:.0f}s")
        # `kubectl get kvc` as the user sees it, once all three are ready
        deadline = time.monotonic() + 300
        while True:
            lines = kc("get", "kvc").stdout.splitlines()
            row = dict(zip(lines[0].split(), lines[1].split(), strict=False))
            if row.get("READY") == "3" or time.monotonic() > deadline:
                break
            time.sleep(2)
        print("\n".join(lines))
        assert (row["NAME"], row["REPLICAS"], row["READY"]) == ("example", "3", "3"), lines

        # three ready pods, each running the ringkv image in a real container
        pods = json.loads(kc("get", "pods", "-l", "app.kubernetes.io/instance=example,"
                             "app.kubernetes.io/component=node", "-o", "json").stdout)["items"]
        assert len(pods) == 3 and all(_ready(p) for p in pods), [p["status"] for p in pods]
        zones = set()
        for p in pods:
            cs = p["status"]["containerStatuses"][0]
            assert cs["image"].endswith("ringkv:0.1.0") and cs["containerID"].startswith(
                "containerd://"), cs
            assert cs["imageID"], cs
            node = json.loads(kc("get", "node", p["spec"]["nodeName"], "-o", "json").stdout)
            zones.add(node["metadata"]["labels"]["topology.kubernetes.io/zone"])
        assert zones == {"zone-a", "zone-b", "zone-c"}

        secret = json.loads(kc("get", "secret", "example-tokens", "-o", "json").stdout)
        token = base64.b64decode(secret["data"]["admin-token"]).decode()
        env = dict(os.environ, RINGKV_TOKEN=token)
        with k8s.forward("default", "svc/example", 7001) as (host, port):
            endpoint = f"http://{host}:{port}"
            put = subprocess.run([RINGKV, "put", "hello", "world", "--endpoint", endpoint],
                                 env=env, capture_output=True, text=True, timeout=60)
            assert put.returncode == 0, (put.stdout, put.stderr)
            got = subprocess.run([RINGKV, "get", "hello", "--endpoint", endpoint],
                                 env=env, capture_output=True, text=True, timeout=60)
            assert got.returncode == 0, (got.stdout, got.stderr)
            assert got.stdout.strip() == "world", got.stdout
            # and without the token the cluster refuses
            anon = dict(env)
            anon.pop("RINGKV_TOKEN")
            denied = subprocess.run([RINGKV, "get", "hello", "--endpoint", endpoint],
                                    env=anon, capture_output=True, text=True, timeout=60)
            assert denied.returncode != 0, denied.stdout
    finally:
        kc("delete", "-f", example, "--wait=true", "--timeout=180s", check=False, timeout=200)
