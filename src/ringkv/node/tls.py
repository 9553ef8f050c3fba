"""TLS: optional encryption for the client API and the peer port, with certificate reload.

One certificate and key (``--tls-cert-file``/``--tls-key-file``) serve both ports. With
``--tls-ca-file`` peers also verify each other against that CA (mutual TLS, on top of the
HMAC handshake), and a node checks that the certificate of the peer it dials carries the name it
dialled (the host of the peer's advertised address: its pod DNS name under Kubernetes, so peer
certificates need ``*.NAME-peers.NAMESPACE.svc.cluster.local`` -- or IP addresses, when nodes
advertise IPs). Certificates are re-read when their files change (checked every few
seconds), so a renewed Kubernetes Secret takes effect on new connections without a restart:
the certificate and key on both ports (the peer port's own context included), and the CA
bundle each side verifies peers with. A reloaded bundle adds its CAs to the trusted ones (an
OpenSSL context cannot forget a CA): rotating to a new CA works by publishing a bundle of the
old and the new CA first, then certificates from the new CA; the old CA stops being trusted at
the next restart of each node. Established connections keep the certificate they started with.
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
            self.client.verify_mode = ssl.CERT_REQUIRED  # the bundle is loaded by load()
            self.client.check_hostname = True  # the name (or IP) we dialled must be certified
        else:
            self.client.check_hostname = False
            self.client.verify_mode = ssl.CERT_NONE  # encryption only; the HMAC proves peers
        self._stamp: tuple[tuple[int, int, int], ...] = ()
        self.load()

    def _files(self) -> list[str]:
        return [f for f in (self.cert_file, self.key_file, self.ca_file) if f]

    def _read_stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What identifies the files' contents: a Kubernetes Secret update swaps a symlink to
        new files (new inode), a copy over them changes their time or size."""
        out = []
        for f in self._files():
            st = os.stat(f)
            out.append((st.st_mtime_ns, st.st_ino, st.st_size))
        return tuple(out)

    def load(self) -> None:
        """(Re)load the certificate and key into every context, and the CA bundle into the
        contexts that verify peers. A failure (a key that does not match the certificate,
        the Secret half-written) leaves the last good state and is retried."""
        stamp = self._read_stamp()
        # Checked on a scratch context first: OpenSSL drops a context's certificate when the
        # key loaded after it does not match, which would fail every later handshake.
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        probe.load_cert_chain(self.cert_file, self.key_file)
        if self.ca_file:
            probe.load_verify_locations(self.ca_file)
        contexts = [self.server, self.client]
        peer = getattr(self, "_peer_server", None)
        if peer is not None:
            contexts.append(peer)
        for context in contexts:
            context.load_cert_chain(self.cert_file, self.key_file)
        if self.ca_file:
            self.client.load_verify_locations(self.ca_file)
            if peer is not None:
                peer.load_verify_locations(self.ca_file)
        self._stamp = stamp

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
                if self._read_stamp() != self._stamp:
                    self.load()
                    log.info("reloaded TLS certificate %s and CA bundle %s", self.cert_file,
                             self.ca_file or "(none)")  # fmt: skip
            except (OSError, ssl.SSLError) as exc:
                log.error("TLS certificate reload failed (keeping the old one): %s", exc)
