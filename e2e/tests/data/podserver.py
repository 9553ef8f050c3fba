"""Test workload for the harness self-tests (runs inside a localkube pod).

GET /healthz          200
GET /info             this pod's identity, env, hostname and volume marker
GET /peer?ip=X        /info of the pod at X, fetched over the pod network
GET /api              reads its own Pod through in-cluster config (SA token + ca.crt)
"""
import json
import os
import socket
import ssl
import sys
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATA = os.environ.get("DATA_DIR", "/data")
SA = "/var/run/secrets/kubernetes.io/serviceaccount"
marker = os.path.join(DATA, "marker")
if os.path.isdir(DATA) and not os.path.exists(marker):
    with open(marker, "w") as f:
        f.write(uuid.uuid4().hex)


def read(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read()


def info():
    m = read(marker)
    return {"hostname": socket.gethostname(), "marker": m, "pid": os.getpid(),
            "env": {k: os.environ.get(k) for k in (
                "POD_NAME", "POD_NAMESPACE", "POD_IP", "NODE_NAME", "FROM_CM", "FROM_SECRET",
                "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "GREETING")},
            "config": read("/etc/podcfg/greeting")}


def in_cluster_get(path):
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    token = read(f"{SA}/token")
    ctx = ssl.create_default_context(cafile=f"{SA}/ca.crt")
    req = urllib.request.Request(f"https://{host}:{port}{path}",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
        return json.load(r)


class H(BaseHTTPRequestHandler):
    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        try:
            if u.path == "/healthz":
                return self._send(200, {"ok": True})
            if u.path == "/info":
                return self._send(200, info())
            if u.path == "/peer":
                with urllib.request.urlopen(f"http://{q['ip']}:8080/info", timeout=3) as r:
                    return self._send(200, json.load(r))
            if u.path == "/resolve":
                name, _aliases, ips = socket.gethostbyname_ex(q["name"])
                return self._send(200, {"name": name, "ips": sorted(ips)})
            if u.path == "/api":
                ns = read(f"{SA}/namespace")
                pod = in_cluster_get(f"/api/v1/namespaces/{ns}/pods/{os.environ['POD_NAME']}")
                return self._send(200, {"name": pod["metadata"]["name"],
                                        "podIP": pod["status"].get("podIP")})
            self._send(404, {"path": u.path})
        except Exception as e:
            self._send(500, {"error": repr(e)})

    def log_message(self, *a):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    srv = ThreadingHTTPServer(("0.0.0.0", port), H)
    print(f"podserver listening on {port} as {socket.gethostname()}", flush=True)
    srv.serve_forever()
