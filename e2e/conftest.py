"""pytest plugin for the e2e suites: the Kubernetes cluster the tests run against.

    pytest e2e/... --cluster=kind        an existing cluster (e2e/kind/up.sh, or any
                                         kubeconfig): --kubeconfig or $KUBECONFIG
    make e2e                             builds the images, creates a kind cluster,
                                         runs the suites and deletes it (e2e/kind/run-e2e.sh)

Fixtures:
    k8s         session-scoped ``K8s`` handle: .kubeconfig, .kind ("kind"), .kubectl(*args),
                .exec (kubectl exec), .forward/.pod_url (reach a pod or Service from the test
                process through port-forwards), .stop_node/.start_node (a kind node's
                container: a machine failing and coming back). It also exports KUBECONFIG
                for the rest of the session, so the kubernetes client, kopf and kubectl pick
                the cluster up unchanged.
    namespace   a fresh namespace per test, deleted afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
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
    g.addoption("--cluster", choices=("kind",), default="kind",
                help="cluster for the e2e tests: kind (or any cluster by its kubeconfig)")
    g.addoption("--kubeconfig", default=None,
                help="kubeconfig of an existing cluster; default $KUBECONFIG")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kind_only: needs a real cluster (--cluster=kind)")
    config.addinivalue_line("markers", "localkube_only: needed the removed localkube harness")
    config.addinivalue_line("markers", "slow: long multi-process or fault tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="localkube_only: e2e/localkube was removed; use kind")
    for item in items:
        if "localkube_only" in item.keywords:
            item.add_marker(skip)


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
    api: Any = None  # no in-process API client: tests use kubectl (``get --raw``)
    # port-forwards kept open by pod_url, by (namespace, pod, port)
    _forwards: dict[tuple[str, str, int], tuple[subprocess.Popen[str], str, str]] = field(
        default_factory=dict)
    _forwards_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def engine(self) -> str:
        """The container engine running kind's nodes (tests use this rather than importing
        ``conftest``, a name e2e/disruption's conftest shares when both suites are collected)."""
        return container_engine()

    @contextlib.contextmanager
    def forward(self, namespace: str, target: str, port: int) -> Iterator[tuple[str, int]]:
        """Reach ``pod/NAME`` or ``svc/NAME`` port from the test process through
        ``kubectl port-forward``: yields (host, port). Pod IPs are not routable from the host."""
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

        A ``kubectl port-forward`` to the pod, kept open and reused while the same pod (uid)
        lives, replaced when the pod is or the forward died (the host never dials pod IPs)."""
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

    def exec(self, namespace: str, pod: str, *cmd: str, container: str | None = None,
             input: str | None = None, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command in a pod's container (``kubectl exec``)."""
        c = ["-c", container] if container else []
        return self.kubectl("-n", namespace, "exec", "-i", pod, *c, "--", *cmd,
                            check=check, input=input, timeout=timeout)

    def stop_node(self, name: str) -> None:
        """A machine fails: stop the kind node's container (its kubelet and every pod on it
        stop at once; the node goes NotReady after the node monitor's grace period)."""
        subprocess.run([container_engine(), "stop", "-t", "0", name], check=True,
                       capture_output=True, text=True, timeout=120)

    def start_node(self, name: str) -> None:
        """The machine returns: start the node's container again (systemd boots, the kubelet
        rejoins with its old state, possibly at a new address)."""
        subprocess.run([container_engine(), "start", name], check=True,
                       capture_output=True, text=True, timeout=120)

    def on_node(self, name: str, script: str, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a shell script on a machine: in the kind node's container, as root (its
        kubelet and pods see the same mounts)."""
        return subprocess.run([container_engine(), "exec", name, "sh", "-ec", script],
                              check=check, capture_output=True, text=True, timeout=timeout)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
                              check=check, text=True, capture_output=True, input=input,
                              timeout=timeout)


@pytest.fixture(scope="session")
def k8s(request: pytest.FixtureRequest) -> Iterator[K8s]:
    opt = request.config.getoption
    old_kc = os.environ.get("KUBECONFIG")
    kc = opt("--kubeconfig") or old_kc or str(Path.home() / ".kube" / "config")
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.fail("the e2e tests need kubectl on PATH (make e2e puts the one it built there)")
    os.environ["KUBECONFIG"] = kc
    handle = K8s("kind", kc, kubectl)
    try:
        yield handle
    finally:
        handle.close()
        if old_kc is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old_kc


@pytest.fixture
def namespace(k8s: K8s) -> Iterator[str]:
    name = "e2e-" + uuid.uuid4().hex[:8]
    k8s.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        k8s.kubectl("delete", "namespace", name, "--wait=false", check=False)
