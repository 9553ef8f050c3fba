"""pytest plugin for the e2e suites: which Kubernetes cluster the tests run against.

    pytest e2e/... --cluster=localkube   (default) a local control plane from
                                         e2e/localkube, pods run as processes
    pytest e2e/... --cluster=kind        an existing cluster (e2e/kind/up.sh, or
                                         any kubeconfig): --kubeconfig or $KUBECONFIG

Fixtures:
    k8s         session-scoped ``K8s`` handle: .kubeconfig, .kind ("localkube" or
                "kind"), .kubectl(*args), .forward/.pod_url (reach a pod or Service
                from the test process), .api (localkube only: stdlib REST client),
                .cluster/.kubelet (localkube only: node stop/start, pod logs).
                It also exports KUBECONFIG for the rest of the session, so the
                kubernetes client, kopf and kubectl pick the cluster up unchanged.
    namespace   a fresh namespace per test, deleted afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

E2E = Path(__file__).resolve().parent
if str(E2E) not in sys.path:
    sys.path.insert(0, str(E2E))


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("ringkv-e2e")
    g.addoption("--cluster", choices=("localkube", "kind"), default="localkube",
                help="cluster for the e2e tests (default: localkube)")
    g.addoption("--kubeconfig", default=None,
                help="kubeconfig of an existing cluster (--cluster=kind); default $KUBECONFIG")
    g.addoption("--localkube-workdir", default=None,
                help="localkube state/log directory (default: a fresh temp dir)")
    g.addoption("--localkube-keep", action="store_true",
                help="keep the localkube workdir (logs) after the session")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "localkube_only: needs the localkube harness")
    config.addinivalue_line("markers", "kind_only: needs a real cluster (--cluster=kind)")
    config.addinivalue_line("markers", "slow: long multi-process or fault tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cluster = config.getoption("--cluster")
    other = "kind_only" if cluster == "localkube" else "localkube_only"
    skip = pytest.mark.skip(reason=f"{other}: not on --cluster={cluster}")
    for item in items:
        if other in item.keywords:
            item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or reuse) the localkube binaries before any test runs, outside the
    per-test timeout: a cold build takes ~10 minutes on 2 cores."""
    if session.config.getoption("--cluster") != "localkube" or os.geteuid() != 0:
        return
    if session.config.getoption("--collect-only", default=False):
        return
    if any("k8s" in getattr(item, "fixturenames", ()) or "localkube_only" in item.keywords
           for item in session.items):
        from localkube.cluster import build_binaries

        session.config.stash[_BIN_DIR] = str(build_binaries())


_BIN_DIR = pytest.StashKey[str]()


def container_engine() -> str:
    """The engine running kind's nodes, as e2e/kind/lib.sh picks it: $KIND_ENGINE, else
    docker where a Docker daemon answers, else podman."""
    if os.environ.get("KIND_ENGINE"):
        return os.environ["KIND_ENGINE"]
    if shutil.which("docker"):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            if subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0:
                return "docker"
    return "podman"


@dataclass
class K8s:
    kind: str
    kubeconfig: str
    kubectl_bin: str
    cluster: Any = None  # localkube.cluster.Cluster
    kubelet: Any = None  # localkube.kubelet.ProcessKubelet
    api: Any = None  # localkube.kubeapi.KubeAPI
    # kind: port-forwards kept open by pod_url, by (namespace, pod, port)
    _forwards: dict[tuple[str, str, int], tuple[subprocess.Popen[str], str, str]] = field(
        default_factory=dict)
    _forwards_lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def forward(self, namespace: str, target: str, port: int) -> Iterator[tuple[str, int]]:
        """Reach ``pod/NAME`` or ``svc/NAME`` port from the test process: yields (host, port).

        localkube: pod IPs are routable from the host, so this is the pod IP (for a
        Service: a ready endpoint and its targetPort); kind: ``kubectl port-forward``.
        """
        if self.kind == "localkube":
            yield self._localkube_addr(namespace, target, port)
            return
        proc, local = self._port_forward(namespace, target, port)
        try:
            yield ("127.0.0.1", local)
        finally:
            proc.terminate()
            proc.wait(10)

    def _port_forward(self, namespace: str, target: str,
                      port: int) -> tuple[subprocess.Popen[str], int]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            local = int(s.getsockname()[1])
        proc = subprocess.Popen([self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", "-n",
                                 namespace, "port-forward", target, f"{local}:{port}"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:..."
        if "Forwarding" not in line:
            proc.kill()
            proc.wait(10)
            raise RuntimeError(f"port-forward {namespace}/{target} failed: {line}")
        # kubectl prints a line per connection: keep reading, or a busy forward blocks
        threading.Thread(target=lambda: proc.stdout.read() if proc.stdout else None,
                         daemon=True).start()
        return proc, local

    def pod_url(self, namespace: str, pod: str, port: int) -> str:
        """``http://HOST:PORT`` reaching a pod's port from the test process, for many calls.

        localkube: the pod IP. kind: a ``kubectl port-forward`` to the pod, kept open and
        reused while the same pod (uid) lives, replaced when the pod is or the forward died
        (the host never dials pod IPs on a real cluster)."""
        if self.kind == "localkube":
            host, p = self._localkube_addr(namespace, f"pod/{pod}", port)
            return f"http://{host}:{p}"
        uid = self.kubectl("-n", namespace, "get", "pod", pod, "-o",
                           "jsonpath={.metadata.uid}").stdout.strip()
        with self._forwards_lock:
            return self._pod_forward(namespace, pod, port, uid)

    def _pod_forward(self, namespace: str, pod: str, port: int, uid: str) -> str:
        key = (namespace, pod, port)
        old = self._forwards.get(key)
        if old is not None:
            proc, url, was = old
            if proc.poll() is None and was == uid:
                return url
            proc.kill()
            proc.wait(10)
        proc, local = self._port_forward(namespace, f"pod/{pod}", port)
        url = f"http://127.0.0.1:{local}"
        self._forwards[key] = (proc, url, uid)
        return url

    def close(self) -> None:
        for proc, _, _ in self._forwards.values():
            proc.kill()
            proc.wait(10)
        self._forwards.clear()

    def _localkube_addr(self, namespace: str, target: str, port: int) -> tuple[str, int]:
        kind, _, name = target.partition("/")
        if kind in ("pod", "pods", "po"):
            pod = self.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
            return pod["status"]["podIP"], port
        if kind in ("svc", "service", "services"):
            svc = self.api.get(f"/api/v1/namespaces/{namespace}/services/{name}")
            tport: Any = port
            for sp in svc["spec"].get("ports") or []:
                if sp["port"] == port:
                    tport = sp.get("targetPort", port)
            slices = self.api.get(
                f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                labelSelector=f"kubernetes.io/service-name={name}")["items"]
            for sl in slices:
                for ep in sl.get("endpoints") or []:
                    if (ep.get("conditions") or {}).get("ready", True) and ep.get("addresses"):
                        if not isinstance(tport, int):
                            tport = next(p["port"] for p in sl.get("ports") or []
                                         if p.get("name") == tport)
                        return ep["addresses"][0], int(tport)
            raise RuntimeError(f"service {namespace}/{name} has no ready endpoint")
        raise ValueError(f"target must be pod/NAME or svc/NAME, not {target!r}")

    def exec(self, namespace: str, pod: str, *cmd: str, container: str | None = None,
             input: str | None = None, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command in a pod's container, like ``kubectl exec`` (which the process
        kubelet cannot serve): localkube enters the container's namespaces directly."""
        if self.kind == "localkube":
            r: subprocess.CompletedProcess[str] = self.kubelet.exec(
                namespace, pod, list(cmd), container, input, timeout)
            if check and r.returncode:
                raise subprocess.CalledProcessError(r.returncode, list(cmd), r.stdout, r.stderr)
            return r
        c = ["-c", container] if container else []
        return self.kubectl("-n", namespace, "exec", "-i", pod, *c, "--", *cmd,
                            check=check, input=input, timeout=timeout)

    def stop_node(self, name: str) -> None:
        """kind: a machine fails: stop the node's container (its kubelet and every pod on it
        stop at once; the node goes NotReady after the node monitor's grace period)."""
        subprocess.run([container_engine(), "stop", "-t", "0", name], check=True,
                       capture_output=True, text=True, timeout=120)

    def start_node(self, name: str) -> None:
        """kind: the machine returns: start the node's container again (systemd boots, the
        kubelet rejoins with its old state, possibly at a new address)."""
        subprocess.run([container_engine(), "start", name], check=True,
                       capture_output=True, text=True, timeout=120)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
                              check=check, text=True, capture_output=True, input=input,
                              timeout=timeout)


@pytest.fixture(scope="session")
def k8s(request: pytest.FixtureRequest) -> Iterator[K8s]:
    opt = request.config.getoption
    old_kc = os.environ.get("KUBECONFIG")
    if opt("--cluster") == "kind":
        kc = opt("--kubeconfig") or os.environ.get("KUBECONFIG") or str(
            Path.home() / ".kube" / "config")
        kubectl = shutil.which("kubectl")
        if not kubectl:
            pytest.fail("--cluster=kind needs kubectl on PATH")
        os.environ["KUBECONFIG"] = kc
        handle = K8s("kind", kc, kubectl)
        try:
            yield handle
        finally:
            handle.close()
        return

    from localkube.cluster import Cluster, ClusterConfig, build_binaries
    from localkube.kubelet import attach_kubelet

    if os.geteuid() != 0:
        pytest.skip("localkube needs root (network/mount namespaces)")
    built = request.config.stash.get(_BIN_DIR, None)
    bin_dir = Path(built) if built else build_binaries()
    wd = opt("--localkube-workdir")
    workdir = Path(wd) if wd else Path(tempfile.mkdtemp(prefix="ringkv-localkube-"))
    cluster = Cluster(ClusterConfig(workdir=workdir), bin_dir=bin_dir)
    try:
        cluster.up()
        kubelet = attach_kubelet(cluster, backoff_base=2.0, backoff_max=20.0)
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        yield K8s("localkube", str(cluster.kubeconfig), str(bin_dir / "kubectl"),
                  cluster=cluster, kubelet=kubelet, api=cluster.api)
    finally:
        cluster.down()
        if old_kc is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old_kc
        if not opt("--localkube-keep") and not wd:
            shutil.rmtree(workdir, ignore_errors=True)
        elif opt("--localkube-keep"):
            print(f"\nlocalkube workdir kept: {workdir}", file=sys.stderr)


@pytest.fixture
def namespace(k8s: K8s) -> Iterator[str]:
    name = "e2e-" + uuid.uuid4().hex[:8]
    k8s.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        k8s.kubectl("delete", "namespace", name, "--wait=false", check=False)
