"""Auth: who may use the client API, and proof that a peer belongs to the cluster.

Client API: bearer tokens with roles ``metrics`` < ``read`` < ``readwrite`` < ``admin`` (a
``metrics`` token reads ``/metrics`` and nothing else: for scrapers), loaded from a file
(a Kubernetes Secret mounted as a file works; several files may be given, comma-separated) and
reloaded when they change, without a restart.
The file is JSON: ``{"tokens": [{"token": "...", "role": "readwrite", "name": "svc-a"}]}``.
Only SHA-256 digests of tokens are kept in memory, compared in constant time; tokens never
reach logs, metrics or error messages.

Peers: a shared cluster secret. The peer handshake is an HMAC challenge-response in both
directions (each side proves it knows the secret over the other side's fresh nonce), so a
process without the secret cannot join gossip, send writes, stream ranges or read data, and a
recorded handshake cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ringkv.core.json_input import parse_json

log = logging.getLogger(__name__)

ROLES = ("metrics", "read", "readwrite", "admin")
METRICS_ROLE = ROLES[0]
_RANK = {role: i for i, role in enumerate(ROLES)}


class TokenFileError(ValueError):
    """The token file is missing or malformed (the message never contains a token)."""


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    def allows(self, needed: str) -> bool:
        return _RANK[self.role] >= _RANK[needed]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str) -> dict[bytes, Principal]:
    try:
        document = parse_json(text)
    except ValueError as exc:
        raise TokenFileError(f"token file: {exc}") from None
    entries = document.get("tokens") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise TokenFileError('token file must be {"tokens": [{"token": ..., "role": ...}]}')
    table: dict[bytes, Principal] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise TokenFileError(f"token entry {i} must be an object")
        token, role = entry.get("token"), entry.get("role")
        if not isinstance(token, str) or len(token) < 16:
            raise TokenFileError(f"token entry {i}: token must be a string of 16+ characters")
        if role not in ROLES:
            raise TokenFileError(f"token entry {i}: role must be one of {', '.join(ROLES)}")
        name = entry.get("name")
        table[_digest(token)] = Principal(str(name) if name else f"token-{i}", role)
    return table


def split_paths(value: str) -> list[str]:
    """The files of ``--auth-tokens-file``: a comma-separated list (one file is the usual case)."""
    return [p.strip() for p in value.split(",") if p.strip()]


class TokenStore:
    """Tokens from one or more files, each reloaded (checked at most once a second) when its
    mtime or size changes. The tokens in force are those of every file together, so a
    Kubernetes operator can mount its own token file next to the users' one. A file that turns
    unreadable or malformed keeps its previous tokens; the others are unaffected."""

    def __init__(self, paths: str | Sequence[str]) -> None:
        self.paths = split_paths(paths) if isinstance(paths, str) else list(paths)
        if not self.paths:
            raise TokenFileError("no token file given")
        self._tables: dict[str, dict[bytes, Principal]] = {}
        self._stamps: dict[str, tuple[float, int]] = {}
        self._table: dict[bytes, Principal] = {}
        self._checked = 0.0
        self.reload(force=True)

    @property
    def path(self) -> str:
        return ",".join(self.paths)

    def reload(self, force: bool = False) -> None:
        changed = False
        for path in self.paths:
            changed = self._reload_file(path, force) or changed
        if changed:
            self._table = {d: p for path in self.paths for d, p in self._tables[path].items()}

    def _reload_file(self, path: str, force: bool) -> bool:
        try:
            stat = os.stat(path)
        except OSError as exc:
            if force:
                raise TokenFileError(f"cannot read token file {path}: {exc.strerror}") from None
            log.error(
                "token file %s unreadable (%s); keeping the previous tokens", path, exc.strerror
            )
            return False
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._stamps.get(path) and not force:
            return False
        try:
            with open(path, encoding="utf-8") as f:
                table = parse_tokens(f.read())
        except (OSError, TokenFileError) as exc:
            if force:
                raise TokenFileError(f"{path}: {exc}") from None
            log.error("token file %s rejected (%s); keeping the previous tokens", path, exc)
            return False
        self._tables[path], self._stamps[path] = table, stamp
        log.info("loaded %d API tokens from %s", len(table), path)
        return True

    def authenticate(self, token: str) -> Principal | None:
        now = time.monotonic()
        if now - self._checked > 1.0:
            self._checked = now
            self.reload()
        digest = _digest(token)
        found = None
        for known, principal in self._table.items():  # constant time per entry
            if hmac.compare_digest(known, digest):
                found = principal
        return found


# -- peer handshake --------------------------------------------------------------------------


def new_nonce() -> bytes:
    return secrets.token_bytes(16)


def proof(secret: bytes, role: bytes, my_id: str, my_nonce: bytes, their_nonce: bytes) -> bytes:
    """HMAC over both nonces, the prover's role and id: valid for this handshake only."""
    message = role + b"\x00" + my_id.encode() + b"\x00" + their_nonce + my_nonce
    return hmac.new(secret, message, hashlib.sha256).digest()


def verify(
    secret: bytes, role: bytes, their_id: str, their_nonce: bytes, my_nonce: bytes, got: object
) -> bool:
    if not isinstance(got, bytes):
        return False
    return hmac.compare_digest(proof(secret, role, their_id, their_nonce, my_nonce), got)


def load_secret(path: str) -> bytes:
    with open(path, "rb") as f:
        secret = f.read().strip()
    if len(secret) < 16:
        raise ValueError(f"cluster secret in {path} must be at least 16 bytes")
    return secret
