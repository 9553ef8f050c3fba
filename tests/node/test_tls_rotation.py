"""Certificate rotation on a running TLS cluster (real processes, mutual TLS between peers),
under a quorum workload that must see no failed request:

1. the same CA: a renewed certificate and key replace the files (as a Kubernetes Secret update
   does: new files swapped in); both ports serve the new certificate;
2. a new CA with an overlap: the CA bundle first holds the old and the new CA, then every
   node gets a certificate from the new CA; a node restarted then (new connections only, all
   with new-CA certificates both ways) joins its peers, which must have reloaded the bundle.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from ringkv.client import Client, RingkvError
from tests.cluster import Cluster, wait_until
from tests.node.test_tls_names import make_ca, make_cert

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _swap_in(target: Path, source: Path) -> None:
    """Replace ``target`` by a copy of ``source`` atomically (a rename), as the kubelet does."""
    tmp = target.with_suffix(target.suffix + ".new")
    shutil.copy(source, tmp)
    os.replace(tmp, target)


def _served(port: int, trust: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.getpeercert(binary_form=True) or b""


def _pem_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


class Workload:
    """Quorum writes and reads through the given endpoints, in a thread, bounded in count and
    time; every failure is recorded."""

    def __init__(self, urls: list[str], context: ssl.SSLContext) -> None:
        self.client = Client(urls, timeout=10, ssl_context=context)
        self.failures: list[str] = []
        self.acked: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        i = 0
        while not self._stop.is_set() and time.monotonic() < deadline and i < 50_000:
            key, value = f"k{i % 200}", str(i).encode()
            try:
                self.client.put(key, value, w="quorum")
                self.acked[key] = value
                got = self.client.get(key, r="quorum")
                if value not in got.siblings:
                    self.failures.append(f"{key}: read {got} after writing {value!r}")
            except (RingkvError, OSError) as exc:
                self.failures.append(f"{key}: {exc}")
            i += 1
            self._stop.wait(0.005)

    def __enter__(self) -> Workload:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.close()


def test_certificates_and_ca_rotate_without_a_failed_request(make_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    old_dir, new_dir, live = tmp_path / "ca-old", tmp_path / "ca-new", tmp_path / "tls"
    for d in (old_dir, new_dir, live):
        d.mkdir()
    old_ca, new_ca = make_ca(old_dir), make_ca(new_dir)
    key, cert = make_cert(old_dir, "node", "IP:127.0.0.1", old_ca)
    for name, source in (("tls.key", key), ("tls.crt", cert), ("ca.crt", old_ca[1])):
        shutil.copy(source, live / name)
    cluster: Cluster = make_cluster(nodes=3, zones=3, start=False, extra_args=[
        "--tls-cert-file", str(live / "tls.crt"), "--tls-key-file", str(live / "tls.key"),
        "--tls-ca-file", str(live / "ca.crt"),
    ])  # fmt: skip
    for node in cluster.nodes:
        node.start()
    trust = ssl.create_default_context(cafile=str(old_ca[1]))  # what the clients trust
    https = [f"https://127.0.0.1:{n.port}" for n in cluster.nodes]

    def ready(i: int) -> bool:
        try:
            with Client(https[i], timeout=3, ssl_context=trust) as c:
                return bool(c.status()["node"]["ready"])
        except (RingkvError, OSError):
            return False

    for i in range(3):
        wait_until(lambda i=i: ready(i), 60, message=f"n{i + 1} ready over TLS")

    def peer_trust(client_cert: tuple[Path, Path]) -> ssl.SSLContext:
        """A client of the peer port (it requires a certificate from the cluster's CA)."""
        ctx = ssl.create_default_context(cafile=str(old_ca[1]))
        ctx.load_verify_locations(str(new_ca[1]))
        ctx.load_cert_chain(str(client_cert[1]), str(client_cert[0]))
        return ctx

    with Workload(https[:2], trust) as load:
        # 1. same CA, renewed certificate
        key2, cert2 = make_cert(old_dir, "renewed", "IP:127.0.0.1", old_ca)
        _swap_in(live / "tls.key", key2)
        _swap_in(live / "tls.crt", cert2)
        renewed = _pem_der(cert2)
        peer_old = peer_trust((key2, cert2))
        for n in cluster.nodes:
            wait_until(lambda n=n: _served(n.port, trust) == renewed, 30,
                       message=f"{n.node_id} serves the renewed certificate")  # fmt: skip
            wait_until(lambda n=n: _served(n.peer_port, peer_old) == renewed, 30,
                       message=f"{n.node_id} peer port serves it")  # fmt: skip

        # 2. a new CA: the bundle first (clients and nodes trust both), then new certificates
        bundle = tmp_path / "bundle.crt"
        bundle.write_text(old_ca[1].read_text() + new_ca[1].read_text())
        trust.load_verify_locations(str(new_ca[1]))
        _swap_in(live / "ca.crt", bundle)
        key3, cert3 = make_cert(new_dir, "node-new-ca", "IP:127.0.0.1", new_ca)
        peer_new = peer_trust((key3, cert3))
        for n in cluster.nodes:  # each node's peer port now accepts a new-CA client
            wait_until(lambda n=n: _accepts(n.peer_port, peer_new), 30,
                       message=f"{n.node_id} trusts the new CA")  # fmt: skip
        _swap_in(live / "tls.key", key3)
        _swap_in(live / "tls.crt", cert3)
        rotated = _pem_der(cert3)
        for n in cluster.nodes:
            wait_until(lambda n=n: _served(n.port, trust) == rotated, 30,
                       message=f"{n.node_id} serves the new-CA certificate")  # fmt: skip
            wait_until(lambda n=n: _served(n.peer_port, peer_new) == rotated, 30,
                       message=f"{n.node_id} peer port serves it")  # fmt: skip
        # a node restarted now dials and is dialled with new-CA certificates only
        cluster.node(2).terminate()
        cluster.node(2).start()
        wait_until(lambda: ready(2), 60, message="n3 back over TLS with the new CA")

        def all_alive() -> bool:  # n3 ready is not yet n1 hearing from it again
            try:
                for url in https:
                    with Client(url, timeout=3, ssl_context=trust) as c:
                        if not all(m["alive"] for m in c.status()["members"]):
                            return False
            except (RingkvError, OSError):
                return False
            return True

        wait_until(all_alive, 30, message="every node sees every node alive again")
        with Client(https[0], timeout=10, ssl_context=trust) as c:
            c.put("after-rotation", b"ok", w="all")
        wait_until(lambda: len(load.acked) >= 50, 30, message="workload ran")
    assert load.failures == [], load.failures[:5]
    with Client(https, timeout=10, ssl_context=trust) as c:
        assert c.get("after-rotation", r="all").value == b"ok"
        for k, v in load.acked.items():
            assert v in c.get(k, r="all").siblings, k  # (context-free writes: siblings)


def _accepts(port: int, context: ssl.SSLContext) -> bool:
    """Whether the peer port accepts our client certificate. With TLS 1.3 the server judges it
    after our side of the handshake is done: a refusal arrives as an alert on the first read;
    an accepted connection just waits for our first frame."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.settimeout(1.0)
        try:
            tls.recv(1)
        except TimeoutError:
            return True
        except (ssl.SSLError, ConnectionError):
            return False
        return False  # closed at once: refused
