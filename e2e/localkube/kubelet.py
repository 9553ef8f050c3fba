"""The process kubelet: runs the pods bound to localkube's fake nodes as local processes.

Per pod: a network namespace (``ip netns``) with a veth into the cluster bridge and
a pod IP from its node's pod CIDR; per container: a process started through
``ip netns exec`` (own mount namespace) and ``podexec.py`` (own UTS namespace with
the pod hostname, volumes bind-mounted at their mountPath). Status, probes,
restarts with back-off and graceful deletion follow the kubelet's rules, in
simplified form; see e2e/README.md for what differs from a real kubelet.

Requires root (namespaces, mounts, veths).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import http.server
import ipaddress
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cluster import Cluster, log, now_rfc3339, run
from .kubeapi import ApiError, KubeAPI

HERE = Path(__file__).resolve().parent
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
NETNS_PREFIX = "rkvpod-"


# ------------------------------------------------------------------- images
def ringkv_executable() -> str:
    """The project's own ``ringkv`` from the virtualenv the harness runs in."""
    cand = Path(sys.executable).parent / "ringkv"
    if cand.exists():
        return str(cand)
    found = shutil.which("ringkv")
    if found:
        return found
    raise FileNotFoundError("ringkv is not installed in this virtualenv (pip install -e .)")


def split_image(image: str) -> tuple[str, str]:
    """'registry/x/ringkv:1.2' -> ('ringkv', '1.2'); digests are dropped."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    name, _, tag = last.partition(":")
    return name, tag or "latest"


# image name -> (entrypoint resolver, env added). Unknown images run the container
# command from the host PATH (they must give a command).
IMAGE_ENTRYPOINTS: dict[str, Callable[[], list[str]]] = {
    "ringkv": lambda: [ringkv_executable()],
    "python": lambda: [sys.executable],
}


def resolve_argv(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    name, _ = split_image(container.get("image", ""))
    command = [expand(c, env) for c in container.get("command") or []]
    args = [expand(a, env) for a in container.get("args") or []]
    if command:
        head = command[0]
        if name == "ringkv" and head in ("ringkv", "/usr/local/bin/ringkv"):
            command[0] = ringkv_executable()
        elif re.fullmatch(r"(/usr(/local)?/bin/)?python(3(\.\d+)?)?", head):
            command[0] = sys.executable
        return command + args
    if name in IMAGE_ENTRYPOINTS:
        return IMAGE_ENTRYPOINTS[name]() + args
    if args:
        return args
    raise ValueError(f"image {container.get('image')!r} has no local entrypoint; give a command")


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion ($$ escapes; unknown references stay as they are)."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, s)


# ----------------------------------------------------------------- spawner
class Spawner:
    """Starts processes from one long-lived thread, so PR_SET_PDEATHSIG (which
    fires when the *thread* that forked exits) only fires when the kubelet stops."""

    def __init__(self) -> None:
        self._q: queue.Queue[Any] = queue.Queue()
        self._t = threading.Thread(target=self._loop, name="spawner", daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fut, args, kw = item
            try:
                fut.set_result(subprocess.Popen(*args, **kw))
            except BaseException as e:
                fut.set_exception(e)

    def popen(self, *args: Any, **kw: Any) -> subprocess.Popen[bytes]:
        fut: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        self._q.put((fut, args, kw))
        return fut.result()

    def stop(self) -> None:
        self._q.put(None)



def kill_group(p: subprocess.Popen[Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, sig)


# --------------------------------------------------------------- containers
@dataclass
class Ctr:
    spec: dict[str, Any]
    init: bool = False
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restart_count: int = 0
    last_term: dict[str, Any] | None = None
    term: dict[str, Any] | None = None  # current terminated state (not restarting)
    waiting_reason: str = "ContainerCreating"
    next_start: float = 0.0
    ready: bool = False
    started: bool = False  # startup probe passed
    start_mono: float = 0.0
    probe_next: dict[str, float] = field(default_factory=dict)
    probe_fail: dict[str, int] = field(default_factory=dict)
    probe_ok: dict[str, int] = field(default_factory=dict)
    done_ok: bool = False  # init container finished successfully

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class PodWorker:
    def __init__(self, kl: ProcessKubelet, pod: dict[str, Any]):
        self.kl = kl
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.ns: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]
        self.node: str = pod["spec"]["nodeName"]
        self.gone = False  # removed from the API
        self.wake = threading.Event()
        self.dir = kl.workdir / "pods" / f"{self.ns}_{self.name}_{self.uid[:8]}"
        self.netns = kl.netns_prefix + self.uid[:8]
        self.veth = "rkv" + self.uid[:8]
        self.ip = ""
        self.mounts: dict[str, list[dict[str, Any]]] = {}
        self.sandbox = False
        self.start_time = ""
        self.init_ctrs = [Ctr(c, init=True) for c in pod["spec"].get("initContainers") or []]
        self.ctrs = [Ctr(c) for c in pod["spec"]["containers"]]
        self.last_status: str = ""
        self.hosts_text = ""
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.ns}/{self.name}",
                                       daemon=True)

    # -- main loop ---------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self.kl.stopping.is_set():
                if self.kl.node_stopped(self.node):
                    self.wake.wait(1.0)
                    self.wake.clear()
                    continue
                if self.gone:
                    self._kill_all(0)
                    self._teardown()
                    return
                if self.pod["metadata"].get("deletionTimestamp"):
                    self._terminate()
                    return
                self._reconcile()
                self.wake.wait(0.5)
                self.wake.clear()
        except Exception:
            log(f"pod {self.ns}/{self.name}: worker crashed:\n{traceback.format_exc()}")
            self._kill_all(0)
            self._teardown()
        finally:
            self.kl.forget(self.uid)

    def _reconcile(self) -> None:
        if not self.sandbox:
            try:
                self._setup_sandbox()
            except NotReadyYet as e:
                self._publish(pending_reason=str(e))
                return
            self.sandbox = True
        policy = self.pod["spec"].get("restartPolicy", "Always")
        # Init containers, in order.
        for c in self.init_ctrs:
            if c.done_ok:
                continue
            if c.proc is None:
                if time.monotonic() >= c.next_start:
                    self._start(c)
            elif c.proc.poll() is not None:
                code = c.proc.returncode
                self._record_exit(c)
                if code == 0:
                    c.done_ok = True
                    continue
                if policy == "Never":
                    c.term = c.last_term
                else:
                    self._schedule_restart(c)
            break
        else:
            for c in self.ctrs:
                self._step_container(c, policy)
        self._publish()

    def _step_container(self, c: Ctr, policy: str) -> None:
        if c.proc is None:
            if c.term is None and time.monotonic() >= c.next_start:
                self._start(c)
            return
        if c.proc.poll() is not None:
            code = c.proc.returncode
            self._record_exit(c)
            if policy == "Always" or (policy == "OnFailure" and code != 0):
                self._schedule_restart(c)
            else:
                c.term = c.last_term
            return
        self._probes(c)

    def _record_exit(self, c: Ctr) -> None:
        assert c.proc is not None
        code = c.proc.returncode
        sig = -code if code < 0 else 0
        c.last_term = {"terminated": {
            "exitCode": 128 + sig if sig else code, "signal": sig or None,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.started_at, "finishedAt": now_rfc3339(),
            "containerID": f"localkube://{c.proc.pid}"}}
        if c.last_term["terminated"]["signal"] is None:
            del c.last_term["terminated"]["signal"]
        c.proc = None
        c.ready = False
        c.started = False
        c.probe_fail.clear()
        c.probe_ok.clear()

    def _schedule_restart(self, c: Ctr) -> None:
        # Kubelet back-off: 10s doubling to 5 min (scaled by the kubelet setting).
        base = self.kl.backoff_base
        delay = min(base * (2 ** min(c.restart_count, 10)), self.kl.backoff_max)
        c.next_start = time.monotonic() + delay
        c.restart_count += 1
        c.waiting_reason = "CrashLoopBackOff"

    # -- sandbox -----------------------------------------------------------
    def _setup_sandbox(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        self.mounts = self._prepare_volumes()
        if not self.ip:
            if self.pod["spec"].get("hostNetwork"):
                self.ip = self.kl.cluster.api_host
            else:
                self.ip = self.kl.alloc_ip(self.node, self.uid)
                self._setup_netns()
        self.start_time = self.start_time or now_rfc3339()

    def _setup_netns(self) -> None:
        net = self.kl.cluster.net
        assert net is not None
        ns, veth, peer = self.netns, self.veth, "rkp" + self.uid[:8]
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", peer])
        run(["ip", "link", "set", veth, "master", net.bridge, "up"])
        run(["ip", "link", "set", peer, "netns", ns])
        run(["ip", "-n", ns, "link", "set", peer, "name", "eth0"])
        run(["ip", "-n", ns, "addr", "add", f"{self.ip}/{net.net.prefixlen}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # /etc/netns/<ns>/hosts is bind-mounted over /etc/hosts by `ip netns exec`;
        # the kubelet's DNS stand-in keeps it current (see ProcessKubelet._dns_loop).
        etc = Path("/etc/netns") / ns
        etc.mkdir(parents=True, exist_ok=True)
        self.write_hosts(self.kl.dns_entries(self.ns))

    def own_names(self) -> list[str]:
        hostname = self.hostname()
        names = [hostname]
        sub = self.pod["spec"].get("subdomain")
        if sub:
            names = [f"{hostname}.{sub}.{self.ns}.svc.cluster.local", f"{hostname}.{sub}", *names]
        return names

    def write_hosts(self, entries: list[tuple[str, str]]) -> None:
        """Rewrite the pod's hosts file in place (same inode: the bind mounts see it)."""
        if not self.ip or self.pod["spec"].get("hostNetwork"):
            return
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 f"{self.ip}\t{' '.join(self.own_names())}"]
        own = set(self.own_names())
        lines += [f"{ip}\t{name}" for ip, name in entries if name not in own]
        text = "\n".join(lines) + "\n"
        f = Path("/etc/netns") / self.netns / "hosts"
        if self.hosts_text == text or not f.parent.exists():
            return
        with open(f, "r+" if f.exists() else "w") as fh:
            fh.seek(0)
            fh.write(text)
            fh.truncate()
        self.hosts_text = text

    def hostname(self) -> str:
        return str(self.pod["spec"].get("hostname") or self.name)[:63]

    def _prepare_volumes(self) -> dict[str, list[dict[str, Any]]]:
        """Volume name -> host source; returns per-container mount lists."""
        api = self.kl.api
        vols: dict[str, str] = {}
        vroot = self.dir / "volumes"
        for v in self.pod["spec"].get("volumes") or []:
            name = v["name"]
            d = vroot / name
            if "emptyDir" in v:
                d.mkdir(parents=True, exist_ok=True)
                vols[name] = str(d)
            elif "hostPath" in v:
                p = v["hostPath"]["path"]
                if v["hostPath"].get("type") in ("DirectoryOrCreate",):
                    Path(p).mkdir(parents=True, exist_ok=True)
                vols[name] = p
            elif "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                pvc = api.get_or_none(
                    f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims/{claim}")
                if not pvc or pvc.get("status", {}).get("phase") != "Bound":
                    raise NotReadyYet(f"PVC {claim} is not bound")
                pv = api.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
                hp = (pv["spec"].get("hostPath") or pv["spec"].get("local") or {}).get("path")
                if not hp:
                    raise RuntimeError(f"PV {pv['metadata']['name']} is not a hostPath/local PV")
                Path(hp).mkdir(parents=True, exist_ok=True)
                vols[name] = hp
            elif "configMap" in v or "secret" in v or "projected" in v or "downwardAPI" in v:
                d.mkdir(parents=True, exist_ok=True)
                self._write_projection(v, d)
                vols[name] = str(d)
            else:
                raise RuntimeError(f"volume {name}: unsupported source {sorted(v)}")
        out: dict[str, list[dict[str, Any]]] = {}
        for c in (self.pod["spec"].get("initContainers") or []) + self.pod["spec"]["containers"]:
            ms = []
            for m in c.get("volumeMounts") or []:
                src = vols[m["name"]]
                if m.get("subPath"):
                    src = os.path.join(src, m["subPath"])
                    os.makedirs(src, exist_ok=True)
                ms.append({"source": src, "target": m["mountPath"],
                           "readOnly": bool(m.get("readOnly"))})
                self._ensure_mountpoint(src, m["mountPath"])
            out[c["name"]] = ms
        return out

    def _ensure_mountpoint(self, src: str, target: str) -> None:
        """Create missing mount points on the host and remember them for removal."""
        t = Path(target)
        missing = []
        p = t if os.path.isdir(src) else t.parent
        while not p.exists():
            missing.append(p)
            p = p.parent
        # Mount points are shared by all pods (another pod may have one mounted in
        # its namespace), so they are removed only when the kubelet stops.
        for q in reversed(missing):
            q.mkdir(exist_ok=True)
            self.kl.note_created_path(str(q))
        if not os.path.isdir(src) and not t.exists():
            t.touch()
            self.kl.note_created_path(str(t))

    def _write_projection(self, v: dict[str, Any], d: Path) -> None:
        files: dict[str, bytes] = {}
        if "configMap" in v:
            files.update(self._cm_files(v["configMap"]))
        elif "secret" in v:
            files.update(self._secret_files(v["secret"]))
        elif "downwardAPI" in v:
            files.update(self._downward_files(v["downwardAPI"]))
        else:
            for src in v["projected"].get("sources") or []:
                if "serviceAccountToken" in src:
                    t = src["serviceAccountToken"]
                    files[t["path"]] = self._token(t).encode()
                elif "configMap" in src:
                    files.update(self._cm_files(src["configMap"]))
                elif "secret" in src:
                    files.update(self._secret_files(src["secret"]))
                elif "downwardAPI" in src:
                    files.update(self._downward_files(src["downwardAPI"]))
        for rel, data in files.items():
            f = d / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)

    @staticmethod
    def _select(data: dict[str, bytes], src: dict[str, Any]) -> dict[str, bytes]:
        items = src.get("items")
        if not items:
            return data
        return {i["path"]: data[i["key"]] for i in items if i["key"] in data}

    def _cm_files(self, src: dict[str, Any]) -> dict[str, bytes]:
        cm = self.kl.api.get_or_none(f"/api/v1/namespaces/{self.ns}/configmaps/{src['name']}")
        if cm is None:
            if src.get("optional"):
                return {}
            raise NotReadyYet(f"configmap {src['name']} not found")
        data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
        return self._select(data, src)

    def _secret_files(self, src: dict[str, Any]) -> dict[str, bytes]:
        name = src.get("secretName") or src.get("name")
        s = self.kl.api.get_or_none(f"/api/v1/namespaces/{self.ns}/secrets/{name}")
        if s is None:
            if src.get("optional"):
                return {}
            raise NotReadyYet(f"secret {name} not found")
        data = {k: base64.b64decode(v) for k, v in (s.get("data") or {}).items()}
        return self._select(data, src)

    def _downward_files(self, src: dict[str, Any]) -> dict[str, bytes]:
        out = {}
        for item in src.get("items") or []:
            if "fieldRef" in item:
                out[item["path"]] = self.field_ref(item["fieldRef"]["fieldPath"]).encode()
        return out

    def _token(self, t: dict[str, Any]) -> str:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        spec: dict[str, Any] = {
            "expirationSeconds": int(t.get("expirationSeconds") or 3607),
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                               "name": self.name, "uid": self.uid}}
        if t.get("audience"):
            spec["audiences"] = [t["audience"]]
        r = self.kl.api.create(
            f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        return str(r["status"]["token"])

    # -- env -----------------------------------------------------------------
    def field_ref(self, path: str) -> str:
        md, spec = self.pod["metadata"], self.pod["spec"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
        table = {
            "metadata.name": md["name"], "metadata.namespace": md["namespace"],
            "metadata.uid": md["uid"], "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "status.podIP": self.ip, "status.podIPs": self.ip,
            "status.hostIP": self.kl.cluster.api_host, "status.hostIPs": self.kl.cluster.api_host,
        }
        if path not in table:
            raise RuntimeError(f"fieldRef {path} is not supported")
        return str(table[path])

    def env_for(self, c: dict[str, Any]) -> dict[str, str]:
        api = self.kl.api
        cl = self.kl.cluster
        env: dict[str, str] = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                     os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")]),
            "HOSTNAME": self.hostname(),
            "HOME": "/root",
            "KUBERNETES_SERVICE_HOST": cl.api_host,
            "KUBERNETES_SERVICE_PORT": str(cl.api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(cl.api_port),
            "KUBERNETES_PORT": f"tcp://{cl.api_host}:{cl.api_port}",
            "KUBERNETES_PORT_443_TCP": f"tcp://{cl.api_host}:{cl.api_port}",
            "KUBERNETES_PORT_443_TCP_ADDR": cl.api_host,
            "KUBERNETES_PORT_443_TCP_PORT": str(cl.api_port),
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "PYTHONUNBUFFERED": "1",
        }
        name, tag = split_image(c.get("image", ""))
        if name == "ringkv":
            env["RINGKV_IMAGE_TAG"] = tag
            env["RINGKV_VERSION"] = tag
        for ef in c.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            if "configMapRef" in ef:
                ref = ef["configMapRef"]
                cm = api.get_or_none(f"/api/v1/namespaces/{self.ns}/configmaps/{ref['name']}")
                if cm is None and not ref.get("optional"):
                    raise NotReadyYet(f"configmap {ref['name']} not found")
                for k, v in ((cm or {}).get("data") or {}).items():
                    env[prefix + k] = v
            if "secretRef" in ef:
                ref = ef["secretRef"]
                s = api.get_or_none(f"/api/v1/namespaces/{self.ns}/secrets/{ref['name']}")
                if s is None and not ref.get("optional"):
                    raise NotReadyYet(f"secret {ref['name']} not found")
                for k, v in ((s or {}).get("data") or {}).items():
                    env[prefix + k] = base64.b64decode(v).decode()
        for e in c.get("env") or []:
            if "valueFrom" not in e:
                env[e["name"]] = expand(e.get("value", ""), env)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                env[e["name"]] = self.field_ref(vf["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in vf:
                ref = vf["configMapKeyRef"]
                cm = api.get_or_none(f"/api/v1/namespaces/{self.ns}/configmaps/{ref['name']}")
                val = ((cm or {}).get("data") or {}).get(ref["key"])
                if val is None:
                    if ref.get("optional"):
                        continue
                    raise NotReadyYet(f"configmap {ref['name']} key {ref['key']} not found")
                env[e["name"]] = val
            elif "secretKeyRef" in vf:
                ref = vf["secretKeyRef"]
                s = api.get_or_none(f"/api/v1/namespaces/{self.ns}/secrets/{ref['name']}")
                raw = ((s or {}).get("data") or {}).get(ref["key"])
                if raw is None:
                    if ref.get("optional"):
                        continue
                    raise NotReadyYet(f"secret {ref['name']} key {ref['key']} not found")
                env[e["name"]] = base64.b64decode(raw).decode()
            elif "resourceFieldRef" in vf:
                res = vf["resourceFieldRef"]["resource"]
                kind, _, what = res.partition(".")
                val = ((c.get("resources") or {}).get(kind) or {}).get(what)
                default = "8" if "cpu" in what else "17179869184"  # node capacity
                env[e["name"]] = str(val) if val is not None else default
        return env

    # -- processes -----------------------------------------------------------
    def _start(self, c: Ctr) -> None:
        try:
            env = self.env_for(c.spec)
            argv = resolve_argv(c.spec, env)
        except NotReadyYet as e:
            c.waiting_reason = "CreateContainerConfigError"
            log(f"pod {self.ns}/{self.name} container {c.name}: {e}")
            c.next_start = time.monotonic() + 1
            return
        spec = {"hostname": self.hostname(), "mounts": self.mounts.get(c.name, []),
                "workingDir": c.spec.get("workingDir") or "/", "argv": argv, "env": env}
        specf = self.dir / f"{c.name}.spec.json"
        specf.write_text(json.dumps(spec))
        helper = [sys.executable, str(HERE / "podexec.py"), str(specf)]
        cmd = helper if self.pod["spec"].get("hostNetwork") else [
            "ip", "netns", "exec", self.netns, *helper]
        logf = open(self.dir / "logs" / f"{c.name}.log", "ab")  # noqa: SIM115 - to Popen
        try:
            # No preexec_fn: forking with it in a threaded process can deadlock the
            # child; podexec.py sets PR_SET_PDEATHSIG itself (it is this child, after
            # `ip netns exec` execs it), tied to the spawner thread.
            c.proc = self.kl.spawner.popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            logf.close()
        c.started_at = now_rfc3339()
        c.start_mono = time.monotonic()
        c.term = None
        c.waiting_reason = ""
        (self.dir / f"{c.name}.pid").write_text(str(c.proc.pid))

    def _kill_all(self, grace: float) -> None:
        procs = [c.proc for c in self.init_ctrs + self.ctrs if c.proc and c.proc.poll() is None]
        for p in procs:
            kill_group(p, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        deadline = time.monotonic() + grace
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.poll() is None:
                kill_group(p, signal.SIGKILL)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                log(f"pod {self.ns}/{self.name}: pid {p.pid} survived SIGKILL")
            # Reap anything left in the group.
            kill_group(p, signal.SIGKILL)
        for c in self.init_ctrs + self.ctrs:
            if c.proc is not None:
                self._record_exit(c)
                c.term = c.last_term

    def _terminate(self) -> None:
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        self._kill_all(float(grace))
        self._teardown()
        if not self.gone:
            try:
                self.kl.api.delete(f"/api/v1/namespaces/{self.ns}/pods/{self.name}",
                                   {"apiVersion": "v1", "kind": "DeleteOptions",
                                    "gracePeriodSeconds": 0,
                                    "preconditions": {"uid": self.uid}})
            except ApiError as e:
                if e.status not in (404, 409):
                    raise

    def _teardown(self) -> None:
        if self.ip and not self.pod["spec"].get("hostNetwork"):
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
            subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / self.netns, ignore_errors=True)
            # Forget the pod's MAC: its address will be given to another pod.
            net = self.kl.cluster.net
            if net is not None:
                subprocess.run(["ip", "neigh", "del", self.ip, "dev", net.bridge],
                               capture_output=True)
        self.kl.free_ip(self.node, self.uid)

    def set_link(self, up: bool) -> None:
        if self.sandbox and not self.pod["spec"].get("hostNetwork"):
            subprocess.run(["ip", "link", "set", self.veth, "up" if up else "down"],
                           capture_output=True)

    # -- probes --------------------------------------------------------------
    def _probes(self, c: Ctr) -> None:
        now = time.monotonic()
        spec = c.spec
        if not c.started:
            sp = spec.get("startupProbe")
            if sp is None:
                c.started = True
            else:
                r = self._run_probe(c, "startup", sp, now)
                if r is True:
                    c.started = True
                elif r is False:
                    self._restart_unhealthy(c)
                    return
        if not c.started:
            return
        lp = spec.get("livenessProbe")
        if lp is not None and self._run_probe(c, "liveness", lp, now) is False:
            self._restart_unhealthy(c)
            return
        rp = spec.get("readinessProbe")
        if rp is None:
            c.ready = True
        else:
            r = self._run_probe(c, "readiness", rp, now)
            if r is not None:
                c.ready = r

    def _run_probe(self, c: Ctr, kind: str, p: dict[str, Any], now: float) -> bool | None:
        """Runs the probe if due; returns the new verdict past its thresholds, or None."""
        if now < c.start_mono + p.get("initialDelaySeconds", 0):
            return None
        if now < c.probe_next.get(kind, 0):
            return None
        c.probe_next[kind] = now + p.get("periodSeconds", 10)
        ok = self._probe_once(c, p)
        if ok:
            c.probe_fail[kind] = 0
            c.probe_ok[kind] = c.probe_ok.get(kind, 0) + 1
            if c.probe_ok[kind] >= p.get("successThreshold", 1):
                return True
        else:
            c.probe_ok[kind] = 0
            c.probe_fail[kind] = c.probe_fail.get(kind, 0) + 1
            if c.probe_fail[kind] >= p.get("failureThreshold", 3):
                return False
        return None

    def _port(self, c: Ctr, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise RuntimeError(f"named port {port} not found")

    def _probe_once(self, c: Ctr, p: dict[str, Any]) -> bool:
        timeout = p.get("timeoutSeconds", 1)
        try:
            if "httpGet" in p:
                h = p["httpGet"]
                host = h.get("host") or self.ip
                scheme = h.get("scheme", "HTTP").lower()
                url = f"{scheme}://{host}:{self._port(c, h['port'])}{h.get('path', '/')}"
                req = urllib.request.Request(url, headers={
                    x["name"]: x["value"] for x in h.get("httpHeaders") or []})
                ctx = None
                if scheme == "https":
                    ctx = ssl._create_unverified_context()
                try:
                    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
                        return bool(200 <= r.status < 400)
                except urllib.error.HTTPError as e:
                    return 200 <= e.code < 400
            if "tcpSocket" in p:
                t = p["tcpSocket"]
                with socket.create_connection((t.get("host") or self.ip,
                                               self._port(c, t["port"])), timeout=timeout):
                    return True
            if "exec" in p:
                assert c.proc is not None
                r = subprocess.run(["nsenter", "-t", str(c.proc.pid), "-m", "-n", "-u", "--",
                                    *p["exec"]["command"]], capture_output=True,
                                   timeout=timeout, env=self.env_for(c.spec))
                return r.returncode == 0
            if "grpc" in p:
                return c.running()  # not implemented: treat as passing while running
        except (OSError, subprocess.TimeoutExpired, ValueError):
            return False
        return False

    def _restart_unhealthy(self, c: Ctr) -> None:
        assert c.proc is not None
        grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        kill_group(c.proc, signal.SIGTERM)
        try:
            c.proc.wait(grace)
        except subprocess.TimeoutExpired:
            kill_group(c.proc, signal.SIGKILL)
            c.proc.wait(10)
        self._record_exit(c)
        policy = self.pod["spec"].get("restartPolicy", "Always")
        if policy == "Never":
            c.term = c.last_term
        else:
            self._schedule_restart(c)

    # -- status --------------------------------------------------------------
    def _ctr_status(self, c: Ctr) -> dict[str, Any]:
        st: dict[str, Any] = {
            "name": c.name, "image": c.spec.get("image", ""),
            "imageID": "localkube://" + split_image(c.spec.get("image", ""))[0],
            "ready": c.ready and c.running(), "restartCount": c.restart_count,
            "started": c.running() and c.started,
        }
        if c.running():
            assert c.proc is not None
            st["state"] = {"running": {"startedAt": c.started_at}}
            st["containerID"] = f"localkube://{c.proc.pid}"
        elif c.term is not None or (c.init and c.done_ok):
            st["state"] = c.term or c.last_term
            term = (c.term or c.last_term or {}).get("terminated", {})
            st["containerID"] = term.get("containerID", "")
        else:
            st["state"] = {"waiting": {"reason": c.waiting_reason or "ContainerCreating"}}
        if c.last_term and (c.running() or c.term is None) and not c.done_ok:
            st["lastState"] = c.last_term
        return st

    def _publish(self, pending_reason: str = "") -> None:
        ts = now_rfc3339()
        inits_ok = all(c.done_ok for c in self.init_ctrs)
        all_ready = inits_ok and all(c.ready and c.running() for c in self.ctrs)
        phase = "Pending"
        if self.sandbox and inits_ok:
            if any(c.running() for c in self.ctrs):
                phase = "Running"
            if self.ctrs and all(c.term is not None for c in self.ctrs):
                codes = [c.term["terminated"]["exitCode"] for c in self.ctrs if c.term]
                phase = "Succeeded" if all(x == 0 for x in codes) else "Failed"
            elif any(c.proc is None and c.restart_count for c in self.ctrs) and phase != "Running":
                phase = "Running"  # restarting after a crash: still Running, as kubelet reports
        if any(c.term is not None and not c.done_ok for c in self.init_ctrs):
            phase = "Failed"

        def cond(t: str, ok: bool, reason: str = "") -> dict[str, Any]:
            d: dict[str, Any] = {"type": t, "status": "True" if ok else "False",
                                 "lastProbeTime": None, "lastTransitionTime": ts}
            if reason and not ok:
                d["reason"] = reason
            return d

        conds = [
            cond("PodReadyToStartContainers", self.sandbox),
            cond("Initialized", inits_ok, "ContainersNotInitialized"),
            cond("Ready", all_ready, "ContainersNotReady"),
            cond("ContainersReady", all_ready, "ContainersNotReady"),
            cond("PodScheduled", True),
        ]
        status: dict[str, Any] = {
            "phase": phase, "conditions": conds, "hostIP": self.kl.cluster.api_host,
            "hostIPs": [{"ip": self.kl.cluster.api_host}],
            "containerStatuses": [self._ctr_status(c) for c in self.ctrs],
            "qosClass": (self.pod.get("status") or {}).get("qosClass", "BestEffort"),
        }
        if self.init_ctrs:
            status["initContainerStatuses"] = [self._ctr_status(c) for c in self.init_ctrs]
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        if self.start_time:
            status["startTime"] = self.start_time
        if pending_reason:
            status["message"] = pending_reason
        # Compare without timestamps to avoid rewriting an unchanged status.
        key = json.dumps(status, sort_keys=True)
        key = re.sub(r'"lastTransitionTime": "[^"]*"', "", key)
        if key == self.last_status:
            return
        old_conds = {c["type"]: c for c in (self.pod.get("status") or {}).get("conditions") or []}
        for c in conds:
            o = old_conds.get(c["type"])
            if o and o.get("status") == c["status"] and o.get("lastTransitionTime"):
                c["lastTransitionTime"] = o["lastTransitionTime"]
        try:
            new = self.kl.api.patch(f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status",
                                    {"status": status}, "merge")
            if new:
                self.pod = new
            self.last_status = key
        except ApiError as e:
            if e.status == 404:
                self.gone = True
            else:
                log(f"pod {self.ns}/{self.name}: status update failed: {e}")


class NotReadyYet(Exception):
    """A dependency (PVC binding, ConfigMap, Secret) is not there yet: retry."""


# ------------------------------------------------------------------- kubelet
class ProcessKubelet:
    def __init__(self, cluster: Cluster, backoff_base: float = 10.0, backoff_max: float = 300.0):
        if os.geteuid() != 0:
            raise PermissionError("the process kubelet needs root (netns, mounts)")
        if cluster.net is None:
            raise RuntimeError("the process kubelet needs the cluster's pod network")
        self.cluster = cluster
        self.api = KubeAPI(cluster.admin_creds())
        self.workdir = cluster.dir / "kubelet"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.node_names = {n.name for n in cluster.nodes}
        self.stopped_nodes: set[str] = set()
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.spawner = Spawner()
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._ips: dict[str, dict[str, str]] = {}  # node -> uid -> ip
        self._next_ip: dict[str, int] = {}  # node -> index of the next address to try
        self.netns_prefix = f"{NETNS_PREFIX}{cluster.net.bridge}-"
        self._created_paths: list[str] = []
        self._thread = threading.Thread(target=self._watch_loop, name="kubelet-watch", daemon=True)
        self._dns_thread = threading.Thread(target=self._dns_loop, name="kubelet-dns", daemon=True)
        self._dns: dict[str, list[tuple[str, str]]] = {}  # namespace -> (ip, name)
        self._dns_api = KubeAPI(cluster.admin_creds())
        self.servers: list[KubeletAPI] = []

    def start(self) -> ProcessKubelet:
        cleanup_stale_netns(self.netns_prefix, self.cluster.net.bridge)  # type: ignore[union-attr]
        self._thread.start()
        self._dns_thread.start()
        for n in self.cluster.nodes:
            if n.kubelet_port:
                self.servers.append(KubeletAPI(self, n.name, self.cluster.api_host, n.kubelet_port))
        return self

    def worker(self, ns: str, name: str) -> PodWorker | None:
        with self.lock:
            for w in self.workers.values():
                if w.ns == ns and w.name == name:
                    return w
        return None

    # -- DNS stand-in ----------------------------------------------------------
    def dns_entries(self, namespace: str) -> list[tuple[str, str]]:
        with self.lock:
            return list(self._dns.get(namespace, []))

    def _compute_dns(self) -> dict[str, list[tuple[str, str]]]:
        """What cluster DNS would answer, as hosts-file lines per pod namespace.

        * <hostname>.<subdomain>[.<ns>[.svc[.cluster.local]]] -> pod IP, for every pod
          with a subdomain and an IP (real DNS needs the headless Service too);
        * <svc>[.<ns>[.svc[.cluster.local]]] -> the ready endpoint IPs of a Service
          (headless or not: there is no kube-proxy, so a ClusterIP Service name
          resolves to its pods, and only works where port == targetPort).
        """
        api = self._dns_api
        pods = api.get("/api/v1/pods")["items"]
        slices = api.get("/apis/discovery.k8s.io/v1/endpointslices")["items"]
        svcs = {(s["metadata"]["namespace"], s["metadata"]["name"]): s
                for s in api.get("/api/v1/services")["items"]}
        glob: list[tuple[str, str, str]] = []  # (ns, ip, fqdn-ish name)
        local: list[tuple[str, str, str]] = []  # short names, for the same namespace only
        for p in pods:
            ip = (p.get("status") or {}).get("podIP")
            sub = p["spec"].get("subdomain")
            if not ip or not sub or p["metadata"].get("deletionTimestamp"):
                continue
            ns = p["metadata"]["namespace"]
            host = p["spec"].get("hostname") or p["metadata"]["name"]
            for suffix in (f".{ns}", f".{ns}.svc", f".{ns}.svc.cluster.local"):
                glob.append((ns, ip, f"{host}.{sub}{suffix}"))
            local.append((ns, ip, f"{host}.{sub}"))
        for sl in slices:
            ns = sl["metadata"]["namespace"]
            name = (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
            svc = svcs.get((ns, name or ""))
            if not svc:
                continue
            pub = svc["spec"].get("publishNotReadyAddresses", False)
            for ep in sl.get("endpoints") or []:
                if not (pub or (ep.get("conditions") or {}).get("ready", True)):
                    continue
                for ip in ep.get("addresses") or []:
                    for suffix in (f".{ns}", f".{ns}.svc", f".{ns}.svc.cluster.local"):
                        glob.append((ns, ip, f"{name}{suffix}"))
                    local.append((ns, ip, str(name)))
        out: dict[str, list[tuple[str, str]]] = {}
        namespaces = {p["metadata"]["namespace"] for p in pods}
        for ns in namespaces:
            entries = [(ip, n) for _, ip, n in glob]
            entries += [(ip, n) for lns, ip, n in local if lns == ns]
            out[ns] = sorted(set(entries))
        return out

    def _dns_loop(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                dns = self._compute_dns()
            except Exception as e:
                log(f"kubelet dns: {e}")
                continue
            with self.lock:
                self._dns = dns
                workers = list(self.workers.values())
            for w in workers:
                if w.sandbox:
                    with contextlib.suppress(OSError):
                        w.write_hosts(dns.get(w.ns, []))

    # -- IPs ---------------------------------------------------------------
    def alloc_ip(self, node: str, uid: str) -> str:
        spec = next(n for n in self.cluster.nodes if n.name == node)
        with self.lock:
            used = self._ips.setdefault(node, {})
            if uid in used:
                return used[uid]
            taken = set(used.values())
            hosts = [str(h) for h in ipaddress.IPv4Network(spec.pod_cidr).hosts()][1:]
            # Round robin, not lowest-free: an address freed a moment ago may still
            # sit in the host's neighbour (ARP) cache with the old pod's MAC, and
            # packets to a new pod reusing it would vanish for up to a minute.
            start = self._next_ip.get(node, 0)
            for i in range(len(hosts)):
                ip = hosts[(start + i) % len(hosts)]
                if ip not in taken:
                    used[uid] = ip
                    self._next_ip[node] = (start + i + 1) % len(hosts)
                    return ip
        raise RuntimeError(f"node {node}: pod CIDR exhausted")

    def free_ip(self, node: str, uid: str) -> None:
        with self.lock:
            self._ips.get(node, {}).pop(uid, None)

    # -- nodes ---------------------------------------------------------------
    def node_stopped(self, node: str) -> bool:
        return node in self.stopped_nodes

    def stop_node(self, node: str) -> None:
        """The node fails: no heartbeats, its pods unreachable, no pod changes acted on."""
        self.stopped_nodes.add(node)
        self.cluster.set_node_heartbeat(node, False)
        with self.lock:
            for w in self.workers.values():
                if w.node == node:
                    w.set_link(False)

    def start_node(self, node: str) -> None:
        self.stopped_nodes.discard(node)
        with self.lock:
            for w in list(self.workers.values()):
                if w.node == node:
                    # Pods deleted while the node was down are killed now, as a
                    # returning kubelet does.
                    cur = self.api.get_or_none(f"/api/v1/namespaces/{w.ns}/pods/{w.name}")
                    if cur is None or cur["metadata"]["uid"] != w.uid:
                        w.gone = True
                    else:
                        w.pod = cur
                    w.set_link(True)
                    w.last_status = ""
                    w.wake.set()
        self.cluster.set_node_heartbeat(node, True)

    # -- pods ----------------------------------------------------------------
    def note_created_path(self, path: str) -> None:
        with self.lock:
            if path not in self._created_paths:
                self._created_paths.append(path)
        if self.cluster.host_state is not None:
            self.cluster.host_state.add("paths", path)

    def _remove_created_paths(self) -> None:
        for p in reversed(self._created_paths):
            try:
                os.rmdir(p) if os.path.isdir(p) else os.unlink(p)
            except OSError as e:
                log(f"kubelet: could not remove mount point {p}: {e}")
        self._created_paths.clear()

    def forget(self, uid: str) -> None:
        with self.lock:
            self.workers.pop(uid, None)

    def _handle(self, etype: str, pod: dict[str, Any]) -> None:
        node = pod.get("spec", {}).get("nodeName")
        if node not in self.node_names:
            return
        uid = pod["metadata"]["uid"]
        with self.lock:
            w = self.workers.get(uid)
            if etype == "DELETED":
                if w is not None and not self.node_stopped(node):
                    w.gone = True
                    w.wake.set()
                return
            if w is None:
                phase = (pod.get("status") or {}).get("phase")
                deleting = pod["metadata"].get("deletionTimestamp")
                if phase in ("Succeeded", "Failed") and not deleting:
                    return  # finished before this kubelet started; a delete is still finished
                if self.stopping.is_set():
                    return
                w = self.workers[uid] = PodWorker(self, pod)
                w.thread.start()
            else:
                w.pod = pod
                w.wake.set()

    def _sync_list(self, pods: list[dict[str, Any]]) -> None:
        seen = set()
        for p in pods:
            seen.add(p["metadata"]["uid"])
            self._handle("MODIFIED", p)
        with self.lock:
            for uid, w in list(self.workers.items()):
                if uid not in seen:
                    w.gone = True
                    w.wake.set()

    def _watch_loop(self) -> None:
        rv = ""
        while not self.stopping.is_set():
            try:
                if not rv:
                    lst = self.api.get("/api/v1/pods")
                    self._sync_list(lst["items"])
                    rv = lst["metadata"]["resourceVersion"]
                for ev in self.api.watch("/api/v1/pods", rv, timeout_seconds=30,
                                         stop=self.stopping):
                    if ev["type"] == "ERROR":
                        rv = ""
                        break
                    obj = ev["object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if ev["type"] != "BOOKMARK":
                        self._handle(ev["type"], obj)
            except Exception as e:
                if not self.stopping.is_set():
                    log(f"kubelet watch: {e}")
                    time.sleep(1)
                rv = ""

    def stop(self) -> None:
        """Kill every pod process and remove every pod namespace (teardown)."""
        self.stopping.set()
        for srv in self.servers:
            srv.stop()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.wake.set()
        for w in workers:
            w.thread.join(timeout=5)
        for w in workers:
            w._kill_all(0)
            w._teardown()
        self.spawner.stop()
        cleanup_stale_netns(self.netns_prefix, self.cluster.net.bridge)  # type: ignore[union-attr]
        self._remove_created_paths()

    def exec(self, namespace: str, pod: str, cmd: list[str], container: str | None = None,
             input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run cmd in a running container's namespaces (mount, net, UTS) with its env:
        what ``kubectl exec`` does on a real cluster (which this kubelet cannot serve)."""
        w = self.worker(namespace, pod)
        if w is None:
            raise LookupError(f"pod {namespace}/{pod} is not running on this kubelet")
        c = next((c for c in w.ctrs if container in (None, c.name)), None)
        if c is None or c.proc is None or c.proc.poll() is not None:
            raise LookupError(f"container {container or '(first)'} of {namespace}/{pod} "
                              "is not running")
        env = w.env_for(c.spec)
        argv = [sys.executable if re.fullmatch(r"python(3(\.\d+)?)?", cmd[0]) else cmd[0],
                *cmd[1:]]
        return subprocess.run(["nsenter", "-t", str(c.proc.pid), "-m", "-n", "-u", "--",
                               *argv], env=env, input=input, capture_output=True, text=True,
                              timeout=timeout)

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        with self.lock:
            ws = [w for w in self.workers.values() if w.ns == namespace and w.name == pod]
        if not ws:
            return ""
        w = ws[0]
        name = container or w.ctrs[0].name
        f = w.dir / "logs" / f"{name}.log"
        return f.read_text(errors="replace") if f.exists() else ""


class KubeletAPI(http.server.ThreadingHTTPServer):
    """The part of the kubelet API that needs no container runtime: container logs
    (``kubectl logs [-f] [--tail N]``) and health. exec/attach/port-forward answer 501."""

    daemon_threads = True

    def __init__(self, kl: ProcessKubelet, node: str, host: str, port: int):
        self.kl = kl
        self.node = node
        super().__init__((host, port), _KubeletHandler)
        pki = kl.cluster.pki
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki / "kubelet.crt"), str(pki / "kubelet.key"))
        ctx.load_verify_locations(str(pki / "ca.crt"))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self.socket = ctx.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, name=f"kubelet-api-{node}",
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _KubeletHandler(http.server.BaseHTTPRequestHandler):
    server: KubeletAPI
    protocol_version = "HTTP/1.1"

    def log_message(self, *a: Any) -> None:
        pass

    def _plain(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        parts = [x for x in u.path.split("/") if x]
        if parts in (["healthz"], ["readyz"], ["livez"]):
            return self._plain(200, "ok")
        if len(parts) == 4 and parts[0] == "containerLogs":
            return self._logs(parts[1], parts[2], parts[3], q)
        return self._plain(501, f"localkube process kubelet: {u.path} is not implemented\n")

    do_POST = do_GET  # exec/attach/portforward: 501

    def _logs(self, ns: str, pod: str, container: str, q: dict[str, str]) -> None:
        kl = self.server.kl
        w = kl.worker(ns, pod)
        if w is None or w.node != self.server.node:
            return self._plain(404, f"pod {ns}/{pod} not found on {self.server.node}\n")
        f = w.dir / "logs" / f"{container}.log"
        if not f.exists():
            return self._plain(404, f"container {container} has no logs\n")
        data = f.read_bytes()
        tail = q.get("tailLines")
        if tail is not None and tail.lstrip("-").isdigit() and int(tail) >= 0:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[len(lines) - int(tail):]) if int(tail) else b""
        if q.get("follow") != "true":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(b: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
            self.wfile.flush()

        try:
            if data:
                chunk(data)
            pos = f.stat().st_size
            while not kl.stopping.is_set() and kl.worker(ns, pod) is w:
                size = f.stat().st_size if f.exists() else pos
                if size > pos:
                    with open(f, "rb") as fh:
                        fh.seek(pos)
                        new = fh.read(size - pos)
                    pos = size
                    chunk(new)
                else:
                    time.sleep(0.3)
            chunk(b"")
        except OSError:
            pass


def cleanup_stale_netns(prefix: str, bridge: str) -> None:
    """Remove pod namespaces (and their processes) left by a cluster on this bridge."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(prefix):
            # Kill whatever still lives in it, then delete it.
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                  text=True).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
    links = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True,
                           text=True).stdout
    for m in re.finditer(r"^\d+: (rkv[0-9a-f]{8})[@:]", links, re.M):
        subprocess.run(["ip", "link", "del", m.group(1)], capture_output=True)
    with contextlib.suppress(OSError):
        os.rmdir("/etc/netns")  # only when empty


def attach_kubelet(cluster: Cluster, **kw: Any) -> ProcessKubelet:
    kl = ProcessKubelet(cluster, **kw).start()
    cluster.teardown_hooks.append(kl.stop)
    cluster.kubelet = kl  # type: ignore[attr-defined]
    return kl

