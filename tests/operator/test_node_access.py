"""The operator's node client (``reconciler.NodeHttp``) against a real node configured as the
operator configures pods: two tokens files (the users' and the operator's), the cluster secret,
and TLS from a certificate signed by a CA. No Kubernetes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ringkv.operator import builders, credentials, reconciler
from tests.cluster import Cluster, wait_until
from tests.node.test_security import _make_cert

pytestmark = pytest.mark.slow

OPERATOR = "operator-token-0123456789abcdef"
USER = "user-token-0123456789abcdef"


def test_operator_reaches_a_secured_tls_node_with_its_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    ca = _make_cert(tmp_path, "ca")
    key, cert = _make_cert(tmp_path, "node", ca)
    other_ca = _make_cert(tmp_path, "other-ca")
    users = tmp_path / "users.json"
    users.write_text(builders.tokens_document(USER, "readwrite", "app"))
    ops = tmp_path / "operator.json"
    ops.write_text(builders.tokens_document(OPERATOR, "admin", "ringkv-operator"))
    secret = tmp_path / "cluster-secret"
    secret.write_text(credentials.new_secret())
    cluster = Cluster(tmp_path / "c", nodes=1, zones=1, replication_factor=1, extra_args=[
        "--auth-tokens-file", f"{users},{ops}", "--cluster-secret-file", str(secret),
        "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-file", str(ca[1]),
    ])  # fmt: skip
    node = cluster.nodes[0]
    url = f"https://127.0.0.1:{node.port}"
    context = credentials.tls_context(ca[1].read_bytes())
    ours = reconciler.NodeHttp(access=credentials.NodeAccess(OPERATOR, context))
    # $RINGKV_TOKEN is the CLI's; the operator never falls back to it
    monkeypatch.setenv("RINGKV_TOKEN", OPERATOR)
    try:
        node.start()
        view = wait_until(lambda: ours.ring_view([url]), 30, message="the node over https")
        assert view is not None
        assert view.members["n1"].state == "normal" and view.members["n1"].alive
        requests, stored = ours.load([url])
        assert requests is not None and stored is not None  # /metrics answered and parsed
        # no token, a wrong token, a certificate from another CA: refused
        no_token = ours.using(credentials.NodeAccess(None, context))
        assert no_token.ring_view([url]) is None and no_token.load([url]) == (None, None)
        wrong = ours.using(credentials.NodeAccess("wrong-token-0123456789abcdef", context))
        assert wrong.ring_view([url]) is None
        untrusted = credentials.tls_context(other_ca[1].read_bytes())
        assert ours.using(credentials.NodeAccess(OPERATOR, untrusted)).ring_view([url]) is None
        # plain HTTP to a TLS node fails; the CA-less context (encryption only) works
        assert ours.ring_view([f"http://127.0.0.1:{node.port}"]) is None
        unverified = ours.using(credentials.NodeAccess(OPERATOR, credentials.tls_context(None)))
        assert unverified.ring_view([url]) is not None
        for line in node.log_path.read_text().splitlines():
            assert OPERATOR not in line and USER not in line
    finally:
        cluster.stop()
