"""localkube: a real Kubernetes control plane on this machine, without Docker.

Starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler (binaries
from build.sh), generates the PKI and service-account keys at start, writes a
kubeconfig, registers fake nodes (one per zone) and keeps them Ready with node
status updates and Leases. With ``network=True`` (root only) it also creates the
pod bridge that the process kubelet plugs pod network namespaces into; the API
server is advertised on the bridge address so pods reach it.

Standard library + the ``openssl`` CLI only.

CLI (from the repository root)::

    python3 e2e/localkube/cluster.py up   [--workdir DIR] [--zones zone-a,zone-b,zone-c]
    python3 e2e/localkube/cluster.py down [--workdir DIR]

``up`` runs in the foreground until SIGINT/SIGTERM and tears everything down on
exit; ``down`` asks a running ``up`` (by its pid file) to stop and waits.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import faulthandler
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from localkube.kubeapi import ApiError, Creds, KubeAPI
else:
    from .kubeapi import ApiError, Creds, KubeAPI

HERE = Path(__file__).resolve().parent
DEFAULT_ZONES = ("zone-a", "zone-b", "zone-c")
PR_SET_PDEATHSIG = 1


def log(msg: str) -> None:
    print(f"[localkube {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_binaries() -> Path:
    """Run build.sh (reuses the cache) and return the binary directory."""
    env = os.environ.get("LOCALKUBE_BIN_DIR")
    if env:
        return Path(env)
    out = subprocess.run(["bash", str(HERE / "build.sh")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded here: no dlopen after fork


def _pdeathsig() -> None:
    # Children die with the process that started them (even on SIGKILL of it).
    # Used only before the harness starts threads (see kubelet.py for pods).
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


# --------------------------------------------------------------------------- PKI
class PKI:
    def __init__(self, d: Path):
        self.d = d
        d.mkdir(parents=True, exist_ok=True)

    def p(self, name: str) -> str:
        return str(self.d / name)

    def ca(self, name: str = "ca") -> None:
        run(["openssl", "genrsa", "-out", self.p(f"{name}.key"), "2048"])
        run(["openssl", "req", "-x509", "-new", "-key", self.p(f"{name}.key"), "-sha256",
             "-days", "30", "-subj", f"/CN=ringkv-localkube-{name}",
             "-out", self.p(f"{name}.crt"),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"])

    def leaf(self, name: str, subject: str, sans: list[str] | None = None,
             server: bool = False, ca: str = "ca") -> None:
        key, csr, crt = self.p(f"{name}.key"), self.p(f"{name}.csr"), self.p(f"{name}.crt")
        run(["openssl", "genrsa", "-out", key, "2048"])
        run(["openssl", "req", "-new", "-key", key, "-subj", subject, "-out", csr])
        ext = ["basicConstraints=CA:FALSE",
               "keyUsage=critical,digitalSignature,keyEncipherment",
               "extendedKeyUsage=" + ("serverAuth,clientAuth" if server else "clientAuth")]
        if sans:
            ext.append("subjectAltName=" + ",".join(sans))
        extfile = self.p(f"{name}.ext")
        Path(extfile).write_text("\n".join(ext) + "\n")
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.p(f"{ca}.crt"),
             "-CAkey", self.p(f"{ca}.key"), "-CAcreateserial", "-sha256", "-days", "30",
             "-extfile", extfile, "-out", crt])

    def sa_keys(self) -> None:
        run(["openssl", "genrsa", "-out", self.p("sa.key"), "2048"])
        run(["openssl", "rsa", "-in", self.p("sa.key"), "-pubout", "-out", self.p("sa.pub")])


def write_kubeconfig(path: Path, server: str, ca: str, cert: str, key: str,
                     user: str = "admin") -> None:
    # JSON is valid YAML: kubectl, client-go and the Python clients all read it.
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "localkube",
        "clusters": [{"name": "localkube",
                      "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": user, "user": {"client-certificate": cert, "client-key": key}}],
        "contexts": [{"name": "localkube",
                      "context": {"cluster": "localkube", "user": user}}],
    }
    path.write_text(json.dumps(cfg, indent=2) + "\n")


# ----------------------------------------------------------------------- network
def sh_ok(cmd: list[str]) -> bool:
    return subprocess.run(cmd, capture_output=True).returncode == 0


@dataclass
class Network:
    """The pod bridge on the host, and the pod CIDR split into per-node /24s."""
    bridge: str = "rkvbr0"
    cidr: str = "10.244.0.0/16"

    @property
    def net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)

    @property
    def gateway(self) -> str:
        return str(self.net.network_address + 1)

    def node_cidr(self, index: int) -> str:
        # /24 number 0 holds the gateway; nodes get 1, 2, 3, ...
        return str(list(self.net.subnets(new_prefix=24))[index + 1])

    def up(self) -> None:
        self.down()
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        run(["ip", "addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])

    def down(self) -> None:
        if sh_ok(["ip", "link", "show", self.bridge]):
            run(["ip", "link", "del", self.bridge])


STATE_DIR = Path("/run/ringkv-localkube")
HOSTPATH_PV_ROOT = "/tmp/hostpath_pv/"  # where the in-tree hostPath provisioner writes


class HostState:
    """What a cluster leaves on the host outside its workdir (mount points the kubelet
    created, hostPath PV directories), recorded under /run by bridge name, so that
    a cluster killed without teardown is cleaned up by the next `up` or `down`."""

    def __init__(self, bridge: str):
        self.path = STATE_DIR / f"{bridge}.json"
        self._lock = threading.Lock()
        self.data: dict[str, list[str]] = {"paths": [], "pv_dirs": []}

    def add(self, key: str, value: str) -> None:
        with self._lock:
            if value in self.data[key]:
                return
            self.data[key].append(value)
            STATE_DIR.mkdir(exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data))
            tmp.replace(self.path)


def cleanup_host_state(bridge: str) -> None:
    """Remove everything a cluster on this bridge may have left: pod namespaces (and
    any process in them), recorded mount points and PV directories, the bridge."""
    from localkube.kubelet import NETNS_PREFIX, cleanup_stale_netns

    cleanup_stale_netns(f"{NETNS_PREFIX}{bridge}-", bridge)
    state = STATE_DIR / f"{bridge}.json"
    try:
        data = json.loads(state.read_text())
    except (OSError, ValueError):
        data = {}
    for p in reversed(data.get("paths", [])):
        with contextlib.suppress(OSError):  # only empty dirs / empty files we made
            if os.path.isdir(p):
                os.rmdir(p)
            elif os.path.getsize(p) == 0:
                os.unlink(p)
    for d in data.get("pv_dirs", []):
        if d.startswith(HOSTPATH_PV_ROOT) and ".." not in d:
            shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(HOSTPATH_PV_ROOT)  # only if no other cluster's volumes are left
    Network(bridge).down()
    state.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        STATE_DIR.rmdir()


# ----------------------------------------------------------------------- cluster
@dataclass
class NodeSpec:
    name: str
    zone: str
    pod_cidr: str = ""
    heartbeat: bool = True
    kubelet_port: int = 0  # the process kubelet's API (logs) for this node
    ready_since: str = ""  # lastTransitionTime of the Ready condition


@dataclass
class ClusterConfig:
    workdir: Path
    zones: tuple[str, ...] = DEFAULT_ZONES
    node_names: tuple[str, ...] | None = None  # default: "node-<zone suffix>"
    network: bool | None = None  # default: True when root
    bridge: str = "rkvbr0"
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/16"
    heartbeat_seconds: float = 5.0
    node_monitor_grace: str = "20s"
    extra_apiserver_args: list[str] = field(default_factory=list)
    extra_kcm_args: list[str] = field(default_factory=list)


class Cluster:
    def __init__(self, cfg: ClusterConfig, bin_dir: Path | None = None):
        self.cfg = cfg
        self.bin_dir = bin_dir
        self.dir = cfg.workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.net: Network | None = None
        self.host_state: HostState | None = None
        self.nodes: list[NodeSpec] = []
        self.api: KubeAPI | None = None
        self._stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self.ports: dict[str, int] = {}
        self.kubeconfig = self.dir / "kubeconfig"
        self.started_at = 0.0
        self.ready_seconds = 0.0
        # Hooks run at teardown before the control plane stops (the kubelet).
        self.teardown_hooks: list[Callable[[], None]] = []

    # -- paths ------------------------------------------------------------
    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def api_host(self) -> str:
        """Address of the API server as seen from pods (and the host)."""
        return self.net.gateway if self.net else "127.0.0.1"

    @property
    def api_port(self) -> int:
        return self.ports["apiserver"]

    @property
    def ca_file(self) -> str:
        return str(self.pki / "ca.crt")

    def admin_creds(self) -> Creds:
        return Creds("127.0.0.1", self.api_port, self.ca_file,
                     str(self.pki / "admin.crt"), str(self.pki / "admin.key"))

    # -- processes --------------------------------------------------------
    def _start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        logf = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to Popen
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, preexec_fn=_pdeathsig,
                             start_new_session=True, cwd=str(self.dir))
        logf.close()
        self.procs[name] = p
        (self.dir / "pids").mkdir(exist_ok=True)
        (self.dir / "pids" / name).write_text(str(p.pid))
        return p

    def _wait_http(self, name: str, url: str, timeout: float,
                   ctx: ssl.SSLContext | None = None) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | str = ""
        while time.monotonic() < deadline:
            p = self.procs[name]
            if p.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
                    if r.status == 200:
                        return
            except Exception as e:
                last = e
            time.sleep(0.3)
        raise TimeoutError(f"{name} not healthy at {url} after {timeout}s: {last}")

    def _bin(self, name: str) -> str:
        assert self.bin_dir is not None
        return str(self.bin_dir / name)

    # -- up ---------------------------------------------------------------
    def up(self) -> Cluster:
        t0 = self.started_at = time.monotonic()
        if self.bin_dir is None:
            self.bin_dir = build_binaries()
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        self.ready_seconds = time.monotonic() - t0
        log(f"cluster ready in {self.ready_seconds:.1f}s; KUBECONFIG={self.kubeconfig}")
        return self

    def _up(self) -> None:
        cfg = self.cfg
        missing = [t for t in ("openssl", "ip", "nsenter", "mount") if not shutil.which(t)]
        if missing:  # Debian: openssl, iproute2, util-linux, mount
            raise RuntimeError(f"localkube needs these commands on PATH: {missing}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        use_net = cfg.network if cfg.network is not None else os.geteuid() == 0
        if use_net:
            self.net = Network(cfg.bridge, cfg.pod_cidr)
            # A previous cluster on this bridge that died without teardown.
            cleanup_host_state(cfg.bridge)
            self.host_state = HostState(cfg.bridge)
            self.net.up()
            (self.dir / "network.json").write_text(
                json.dumps({"bridge": cfg.bridge, "cidr": cfg.pod_cidr}))
        for k in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler"):
            self.ports[k] = free_port()
        (self.dir / "ports.json").write_text(json.dumps(self.ports))

        # PKI and service-account keys, new for every cluster.
        svc_ip = str(ipaddress.IPv4Network(cfg.service_cidr).network_address + 1)
        pki = PKI(self.pki)
        pki.ca()
        sans = ["IP:127.0.0.1", f"IP:{svc_ip}", "DNS:localhost", "DNS:kubernetes",
                "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local"]
        if self.net:
            sans.append(f"IP:{self.net.gateway}")
        pki.leaf("apiserver", "/CN=kube-apiserver", sans, server=True)
        pki.leaf("admin", "/O=system:masters/CN=kubernetes-admin")
        pki.leaf("kcm", "/CN=system:kube-controller-manager")
        pki.leaf("scheduler", "/CN=system:kube-scheduler")
        # The process kubelet's API (kubectl logs) and the API server's client for it.
        pki.leaf("kubelet", "/CN=localkube-kubelet",
                 ["IP:127.0.0.1"] + ([f"IP:{self.net.gateway}"] if self.net else []),
                 server=True)
        pki.leaf("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client")
        pki.sa_keys()
        # Front-proxy (aggregation) CA: the requestheader authenticator wants one.
        pki.ca("front-proxy-ca")
        pki.leaf("front-proxy-client", "/CN=front-proxy-client", ca="front-proxy-ca")
        P = pki.p

        # etcd
        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        self._start("etcd", [
            self._bin("etcd"), "--name=localkube", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=localkube={peer_url}", "--unsafe-no-fsync",
            "--log-level=warn", "--quota-backend-bytes=4294967296",
        ])
        self._wait_http("etcd", f"{etcd_url}/health", 60)

        # kube-apiserver
        self._start("kube-apiserver", [
            self._bin("kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=0.0.0.0" if self.net else "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            f"--advertise-address={self.api_host}",
            f"--tls-cert-file={P('apiserver.crt')}", f"--tls-private-key-file={P('apiserver.key')}",
            f"--client-ca-file={P('ca.crt')}",
            f"--service-account-key-file={P('sa.pub')}",
            f"--service-account-signing-key-file={P('sa.key')}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={cfg.service_cidr}",
            "--authorization-mode=Node,RBAC", "--allow-privileged=true",
            "--profiling=false", "--endpoint-reconciler-type=lease",
            "--kubelet-preferred-address-types=InternalIP",
            # No kube-proxy: webhooks and aggregated APIs are reached at endpoint
            # (pod) IPs, not at Service ClusterIPs.
            "--enable-aggregator-routing=true",
            f"--kubelet-certificate-authority={P('ca.crt')}",
            f"--kubelet-client-certificate={P('apiserver-kubelet-client.crt')}",
            f"--kubelet-client-key={P('apiserver-kubelet-client.key')}",
            f"--requestheader-client-ca-file={P('front-proxy-ca.crt')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={P('front-proxy-client.crt')}",
            f"--proxy-client-key-file={P('front-proxy-client.key')}",
            *cfg.extra_apiserver_args,
        ])
        self.api = KubeAPI(self.admin_creds())
        ctx = ssl.create_default_context(cafile=P("ca.crt"))
        ctx.load_cert_chain(P("admin.crt"), P("admin.key"))
        self._wait_http("kube-apiserver", f"https://127.0.0.1:{self.api_port}/readyz", 120, ctx)

        server = f"https://{self.api_host}:{self.api_port}"
        write_kubeconfig(self.kubeconfig, f"https://127.0.0.1:{self.api_port}",
                         P("ca.crt"), P("admin.crt"), P("admin.key"))
        write_kubeconfig(self.dir / "kcm.kubeconfig", server, P("ca.crt"),
                         P("kcm.crt"), P("kcm.key"), "system:kube-controller-manager")
        write_kubeconfig(self.dir / "scheduler.kubeconfig", server, P("ca.crt"),
                         P("scheduler.crt"), P("scheduler.key"), "system:kube-scheduler")

        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        kcm_kc = str(self.dir / "kcm.kubeconfig")
        self._start("kube-controller-manager", [
            self._bin("kube-controller-manager"),
            f"--kubeconfig={kcm_kc}", f"--authentication-kubeconfig={kcm_kc}",
            f"--authorization-kubeconfig={kcm_kc}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports['kcm']}",
            "--leader-elect=false", "--use-service-account-credentials=true",
            # "*" = every controller on by default: statefulset, persistentvolume-binder,
            # garbage-collector, namespace, serviceaccount(-token), endpoints,
            # endpointslice, node-lifecycle, ...
            "--controllers=*",
            "--enable-hostpath-provisioner=true",
            f"--flex-volume-plugin-dir={self.dir / 'flexvolume'}",
            f"--service-account-private-key-file={P('sa.key')}",
            f"--root-ca-file={P('ca.crt')}",
            f"--cluster-signing-cert-file={P('ca.crt')}",
            f"--cluster-signing-key-file={P('ca.key')}",
            f"--service-cluster-ip-range={cfg.service_cidr}",
            "--allocate-node-cidrs=false",
            "--node-monitor-period=2s", f"--node-monitor-grace-period={cfg.node_monitor_grace}",
            "--profiling=false",
            *cfg.extra_kcm_args,
        ])
        sched_kc = str(self.dir / "scheduler.kubeconfig")
        self._start("kube-scheduler", [
            self._bin("kube-scheduler"), f"--kubeconfig={sched_kc}",
            f"--authentication-kubeconfig={sched_kc}", f"--authorization-kubeconfig={sched_kc}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports['scheduler']}",
            "--leader-elect=false", "--profiling=false",
        ])
        self._wait_http("kube-controller-manager",
                        f"https://127.0.0.1:{self.ports['kcm']}/healthz", 90, insecure)
        self._wait_http("kube-scheduler",
                        f"https://127.0.0.1:{self.ports['scheduler']}/healthz", 90, insecure)

        self._default_storage_class()
        self._register_nodes()
        self._hb_thread = threading.Thread(target=self._heartbeat_loop, name="node-heartbeat",
                                           daemon=True)
        self._hb_thread.start()
        self._wait_ready()

    def _default_storage_class(self) -> None:
        assert self.api
        self.api.create("/apis/storage.k8s.io/v1/storageclasses", {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "standard", "annotations": {
                "storageclass.kubernetes.io/is-default-class": "true"}},
            # The in-tree hostPath provisioner of kube-controller-manager: directories
            # under /tmp/hostpath_pv/, removed when the PV is deleted.
            "provisioner": "kubernetes.io/host-path",
            "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
        })

    # -- nodes ------------------------------------------------------------
    def _register_nodes(self) -> None:
        cfg = self.cfg
        names = cfg.node_names or tuple(f"node-{z.split('-')[-1]}" for z in cfg.zones)
        if len(names) != len(cfg.zones):
            raise ValueError("node_names and zones differ in length")
        for i, (name, zone) in enumerate(zip(names, cfg.zones, strict=False)):
            cidr = self.net.node_cidr(i) if self.net else ""
            self.nodes.append(NodeSpec(name, zone, cidr, kubelet_port=free_port()))
            self.add_node_object(self.nodes[-1])

    def add_node_object(self, n: NodeSpec) -> None:
        assert self.api
        spec: dict[str, Any] = {}
        if n.pod_cidr:
            spec = {"podCIDR": n.pod_cidr, "podCIDRs": [n.pod_cidr]}
        self.api.create("/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n.name, "labels": {
                "kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": n.zone,
                "ringkv.dev/localkube": "true"}},
            "spec": spec,
        })
        self._node_status(n)
        self._renew_lease(n)

    def _node_status(self, n: NodeSpec) -> None:
        assert self.api
        ts = now_rfc3339()
        n.ready_since = n.ready_since or ts
        cap = {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "50Gi"}
        conds = [{"type": t, "status": "False", "reason": f"KubeletHas{r}",
                  "message": "ok", "lastHeartbeatTime": ts, "lastTransitionTime": n.ready_since}
                 for t, r in (("MemoryPressure", "SufficientMemory"),
                              ("DiskPressure", "NoDiskPressure"),
                              ("PIDPressure", "SufficientPID"))]
        conds.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                      "message": "localkube process kubelet is posting ready status",
                      "lastHeartbeatTime": ts, "lastTransitionTime": n.ready_since})
        addr = self.net.gateway if self.net else "127.0.0.1"
        status = {
            "capacity": cap, "allocatable": cap, "conditions": conds,
            "addresses": [{"type": "InternalIP", "address": addr},
                          {"type": "Hostname", "address": n.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": n.kubelet_port or 10250}},
            "nodeInfo": {"machineID": n.name, "systemUUID": n.name, "bootID": n.name,
                         "kernelVersion": os.uname().release, "osImage": "localkube",
                         "containerRuntimeVersion": "localkube://process",
                         "kubeletVersion": self.version(),
                         "kubeProxyVersion": "", "operatingSystem": "linux",
                         "architecture": "amd64"},
        }
        # A strategic merge patch: conditions merge by type.
        self.api.patch(f"/api/v1/nodes/{n.name}/status", {"status": status}, "strategic")

    def _renew_lease(self, n: NodeSpec) -> None:
        assert self.api
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{n.name}"
        spec = {"holderIdentity": n.name, "leaseDurationSeconds": 20, "renewTime": now_micro()}
        try:
            self.api.patch(path, {"spec": spec})
        except ApiError as e:
            if e.status != 404:
                raise
            self.api.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": n.name, "namespace": "kube-node-lease"},
                "spec": spec})

    def _record_pv_dirs(self) -> None:
        assert self.api
        if self.host_state is None:
            return
        for pv in self.api.get("/api/v1/persistentvolumes")["items"]:
            path = (pv["spec"].get("hostPath") or {}).get("path", "")
            if path.startswith(HOSTPATH_PV_ROOT):
                self.host_state.add("pv_dirs", path)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.cfg.heartbeat_seconds):
            try:
                self._record_pv_dirs()
            except Exception as e:
                log(f"recording PV directories: {e}")
            for n in list(self.nodes):
                if not n.heartbeat:
                    continue
                try:
                    self._node_status(n)
                    self._renew_lease(n)
                except Exception as e:
                    log(f"heartbeat {n.name}: {e}")

    def set_node_heartbeat(self, name: str, on: bool) -> None:
        """Stop (or resume) a node's heartbeat: it goes NotReady as on a real failure."""
        for n in self.nodes:
            if n.name == name:
                n.heartbeat = on
                n.ready_since = ""
                if on:
                    self._node_status(n)
                    self._renew_lease(n)
                return
        raise KeyError(name)

    def _wait_ready(self, timeout: float = 90) -> None:
        """Nodes Ready without the not-ready taint, and the default ServiceAccount exists."""
        assert self.api
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nodes = self.api.get("/api/v1/nodes")["items"]
            ok = len(nodes) >= len(self.nodes) and all(
                not any(t["key"].startswith("node.kubernetes.io/") for t in
                        n["spec"].get("taints", []))
                and any(c["type"] == "Ready" and c["status"] == "True"
                        for c in n["status"].get("conditions", []))
                for n in nodes)
            sa = self.api.get_or_none("/api/v1/namespaces/default/serviceaccounts/default")
            if ok and sa:
                return
            time.sleep(0.5)
        raise TimeoutError("nodes not Ready / default ServiceAccount missing")

    def version(self) -> str:
        try:
            return str(json.loads((self.dir / "version.json").read_text())["gitVersion"])
        except (OSError, ValueError, KeyError):
            pass
        try:
            assert self.api
            v = self.api.get("/version")
            (self.dir / "version.json").write_text(json.dumps(v))
            return str(v["gitVersion"])
        except Exception:
            return "unknown"

    # -- down -------------------------------------------------------------
    def down(self, remove_workdir: bool = False) -> None:
        self._stop.set()
        t0 = time.monotonic()
        for hook in reversed(self.teardown_hooks):
            try:
                hook()
                log(f"teardown hook {getattr(hook, '__qualname__', hook)}: "
                    f"{time.monotonic() - t0:.1f}s")
            except Exception as e:
                log(f"teardown hook failed: {e}")
        self._cleanup_pv_dirs()
        if self._hb_thread:
            self._hb_thread.join(timeout=10)
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            p = self.procs.pop(name, None)
            if p is not None:
                t = time.monotonic()
                # Throwaway state: a short grace, then SIGKILL.
                stop_process(p, grace=3.0)
                if time.monotonic() - t > 3:
                    log(f"{name} took {time.monotonic() - t:.1f}s to stop")
        if self.net:
            try:
                cleanup_host_state(self.net.bridge)  # the bridge, and any leftovers
            except Exception as e:
                log(f"host cleanup failed: {e}")
        log(f"teardown done in {time.monotonic() - t0:.1f}s")
        if remove_workdir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _cleanup_pv_dirs(self) -> None:
        """Remove hostPath PV directories the provisioner made for this cluster."""
        if self.api is None or "kube-apiserver" not in self.procs:
            return
        try:
            pvs = self.api.get("/api/v1/persistentvolumes")["items"]
        except Exception:
            return
        for pv in pvs:
            path = (pv["spec"].get("hostPath") or {}).get("path", "")
            if path.startswith(HOSTPATH_PV_ROOT) and ".." not in path:
                shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(HOSTPATH_PV_ROOT)  # only if no other cluster's volumes are left


def stop_process(p: subprocess.Popen[Any], grace: float = 10.0) -> None:
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)


# --------------------------------------------------------------------------- CLI
def _alive(pid: int) -> bool:
    """True while pid runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False

def default_workdir() -> Path:
    return Path(tempfile.gettempdir()) / "ringkv-localkube"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a cluster; runs until SIGINT/SIGTERM")
    up.add_argument("--workdir", type=Path, default=default_workdir())
    up.add_argument("--zones", default=",".join(DEFAULT_ZONES))
    up.add_argument("--no-network", action="store_true", help="no pod bridge (non-root)")
    up.add_argument("--bridge", default="rkvbr0", help="pod bridge name (one per cluster)")
    up.add_argument("--pod-cidr", default="10.244.0.0/16")
    up.add_argument("--no-kubelet", action="store_true", help="control plane + nodes only")
    down = sub.add_parser("down", help="stop the cluster started by `up` (or clean up after it)")
    down.add_argument("--workdir", type=Path, default=default_workdir())
    down.add_argument("--bridge", default=None, help="default: the one `up` recorded")
    args = ap.parse_args(argv)

    if args.cmd == "down":
        pidf = args.workdir / "supervisor.pid"
        pid = int(pidf.read_text()) if pidf.exists() else 0
        if pid and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            for _ in range(1200):
                if not _alive(pid):
                    return 0
                time.sleep(0.1)
            log("supervisor did not stop in 120s")
            return 1
        # No supervisor (it was killed): its children died with it (PDEATHSIG);
        # remove what outlives processes: pod namespaces and the bridge.
        bridge = args.bridge
        state = args.workdir / "network.json"
        if bridge is None and state.exists():
            bridge = json.loads(state.read_text())["bridge"]
        if bridge:
            cleanup_host_state(bridge)
            log(f"cleaned up after a dead cluster (bridge {bridge})")
        pidf.unlink(missing_ok=True)
        return 0

    if (args.workdir / "supervisor.pid").exists():
        try:
            if _alive(int((args.workdir / "supervisor.pid").read_text())):
                log(f"a cluster is already running in {args.workdir}")
                return 1
        except ValueError:
            pass
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    cfg = ClusterConfig(workdir=args.workdir, zones=tuple(args.zones.split(",")),
                        network=False if args.no_network else None,
                        bridge=args.bridge, pod_cidr=args.pod_cidr)
    cluster = Cluster(cfg)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: thread dump
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    (args.workdir / "supervisor.pid").write_text(str(os.getpid()))
    try:
        cluster.up()
        if not args.no_kubelet and cluster.net is not None:
            from localkube.kubelet import attach_kubelet

            attach_kubelet(cluster)
        (args.workdir / "ready").write_text(json.dumps({
            "kubeconfig": str(cluster.kubeconfig), "ready_seconds": cluster.ready_seconds,
            "api_host": cluster.api_host, "api_port": cluster.api_port}))
        print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
        stop.wait()
    finally:
        log("tearing down")
        cluster.down()
        (args.workdir / "ready").unlink(missing_ok=True)
        (args.workdir / "supervisor.pid").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    # Run the package's copy of this module, so that localkube.kubelet and this
    # CLI share one Cluster class.
    from localkube import cluster as _cluster

    sys.exit(_cluster.main())
