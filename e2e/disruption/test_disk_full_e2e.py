"""Disk full on one pod, on kind, under a quorum workload.

A volume of kind's ``standard`` class is a directory on this machine's shared disk, which a
test must not fill. So each zone's machine gets a small tmpfs of its own (mounted inside its
kind node container, where its kubelet and pods see it), offered as a local PersistentVolume
of a StorageClass made for this test, and a 3-node KVCluster keeps its data there. The test
then fills zone-a's tmpfs with a ballast file beside the volume's directory until less than
the node's ``--min-free-bytes`` (64 MiB by default) stays free:

- that node answers 507 ``insufficient_storage`` to a write sent to it and keeps serving
  reads; its readiness probe fails, so the client Service stops sending it clients; its
  ``ringkv_writes_refused`` gauge (what the ``RingkvDiskFull`` alert fires on) says so;
  ``kubectl get kvc`` shows Degraded, reason ``DiskFull`` naming the pod;
- the workload (quorum writes and reads through the other pods) goes on without a failure:
  the coordinators leave the full node out of write rounds and keep its copies as hints;
- nothing restarts and nothing is replaced;
- the ballast removed, the node takes writes again by itself, becomes ready, the hints are
  delivered, and every acknowledged write reads back through it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from test_operator_e2e import (
    EXAMPLE,
    NAME,
    Workload,
    admin_token_in_env,
    check_quorum_reads,
    condition,
    fill,
    get_kvc_row,
    kvc,
    metric,
    node_pods,
    pod_ready,
    save_logs,
    settled,
    wait_for,
)
from test_operator_lifecycle_e2e import _nodes
from test_zone_loss_e2e import _hints_for

from ringkv.client import Client, RingkvError

pytestmark = [pytest.mark.slow, pytest.mark.kind_only]

CLASS = "ringkv-small-disk"
MOUNT = "/mnt/ringkv-small-disk"
SIZE_MIB = 256
LEAVE_MIB = 32  # free space left by the ballast: under the node's 64 MiB --min-free-bytes
ZONES = ("zone-a", "zone-b", "zone-c")
VICTIM_ZONE = "zone-a"


def _machines(k8s: Any) -> dict[str, str]:
    """Each zone's worker (not the tainted spare), by zone."""
    out = {}
    for zone in ZONES:
        names = [n["metadata"]["name"] for n in _nodes(k8s, f"topology.kubernetes.io/zone={zone}")
                 if "ringkv.io/spare" not in n["metadata"].get("labels", {})]  # fmt: skip
        assert len(names) == 1, (zone, names)
        out[zone] = names[0]
    return out


@pytest.fixture(scope="module")
def small_disks(k8s: Any, operator: str) -> Iterator[dict[str, str]]:
    """A tmpfs of SIZE_MIB on each zone's machine, offered as a local PV of class CLASS."""
    machines = _machines(k8s)
    for machine in machines.values():
        k8s.on_node(machine, f"mkdir -p {MOUNT}; umount -l {MOUNT} 2>/dev/null || true; "
                    f"mount -t tmpfs -o size={SIZE_MIB}m ringkv-small {MOUNT}; "
                    f"mkdir -p {MOUNT}/vol")  # fmt: skip
    objects: list[dict[str, Any]] = [{
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": CLASS},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Retain",
    }]  # fmt: skip
    for zone, machine in machines.items():
        objects.append({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"{CLASS}-{zone}"},
            "spec": {
                "capacity": {"storage": f"{SIZE_MIB}Mi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": CLASS,
                "local": {"path": f"{MOUNT}/vol"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                    "key": "kubernetes.io/hostname", "operator": "In", "values": [machine],
                }]}]}},
            },
        })  # fmt: skip
    k8s.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": objects}))  # fmt: skip
    try:
        yield machines
    finally:
        for zone in machines:
            k8s.kubectl("delete", "pv", f"{CLASS}-{zone}", "--wait=false", check=False)
        k8s.kubectl("delete", "storageclass", CLASS, "--wait=false", check=False)
        for machine in machines.values():
            k8s.on_node(machine, f"umount -l {MOUNT}", check=False)


@pytest.fixture(scope="module")
def disk_ns(k8s: Any, small_disks: dict[str, str]) -> Iterator[str]:
    """The example KVCluster with its volumes on the small disks, in a fresh namespace."""
    ns = "e2e-disk-" + uuid.uuid4().hex[:6]
    k8s.kubectl("create", "namespace", ns)
    obj = yaml.safe_load(EXAMPLE.read_text())
    obj["metadata"]["namespace"] = ns
    obj["spec"]["storage"] = {"storageClassName": CLASS, "size": f"{SIZE_MIB}Mi",
                              "deletePolicy": "Delete"}  # fmt: skip
    k8s.kubectl("apply", "-f", "-", input=json.dumps(obj))
    try:
        with admin_token_in_env(k8s, ns):
            wait_for(lambda: settled(k8s, ns, 3), 600, "settled at 3 nodes on the small disks",
                     every=2)  # fmt: skip
            yield ns
    finally:
        print(f"\ndisk-full e2e logs saved to {save_logs(k8s, ns, ns)}")
        k8s.kubectl("delete", "kvc", NAME, "-n", ns, "--wait=true", "--timeout=120s",
                    check=False, timeout=150)  # fmt: skip
        k8s.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=120s", check=False,
                    timeout=150)  # fmt: skip


def _pod_identity(k8s: Any, ns: str) -> dict[str, tuple[str, int]]:
    return {
        p["metadata"]["name"]: (p["metadata"]["uid"], sum(
            int(c.get("restartCount") or 0)
            for c in (p.get("status") or {}).get("containerStatuses") or ()))
        for p in node_pods(k8s, ns)
    }  # fmt: skip


def _client_service_ready(k8s: Any, ns: str) -> set[str]:
    """The pods the client Service (not the headless peer one) sends clients to."""
    services = json.loads(k8s.kubectl("-n", ns, "get", "services", "-o", "json").stdout)
    client = [s["metadata"]["name"] for s in services["items"]
              if s["spec"].get("clusterIP") not in (None, "None")]  # fmt: skip
    assert len(client) == 1, client
    slices = json.loads(k8s.kubectl("-n", ns, "get", "endpointslices", "-l",
                                    f"kubernetes.io/service-name={client[0]}", "-o",
                                    "json").stdout)  # fmt: skip
    return {
        str(e["targetRef"]["name"]) for s in slices["items"] for e in s.get("endpoints") or ()
        if (e.get("conditions") or {}).get("ready") and e.get("targetRef")
    }  # fmt: skip


@pytest.mark.timeout(1200)
def test_a_full_disk_refuses_writes_serves_reads_and_recovers(
    k8s: Any, disk_ns: str, small_disks: dict[str, str]
) -> None:
    ns = disk_ns
    t0 = time.monotonic()
    victim = f"{NAME}-{VICTIM_ZONE}-0"
    pods = {p["metadata"]["name"]: p for p in node_pods(k8s, ns)}
    machine = pods[victim]["spec"]["nodeName"]
    assert machine == small_disks[VICTIM_ZONE]
    pvc = json.loads(k8s.kubectl("-n", ns, "get", "pvc", f"data-{victim}", "-o", "json").stdout)
    assert pvc["spec"]["volumeName"] == f"{CLASS}-{VICTIM_ZONE}"  # on the small disk
    survivors = sorted(p for p in pods if p != victim)
    identity = _pod_identity(k8s, ns)
    replaced = int(kvc(k8s, ns)["status"].get("replacements", 0))
    assert victim in _client_service_ready(k8s, ns)

    before = fill(k8s, ns, "pre-disk", 50)
    work = Workload([k8s.pod_url(ns, p, 7001) for p in survivors], "disk").start()
    ballast = f"{MOUNT}/ballast"
    try:
        k8s.on_node(machine, f"avail=$(df -B1 --output=avail {MOUNT} | tail -1); "
                    f"head -c $((avail - {LEAVE_MIB} * 1048576)) /dev/zero > {ballast}; "
                    f"df -h {MOUNT}")  # fmt: skip
        t_full = time.monotonic()

        def unready() -> bool:
            return not any(pod_ready(p) for p in node_pods(k8s, ns)
                           if p["metadata"]["name"] == victim)  # fmt: skip

        wait_for(unready, 120, f"{victim} unready", every=1)
        t_unready = time.monotonic() - t_full
        wait_for(lambda: victim not in _client_service_ready(k8s, ns), 60,
                 f"the client Service without {victim}")  # fmt: skip

        def disk_full() -> dict[str, Any] | None:
            obj = kvc(k8s, ns)
            deg = condition(obj, "Degraded")
            return (
                obj
                if deg.get("reason") == "DiskFull" and victim in str(deg.get("message"))
                else None
            )

        obj = wait_for(disk_full, 120, f"Degraded DiskFull naming {victim}", every=2)
        print(f"\nDegraded: {condition(obj, 'Degraded').get('message')}")
        assert get_kvc_row(k8s, ns).get("PHASE") == "Degraded"

        url = k8s.pod_url(ns, victim, 7001)
        assert metric(url, "ringkv_writes_refused") == 1.0
        with Client(url, timeout=10) as c:
            assert c.status()["node"]["writes_refused"]
            key = f"refused-{uuid.uuid4().hex}"
            try:
                c.put(key, b"x")
            except RingkvError as exc:
                assert (exc.status, exc.code) == (507, "insufficient_storage"), exc
            else:
                raise AssertionError("a write to the full node was taken")
            # reads go on through the full node
            for k, v in list(before.items())[:10]:
                assert c.get(k).value == v, k
        with Client(k8s.pod_url(ns, survivors[0], 7001), timeout=10) as c:
            assert not c.get(key, r="all").found  # the refused write left nothing
        wait_for(
            lambda: _hints_for(k8s, ns, survivors, victim) > 0,
            120,
            f"hints piling up for {victim}",
            every=2,
        )
        hints = _hints_for(k8s, ns, survivors, victim)
        assert _pod_identity(k8s, ns) == identity  # nothing restarted
    finally:
        k8s.on_node(machine, f"rm -f {ballast}", check=False)
    t_freed = time.monotonic()
    try:
        wait_for(lambda: victim in _client_service_ready(k8s, ns), 120,
                 f"{victim} ready again", every=1)  # fmt: skip
        t_ready = time.monotonic() - t_freed
        with Client(k8s.pod_url(ns, victim, 7001), timeout=10) as c:
            c.put("after-disk", b"ok")
            assert c.get("after-disk").value == b"ok"
        wait_for(
            lambda: _hints_for(k8s, ns, survivors, victim) == 0,
            180,
            f"hints delivered to {victim}",
            every=2,
        )
        s = wait_for(lambda: settled(k8s, ns, 3), 300, "settled again", every=2)
    finally:
        work.stop()
    print(
        f"disk of {victim} full {t_freed - t_full:.0f}s: unready after {t_unready:.1f}s, "
        f"{hints} hints held; ready {t_ready:.1f}s after space returned; "
        f"{time.monotonic() - t0:.0f}s in all; workload: {work.summary()}"
    )
    assert int(s.obj["status"].get("replacements", 0)) == replaced
    assert _pod_identity(k8s, ns) == identity  # still nothing restarted
    assert work.acked and work.wrong_reads == [], work.summary()
    assert not work.write_failures and not work.read_failures, work.summary()
    assert check_quorum_reads(k8s.pod_url(ns, victim, 7001), {**before, **work.acked}) == []
