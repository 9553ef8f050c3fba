"""TLS: optional encryption for the client API and the peer port, with certificate reload.

One certificate and key (``--tls-cert-file``/``--tls-key-file``) serve both ports. With
``--tls-ca-file`` peers also verify each other against that CA (mutual TLS, on top of the
HMAC handshake), and a node checks that the certificate of the peer it dials carries the name it
dialled (the host of the peer's advertised address: its pod DNS name under Kubernetes, so peer
certificates need ``*.NAME-peers.NAMESPACE.svc.cluster.local`` -- or IP addresses, when nodes
advertise IPs). Certificates are re-read when their files change (checked every few
seconds), so a renewed Kubernetes Secret takes effect on new connections without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl

log = logging.getLogger(__name__)


class TlsConfig:
    def __init__(self, cert_file: str, key_file: str, ca_file: str = "") -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.ca_file = ca_file
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.minimum_version = ssl.TLSVersion.TLSv1_2
        self.client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client.minimum_version = ssl.TLSVersion.TLSv1_2
        if ca_file:
            self.client.load_verify_locations(ca_file)
            self.client.verify_mode = ssl.CERT_REQUIRED
            self.client.check_hostname = True  # the name (or IP) we dialled must be certified
        else:
            self.client.check_hostname = False
            self.client.verify_mode = ssl.CERT_NONE  # encryption only; the HMAC proves peers
        self._stamp: tuple[float, ...] = ()
        self.load()

    def _files(self) -> list[str]:
        return [f for f in (self.cert_file, self.key_file, self.ca_file) if f]

    def load(self) -> None:
        self.server.load_cert_chain(self.cert_file, self.key_file)
        self.client.load_cert_chain(self.cert_file, self.key_file)  # our client certificate
        self._stamp = tuple(os.stat(f).st_mtime for f in self._files())

    def peer_server_context(self) -> ssl.SSLContext:
        """The peer port's context: with a CA, peers must present a certificate from it."""
        if self.ca_file and self.server.verify_mode != ssl.CERT_REQUIRED:
            peer = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            peer.minimum_version = ssl.TLSVersion.TLSv1_2
            peer.load_cert_chain(self.cert_file, self.key_file)
            peer.load_verify_locations(self.ca_file)
            peer.verify_mode = ssl.CERT_REQUIRED
            self._peer_server = peer
            return peer
        return self.server

    async def watch(self, interval: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                stamp = tuple(os.stat(f).st_mtime for f in self._files())
                if stamp != self._stamp:
                    self.load()
                    peer = getattr(self, "_peer_server", None)
                    if peer is not None:
                        peer.load_cert_chain(self.cert_file, self.key_file)
                    log.info("reloaded TLS certificate %s", self.cert_file)
            except (OSError, ssl.SSLError) as exc:
                log.error("TLS certificate reload failed (keeping the old one): %s", exc)
