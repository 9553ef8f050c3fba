"""End-to-end tests of the ringkv operator (issue 6) on a real Kubernetes API.

The operator runs in-cluster from ``manifests/`` (``kubectl apply -k manifests/``: its own
namespace, ServiceAccount, RBAC and Deployment) with the ``ringkv:<tag>`` image built from
the project's Dockerfile (e2e/kind). The example KVCluster (``manifests/example/kvcluster.yaml``,
3 zones, 3 nodes, RF 3) is applied once per module into a fresh namespace and shared by the
tests, which run in order: create -> scale 3 -> 6 -> 3 -> pod kill -> pod + volume loss.

No ``__init__.py`` here on purpose: with one, pytest would import this module as
``operator.test_operator_e2e`` and collide with the standard library's ``operator``.
``e2e/conftest.py`` (the ``k8s`` and ``namespace`` fixtures, ``--cluster``) applies to this
directory as to ``e2e/kind``.

Security is on, as the example has it: the operator generates the Secrets (API tokens, the
cluster secret, its own token). ``cluster_ns`` reads the generated admin token from
``example-tokens`` and puts it in ``$RINGKV_TOKEN``, which ``ringkv.client.Client`` sends
when given no token, so the helpers below send it without a change to their signatures;
``admin_token(k8s, ns)`` and ``auth_headers(k8s, ns)`` give it explicitly.

Logs (operator, nodes, events, the KVCluster) are saved after the module to
``$RINGKV_E2E_LOGS`` (default ``/tmp/ringkv-e2e-operator``) so a failure can be read after the
cluster is gone.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ringkv.client import Client, RingkvError

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
EXAMPLE = MANIFESTS / "example" / "kvcluster.yaml"
OPERATOR_NS = "ringkv-system"
NAME = "example"
ZONES = ("zone-a", "zone-b", "zone-c")
PORT = 7001
LOG_DIR = Path(os.environ.get("RINGKV_E2E_LOGS", "/tmp/ringkv-e2e-operator"))


# -- helpers ----------------------------------------------------------------------------------


def wait_for(fn: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # report the last one on timeout
            last = e
        else:
            if last:
                return last
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}: last={last!r}")


def secret_data(k8s: Any, ns: str, name: str) -> dict[str, str]:
    """A Secret's data, decoded (``kubectl get secret``)."""
    obj = json.loads(k8s.kubectl("-n", ns, "get", "secret", name, "-o", "json").stdout)
    return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}


def admin_token(k8s: Any, ns: str) -> str:
    """The admin token the operator generated for the example cluster (``NAME-tokens``)."""
    return secret_data(k8s, ns, f"{NAME}-tokens")["admin-token"]


@contextlib.contextmanager
def admin_token_in_env(k8s: Any, ns: str) -> Iterator[None]:
    """``$RINGKV_TOKEN`` set to the cluster's generated admin token while inside (the operator
    writes the Secret on its first pass; every helper's client sends it), restored after."""
    previous = os.environ.get("RINGKV_TOKEN")
    try:
        os.environ["RINGKV_TOKEN"] = wait_for(
            lambda: admin_token(k8s, ns), 120, f"the generated Secret {NAME}-tokens")
        yield
    finally:
        if previous is None:
            os.environ.pop("RINGKV_TOKEN", None)
        else:
            os.environ["RINGKV_TOKEN"] = previous


def auth_headers(k8s: Any, ns: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(k8s, ns)}"}


def _env_auth() -> dict[str, str]:
    token = os.environ.get("RINGKV_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def kvc(k8s: Any, ns: str) -> dict[str, Any]:
    out = k8s.kubectl("-n", ns, "get", "kvc", NAME, "-o", "json").stdout
    return dict(json.loads(out))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return dict(c)
    return {}


def node_pods(k8s: Any, ns: str) -> list[dict[str, Any]]:
    sel = f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component=node"
    out = k8s.kubectl("-n", ns, "get", "pods", "-l", sel, "-o", "json").stdout
    return list(json.loads(out)["items"])


def pod_ready(p: dict[str, Any]) -> bool:
    return p["metadata"].get("deletionTimestamp") is None and any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (p.get("status") or {}).get("conditions") or ())


def get_kvc_row(k8s: Any, ns: str) -> dict[str, str]:
    """``kubectl get kvc`` as the user sees it (printer columns)."""
    lines = k8s.kubectl("-n", ns, "get", "kvc", NAME).stdout.splitlines()
    header, row = lines[0].split(), lines[1].split()
    return dict(zip(header, row, strict=False))


def pod_names(n_per_zone: int) -> set[str]:
    return {f"{NAME}-{z}-{i}" for z in ZONES for i in range(n_per_zone)}


@dataclass
class Settled:
    obj: dict[str, Any]
    row: dict[str, str]
    pods: list[dict[str, Any]]


def settled(k8s: Any, ns: str, replicas: int) -> Settled | None:
    """The KVCluster is Running with ``replicas`` ready nodes, all ``normal`` and alive, the
    conditions say Available / not Progressing / not Degraded for the current generation, and
    ``kubectl get kvc`` and the pods agree. None otherwise."""
    obj = kvc(k8s, ns)
    st = obj.get("status") or {}
    if st.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    if (condition(obj, "Available").get("status"), condition(obj, "Progressing").get("status"),
            condition(obj, "Degraded").get("status")) != ("True", "False", "False"):
        return None
    if st.get("phase") != "Running" or st.get("replicas") != replicas:
        return None
    if st.get("readyReplicas") != replicas:
        return None
    members = st.get("members") or []
    if len(members) != replicas or not all(
            m.get("state") == "normal" and m.get("alive") and m.get("ready") for m in members):
        return None
    pods = node_pods(k8s, ns)
    if len(pods) != replicas or not all(pod_ready(p) for p in pods):
        return None
    row = get_kvc_row(k8s, ns)
    if row.get("REPLICAS") != str(replicas) or row.get("READY") != str(replicas) \
            or row.get("PHASE") != "Running":
        return None
    return Settled(obj, row, pods)


def assert_consistent(k8s: Any, ns: str, s: Settled, replicas: int) -> None:
    """What the status says matches what runs (checked on a settled cluster)."""
    pods = {p["metadata"]["name"]: p for p in s.pods}
    per_zone = replicas // len(ZONES)
    assert set(pods) == pod_names(per_zone)
    st = s.obj["status"]
    assert {m["id"] for m in st["members"]} == set(pods)
    for m in st["members"]:
        assert m["pod"] == m["id"]
        assert m["podIP"] == pods[m["id"]]["status"]["podIP"]
        assert m["zone"] == pods[m["id"]]["metadata"]["labels"]["ringkv.io/zone"]
    assert st["zones"] == [{"name": z, "desired": per_zone, "replicas": per_zone,
                            "readyReplicas": per_zone} for z in ZONES]
    assert st["selector"] == ("app.kubernetes.io/component=node,"
                              f"app.kubernetes.io/instance={NAME},app.kubernetes.io/name=ringkv")
    assert not st.get("progress")
    sts = json.loads(k8s.kubectl("-n", ns, "get", "statefulsets", "-o", "json").stdout)["items"]
    assert {s_["metadata"]["name"]: s_["spec"]["replicas"] for s_ in sts} == {
        f"{NAME}-{z}": per_zone for z in ZONES}
    # The ring as a node reports it: exactly these members, all normal and alive.
    with Client(k8s.pod_url(ns, next(iter(pods)), PORT), timeout=5) as c:
        ring = c.ring()
    assert {str(n["id"]): (n["state"], bool(n["alive"])) for n in ring["nodes"]
            if n["state"] != "left"} == {p: ("normal", True) for p in pods}


def sample(obj: dict[str, Any]) -> tuple[Any, ...]:
    """(phase, Available, Progressing reason, Degraded reason, replicas, readyReplicas)."""
    st = obj.get("status") or {}
    return (st.get("phase"), condition(obj, "Available").get("status"),
            condition(obj, "Progressing").get("reason"), condition(obj, "Degraded").get("reason"),
            st.get("replicas"), st.get("readyReplicas"))


def changes(samples: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The samples without consecutive repeats (what `kubectl get kvc -w` would show)."""
    return [s for i, s in enumerate(samples) if i == 0 or samples[i - 1] != s]


def metric(endpoint: str, name: str) -> float:
    import urllib.request

    request = urllib.request.Request(f"{endpoint}/metrics", headers=_env_auth())
    with urllib.request.urlopen(request, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def endpoints(k8s: Any, ns: str) -> list[str]:
    return [k8s.pod_url(ns, p["metadata"]["name"], PORT) for p in node_pods(k8s, ns)
            if pod_ready(p)]


def fill(k8s: Any, ns: str, prefix: str, n: int) -> dict[str, bytes]:
    """Write ``n`` keys at quorum through the first ready pod; returns what was written."""
    data = {f"{prefix}-{i}": f"{prefix}-value-{i}-{uuid.uuid4().hex}".encode() for i in range(n)}
    with Client(endpoints(k8s, ns)[0], timeout=10) as c:
        for k, v in data.items():
            c.put(k, v, w="quorum")
    return data


def check_quorum_reads(endpoint: str, data: dict[str, bytes]) -> list[str]:
    """The keys of ``data`` that do not read back (at quorum) as written, through ``endpoint``."""
    bad = []
    with Client(endpoint, timeout=10) as c:
        for k, v in data.items():
            try:
                got = c.get(k, r="quorum")
            except RingkvError as exc:
                bad.append(f"{k}: {exc}")
                continue
            if not got.found or got.value != v or len(got.siblings) > 1:
                bad.append(f"{k}: found={got.found} value={got.value!r} siblings={got.siblings}")
    return bad


@dataclass
class Workload:
    """A small, bounded quorum read/write load from the test process, in a thread.

    Writes new keys at ``w=quorum`` (one write in flight at a time), and reads back a random
    acknowledged key at ``r=quorum``. Endpoints are the node pods that exist at the start; the
    client moves to the next one when an endpoint cannot be reached."""

    endpoints: list[str]
    prefix: str
    max_ops: int = 4000
    pause: float = 0.05
    acked: dict[str, bytes] = field(default_factory=dict)
    token: str | None = None  # None: $RINGKV_TOKEN (set by ``cluster_ns``)
    write_failures: list[tuple[float, str]] = field(default_factory=list)
    read_failures: list[tuple[float, str]] = field(default_factory=list)
    wrong_reads: list[str] = field(default_factory=list)
    ops: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ringkv-workload", daemon=True)
        self._t0 = time.monotonic()

    def start(self) -> Workload:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "workload thread did not stop"

    def _run(self) -> None:
        rng = random.Random(7)
        with Client(self.endpoints, timeout=10, token=self.token) as c:
            i = 0
            while not self._stop.is_set() and self.ops < self.max_ops:
                key = f"{self.prefix}-{i}"
                value = f"{key}:{uuid.uuid4().hex}".encode()
                t = time.monotonic() - self._t0
                try:
                    c.put(key, value, w="quorum")
                    self.acked[key] = value
                except (RingkvError, OSError) as exc:
                    self.write_failures.append((t, f"put {key}: {type(exc).__name__}: {exc}"))
                i += 1
                self.ops += 1
                if self.acked:
                    k = rng.choice(list(self.acked))
                    try:
                        got = c.get(k, r="quorum")
                        if not got.found or got.value != self.acked[k]:
                            self.wrong_reads.append(f"{k}: found={got.found} {got.value!r}")
                    except (RingkvError, OSError) as exc:
                        self.read_failures.append((t, f"get {k}: {type(exc).__name__}: {exc}"))
                    self.ops += 1
                self._stop.wait(self.pause)

    def summary(self) -> str:
        return (f"{self.ops} ops, {len(self.acked)} writes acked, "
                f"{len(self.write_failures)} failed writes, {len(self.read_failures)} failed "
                f"reads, {len(self.wrong_reads)} wrong reads")


def save_logs(k8s: Any, ns: str, tag: str) -> Path:
    out = LOG_DIR / tag
    out.mkdir(parents=True, exist_ok=True)

    def run(name: str, *args: str) -> None:
        r = k8s.kubectl(*args, check=False, timeout=60)
        (out / name).write_text(r.stdout + r.stderr)

    run("operator.log", "-n", OPERATOR_NS, "logs", "deploy/ringkv-operator", "--tail=-1")
    run("operator-pods.txt", "-n", OPERATOR_NS, "get", "pods", "-o", "wide")
    run("kvc.yaml", "-n", ns, "get", "kvc", NAME, "-o", "yaml")
    run("events.txt", "-n", ns, "get", "events", "--sort-by=.lastTimestamp")
    run("pods.txt", "-n", ns, "get", "pods,pvc,sts", "-o", "wide")
    for p in node_pods(k8s, ns):
        pname = p["metadata"]["name"]
        run(f"{pname}.log", "-n", ns, "logs", pname, "--tail=-1")
    return out


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def operator(k8s: Any) -> Iterator[str]:
    """The operator, in-cluster, from manifests/ (kustomize). A module that ran before
    deleted the manifests without waiting: its namespace and the CRD may still be going."""

    def gone_or_live() -> bool:
        for kind, name in (("namespace", OPERATOR_NS), ("crd", "kvclusters.ringkv.io")):
            r = k8s.kubectl("get", kind, name, "-o", "json", check=False)
            if r.returncode == 0 and json.loads(r.stdout)["metadata"].get("deletionTimestamp"):
                return False
        return True

    wait_for(gone_or_live, 180, "the previous operator install to be deleted", every=2)
    applied = k8s.kubectl("apply", "-k", str(MANIFESTS), check=False)
    assert applied.returncode == 0, f"kubectl apply -k manifests/: {applied.stderr}"
    k8s.kubectl("wait", "--for=condition=Established", "crd/kvclusters.ringkv.io",
                "--timeout=60s")

    def running() -> str | None:
        out = k8s.kubectl("-n", OPERATOR_NS, "get", "pods", "-l",
                          "app.kubernetes.io/name=ringkv-operator", "-o", "json").stdout
        for p in json.loads(out)["items"]:
            if pod_ready(p):
                return str(p["metadata"]["name"])
        return None

    pod = wait_for(running, 120, "the operator pod to be ready")
    yield pod
    # Every KVCluster goes first, while the operator still runs to remove its finalizer: a
    # KVCluster left behind would keep the CRD (and the next module's install) from going.
    k8s.kubectl("delete", "kvc", "--all", "--all-namespaces", "--wait=true", "--timeout=180s",
                check=False, timeout=200)  # fmt: skip
    k8s.kubectl("delete", "-k", str(MANIFESTS), "--wait=false", check=False)


@pytest.fixture(scope="module")
def cluster_ns(k8s: Any, operator: str) -> Iterator[str]:
    """The example KVCluster, in a fresh namespace (its manifest names ``default``)."""
    ns = "e2e-op-" + uuid.uuid4().hex[:6]
    k8s.kubectl("create", "namespace", ns)
    text = EXAMPLE.read_text()
    text = re.sub(r"(?m)^(\s+namespace:\s*)default\s*$", rf"\g<1>{ns}", text)
    assert f"namespace: {ns}" in text
    k8s.kubectl("apply", "-f", "-", input=text)
    try:
        with admin_token_in_env(k8s, ns):
            yield ns
    finally:
        path = save_logs(k8s, ns, ns)
        print(f"\noperator e2e logs saved to {path}")
        k8s.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def available(k8s: Any, cluster_ns: str) -> str:
    """The shared cluster, settled at 3 nodes (every test starts from there)."""
    wait_for(lambda: settled(k8s, cluster_ns, 3), 600, "example settled at 3 nodes", every=2)
    return cluster_ns


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_example_cluster_becomes_available(k8s: Any, cluster_ns: str) -> None:
    ns = cluster_ns
    t0 = time.monotonic()
    phases: list[str] = []

    def is_available() -> bool:
        obj = kvc(k8s, ns)
        phase = (obj.get("status") or {}).get("phase")
        if phase and (not phases or phases[-1] != phase):
            phases.append(phase)
        return condition(obj, "Available").get("status") == "True"

    wait_for(is_available, 600, "Available=True", every=2)
    t_avail = time.monotonic() - t0
    s = wait_for(lambda: settled(k8s, ns, 3), 300, "settled at 3 nodes", every=2)
    print(f"\nAvailable after {t_avail:.0f}s, settled after {time.monotonic() - t0:.0f}s; "
          f"phases seen: {phases}")
    assert s.row["RF"] == "3" and s.row["NAME"] == NAME
    # no CPU limit in the example (a request of 100m): one shard per node, passed to the pods
    assert s.row["SHARDS"] == "1" and s.obj["status"]["shards"] == 1
    for pod in s.pods:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["RINGKV_SHARDS"] == "1", pod["metadata"]["name"]
    assert_consistent(k8s, ns, s, 3)
    avail = condition(s.obj, "Available")
    assert avail["reason"] == "QuorumAvailable"
    assert avail["observedGeneration"] == s.obj["metadata"]["generation"]

    # The operator runs in-cluster under its own ServiceAccount.
    op = json.loads(k8s.kubectl("-n", OPERATOR_NS, "get", "pods", "-l",
                                "app.kubernetes.io/name=ringkv-operator", "-o",
                                "json").stdout)["items"]
    assert len(op) == 1 and op[0]["spec"]["serviceAccountName"] == "ringkv-operator"
    # The children are owned by the KVCluster.
    uid = s.obj["metadata"]["uid"]
    for kind, name in (("statefulset", f"{NAME}-zone-a"), ("service", NAME),
                       ("service", f"{NAME}-peers"), ("pdb", f"{NAME}-zone-a")):
        meta = json.loads(k8s.kubectl("-n", ns, "get", kind, name, "-o", "json").stdout)
        assert [o["uid"] for o in meta["metadata"]["ownerReferences"]] == [uid], (kind, name)

    # Data written through one pod reads back at quorum through another.
    data = {f"hello-{i}": f"world-{i}".encode() for i in range(50)}
    with (k8s.forward(ns, f"pod/{NAME}-zone-a-0", PORT) as (host, port),
          Client(f"http://{host}:{port}", timeout=10) as c):
        for k, v in data.items():
            c.put(k, v, w="quorum")
    with k8s.forward(ns, f"pod/{NAME}-zone-c-0", PORT) as (host, port):
        assert check_quorum_reads(f"http://{host}:{port}", data) == []
    # and through the client Service
    with k8s.forward(ns, f"svc/{NAME}", PORT) as (host, port):
        assert check_quorum_reads(f"http://{host}:{port}", data) == []


def http_status(url: str, method: str = "GET", token: str | None = None,
                body: bytes | None = None) -> int:
    """The status of one request, with this bearer token or none (not $RINGKV_TOKEN)."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.timeout(600)
def test_api_and_peers_are_authenticated(k8s: Any, available: str) -> None:
    """Secure by default: the operator generated and owns the Secrets, a request without the
    token gets 401, the generated token works, the nodes formed the cluster with peer
    authentication on (the operator itself reached them with its own token), a peer without
    the secret is refused, and no secret shows in logs, events or the status."""
    from ringkv.node.messaging import REQUEST, encode_frame

    ns = available
    obj = kvc(k8s, ns)
    uid = obj["metadata"]["uid"]
    names = (f"{NAME}-tokens", f"{NAME}-cluster-secret", f"{NAME}-operator-token")
    for name in names:
        meta = json.loads(k8s.kubectl("-n", ns, "get", "secret", name, "-o", "json").stdout)
        assert [o["uid"] for o in meta["metadata"]["ownerReferences"]] == [uid], name
    token = admin_token(k8s, ns)
    operator_token = secret_data(k8s, ns, f"{NAME}-operator-token")["token"]
    cluster_secret = secret_data(k8s, ns, f"{NAME}-cluster-secret")["cluster-secret"]
    assert len({token, operator_token, cluster_secret}) == 3 and len(cluster_secret) >= 32
    sts = json.loads(k8s.kubectl("-n", ns, "get", "statefulset", f"{NAME}-zone-a", "-o",
                                 "json").stdout)
    config = {e["name"]: e.get("value") for e in
              sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "RINGKV_NO_AUTH" not in config and "RINGKV_NO_PEER_AUTH" not in config
    assert config["RINGKV_CLUSTER_SECRET_FILE"] and config["RINGKV_AUTH_TOKENS_FILE"]

    with k8s.forward(ns, f"svc/{NAME}", PORT) as (host, port):
        base = f"http://{host}:{port}"
        assert http_status(f"{base}/health/ready") == 200  # probes need no token
        for path in ("/v1/kv/sec-key", "/v1/status", "/metrics"):
            assert http_status(base + path) == 401, path
            assert http_status(base + path, token="wrong-token-0123456789abcdef") == 401
        assert http_status(f"{base}/v1/kv/sec-key?w=quorum", "PUT", token, b"sec-value") == 204
        assert http_status(f"{base}/v1/kv/sec-key", token=token) == 200
        assert http_status(f"{base}/v1/status", token=operator_token) == 200
        # the generated metrics token reads /metrics and nothing else
        metrics_token = secret_data(k8s, ns, f"{NAME}-metrics-token")["token"]
        assert http_status(f"{base}/metrics", token=metrics_token) == 200
        assert http_status(f"{base}/v1/status", token=metrics_token) == 403
        with Client(base, timeout=10, token=token) as c:
            assert c.get("sec-key", r="quorum").value == b"sec-value"

    # Peers authenticated each other: every node sees all three alive, normal.
    for ep in endpoints(k8s, ns):
        with Client(ep, timeout=10, token=token) as c:
            members = {m["id"]: m for m in c.status()["members"]}
        assert len(members) == 3 and all(m.get("alive") for m in members.values()), members
    # A process without the secret: its hello is answered, its read is refused, nothing served.
    victim = f"{NAME}-zone-a-0"
    with k8s.forward(ns, f"pod/{victim}", 8001) as (host, port):
        import socket

        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(encode_frame(REQUEST, 0, "hello", {"node": "rogue",
                                                             "nonce": os.urandom(16)}))
            sock.sendall(encode_frame(REQUEST, 1, "read", {"key": b"sec-key"}))
            received = b""
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except TimeoutError:
                pass
    assert b"sec-value" not in received
    wait_for(lambda: "refused a peer connection" in k8s.kubectl(
        "-n", ns, "logs", victim, "--tail=-1").stdout, 30, "the refusal in the node's log")

    # The API server refuses what would split a running cluster, and contradictions.
    for patch, says in (({"peerAuth": {"enabled": False}}, "peerAuth cannot be changed"),
                        ({"tls": {"enabled": True, "secretName": "x"}}, "tls.enabled cannot"),
                        ({"auth": {"enabled": False, "tokensSecret": {"name": "t"}}},
                         "auth.tokensSecret needs auth.enabled")):
        r = k8s.kubectl("-n", ns, "patch", "kvc", NAME, "--type=merge", "--dry-run=server",
                        "-p", json.dumps({"spec": {"security": patch}}), check=False)
        assert r.returncode != 0 and says in r.stderr, (patch, r.stderr)
    bad = {"apiVersion": "ringkv.io/v1alpha1", "kind": "KVCluster",
           "metadata": {"name": "bad", "namespace": ns},
           "spec": {"zones": ["zone-a"], "replicas": 1, "replicationFactor": 1,
                    "security": {"tls": {"enabled": True}}}}
    r = k8s.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(bad), check=False)
    assert r.returncode != 0 and "tls.enabled needs tls.secretName" in r.stderr, r.stderr
    r = k8s.kubectl("-n", ns, "patch", "kvc", NAME, "--type=merge", "--dry-run=server", "-p",
                    json.dumps({"spec": {"settings": {"no-auth": "true"}}}), check=False)
    assert r.returncode != 0 and "settings must not override" in r.stderr, r.stderr

    # No secret in what people read: operator and node logs, events, the KVCluster.
    shown = [
        k8s.kubectl("-n", OPERATOR_NS, "logs", "deploy/ringkv-operator", "--tail=-1").stdout,
        k8s.kubectl("-n", ns, "get", "events", "-o", "json").stdout,
        k8s.kubectl("-n", ns, "get", "kvc", NAME, "-o", "json").stdout,
        k8s.kubectl("-n", ns, "get", "statefulsets", "-o", "json").stdout,
    ] + [k8s.kubectl("-n", ns, "logs", p["metadata"]["name"], "--tail=-1").stdout
         for p in node_pods(k8s, ns)]
    for text in shown:
        for value in (token, operator_token, cluster_secret):
            assert value not in text


@pytest.mark.timeout(1500)
def test_scale_up_and_down(k8s: Any, available: str) -> None:
    ns = available
    before = fill(k8s, ns, "pre-scale", 100)
    work = Workload(endpoints(k8s, ns), "scale").start()
    t0 = time.monotonic()
    seen_progress: list[dict[str, Any]] = []
    samples: list[tuple[Any, ...]] = []

    degraded: list[str] = []  # the Degraded messages seen: who was down, on whose word

    def watch(replicas: int) -> Settled | None:
        obj = kvc(k8s, ns)
        samples.append(sample(obj))
        if condition(obj, "Degraded").get("status") == "True":
            degraded.append(str(condition(obj, "Degraded").get("message")))
        prog = (obj.get("status") or {}).get("progress")
        if prog:
            seen_progress.append(prog)
        return settled(k8s, ns, replicas)

    try:
        k8s.kubectl("-n", ns, "scale", "kvc", NAME, "--replicas=6")
        s6 = wait_for(lambda: watch(6), 900, "settled at 6 nodes", every=2)
        t_up = time.monotonic() - t0
        assert_consistent(k8s, ns, s6, 6)
        k8s.kubectl("-n", ns, "scale", "kvc", NAME, "--replicas=3")
        s3 = wait_for(lambda: watch(3), 900, "settled back at 3 nodes", every=2)
        t_down = time.monotonic() - t0 - t_up
    finally:
        work.stop()
    print(f"\nscale 3->6 in {t_up:.0f}s, 6->3 in {t_down:.0f}s; workload: {work.summary()}")
    for t, f in work.write_failures[:10] + work.read_failures[:10]:
        print(f"  {t:7.1f}s {f}")
    assert_consistent(k8s, ns, s3, 3)
    # Volumes of the decommissioned nodes are deleted; the remaining ones kept.
    wait_for(lambda: {p["metadata"]["name"] for p in json.loads(k8s.kubectl(
        "-n", ns, "get", "pvc", "-o", "json").stdout)["items"]
        if not p["metadata"].get("deletionTimestamp")} == {f"data-{p}" for p in pod_names(1)},
        120, "only the 3 remaining volumes")
    # No acknowledged write lost: everything acknowledged reads back at quorum.
    assert work.acked, work.summary()
    assert work.wrong_reads == []
    ep = endpoints(k8s, ns)
    assert check_quorum_reads(ep[0], {**before, **work.acked}) == []
    assert check_quorum_reads(ep[-1], before) == []
    # Failed quorum requests: the workload only talks to the three nodes that stay, and every
    # range keeps a quorum through a join or a decommission. Allow a handful (a coordinator's
    # view changing under a request) but not an outage.
    failed = len(work.write_failures) + len(work.read_failures)
    assert failed <= max(3, work.ops // 100), work.summary()
    ops = [p.get("operation") for p in seen_progress]
    print(f"progress operations seen: {sorted(set(o for o in ops if o))}")
    print("status changes seen (phase, Available, Progressing, Degraded, replicas, ready):")
    for smp in changes(samples):
        print(f"  {smp}")
    for msg in degraded:
        print(f"  Degraded: {msg}")
    # Status at every step: a quorum of every range stays served through joins and
    # decommissions, nothing is degraded, and the phase says what is going on.
    assert all(smp[1] == "True" for smp in samples), changes(samples)
    assert all(smp[3] == "AsExpected" for smp in samples), (changes(samples), degraded)
    assert {smp[0] for smp in samples} <= {"Running", "Scaling"}, changes(samples)
    assert any(smp[0] == "Scaling" for smp in samples), changes(samples)
    assert all(smp[5] is not None and smp[4] is not None and smp[5] <= smp[4]
               for smp in samples), changes(samples)


@pytest.mark.timeout(1200)
def test_pod_kill_and_replacement(k8s: Any, available: str) -> None:
    ns = available
    data = fill(k8s, ns, "pre-kill", 100)
    gen = kvc(k8s, ns)["status"].get("replacements", 0)

    # 1. a pod killed: the StatefulSet recreates it on its volume, it rejoins.
    victim = f"{NAME}-zone-b-0"
    old = next(p for p in node_pods(k8s, ns) if p["metadata"]["name"] == victim)
    t0 = time.monotonic()
    k8s.kubectl("-n", ns, "delete", "pod", victim, "--wait=true", timeout=120)
    # while it is away, quorum writes still succeed (2 of 3 replicas)
    during = fill(k8s, ns, "during-kill", 30)

    samples: list[tuple[Any, ...]] = []

    def back() -> Settled | None:
        samples.append(sample(kvc(k8s, ns)))
        s = settled(k8s, ns, 3)
        if s and all(p["metadata"]["uid"] != old["metadata"]["uid"] for p in s.pods):
            return s
        return None

    s = wait_for(back, 300, f"{victim} recreated and the cluster settled", every=2)
    print(f"\n{victim} killed and back in {time.monotonic() - t0:.0f}s")
    assert_consistent(k8s, ns, s, 3)
    assert s.obj["status"].get("replacements", 0) == gen  # a restart is not a replacement
    print(f"status changes seen: {changes(samples)}")
    assert all(smp[1] == "True" for smp in samples), changes(samples)  # 2 of 3 still serve
    log = k8s.kubectl("-n", ns, "logs", victim, "--tail=-1").stdout
    assert "status is now replacing" not in log  # restarted on its volume: no replace
    assert check_quorum_reads(k8s.pod_url(ns, victim, PORT), {**data, **during}) == []

    # 2. a pod deleted with its volume: the node comes back empty under its id and refills.
    victim = f"{NAME}-zone-c-0"
    old = next(p for p in node_pods(k8s, ns) if p["metadata"]["name"] == victim)
    pvc = json.loads(k8s.kubectl("-n", ns, "get", "pvc", f"data-{victim}", "-o", "json").stdout)
    t0 = time.monotonic()
    k8s.kubectl("-n", ns, "delete", "pvc", f"data-{victim}", "--wait=false")
    k8s.kubectl("-n", ns, "delete", "pod", victim, "--wait=true", timeout=120)
    samples.clear()
    s = wait_for(back, 600, f"{victim} recreated on a new volume and the cluster settled",
                 every=2)
    print(f"{victim} deleted with its volume and back in {time.monotonic() - t0:.0f}s")
    assert_consistent(k8s, ns, s, 3)
    new_pvc = json.loads(k8s.kubectl("-n", ns, "get", "pvc", f"data-{victim}", "-o",
                                     "json").stdout)
    assert new_pvc["metadata"]["uid"] != pvc["metadata"]["uid"]
    print(f"status changes seen: {changes(samples)}")
    assert all(smp[1] == "True" for smp in samples), changes(samples)
    new_url = k8s.pod_url(ns, victim, PORT)
    # It came back empty under its id and streamed its ranges back (replace), before any read
    # below could repair it: it holds about as many keys as a node that never lost anything.
    log = k8s.kubectl("-n", ns, "logs", victim, "--tail=-1").stdout
    assert "status is now replacing" in log and f"replace of {victim} complete" in log, log
    keys_new = metric(new_url, "ringkv_stored_keys")
    keys_peer = metric(k8s.pod_url(ns, f"{NAME}-zone-a-0", PORT), "ringkv_stored_keys")
    print(f"stored keys: refilled {victim} {keys_new:.0f}, zone-a-0 {keys_peer:.0f}")
    assert keys_new >= 0.9 * keys_peer > 0
    every = {**data, **during}
    assert check_quorum_reads(new_url, every) == []
    # r=all needs the refilled node's own answer too.
    assert check_all_reads(new_url, every) == []
    assert s.obj["status"].get("replacements", 0) == gen  # the operator did not replace it


def check_all_reads(endpoint: str, data: dict[str, bytes]) -> list[str]:
    bad = []
    with Client(endpoint, timeout=10) as c:
        for k, v in data.items():
            try:
                got = c.get(k, r="all")
            except RingkvError as exc:
                bad.append(f"{k}: {exc}")
                continue
            if not got.found or got.value != v:
                bad.append(f"{k}: found={got.found} value={got.value!r}")
    return bad


def _make_tls(directory: Path, name: str, ns: str) -> tuple[Path, Path, Path]:
    """A CA and a node certificate it signed: (ca.crt, tls.crt, tls.key). The certificate
    carries the names nodes and the operator dial and check (docs/security.md)."""
    import subprocess

    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "tls.key", directory / "tls.csr", directory / "tls.crt"

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(ca_key),
        "-out", str(ca_crt), "-subj", "/CN=ringkv-e2e-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=ringkv-e2e-node")
    ext = directory / "tls.ext"
    ext.write_text(f"subjectAltName=DNS:*.{name}-peers.{ns}.svc.cluster.local,"
                   f"DNS:{name}.{ns}.svc,DNS:{name}.{ns}.svc.cluster.local\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-out", str(crt), "-extfile", str(ext))
    return ca_crt, crt, key


@pytest.mark.timeout(900)
def test_tls_cluster_with_your_own_tokens(k8s: Any, operator: str, tmp_path: Path) -> None:
    """A second KVCluster with TLS from a kubernetes.io/tls Secret (mutual TLS between nodes
    against its ca.crt) and the users' tokens from a Secret of their own: the nodes form the
    cluster over TLS, the operator reaches them over https with its own token (the status
    lists the members), and a client needs the CA and one of those tokens."""
    import shutil
    import ssl
    import urllib.error
    import urllib.request

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    ns = "e2e-tls-" + uuid.uuid4().hex[:6]
    name = "tlskv"
    token = "app-token-" + uuid.uuid4().hex
    ca, crt, key = _make_tls(tmp_path, name, ns)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"token": token, "role": "readwrite",
                                              "name": "app"}]}))
    k8s.kubectl("create", "namespace", ns)
    try:
        k8s.kubectl("-n", ns, "create", "secret", "generic", "tlskv-tls",
                    "--type=kubernetes.io/tls", f"--from-file=tls.crt={crt}",
                    f"--from-file=tls.key={key}", f"--from-file=ca.crt={ca}")
        k8s.kubectl("-n", ns, "create", "secret", "generic", "app-tokens",
                    f"--from-file=tokens.json={tokens}")
        k8s.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "ringkv.io/v1alpha1", "kind": "KVCluster",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 3, "zones": list(ZONES), "replicationFactor": 3,
                     "storage": {"deletePolicy": "Delete"},
                     "security": {"auth": {"tokensSecret": {"name": "app-tokens"}},
                                  "tls": {"enabled": True, "secretName": "tlskv-tls",
                                          "verifyPeers": True}}},
        }))

        def formed() -> dict[str, Any] | None:
            obj = json.loads(k8s.kubectl("-n", ns, "get", "kvc", name, "-o", "json").stdout)
            st = obj.get("status") or {}
            members = st.get("members") or []
            if (condition(obj, "Available").get("status") == "True"
                    and st.get("readyReplicas") == 3 and len(members) == 3
                    and all(m.get("state") == "normal" and m.get("alive") for m in members)):
                return dict(obj)
            return None

        t0 = time.monotonic()
        obj = wait_for(formed, 600, f"{name} Available with 3 normal members", every=2)
        print(f"\nTLS cluster formed in {time.monotonic() - t0:.0f}s")
        # only the operator's and the scrapers' tokens were generated: the users' are theirs
        secrets = json.loads(k8s.kubectl("-n", ns, "get", "secrets", "-o", "json").stdout)
        owned = {s["metadata"]["name"] for s in secrets["items"]
                 if any(o["uid"] == obj["metadata"]["uid"]
                        for o in s["metadata"].get("ownerReferences") or ())}
        assert owned == {
            f"{name}-operator-token", f"{name}-cluster-secret", f"{name}-metrics-token"
        }

        verified = ssl.create_default_context(cafile=str(ca))
        verified.check_hostname = False  # reached through a port-forward on localhost

        def status(url: str, with_token: str | None = None, method: str = "GET",
                   body: bytes | None = None) -> int:
            headers = {"Authorization": f"Bearer {with_token}"} if with_token else {}
            req = urllib.request.Request(url, data=body, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=10, context=verified) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)

        with k8s.forward(ns, f"pod/{name}-zone-b-0", PORT) as (host, port):
            base = f"https://{host}:{port}"
            assert status(f"{base}/v1/kv/tls-key") == 401
            assert status(f"{base}/v1/kv/tls-key?w=all", token, "PUT", b"over-tls") == 204
            assert status(f"{base}/v1/kv/tls-key?r=all", token) == 200  # all 3 over mTLS

            def plain_http_served() -> bool:
                try:
                    with urllib.request.urlopen(f"http://{host}:{port}/health/live",
                                                timeout=5) as r:
                        return bool(r.status == 200)
                except Exception:
                    return False

            assert not plain_http_served()
    finally:
        print(k8s.kubectl("-n", ns, "get", "kvc,pods,secrets", "-o", "wide", check=False).stdout)
        k8s.kubectl("delete", "namespace", ns, "--wait=false", check=False)
