"""Disruptions on kind: volume growth, a scaling reversed half-way, certificate rotation.

Run: ``e2e/kind/run-e2e.sh e2e/disruption/test_storage_and_tls_e2e.py``. The operator and the
example KVCluster come from the fixtures of e2e/operator/test_operator_e2e.py (loaded by path:
that directory has no package on purpose), installed once for this module.

- Volume growth: kind's ``standard`` StorageClass (local-path) has no ``allowVolumeExpansion``,
  so raising ``spec.storage.size`` must be refused with the ``VolumesResized`` condition and a
  Warning event, nothing changed and no pod restarted; shrinking likewise. The expandable path
  (claims patched, StatefulSets re-created with orphaned pods) is covered by
  tests/operator/test_reconciler.py, not here: kind cannot expand a volume.
- Scale reversed: 3 -> 4 turned back to 3 while the fourth node joins, and 4 -> 3 turned back
  to 4 while it is decommissioned: the cluster converges with no stuck state, under a quorum
  workload, and every acknowledged write reads back.
- Certificate rotation: a TLS cluster (mutual TLS between nodes) gets a renewed certificate
  from the same CA, then an old+new CA bundle and a certificate from the new CA: every pod
  serves the new certificate, no pod restarts, no request of a workload fails.
- Disk full on one pod: test_disk_full_e2e.py (its volumes on small tmpfs file systems, so
  that no test fills this machine's shared disk).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ringkv.client import Client, RingkvError

_PATH = Path(__file__).resolve().parents[1] / "operator" / "test_operator_e2e.py"
_spec = importlib.util.spec_from_file_location("ringkv_operator_e2e_helpers", _PATH)
assert _spec is not None and _spec.loader is not None
op = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = op  # (its dataclasses look their module up)
_spec.loader.exec_module(op)

# The fixtures, for this module (module-scoped: one operator and one example cluster here).
operator = op.operator
cluster_ns = op.cluster_ns
available = op.available

pytestmark = [pytest.mark.slow]
NAME = op.NAME


def pod_uids(k8s: Any, ns: str, name: str = NAME) -> dict[str, tuple[str, int]]:
    """Each node pod's uid and container restarts: a restarted pod changes one of them."""
    sel = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=node"
    out = json.loads(k8s.kubectl("-n", ns, "get", "pods", "-l", sel, "-o", "json").stdout)
    return {
        p["metadata"]["name"]: (
            p["metadata"]["uid"],
            sum(int(c.get("restartCount") or 0)
                for c in (p.get("status") or {}).get("containerStatuses") or ()),
        )
        for p in out["items"]
    }  # fmt: skip


def events(k8s: Any, ns: str, reason: str) -> list[dict[str, Any]]:
    out = k8s.kubectl("-n", ns, "get", "events", "-o", "json").stdout
    return [e for e in json.loads(out)["items"] if e.get("reason") == reason]


def event_count(k8s: Any, ns: str, reason: str) -> int:
    """How often it happened (repeated events are one object with a count)."""
    return sum(int(e.get("count") or 1) for e in events(k8s, ns, reason))


def patch_kvc(k8s: Any, ns: str, patch: dict[str, Any], name: str = NAME) -> None:
    k8s.kubectl("-n", ns, "patch", "kvc", name, "--type", "merge", "-p", json.dumps(patch))


# -- volume growth ------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_volume_growth_is_refused_clearly_where_the_class_cannot_expand(
    k8s: Any, available: str
) -> None:
    ns = available
    sc = json.loads(k8s.kubectl("get", "storageclass", "-o", "json").stdout)["items"]
    default = [c for c in sc if (c["metadata"].get("annotations") or {}).get(
        "storageclass.kubernetes.io/is-default-class") == "true"]  # fmt: skip
    assert default and not default[0].get("allowVolumeExpansion"), (
        "this test expects kind's local-path class, which cannot expand volumes"
    )
    before = pod_uids(k8s, ns)
    t0 = time.monotonic()
    patch_kvc(k8s, ns, {"spec": {"storage": {"size": "2Gi"}}})

    def refused(reason: str) -> dict[str, Any] | None:
        cond = op.condition(op.kvc(k8s, ns), "VolumesResized")
        return cond if cond.get("status") == "False" and cond.get("reason") == reason else None

    cond = op.wait_for(lambda: refused("VolumeExpansionNotSupported"), 120, "the refusal")
    print(f"\nexpansion refused in {time.monotonic() - t0:.0f}s: {cond['message']}")
    assert default[0]["metadata"]["name"] in cond["message"]
    op.wait_for(lambda: events(k8s, ns, "VolumeExpansionNotSupported"), 60, "a Warning event")
    pvcs = json.loads(k8s.kubectl("-n", ns, "get", "pvc", "-o", "json").stdout)["items"]
    assert {p["spec"]["resources"]["requests"]["storage"] for p in pvcs} == {"1Gi"}
    patch_kvc(k8s, ns, {"spec": {"storage": {"size": "512Mi"}}})
    op.wait_for(lambda: refused("VolumeShrinkRefused"), 120, "the shrink refusal")
    patch_kvc(k8s, ns, {"spec": {"storage": {"size": "1Gi"}}})
    op.wait_for(
        lambda: op.condition(op.kvc(k8s, ns), "VolumesResized").get("status") == "True",
        120, "VolumesResized True again",
    )  # fmt: skip
    # the cluster went on serving: nothing restarted, still settled
    assert op.settled(k8s, ns, 3)
    assert pod_uids(k8s, ns) == before


# -- scale reversed half-way --------------------------------------------------------------------


@pytest.mark.timeout(1500)
def test_scale_reversed_while_joining_and_while_decommissioning(k8s: Any, available: str) -> None:
    ns = available
    before = op.fill(k8s, ns, "pre-reverse", 50)
    work = op.Workload(op.endpoints(k8s, ns), "reverse").start()
    fourth = f"{NAME}-zone-a-1"
    timings = {}

    def member_state(node: str) -> str | None:
        for m in (op.kvc(k8s, ns).get("status") or {}).get("members") or ():
            if m.get("id") == node:
                return str(m.get("state"))
        return None

    try:
        # 3 -> 4, turned back to 3 while the fourth node joins
        t0 = time.monotonic()
        k8s.kubectl("-n", ns, "scale", "kvc", NAME, "--replicas=4")
        # reversed as soon as the pod exists: it may be starting, joining or (a small data
        # set streams fast) already joined -- the operator must converge from any of them
        op.wait_for(lambda: fourth in pod_uids(k8s, ns), 300, f"{fourth} created", every=0.5)
        seen = member_state(fourth)
        k8s.kubectl("-n", ns, "scale", "kvc", NAME, "--replicas=3")
        op.wait_for(lambda: op.settled(k8s, ns, 3), 600, "settled back at 3", every=2)
        print(f"\n{fourth} was {seen or 'not a member yet'} when the scale-up was reversed")
        timings["join reversed"] = time.monotonic() - t0
        cancelled = events(k8s, ns, "RingChangeCancelled")
        # (a join that finished before the operator's next pass is decommissioned instead)
        print(f"\njoin reversal: {len(cancelled)} RingChangeCancelled event(s)")
        op.wait_for(lambda: not [
            p for p in json.loads(k8s.kubectl("-n", ns, "get", "pvc", "-o", "json").stdout)[
                "items"] if p["metadata"]["name"] == f"data-{fourth}"
            and not p["metadata"].get("deletionTimestamp")
        ], 180, f"the volume of {fourth} deleted")  # fmt: skip

        # 3 -> 4 (settled), then 4 -> 3 turned back to 4 while it is decommissioned
        k8s.kubectl("-n", ns, "scale", "kvc", NAME, "--replicas=4")
        op.wait_for(lambda: _settled_at(k8s, ns, 4), 900, "settled at 4", every=2)
        t1 = time.monotonic()
        asked = event_count(k8s, ns, "Decommission")
        k8s.kubectl("-n", ns, "scale", "kvc", NAME, "--replicas=3")
        op.wait_for(lambda: event_count(k8s, ns, "Decommission") > asked, 300,
                    "the decommission asked", every=0.5)  # fmt: skip
        print(f"{fourth} was {member_state(fourth)} when the scale-down was reversed")
        k8s.kubectl("-n", ns, "scale", "kvc", NAME, "--replicas=4")
        op.wait_for(lambda: _settled_at(k8s, ns, 4), 900, "settled at 4 again", every=2)
        timings["decommission reversed"] = time.monotonic() - t1
        # and back to 3 for the next test
        k8s.kubectl("-n", ns, "scale", "kvc", NAME, "--replicas=3")
        op.wait_for(lambda: op.settled(k8s, ns, 3), 900, "settled at 3", every=2)
    finally:
        work.stop()
    print(f"timings: {timings}; workload: {work.summary()}")
    assert work.acked and work.wrong_reads == []
    failed = len(work.write_failures) + len(work.read_failures)
    assert failed <= max(3, work.ops // 100), work.summary()
    ep = op.endpoints(k8s, ns)
    assert op.check_quorum_reads(ep[0], {**before, **work.acked}) == []


def _settled_at(k8s: Any, ns: str, replicas: int) -> bool:
    """Settled with an uneven zone (4 nodes over 3 zones): every member normal, alive, ready,
    every pod ready, phase Running."""
    obj = op.kvc(k8s, ns)
    st = obj.get("status") or {}
    members = st.get("members") or []
    pods = op.node_pods(k8s, ns)
    return bool(
        st.get("phase") == "Running" and st.get("replicas") == replicas
        and st.get("readyReplicas") == replicas and len(members) == replicas
        and all(m.get("state") == "normal" and m.get("alive") and m.get("ready") for m in members)
        and len(pods) == replicas and all(op.pod_ready(p) for p in pods)
        and not st.get("progress")
    )  # fmt: skip


# -- certificate rotation -----------------------------------------------------------------------


def _sign(directory: Path, ca_dir: Path, name: str, ns: str, tag: str) -> tuple[Path, Path]:
    """A node certificate (tls.crt, tls.key) from the CA in ``ca_dir`` (see op._make_tls)."""
    key, csr, crt = (directory / f"{tag}.{ext}" for ext in ("key", "csr", "crt"))
    ext = directory / f"{tag}.ext"
    ext.write_text(f"subjectAltName=DNS:*.{name}-peers.{ns}.svc.cluster.local,"
                   f"DNS:{name}.{ns}.svc,DNS:{name}.{ns}.svc.cluster.local\n")  # fmt: skip
    for args in (
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", "/CN=ringkv-e2e-node"],
        ["x509", "-req", "-in", str(csr), "-CA", str(ca_dir / "ca.crt"), "-CAkey",
         str(ca_dir / "ca.key"), "-CAcreateserial", "-days", "2", "-out", str(crt), "-extfile",
         str(ext)],
    ):  # fmt: skip
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    return crt, key


def _put_secret(k8s: Any, ns: str, name: str, crt: Path, key: Path, ca: Path) -> None:
    manifest = k8s.kubectl("-n", ns, "create", "secret", "generic", name,
                           "--type=kubernetes.io/tls", f"--from-file=tls.crt={crt}",
                           f"--from-file=tls.key={key}", f"--from-file=ca.crt={ca}",
                           "--dry-run=client", "-o", "json").stdout  # fmt: skip
    k8s.kubectl("apply", "-f", "-", input=manifest)


def _served(host: str, port: int, trust: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        trust.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return tls.getpeercert(binary_form=True) or b""


@pytest.mark.timeout(1200)
def test_certificate_rotation_same_ca_then_new_ca_without_a_failed_request(
    k8s: Any, operator: str, tmp_path: Path
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    ns = "e2e-rot-" + uuid.uuid4().hex[:6]
    name = "rotkv"
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    old_ca, crt, key = op._make_tls(old_dir, name, ns)
    new_ca, _crt, _key = op._make_tls(new_dir, name, ns)
    k8s.kubectl("create", "namespace", ns)
    pods = [f"{name}-{z}-0" for z in op.ZONES]
    try:
        _put_secret(k8s, ns, f"{name}-tls", crt, key, old_ca)
        k8s.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "ringkv.io/v1alpha1", "kind": "KVCluster",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 3, "zones": list(op.ZONES), "replicationFactor": 3,
                     "storage": {"deletePolicy": "Delete"},
                     "security": {"tls": {"enabled": True, "secretName": f"{name}-tls",
                                          "verifyPeers": True}}},
        }))  # fmt: skip

        def formed() -> bool:
            obj = json.loads(k8s.kubectl("-n", ns, "get", "kvc", name, "-o", "json").stdout)
            st = obj.get("status") or {}
            members = st.get("members") or []
            return bool(op.condition(obj, "Available").get("status") == "True"
                        and st.get("readyReplicas") == 3 and len(members) == 3
                        and all(m.get("state") == "normal" and m.get("alive")
                                for m in members))  # fmt: skip

        op.wait_for(formed, 600, f"{name} Available", every=2)
        token = op.secret_data(k8s, ns, f"{name}-tokens")["admin-token"]
        trust = ssl.create_default_context(cafile=str(old_ca))
        trust.check_hostname = False  # reached through port-forwards on localhost
        forwards = [k8s.forward(ns, f"pod/{p}", op.PORT) for p in pods]
        addresses = [f.__enter__() for f in forwards]
        before = pod_uids(k8s, ns, name)
        urls = [f"https://{h}:{p}" for h, p in addresses]
        failures: list[str] = []
        acked: dict[str, bytes] = {}
        stop = threading.Event()

        def workload() -> None:
            deadline = time.monotonic() + 900
            with Client(urls, timeout=10, token=token, ssl_context=trust) as c:
                i = 0
                while not stop.is_set() and time.monotonic() < deadline and i < 20_000:
                    k, v = f"rot-{i}", str(i).encode()
                    try:
                        c.put(k, v, w="quorum")
                        acked[k] = v
                        if c.get(k, r="quorum").value != v:
                            failures.append(f"{k}: read back wrong")
                    except (RingkvError, OSError) as exc:
                        failures.append(f"{k}: {exc}")
                    i += 1
                    stop.wait(0.05)

        thread = threading.Thread(target=workload, daemon=True)
        thread.start()
        t0 = time.monotonic()
        timings = {}
        try:
            # 1. the same CA, a renewed certificate
            crt2, key2 = _sign(old_dir, old_dir, name, ns, "renewed")
            _put_secret(k8s, ns, f"{name}-tls", crt2, key2, old_ca)
            renewed = ssl.PEM_cert_to_DER_cert(crt2.read_text())
            for h, p in addresses:
                op.wait_for(lambda h=h, p=p: _served(h, p, trust) == renewed, 240,
                            "the renewed certificate served", every=2)  # fmt: skip
            timings["same CA"] = time.monotonic() - t0
            # 2. a new CA: the bundle first, then the new certificate
            bundle = tmp_path / "bundle.crt"
            bundle.write_text(old_ca.read_text() + new_ca.read_text())
            trust.load_verify_locations(str(new_ca))
            _put_secret(k8s, ns, f"{name}-tls", crt2, key2, bundle)

            def reloads(p: str) -> int:
                log = k8s.kubectl("-n", ns, "logs", p, check=False).stdout
                return sum(1 for line in log.splitlines() if "reloaded TLS certificate" in line)

            # each node reloaded twice: the renewed certificate, then the bundle
            op.wait_for(lambda: all(reloads(p) >= 2 for p in pods), 240,
                        "every node reloaded the bundle", every=2)  # fmt: skip
            crt3, key3 = _sign(new_dir, new_dir, name, ns, "rotated")
            _put_secret(k8s, ns, f"{name}-tls", crt3, key3, bundle)
            rotated = ssl.PEM_cert_to_DER_cert(crt3.read_text())
            for h, p in addresses:
                op.wait_for(lambda h=h, p=p: _served(h, p, trust) == rotated, 240,
                            "the new-CA certificate served", every=2)  # fmt: skip
            timings["new CA"] = time.monotonic() - t0 - timings["same CA"]
            # the nodes still form the cluster: a write at all replicas goes over peers
            with Client(urls[0], timeout=10, token=token, ssl_context=trust) as c:
                c.put("after-rotation", b"ok", w="all")
            assert formed()
        finally:
            stop.set()
            thread.join(60)
            for f in forwards:
                f.__exit__(None, None, None)
        print(f"\nrotation timings: {timings}; {len(acked)} writes acked, {len(failures)} failed")
        assert failures == [], failures[:5]
        assert acked
        assert pod_uids(k8s, ns, name) == before  # no pod restarted
    finally:
        print(k8s.kubectl("-n", ns, "get", "kvc,pods", "-o", "wide", check=False).stdout)
        k8s.kubectl("delete", "namespace", ns, "--wait=false", check=False)
