"""Harness self-test: `cluster.py up` / `down` start a working cluster and leave nothing behind.

Uses its own bridge and pod CIDR, so it does not disturb the session cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.localkube_only, pytest.mark.slow]

CLUSTER_PY = Path(__file__).resolve().parents[1] / "localkube" / "cluster.py"
BRIDGE = "rkvbr9"


def _leftovers(workdir: Path) -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(workdir) in cmd:
            out.append(f"process {pid}: {cmd[:120]}")
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    out += [f"netns {line}" for line in ns.splitlines() if f"-{BRIDGE}-" in line]
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        out.append(f"bridge {BRIDGE}")
    mounts = Path("/proc/self/mountinfo").read_text()
    out += [f"mount {m}" for m in mounts.splitlines() if str(workdir) in m]
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_cli_up_runs_a_pod_and_down_leaves_nothing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if request.config.getoption("--cluster") != "localkube":
        pytest.skip("localkube only")
    sys.path.insert(0, str(CLUSTER_PY.parents[1]))
    from localkube.cluster import build_binaries

    bin_dir = build_binaries()
    workdir = tmp_path / "lk"
    env = dict(os.environ, LOCALKUBE_BIN_DIR=str(bin_dir))
    t0 = time.monotonic()
    uplog = open(tmp_path / "up.log", "w")  # noqa: SIM115 - the supervisor's output
    sup = subprocess.Popen(
        [sys.executable, str(CLUSTER_PY), "up", f"--workdir={workdir}", f"--bridge={BRIDGE}",
         "--pod-cidr=10.245.0.0/16", "--zones=zone-a,zone-b,zone-c"],
        stdout=uplog, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (workdir / "ready").exists():
            assert sup.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, "cluster did not come up in 240s"
            time.sleep(0.5)
        ready = json.loads((workdir / "ready").read_text())
        print(f"cluster.py up: ready in {time.monotonic() - t0:.1f}s "
              f"(control plane {ready['ready_seconds']:.1f}s)")
        kc = ready["kubeconfig"]
        kubectl = [str(bin_dir / "kubectl"), f"--kubeconfig={kc}"]
        nodes = json.loads(subprocess.run([*kubectl, "get", "nodes", "-o", "json"], check=True,
                                          capture_output=True, text=True).stdout)["items"]
        zones = sorted(n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes)
        assert zones == ["zone-a", "zone-b", "zone-c"]
        version = subprocess.run([*kubectl, "version", "-o", "json"], check=True,
                                 capture_output=True, text=True).stdout
        assert json.loads(version)["serverVersion"]["gitVersion"].startswith("v1.34.")
        sc = subprocess.run([*kubectl, "get", "storageclass", "standard", "-o", "json"],
                            check=True, capture_output=True, text=True).stdout
        assert json.loads(sc)["metadata"]["annotations"][
            "storageclass.kubernetes.io/is-default-class"] == "true"
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
               "spec": {"containers": [{"name": "c", "image": "python:3.11",
                                        "command": ["python3", "-c",
                                                    "import time; time.sleep(3600)"]}]}}
        subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(pod), check=True,
                       capture_output=True, text=True)
        subprocess.run([*kubectl, "wait", "pod/sleeper", "--for=condition=Ready",
                        "--timeout=90s"], check=True, capture_output=True, text=True)
        ip = json.loads(subprocess.run([*kubectl, "get", "pod", "sleeper", "-o", "json"],
                                       check=True, capture_output=True, text=True).stdout)[
            "status"]["podIP"]
        assert ip.startswith("10.245.")
        # A running pod, with its netns, is there now: down must remove it all.
        r = subprocess.run([sys.executable, str(CLUSTER_PY), "down", f"--workdir={workdir}"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr + (tmp_path / "up.log").read_text()
        sup.wait(30)
    finally:
        if sup.poll() is None:
            sup.send_signal(signal.SIGTERM)
            sup.wait(60)
        uplog.close()
        print((tmp_path / "up.log").read_text())
    assert _leftovers(workdir) == []
