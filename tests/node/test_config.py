"""`ringkv node` flags: one table (``ringkv.node.config.SETTINGS``) drives the parser, the
``RINGKV_*`` variables and the range checks, with the messages users see."""

from __future__ import annotations

import dataclasses

import pytest

from ringkv.core.expiry import MAX_TTL_SECONDS
from ringkv.node.config import (
    MAX_CACHE_MAX_AGE,
    SETTINGS,
    NodeConfig,
    Setting,
    build_parser,
    parse_args,
)

OPEN = ["--no-auth", "true", "--no-peer-auth", "true"]
BASE = ["--node-id", "n1", *OPEN]


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def a_valid_other_value(s: Setting) -> str:
    """A value of the flag other than its default, within its range."""
    if s.choices:
        return next(c for c in s.choices if c != s.parse(str(s.default).lower()))
    if s.kind in ("int", "float"):
        hi = s.high if s.high is not None else (s.default or 1) * 4
        value = (s.default + hi) / 2 if s.default is not None else 9000
        if s.name in ("port", "peer_port"):
            value = {"port": 7301, "peer_port": 8301}[s.name]
        return str(int(value)) if s.kind == "int" else str(value)
    if s.kind == "list":
        return "h1:1,h2:2"
    if s.name == "auth_tokens_file":
        return "/tokens.json"
    return {"node_id": "n7", "zone": "z9", "peer_advertise": "p:9"}.get(s.name, "x-" + s.name)


def test_the_table_is_the_dataclass() -> None:
    """Every field of NodeConfig is a flag, with its type, and nothing else is."""
    fields = dataclasses.fields(NodeConfig)
    assert [f.name for f in fields] == [s.name for s in SETTINGS.values()]
    assert len(SETTINGS) >= 45
    for s in SETTINGS.values():
        assert s.flag == s.name.replace("_", "-") and s.env == "RINGKV_" + s.name.upper()
        assert s.help, f"--{s.flag} has no help"
        if s.choices and s.kind != "bool":
            assert s.default in s.choices
        if not s.required:
            assert s.problem(s.default) is None, s.flag  # defaults are within their range


def test_defaults_are_the_tables() -> None:
    config = parse_args(BASE)
    for s in SETTINGS.values():
        if s.name in ("node_id", "no_auth", "no_peer_auth"):
            continue
        assert getattr(config, s.name) == s.default, s.flag
    assert config.peer_port == config.port + 1000
    assert parse_args([*BASE, "--port", "7100"]).peer_port == 8100


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for s in SETTINGS.values():
        assert f"--{s.flag}" in out
    listed = {a.dest for a in build_parser()._actions if a.dest != "help"}
    assert listed == {s.name for s in SETTINGS.values()}


# What a flag needs beside it to make a valid configuration.
COMPANIONS = {
    "node_id": OPEN,
    "auth_tokens_file": ["--node-id", "n1", "--no-peer-auth", "true"],
    "no_auth": ["--node-id", "n1", "--no-peer-auth", "true", "--auth-tokens-file", ""],
    "cluster_secret_file": ["--node-id", "n1", "--no-auth", "true"],
    "no_peer_auth": ["--node-id", "n1", "--no-auth", "true", "--cluster-secret-file", ""],
    "tls_cert_file": [*BASE, "--tls-key-file", "k.pem"],
    "tls_key_file": [*BASE, "--tls-cert-file", "c.pem"],
    "tls_ca_file": [*BASE, "--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"],
}


@pytest.mark.parametrize("flag", list(SETTINGS))
def test_each_flag_and_its_variable(flag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every flag is read from its RINGKV_* variable, and the command line wins."""
    s = SETTINGS[flag]
    base = COMPANIONS.get(s.name, BASE)
    text = "true" if s.name in ("no_auth", "no_peer_auth") else a_valid_other_value(s)
    expected = s.parse(text)
    assert getattr(parse_args([*base, f"--{flag}", text]), s.name) == expected
    monkeypatch.setenv(s.env, text)
    assert getattr(parse_args(base), s.name) == expected
    if not s.required and s.name not in COMPANIONS:
        assert getattr(parse_args([*base, f"--{flag}", _text(s)]), s.name) == s.default


def _text(s: Setting) -> str:
    if s.kind == "bool":
        return "true" if s.default else "false"
    if s.kind == "list":
        return ",".join(s.default)
    return str(s.default)


# The messages users see for bad values (as documented and as they have always read).
BAD = [
    (["--replication-factor", "0"], "--replication-factor must be between 1 and 15"),
    (["--replication-factor", "16"], "--replication-factor must be between 1 and 15"),
    (["--vnodes", "5000"], "--vnodes must be between 1 and 4096"),
    (["--max-value-bytes", "0"], "--max-value-bytes must be between 1 and 64 MiB"),
    (["--request-timeout", "0"], "--request-timeout must be positive"),
    (["--stream-rate", "0"], "--stream-rate must be positive"),
    (["--cleanup-rate", "-1"], "--cleanup-rate must be positive"),
    (["--max-clock-skew", "0"], "--max-clock-skew must be positive"),
    (["--max-client-connections", "0"], "--max-client-connections must be positive"),
    (["--read-repair-chance", "1.5"], "--read-repair-chance must be between 0 and 1"),
    (["--speculative-read-delay", "0"], "--speculative-read-delay must be positive"),
    (["--cache-max-age", str(MAX_CACHE_MAX_AGE + 1)],
     f"--cache-max-age must be between 0 and {MAX_CACHE_MAX_AGE} seconds"),
    (["--default-ttl", "-1"], f"--default-ttl must be between 0 and {MAX_TTL_SECONDS} seconds"),
    (["--anti-entropy-interval", "-1"],
     "--anti-entropy-interval and --tombstone-grace must not be negative"),
    (["--anti-entropy-interval", "-1", "--tombstone-grace", "-1"],
     "--anti-entropy-interval and --tombstone-grace must not be negative"),
    (["--port", "0"], "--port 0 is not a TCP port"),
    (["--peer-port", "70000"], "--peer-port 70000 is not a TCP port"),
    (["--port", "7001", "--peer-port", "7001"], "--port and --peer-port must differ"),
    (["--zone", ""], "--zone must not be empty"),
    (["--seeds", "x"], "seed 'x' must be HOST:PEER_PORT"),
    (["--port", "abc"], "argument --port: invalid int value: 'abc'"),
    (["--conflict-mode", "x"], "argument --conflict-mode: invalid choice: 'x'"),
    (["--fsync", "yes"], "argument --fsync: invalid choice: 'yes'"),
    (["--tls-key-file", "k"], "--tls-cert-file and --tls-key-file go together"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_bad_values_are_refused_with_their_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused(capsys, [*BASE, *argv])
    assert err.startswith("ringkv node: error: ") and message in err
    assert err.count(message) == 1


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("RINGKV_CONFLICT_MODE", "x", "--conflict-mode 'x' must be one of siblings, lww"),
        ("RINGKV_FSYNC", "yes", "--fsync 'yes' must be one of true, false"),
        ("RINGKV_AUTO_JOIN", "maybe", "--auto-join 'maybe' must be one of true, false"),
        ("RINGKV_LOG_FORMAT", "xml", "--log-format 'xml' must be one of text, json"),
        ("RINGKV_REPLICATION_FACTOR", "99", "--replication-factor must be between 1 and 15"),
        ("RINGKV_PORT", "abc", "argument --port: invalid int value: 'abc'"),
    ],
)
def test_bad_variables_are_refused_like_flags(
    env: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv(env, value)
    assert message in refused(capsys, BASE)


def test_security_must_be_said(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, ["--node-id", "n1"])
    assert "give --auth-tokens-file FILE, or --no-auth true" in err
    assert "give --cluster-secret-file FILE, or --no-peer-auth true" in err
    assert "--node-id" in refused(capsys, OPEN)  # required


def test_every_range_is_checked_at_its_bounds() -> None:
    """The table's range of each flag is what the node enforces: the bounds pass, a step past
    them is refused."""
    for s in SETTINGS.values():
        if s.kind not in ("int", "float") or (s.low is None and not s.positive):
            continue
        step = 1 if s.kind == "int" else 0.001
        if s.low is not None:
            assert s.problem(s.low) is None and s.problem(s.low - step), s.flag
        if s.high is not None:
            assert s.problem(s.high) is None and s.problem(s.high + step), s.flag
        if s.positive:
            assert s.problem(step) is None and s.problem(0), s.flag


def test_booleans_take_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGKV_FSYNC", "TRUE")
    assert parse_args(BASE).fsync is True
    assert parse_args([*BASE, "--auto-join", "False"]).auto_join is False
