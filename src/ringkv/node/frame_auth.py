"""Frame authentication: every peer frame after the handshake carries a MAC.

The HMAC handshake (``ringkv.node.auth``) proves who is at the other end when the connection
opens; without TLS, nothing would stop someone on the path from injecting or altering the
frames that follow (replica writes, hints, gossip). So both sides derive a session key from the
cluster secret and the handshake's two fresh nonces, one key per direction, and every later
frame carries a 16-byte tag: keyed BLAKE2b over the frame's sequence number on that connection
and its payload. A frame injected, altered, dropped, replayed or reordered fails the check, and
the receiver closes the connection.

Wire form of an authenticated frame: the plain frame (4-byte big-endian length of the payload,
payload) followed by its tag, which covers the length header too.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

TAG_BYTES = 16


class FrameAuthError(ValueError):
    """A frame's tag does not match: injected, altered, replayed or reordered."""


def session_keys(
    secret: bytes, caller: str, callee: str, caller_nonce: bytes, callee_nonce: bytes
) -> tuple[bytes, bytes]:
    """(caller-to-callee key, callee-to-caller key) of one connection."""
    session = hmac.new(
        secret,
        b"ringkv-session\x00" + caller.encode() + b"\x00" + callee.encode() + b"\x00"
        + caller_nonce + callee_nonce,
        hashlib.sha256,
    ).digest()  # fmt: skip
    outbound = hmac.new(session, b"caller->callee", hashlib.sha256).digest()
    inbound = hmac.new(session, b"callee->caller", hashlib.sha256).digest()
    return outbound, inbound


_SEQ = struct.Struct(">Q")


def _keyed(key: bytes) -> Any:
    """The keyed hash state, made once per connection and direction: each frame copies it
    (cheaper than keying a new one, which hashes a whole key block every time)."""
    return hashlib.blake2b(key=key, digest_size=TAG_BYTES)


class FrameSealer:
    """Tags the frames one side sends, in order."""

    __slots__ = ("_base", "seq")

    def __init__(self, key: bytes) -> None:
        self._base = _keyed(key)
        self.seq = 0

    def seal(self, frame: bytes) -> bytes:
        """``frame`` (length header and payload, as ``encode_frame`` makes it) and its tag."""
        mac = self._base.copy()
        mac.update(_SEQ.pack(self.seq))
        mac.update(frame)
        self.seq += 1
        tag: bytes = mac.digest()
        return frame + tag


class FrameOpener:
    """Checks the tags of the frames one side receives, in order."""

    __slots__ = ("_base", "seq")

    def __init__(self, key: bytes) -> None:
        self._base = _keyed(key)
        self.seq = 0

    def check(self, frame: bytes | bytearray, tag: bytes | bytearray) -> None:
        """Raise ``FrameAuthError`` unless ``tag`` is the next tag of ``frame`` (its length
        header and payload)."""
        mac = self._base.copy()
        mac.update(_SEQ.pack(self.seq))
        mac.update(frame)
        if not hmac.compare_digest(mac.digest(), tag):
            raise FrameAuthError("frame authentication failed (injected or altered frame)")
        self.seq += 1
