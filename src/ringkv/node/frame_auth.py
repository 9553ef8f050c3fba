"""Frame authentication: every peer frame after the handshake carries a MAC.

The HMAC handshake (``ringkv.node.auth``) proves who is at the other end when the connection
opens; without TLS, nothing would stop someone on the path from injecting or altering the
frames that follow (replica writes, hints, gossip). So both sides derive a session key from the
cluster secret and the handshake's two fresh nonces, one key per direction, and every later
frame carries a 16-byte tag: keyed BLAKE2b over the frame's payload, personalised with the
frame's sequence number on that connection. A frame injected, altered, dropped, replayed or
reordered fails the check, and the receiver closes the connection.

Wire form of an authenticated frame: 4-byte big-endian length (payload plus tag), payload
(the msgpack array), tag.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

TAG_BYTES = 16
_HEADER = struct.Struct(">I")


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


class FrameSealer:
    """Tags the frames one side sends, in order."""

    __slots__ = ("key", "seq")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.seq = 0

    def seal(self, frame: bytes) -> bytes:
        """``frame`` (length header and payload, as ``encode_frame`` makes it) with its tag."""
        payload = memoryview(frame)[4:]
        tag = hashlib.blake2b(
            payload, key=self.key, digest_size=TAG_BYTES, person=self.seq.to_bytes(8, "big")
        ).digest()
        self.seq += 1
        return b"".join((_HEADER.pack(len(payload) + TAG_BYTES), payload, tag))


class FrameOpener:
    """Checks the tags of the frames one side receives, in order."""

    __slots__ = ("key", "seq")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.seq = 0

    def open(self, body: bytes | bytearray | memoryview) -> memoryview:
        """The payload of an authenticated frame body (payload plus tag); raises
        ``FrameAuthError`` when the tag is wrong."""
        view = memoryview(body)
        if len(view) < TAG_BYTES:
            raise FrameAuthError("frame too short to carry its authentication tag")
        payload, tag = view[:-TAG_BYTES], view[-TAG_BYTES:]
        expected = hashlib.blake2b(
            payload, key=self.key, digest_size=TAG_BYTES, person=self.seq.to_bytes(8, "big")
        ).digest()
        if not hmac.compare_digest(expected, tag):
            raise FrameAuthError("frame authentication failed (injected or altered frame)")
        self.seq += 1
        return payload
