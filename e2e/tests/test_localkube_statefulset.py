"""Harness self-tests: a StatefulSet on localkube behaves as on a real cluster.

One StatefulSet (3 replicas, volumeClaimTemplate, spread over the three zones by
the real scheduler) is shared by the tests of this module, which run in order.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.localkube_only, pytest.mark.slow]

SERVER = (Path(__file__).parent / "data" / "podserver.py").read_text()
NS = "selftest-sts"


def wait_for(fn: Callable[[], Any], timeout: float = 120, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what or fn}: last={last!r}")


def http_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def manifests(replicas: int = 3) -> list[dict[str, Any]]:
    labels = {"app": "web"}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-code"},
         "data": {"server.py": SERVER, "greeting": "hello from a configmap"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-secret"},
         "stringData": {"token": "s3cret"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "default-view"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "view"},
         "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": NS}]},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"clusterIP": "None", "selector": labels,
                  "ports": [{"name": "http", "port": 8080}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
         "spec": {
             "serviceName": "web", "replicas": replicas,
             "selector": {"matchLabels": labels},
             "template": {
                 "metadata": {"labels": labels},
                 "spec": {
                     "terminationGracePeriodSeconds": 5,
                     "topologySpreadConstraints": [{
                         "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                         "whenUnsatisfiable": "DoNotSchedule",
                         "labelSelector": {"matchLabels": labels}}],
                     "containers": [{
                         "name": "web", "image": "python:3.11",
                         "command": ["python3", "/app/server.py", "$(PORT)"],
                         "ports": [{"name": "http", "containerPort": 8080}],
                         "env": [
                             {"name": "PORT", "value": "8080"},
                             *[{"name": n, "valueFrom": {"fieldRef": {"fieldPath": f}}}
                               for n, f in (("POD_NAME", "metadata.name"),
                                            ("POD_NAMESPACE", "metadata.namespace"),
                                            ("POD_IP", "status.podIP"),
                                            ("NODE_NAME", "spec.nodeName"))],
                             {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {
                                 "name": "web-code", "key": "greeting"}}},
                             {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {
                                 "name": "web-secret", "key": "token"}}},
                         ],
                         "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                            "periodSeconds": 1},
                         "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                         "volumeMounts": [
                             {"name": "data", "mountPath": "/data"},
                             {"name": "code", "mountPath": "/app", "readOnly": True},
                             {"name": "cfg", "mountPath": "/etc/podcfg"},
                         ],
                     }],
                     "volumes": [
                         {"name": "code", "configMap": {"name": "web-code"}},
                         {"name": "cfg", "configMap": {
                             "name": "web-code",
                             "items": [{"key": "greeting", "path": "greeting"}]}},
                     ],
                 },
             },
             "volumeClaimTemplates": [{
                 "metadata": {"name": "data"},
                 "spec": {"accessModes": ["ReadWriteOnce"],
                          "resources": {"requests": {"storage": "10Mi"}}}}],
         }},
    ]


@pytest.fixture(scope="module")
def sts(k8s: Any) -> Any:
    k8s.kubectl("create", "namespace", NS)
    docs = "\n---\n".join(json.dumps(m) for m in manifests())
    k8s.kubectl("-n", NS, "apply", "-f", "-", input=docs)
    yield k8s
    k8s.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def pods(k8s: Any) -> list[dict[str, Any]]:
    return k8s.api.get(f"/api/v1/namespaces/{NS}/pods", labelSelector="app=web")["items"]


def ready(p: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (p.get("status") or {}).get("conditions") or [])


def sts_ready(k8s: Any, n: int) -> bool:
    s = k8s.api.get(f"/apis/apps/v1/namespaces/{NS}/statefulsets/web")
    ps = [p for p in pods(k8s) if not p["metadata"].get("deletionTimestamp")]
    return (s.get("status", {}).get("readyReplicas", 0) == n and len(ps) == n
            and all(ready(p) for p in ps))


def pod(k8s: Any, name: str) -> dict[str, Any]:
    return k8s.api.get(f"/api/v1/namespaces/{NS}/pods/{name}")


def node_zone(k8s: Any, node: str) -> str:
    return k8s.api.get(f"/api/v1/nodes/{node}")["metadata"]["labels"]["topology.kubernetes.io/zone"]


def test_statefulset_ready_and_spread_over_zones(sts: Any) -> None:
    t0 = time.monotonic()
    wait_for(lambda: sts_ready(sts, 3), 240, "3 ready replicas")
    print(f"statefulset of 3 ready in {time.monotonic() - t0:.1f}s")
    ps = pods(sts)
    zones = {node_zone(sts, p["spec"]["nodeName"]) for p in ps}
    assert zones == {"zone-a", "zone-b", "zone-c"}
    ips = [p["status"]["podIP"] for p in ps]
    assert len(set(ips)) == 3 and all(ip.startswith("10.244.") for ip in ips)
    pvcs = sts.api.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims")["items"]
    assert sorted(p["metadata"]["name"] for p in pvcs) == ["data-web-0", "data-web-1", "data-web-2"]
    assert all(p["status"]["phase"] == "Bound" for p in pvcs)


def test_env_volumes_and_hostname(sts: Any) -> None:
    p = pod(sts, "web-0")
    info = http_json(f"http://{p['status']['podIP']}:8080/info")
    assert info["hostname"] == "web-0"
    env = info["env"]
    assert env["POD_NAME"] == "web-0" and env["POD_NAMESPACE"] == NS
    assert env["POD_IP"] == p["status"]["podIP"] and env["NODE_NAME"] == p["spec"]["nodeName"]
    assert env["FROM_CM"] == "hello from a configmap" and env["FROM_SECRET"] == "s3cret"
    assert info["config"] == "hello from a configmap"
    assert info["marker"]


def test_pods_reach_each_other_and_the_api(sts: Any) -> None:
    ps = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods(sts)}
    for name, ip in ps.items():
        for other, oip in ps.items():
            if other != name:
                assert http_json(f"http://{ip}:8080/peer?ip={oip}")["hostname"] == other
        api = http_json(f"http://{ip}:8080/api")
        assert api == {"name": name, "podIP": ip}


def test_pod_and_service_names_resolve_in_pods(sts: Any) -> None:
    ps = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods(sts)}
    ip0 = ps["web-0"]
    # <pod>.<headless service>[.<ns>.svc.cluster.local], as cluster DNS answers.
    assert http_json(f"http://{ip0}:8080/peer?ip=web-1.web")["hostname"] == "web-1"
    fq = f"web-2.web.{NS}.svc.cluster.local"
    assert http_json(f"http://{ip0}:8080/peer?ip={fq}")["hostname"] == "web-2"

    def svc_ips() -> bool:
        return http_json(f"http://{ip0}:8080/resolve?name=web")["ips"] == sorted(ps.values())
    wait_for(svc_ips, 30, "headless service name -> all pod IPs")


def test_kubectl_logs(sts: Any) -> None:
    out = sts.kubectl("-n", NS, "logs", "web-0").stdout
    assert "podserver listening on 8080 as web-0" in out
    assert sts.kubectl("-n", NS, "logs", "web-0", "--tail=1").stdout.count("\n") == 1


def test_exec_helper_runs_in_the_pod(sts: Any) -> None:
    r = sts.exec(NS, "web-2", "python3", "-c",
                 "import os, socket; print(socket.gethostname(), os.environ['POD_NAME'],"
                 " open('/data/marker').read())")
    host, name, marker = r.stdout.split()
    assert host == name == "web-2" and len(marker) == 32
    r = sts.exec(NS, "web-2", "cat", input="through stdin")
    assert r.stdout == "through stdin"


def test_forward_helper_reaches_pod_and_service(sts: Any) -> None:
    with sts.forward(NS, "pod/web-1", 8080) as (host, port):
        assert http_json(f"http://{host}:{port}/info")["hostname"] == "web-1"
    with sts.forward(NS, "svc/web", 8080) as (host, port):
        assert http_json(f"http://{host}:{port}/healthz")["ok"]


def test_endpoints_list_pod_ips(sts: Any) -> None:
    def eps() -> set[str]:
        e = sts.api.get(f"/api/v1/namespaces/{NS}/endpoints/web")
        return {a["ip"] for s in e.get("subsets") or [] for a in s.get("addresses") or []}
    want = {p["status"]["podIP"] for p in pods(sts)}
    wait_for(lambda: eps() == want, 30, "endpoints")


def test_deleted_pod_is_recreated_with_its_volume(sts: Any) -> None:
    old = pod(sts, "web-1")
    ip = old["status"]["podIP"]
    marker = http_json(f"http://{ip}:8080/info")["marker"]
    old_pid = http_json(f"http://{ip}:8080/info")["pid"]
    sts.kubectl("-n", NS, "delete", "pod", "web-1", "--wait=true", timeout=60)
    with pytest.raises(ProcessLookupError):
        os.kill(old_pid, 0)  # SIGTERM'd and gone
    new = wait_for(lambda: (q := pod(sts, "web-1"))["metadata"]["uid"] != old["metadata"]["uid"]
                   and ready(q) and q, 120, "web-1 recreated")
    assert http_json(f"http://{new['status']['podIP']}:8080/info")["marker"] == marker


def test_scale_up_and_down(sts: Any) -> None:
    sts.kubectl("-n", NS, "scale", "statefulset", "web", "--replicas=4")
    wait_for(lambda: sts_ready(sts, 4), 120, "4 ready replicas")
    ip3 = pod(sts, "web-3")["status"]["podIP"]
    pid3 = http_json(f"http://{ip3}:8080/info")["pid"]
    sts.kubectl("-n", NS, "scale", "statefulset", "web", "--replicas=2")
    wait_for(lambda: sts_ready(sts, 2), 120, "2 ready replicas")
    wait_for(lambda: sorted(p["metadata"]["name"] for p in pods(sts)) == ["web-0", "web-1"], 60)
    with pytest.raises(ProcessLookupError):
        os.kill(pid3, 0)
    # PVCs are retained on scale-down, as on a real cluster.
    pvcs = {p["metadata"]["name"] for p in
            sts.api.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims")["items"]}
    assert {"data-web-2", "data-web-3"} <= pvcs


def test_deleted_pvc_gives_a_new_empty_volume(sts: Any) -> None:
    # web-2 is scaled away (previous test); its PVC still holds the old marker.
    pvc = sts.api.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/data-web-2")
    old_pv = pvc["spec"]["volumeName"]
    old_path = sts.api.get(f"/api/v1/persistentvolumes/{old_pv}")["spec"]["hostPath"]["path"]
    old_marker = Path(old_path, "marker").read_text()
    t0 = time.monotonic()
    sts.kubectl("-n", NS, "delete", "pvc", "data-web-2", "--wait=true", timeout=120)
    print(f"PVC deleted in {time.monotonic() - t0:.1f}s")
    # Reclaim policy Delete: the provisioner's deleter removes the PV and its directory.
    wait_for(lambda: sts.api.get_or_none(f"/api/v1/persistentvolumes/{old_pv}") is None, 60,
             "old PV deleted")
    wait_for(lambda: not Path(old_path).exists(), 30, "old PV directory removed")
    print(f"PV and its directory deleted after {time.monotonic() - t0:.1f}s")
    sts.kubectl("-n", NS, "scale", "statefulset", "web", "--replicas=3")
    wait_for(lambda: sts_ready(sts, 3), 120, "3 ready replicas again")
    print(f"scaled back to 3 after {time.monotonic() - t0:.1f}s")
    new = pod(sts, "web-2")
    info = http_json(f"http://{new['status']['podIP']}:8080/info")
    assert info["marker"] and info["marker"] != old_marker
    pvc = sts.api.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/data-web-2")
    assert pvc["spec"]["volumeName"] != old_pv


def test_stopped_node_goes_notready_and_its_pod_unreachable(sts: Any) -> None:
    p = pod(sts, "web-0")
    node, ip = p["spec"]["nodeName"], p["status"]["podIP"]
    sts.kubelet.stop_node(node)
    try:
        with pytest.raises(OSError):
            http_json(f"http://{ip}:8080/healthz", timeout=2)

        def not_ready() -> bool:
            n = sts.api.get(f"/api/v1/nodes/{node}")
            return any(c["type"] == "Ready" and c["status"] != "True"
                       for c in n["status"]["conditions"])
        wait_for(not_ready, 90, f"{node} NotReady")
        # The node lifecycle controller marks the pod not ready.
        wait_for(lambda: not ready(pod(sts, "web-0")), 60, "web-0 not Ready")
    finally:
        sts.kubelet.start_node(node)
    wait_for(lambda: sts_ready(sts, 3), 120, "all ready after the node is back")
    assert http_json(f"http://{ip}:8080/healthz")["ok"]


def test_crashing_container_restarts_with_backoff(k8s: Any) -> None:
    k8s.kubectl("-n", NS, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crasher"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": "python:3.11",
            "command": ["python3", "-c", "import sys, time; time.sleep(0.5); sys.exit(3)"]}]}}))

    def restarted() -> Any:
        cs = (pod(k8s, "crasher").get("status") or {}).get("containerStatuses") or []
        return cs and cs[0]["restartCount"] >= 2 and cs[0]
    cs = wait_for(restarted, 90, "2 restarts")
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert pod(k8s, "crasher")["status"]["phase"] == "Running"
    k8s.kubectl("-n", NS, "delete", "pod", "crasher", "--wait=true", timeout=60)


def test_ringkv_image_runs_the_projects_ringkv(k8s: Any) -> None:
    k8s.kubectl("-n", NS, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ringkv-version"},
        "spec": {"restartPolicy": "Never",
                 "initContainers": [{
                     "name": "tag", "image": "ringkv:1.2.3",
                     "command": ["python3", "-c",
                                 "import os; print(os.environ['RINGKV_VERSION'])"]}],
                 "containers": [{
                     "name": "ringkv", "image": "ringkv:1.2.3", "args": ["--version"]}]}}))
    def phase() -> str:
        return str((pod(k8s, "ringkv-version").get("status") or {}).get("phase"))
    wait_for(lambda: phase() in ("Succeeded", "Failed"), 60, "ringkv --version pod finished")
    logs = k8s.kubectl("-n", NS, "logs", "ringkv-version", "-c", "ringkv").stdout
    assert phase() == "Succeeded", logs
    assert logs.startswith("ringkv ")
    assert k8s.kubectl("-n", NS, "logs", "ringkv-version", "-c", "tag").stdout == "1.2.3\n"
    k8s.kubectl("-n", NS, "delete", "pod", "ringkv-version", "--wait=true", timeout=60)


def test_init_container_exec_probe_and_liveness_restart(k8s: Any) -> None:
    k8s.kubectl("-n", NS, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probed"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "initContainers": [{"name": "init", "image": "python:3.11", "command": [
                "python3", "-c", "open('/scratch/ready', 'w').write('1')"],
                "volumeMounts": [{"name": "work", "mountPath": "/scratch"}]}],
            "containers": [{
                "name": "c", "image": "python:3.11",
                "command": ["python3", "-c", "import time; time.sleep(3600)"],
                "volumeMounts": [{"name": "work", "mountPath": "/scratch"}],
                "readinessProbe": {"exec": {"command": ["test", "-f", "/scratch/ready"]},
                                   "periodSeconds": 1},
                "livenessProbe": {"exec": {"command": ["test", "-f", "/scratch/alive"]},
                                  "periodSeconds": 1, "failureThreshold": 2,
                                  "initialDelaySeconds": 6}}],
            "volumes": [{"name": "work", "emptyDir": {}}]}}))
    st = wait_for(lambda: ready(q := pod(k8s, "probed")) and q["status"], 60, "probed Ready")
    assert st["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    # /scratch/alive never exists: the liveness probe fails and the container restarts.
    wait_for(lambda: pod(k8s, "probed")["status"]["containerStatuses"][0]["restartCount"] >= 1,
             60, "liveness restart")
    k8s.kubectl("-n", NS, "delete", "pod", "probed", "--wait=true", timeout=60)


def test_secret_downward_api_volumes_and_env_from(k8s: Any) -> None:
    k8s.kubectl("-n", NS, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "vols", "labels": {"tier": "test"}},
        "spec": {"containers": [{
            "name": "c", "image": "python:3.11",
            "command": ["python3", "-c", "import time; time.sleep(3600)"],
            "envFrom": [{"configMapRef": {"name": "web-code"}, "prefix": "CM_"},
                        {"secretRef": {"name": "web-secret"}}],
            "volumeMounts": [{"name": "sec", "mountPath": "/etc/sec", "readOnly": True},
                             {"name": "info", "mountPath": "/etc/podinfo"}]}],
            "volumes": [
                {"name": "sec", "secret": {"secretName": "web-secret"}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}}]}}]}}))
    wait_for(lambda: ready(pod(k8s, "vols")), 60, "vols Ready")
    code = ("import os; print(open('/etc/sec/token').read(), open('/etc/podinfo/name').read(),"
            " open('/etc/podinfo/tier').read(), os.environ['CM_greeting'].split()[0],"
            " os.environ['token'])")
    assert k8s.exec(NS, "vols", "python3", "-c", code).stdout.split() == [
        "s3cret", "vols", "test", "hello", "s3cret"]
    # readOnly volumes are read-only inside the pod.
    r = k8s.exec(NS, "vols", "touch", "/etc/sec/x", check=False)
    assert r.returncode != 0 and "Read-only" in r.stderr
    k8s.kubectl("-n", NS, "delete", "pod", "vols", "--wait=true", timeout=60)


def test_graceful_delete_sends_sigterm(k8s: Any, tmp_path: Path) -> None:
    out = tmp_path / "term"
    code = ("import signal, sys, time, pathlib\n"
            "def h(*a):\n"
            f"    pathlib.Path({str(out)!r}).write_text('TERM'); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, h)\n"
            "while True: time.sleep(0.1)\n")
    k8s.kubectl("-n", NS, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "graceful"},
        "spec": {"terminationGracePeriodSeconds": 10, "containers": [{
            "name": "c", "image": "python:3.11",
            "command": ["python3", "-c", code],
            "volumeMounts": [{"name": "out", "mountPath": str(tmp_path)}]}],
            "volumes": [{"name": "out", "hostPath": {"path": str(tmp_path)}}]}}))
    wait_for(lambda: (pod(k8s, "graceful").get("status") or {}).get("phase") == "Running", 60)
    time.sleep(1)
    k8s.kubectl("-n", NS, "delete", "pod", "graceful", "--wait=true", timeout=60)
    assert out.read_text() == "TERM"
    assert k8s.api.get_or_none(f"/api/v1/namespaces/{NS}/pods/graceful") is None
    _ = signal  # (documented behaviour: SIGTERM, grace period, then SIGKILL)
