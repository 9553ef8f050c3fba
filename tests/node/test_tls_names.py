"""TLS between peers checks names: a node dialling a peer accepts only a certificate, from the
cluster's CA, that carries the name (or IP address) it dialled."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ringkv.node.messaging import MessagingService, PeerNotReached
from ringkv.node.tls import TlsConfig
from tests.node.conftest import Run


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def make_ca(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "ca.key", directory / "ca.crt"
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=ringkv-test-ca")  # fmt: skip
    return key, cert


def make_cert(directory: Path, name: str, san: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, cert, csr = (directory / f"{name}.{ext}" for ext in ("key", "crt", "csr"))
    ext = directory / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n")
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
         str(csr), "-subj", f"/CN={name}")  # fmt: skip
    _run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
         "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(ext))  # fmt: skip
    return key, cert


async def _answer(verb: str, body: Any) -> Any:
    return {"ok": body}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("tls-names")
    ca = make_ca(directory)
    return {
        "ca": ca,
        # the callee is certified for a DNS name only, as a pod behind the headless Service
        "callee": make_cert(directory, "callee", "DNS:localhost", ca),
        "caller": make_cert(directory, "caller", "DNS:caller.example", ca),
    }


def test_a_peer_is_verified_by_the_name_dialled(run: Run, certs: dict[str, Any]) -> None:
    ca = str(certs["ca"][1])
    callee_tls = TlsConfig(str(certs["callee"][1]), str(certs["callee"][0]), ca)
    caller_tls = TlsConfig(str(certs["caller"][1]), str(certs["caller"][0]), ca)
    assert caller_tls.client.check_hostname

    async def main() -> None:
        callee = MessagingService("callee", "127.0.0.1", 0, _answer,
                                  server_ssl=callee_tls.peer_server_context())  # fmt: skip
        await callee.start()
        assert callee._server is not None
        port = callee._server.sockets[0].getsockname()[1]
        caller = MessagingService("caller", "127.0.0.1", 0, _answer,
                                  client_ssl=caller_tls.client)  # fmt: skip
        try:
            # the name on the certificate: served
            answer = await caller.request(f"localhost:{port}", "echo", "hi", 5.0)
            assert answer == {"ok": "hi"}
            # the right CA, but not the name dialled: refused before anything is sent
            with pytest.raises(PeerNotReached, match=r"(?i)certificate|hostname|match"):
                await caller.request(f"127.0.0.1:{port}", "echo", "hi", 5.0)
        finally:
            await caller.stop()
            await callee.stop()

    run(asyncio.wait_for(main(), 20))
