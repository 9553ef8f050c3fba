"""Delete and rebootstrap with ``deletePolicy: Retain`` (issue 23), on kind.

With ``storage.deletePolicy: Retain`` the KVCluster is deleted after a quorum workload: its
pods, StatefulSets and generated Secrets go, the volumes stay. Re-created with the same name
(the example manifest again), it adopts the kept volumes: the nodes come back under their ids
with their tokens and data, and every acknowledged key reads back.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import pytest
from test_operator_e2e import (
    EXAMPLE,
    NAME,
    Workload,
    admin_token,
    check_quorum_reads,
    endpoints,
    fill,
    node_pods,
    wait_for,
)
from test_operator_lifecycle_e2e import patch_kvc, settle

from ringkv.client import Client

pytestmark = [pytest.mark.slow]


def _pvcs(k8s: Any, ns: str) -> dict[str, str]:
    out = json.loads(k8s.kubectl("-n", ns, "get", "pvc", "-o", "json").stdout)["items"]
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in out
            if not p["metadata"].get("deletionTimestamp")}  # fmt: skip


def _tokens(k8s: Any, ns: str, pod: str) -> list[int]:
    with Client(k8s.pod_url(ns, pod, 7001), timeout=10) as c:
        ring = c.ring()
    return sorted(t for n in ring["nodes"] if n["id"] == pod for t in n.get("tokens") or ())


@pytest.mark.timeout(1500)
def test_delete_and_rebootstrap_keeps_ids_and_data(k8s: Any, available: str) -> None:
    ns = available
    t0 = time.monotonic()
    patch_kvc(k8s, ns, {"spec": {"storage": {"deletePolicy": "Retain"}}})
    s = settle(k8s, ns, 3, 180, "settled with deletePolicy Retain")
    pods = sorted(p["metadata"]["name"] for p in s.pods)
    tokens = {p: _tokens(k8s, ns, p) for p in pods}
    assert all(tokens.values()), tokens
    before = fill(k8s, ns, "pre-delete", 100)
    work = Workload(endpoints(k8s, ns), "rebootstrap", max_ops=600).start()
    wait_for(lambda: len(work.acked) >= 100 or not work._thread.is_alive(), 300,
             "100 writes acknowledged", every=1)
    work.stop()
    volumes = _pvcs(k8s, ns)
    assert set(volumes) == {f"data-{p}" for p in pods}, volumes

    t_delete = time.monotonic()
    k8s.kubectl("-n", ns, "delete", "kvc", NAME, "--wait=true", "--timeout=300s", timeout=330)
    wait_for(lambda: not node_pods(k8s, ns) and not json.loads(k8s.kubectl(
        "-n", ns, "get", "statefulsets", "-o", "json").stdout)["items"], 300,
        "pods and StatefulSets gone", every=2)
    assert _pvcs(k8s, ns) == volumes  # kept, the same claims

    text = re.sub(r"(?m)^(\s+namespace:\s*)default\s*$", rf"\g<1>{ns}", EXAMPLE.read_text())
    text = text.replace("deletePolicy: Delete", "deletePolicy: Retain")
    assert "deletePolicy: Retain" in text
    t_create = time.monotonic()
    k8s.kubectl("apply", "-f", "-", input=text)
    # The generated Secrets went with the old KVCluster: the new one generates new tokens.
    old_token = os.environ.get("RINGKV_TOKEN")
    os.environ["RINGKV_TOKEN"] = wait_for(
        lambda: (t := admin_token(k8s, ns)) != old_token and t, 120,
        "the new generated admin token")
    s = settle(k8s, ns, 3, 900, "the re-created cluster settled on the kept volumes")
    rebootstrap = time.monotonic() - t_create
    assert sorted(p["metadata"]["name"] for p in s.pods) == pods
    assert _pvcs(k8s, ns) == volumes  # adopted, not re-created
    assert {p: _tokens(k8s, ns, p) for p in pods} == tokens  # same ids, same tokens
    for p in pods:
        assert check_quorum_reads(k8s.pod_url(ns, p, 7001), {**before, **work.acked}) == []
    print(f"\ndeleted and re-created: settled {rebootstrap:.0f}s after the re-create "
          f"({time.monotonic() - t_delete:.0f}s from the delete, {time.monotonic() - t0:.0f}s "
          f"in all); {len(before) + len(work.acked)} keys read back; workload: {work.summary()}")
    assert work.wrong_reads == [], work.summary()
