"""Messaging: the node-to-node protocol (Cassandra's MessagingService, in miniature).

One persistent TCP connection per peer and direction, multiplexed: every frame carries a request
id, so many replica operations share one connection and answers may come back in any order.

Frame: 4-byte big-endian length, then a msgpack array ``[kind, id, verb, body]`` where kind is
0 (request), 1 (reply) or 2 (error reply, body = message). The first frame on a new connection is
a ``hello`` request naming the caller; the answer names the callee.

With a cluster secret the handshake continues with an HMAC challenge-response in both
directions (``ringkv.node.auth``): the answer to ``hello`` carries the callee's nonce and its
proof over the caller's nonce, and the caller must send an ``auth`` frame with its own proof
before anything else is served. Without the secret a process cannot talk to a node at all.

Outbound connections are opened lazily, fail fast while a peer is known down, and reconnect with
exponential backoff (the heartbeat loop keeps trying, so a returning peer is found quickly).

Hot path: frames written in one event-loop iteration go out in one ``write`` (an
``_Outbox`` per connection, flushed by ``call_soon``); the receiving side reads whatever has
arrived and decodes every complete frame in it; requests time out through one ``call_later``
handle each instead of ``asyncio.wait_for``; ``call`` hands back the reply future itself, so a
coordinator waits for replicas without a task per replica; and the verbs the node answers
synchronously (``sync_handler``) are answered inline, without a task per inbound request.

Features: the answer to ``hello`` lists what the callee understands beyond the first protocol
(``FEATURES``), so a node sends a newer form of a verb only to peers that announced it, and a
rolling upgrade mixes versions safely. ``"record"``: ``replicate`` may carry the encoded record
(``{"key", "record"}``) instead of its versions in wire form (``{"key", "versions"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from ringkv.node import auth
from ringkv.node.frame_auth import (
    TAG_BYTES,
    FrameAuthError,
    FrameOpener,
    FrameSealer,
    session_keys,
)
from ringkv.node.guards import LogLimiter

log = logging.getLogger(__name__)
#: Refused peer input is logged at most once in a while: anyone reaching the port could
#: otherwise fill the log.
_limited = LogLimiter(log)

REQUEST, REPLY, ERROR = 0, 1, 2
MAX_FRAME = 64 * 1024 * 1024
HANDSHAKE_FRAME = 4096  # before authentication a peer may send only small frames
HANDSHAKE_TIMEOUT = 5.0  # seconds an inbound connection has for each handshake frame
_HEADER = struct.Struct(">I")

READ_CHUNK = 256 * 1024
FLUSH_NOW = 4 * 1024 * 1024  # above this much queued output, wait for the socket to drain
#: A peer connection whose sent data stays unacknowledged this long is dropped by the kernel
#: (TCP_USER_TIMEOUT) and redialled by name. Without it, a peer that went away without a reset
#: -- a pod replaced onto a new IP, its old address silent -- looks connected for the ~15
#: minutes of TCP retries, and every request sent on it times out. Heartbeats (every 0.5 s)
#: keep data in flight, so a silent address is noticed within this time.
DEAD_PEER_SECONDS = 10


def _drop_dead_peers(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_USER_TIMEOUT"):
        return
    with contextlib.suppress(OSError, AttributeError, TypeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_PEER_SECONDS * 1000)


Handler = Callable[[str, Any], Awaitable[Any]]
#: Answers a verb synchronously, or returns ``DEFER`` to have ``Handler`` run it in a task.
SyncHandler = Callable[[str, Any], Any]
DEFER: Any = object()


#: What this node understands beyond the first protocol (announced in the answer to ``hello``).
#: ``digest``: the ``read_digest`` verb (a replica answers the entity tag of its copy).
READ_DIGEST_FEATURE = "digest"
#: A forwarded write carries its resolved ``Quorum`` (``quorum``), not ``required``/``strict``.
QUORUM_FEATURE = "quorum"
FEATURES = ("record", READ_DIGEST_FEATURE, QUORUM_FEATURE)


class PeerError(Exception):
    """A replica operation failed."""


class PeerUnavailable(PeerError):
    """No connection to the peer (refused, reset, or backing off after failures)."""


class PeerNotReached(PeerUnavailable):
    """The request was never sent: no connection could be made (refused, handshake failed,
    backing off, shut down). Unlike a lost connection or a timeout, the peer surely did not
    act on it, so the caller may send it elsewhere."""


class PeerTimeout(PeerError):
    """The peer did not answer in time."""


class RemoteError(PeerError):
    """The peer answered with an error."""


class BadFrame(ValueError):
    """A frame that does not decode to ``[kind, id, verb, body]``."""


_packer = msgpack.Packer(use_bin_type=True)


def encode_frame(kind: int, request_id: int, verb: str, body: Any) -> bytes:
    payload: bytes = _packer.pack([kind, request_id, verb, body])
    return _HEADER.pack(len(payload)) + payload


def _decode(payload: bytes | bytearray | memoryview) -> tuple[int, int, str, Any]:
    try:
        frame = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many unrelated types (TypeError, StackError...)
        raise BadFrame(f"undecodable frame ({type(exc).__name__})") from None
    if type(frame) is not list or len(frame) != 4:
        raise BadFrame("malformed frame")
    kind, request_id, verb, body = frame
    if (
        type(kind) is not int
        or kind not in (REQUEST, REPLY, ERROR)
        or type(request_id) is not int
        or type(verb) is not str
    ):
        raise BadFrame("malformed frame header")
    return kind, request_id, verb, body


def take_frames(
    buffer: bytearray, max_size: int = MAX_FRAME, opener: FrameOpener | None = None
) -> list[tuple[int, int, str, Any]]:
    """Decode and remove every complete frame at the start of ``buffer`` (checking each
    frame's tag with ``opener`` on an authenticated connection)."""
    frames = []
    pos, size = 0, len(buffer)
    while size - pos >= 4:
        (length,) = _HEADER.unpack_from(buffer, pos)
        if length > max_size:
            raise BadFrame(f"frame of {length} bytes exceeds the {max_size} byte limit")
        end = pos + 4 + length
        if opener is None:
            if end > size:
                break
            frames.append(_decode(buffer[pos + 4 : end]))  # a copy: the buffer shrinks below
            pos = end
            continue
        if end + TAG_BYTES > size:
            break
        frame = buffer[pos:end]
        opener.check(frame, buffer[end : end + TAG_BYTES])
        frames.append(_decode(memoryview(frame)[4:]))
        pos = end + TAG_BYTES
    if pos:
        del buffer[:pos]
    return frames


class _Outbox:
    """Frames queued for one connection, written together once per loop iteration."""

    __slots__ = ("loop", "on_error", "parts", "scheduled", "sealer", "writer")

    def __init__(
        self,
        writer: asyncio.StreamWriter,
        on_error: Callable[[BaseException], None] | None = None,
        sealer: FrameSealer | None = None,
    ) -> None:
        self.writer = writer
        self.sealer = sealer  # tags each frame, in the order they go out
        # Kept: asyncio.get_running_loop() costs a getpid() system call on Python 3.11.
        self.loop = asyncio.get_running_loop()
        self.parts: list[bytes] = []
        self.scheduled = False
        self.on_error = on_error

    def add(self, frame: bytes) -> None:
        if self.sealer is not None:
            frame = self.sealer.seal(frame)
        self.parts.append(frame)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        parts, self.parts = self.parts, []
        if not parts or self.writer.is_closing():
            return
        try:
            self.writer.write(parts[0] if len(parts) == 1 else b"".join(parts))
        except (ConnectionError, OSError, RuntimeError) as exc:
            if self.on_error is not None:
                self.on_error(exc)

    def backlog(self) -> int:
        return self.writer.transport.get_write_buffer_size()


async def read_frame(
    reader: asyncio.StreamReader, max_size: int = MAX_FRAME
) -> tuple[int, int, str, Any]:
    header = await reader.readexactly(4)
    (length,) = _HEADER.unpack(header)
    if length > max_size:
        raise BadFrame(f"frame of {length} bytes exceeds the {max_size} byte limit")
    return _decode(await reader.readexactly(length))


_Pending = tuple[asyncio.Future[Any], asyncio.TimerHandle]


class PeerConnection:
    """The outbound, multiplexed connection to one peer address."""

    def __init__(
        self,
        local_id: str,
        address: str,
        connect_timeout: float = 1.0,
        secret: bytes | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.local_id = local_id
        self.secret = secret
        self.ssl_context = ssl_context
        self.address = address
        self.remote_id: str | None = None
        self.features: frozenset[str] = frozenset()  # what the peer announced (see FEATURES)
        self.connect_timeout = connect_timeout
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, _Pending] = {}
        self._outbox: _Outbox | None = None
        self._next_id = 1
        self._connecting: asyncio.Future[None] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._closed = False
        self._lookup: asyncio.Future[list[Any]] | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    def reset_backoff(self) -> None:
        """The peer was just heard from: let the next request connect right away."""
        if not self.connected:
            self._failures = 0
            self._retry_at = 0.0

    @property
    def down(self) -> bool:
        """Known unreachable: the last connection attempt failed or the connection broke."""
        return not self.connected and self._failures > 0

    def call(self, verb: str, body: Any, timeout: float) -> asyncio.Future[Any]:
        """Send a request; the future gets the reply (or a ``PeerError``). No task is created
        while the connection is up."""
        outbox = self._outbox
        if outbox is not None and not self._writer_closing() and outbox.backlog() <= FLUSH_NOW:
            return self._send(verb, body, timeout)
        return asyncio.ensure_future(self.request(verb, body, timeout))

    async def request(self, verb: str, body: Any, timeout: float) -> Any:
        if not self.connected:
            await self._connect()
        outbox = self._outbox
        if outbox is None or self._writer is None:
            raise PeerNotReached(f"no connection to {self.address}")
        future = self._send(verb, body, timeout)
        if outbox.backlog() > FLUSH_NOW:
            outbox.flush()
            try:
                await outbox.writer.drain()
            except (ConnectionError, OSError) as exc:
                self._drop(exc)
        return await future

    def _writer_closing(self) -> bool:
        writer = self._writer
        return writer is None or writer.is_closing()

    def _send(self, verb: str, body: Any, timeout: float) -> asyncio.Future[Any]:
        assert self._outbox is not None
        loop = self._outbox.loop
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Any] = loop.create_future()
        timer = loop.call_later(timeout, self._expire, request_id, verb, timeout)
        self._pending[request_id] = (future, timer)
        self._outbox.add(encode_frame(REQUEST, request_id, verb, body))
        return future

    def _expire(self, request_id: int, verb: str, timeout: float) -> None:
        entry = self._pending.pop(request_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(
                PeerTimeout(f"{verb} to {self.address} timed out after {timeout}s")
            )

    async def _connect(self) -> None:
        if self._closed:
            raise PeerNotReached("messaging is shut down")
        if self._connecting is not None:
            await asyncio.shield(self._connecting)
            if not self.connected:
                raise PeerNotReached(f"no connection to {self.address}")
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at:
            raise PeerNotReached(f"{self.address} is down (backing off)")
        self._connecting = loop.create_future()
        writer: asyncio.StreamWriter | None = None
        try:
            reader, opened = await asyncio.wait_for(self._open(), self.connect_timeout)
            writer = opened
            _drop_dead_peers(opened)
            nonce = auth.new_nonce()
            opened.write(encode_frame(REQUEST, 0, "hello", {"node": self.local_id, "nonce": nonce}))
            kind, _, _, body = await asyncio.wait_for(read_frame(reader), self.connect_timeout)
            if kind != REPLY or not isinstance(body, dict):
                raise PeerUnavailable(f"{self.address} refused the handshake: {body}")
            remote = str(body.get("node"))
            sealer = opener = None
            if self.secret is not None:
                their_nonce = body.get("nonce")
                if not isinstance(their_nonce, bytes) or not auth.verify(
                    self.secret, b"server", remote, their_nonce, nonce, body.get("proof")
                ):
                    raise PeerUnavailable(f"{self.address} failed to prove the cluster secret")
                mine = auth.proof(self.secret, b"client", self.local_id, nonce, their_nonce)
                opened.write(encode_frame(REQUEST, 0, "auth", {"proof": mine}))
                kind, _, _, answer = await asyncio.wait_for(
                    read_frame(reader), self.connect_timeout
                )
                if kind != REPLY:
                    raise PeerUnavailable(f"{self.address} rejected our proof: {answer}")
                outbound, inbound = session_keys(
                    self.secret, self.local_id, remote, nonce, their_nonce
                )
                sealer, opener = FrameSealer(outbound), FrameOpener(inbound)
            self.remote_id = remote
            features = body.get("features")
            self.features = frozenset(
                f for f in (features if isinstance(features, list) else ()) if isinstance(f, str)
            )
            self._writer = opened
            self._outbox = _Outbox(opened, self._on_write_error(opened), sealer)
            self._failures = 0
            self._reader_task = asyncio.create_task(self._read_loop(reader, opened, opener))
        except (
            OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, PeerUnavailable,
        ) as exc:  # fmt: skip
            if writer is not None and self._writer is not writer:
                writer.close()  # a handshake that failed half-way must not leak its socket
            self._failures += 1
            backoff = min(0.05 * 2 ** min(self._failures, 5), 1.0)
            self._retry_at = loop.time() + backoff
            raise PeerNotReached(f"cannot connect to {self.address}: {exc!r}") from None
        finally:
            done, self._connecting = self._connecting, None
            if not done.done():
                done.set_result(None)

    def _resolving(self, host: str, port: int) -> asyncio.Future[list[Any]]:
        """The peer's addresses, one lookup at a time. A lookup runs in the resolver's small
        thread pool and cannot be stopped once started, so an attempt that gives up waiting
        leaves it to the next attempt instead of starting another: a name that takes seconds
        to fail (missing while its pod is recreated, the resolver walking its search list)
        would otherwise fill the pool and delay every lookup after it, also of peers that are
        back. A finished lookup is never reused, so an answer is at most one lookup old."""
        lookup = self._lookup
        if lookup is None or lookup.done():
            lookup = asyncio.ensure_future(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            )
            # nobody may be waiting when it ends: take its error so it is not reported
            lookup.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._lookup = lookup
        return lookup

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, _, port = self.address.rpartition(":")
        infos = await asyncio.shield(self._resolving(host, int(port)))
        error: OSError = OSError(f"{host} has no address")
        for *_, sockaddr in infos:
            try:
                # TLS checks the certificate against the name dialled, not the address
                return await asyncio.open_connection(
                    sockaddr[0],
                    sockaddr[1],
                    ssl=self.ssl_context,
                    server_hostname=host if self.ssl_context is not None else None,
                )
            except OSError as exc:
                error = exc
        raise error

    async def _read_loop(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        opener: FrameOpener | None = None,
    ) -> None:
        error: BaseException | None = None
        buffer = bytearray()
        pending = self._pending
        try:
            while True:
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    raise ConnectionError("connection closed by the peer")
                buffer += chunk
                for kind, request_id, _verb, body in take_frames(buffer, MAX_FRAME, opener):
                    entry = pending.pop(request_id, None)
                    if entry is None:
                        continue
                    future, timer = entry
                    timer.cancel()
                    if future.done():
                        continue
                    if kind == REPLY:
                        future.set_result(body)
                    else:
                        future.set_exception(RemoteError(str(body)))
        except asyncio.CancelledError:
            error = PeerUnavailable("connection closed")
        except Exception as exc:  # EOF, reset, garbage: the connection is gone
            error = exc
        if self._writer is writer:
            self._drop(error)
        writer.close()

    def _drop(self, error: BaseException | None) -> None:
        writer, self._writer = self._writer, None
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.parts.clear()
        if writer is not None:
            writer.close()
            if error is not None:  # the peer went away: fail fast until a reconnect succeeds
                self._failures += 1
                self._retry_at = asyncio.get_running_loop().time() + 0.05
        failure = PeerUnavailable(f"connection to {self.address} lost: {error!r}")
        pending, self._pending = self._pending, {}
        for future, timer in pending.values():
            timer.cancel()
            if not future.done():
                future.set_exception(failure)

    def _on_write_error(self, writer: asyncio.StreamWriter) -> Callable[[BaseException], None]:
        def failed(exc: BaseException) -> None:
            if self._writer is writer:
                self._drop(exc)

        return failed

    async def close(self) -> None:
        self._closed = True
        if self._lookup is not None:
            self._lookup.cancel()
        task = self._reader_task
        self._drop(None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class MessagingService:
    """Listens on the peer port and keeps one outbound connection per peer address."""

    def __init__(
        self,
        node_id: str,
        host: str,
        port: int,
        handler: Handler,
        secret: bytes | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        sync_handler: SyncHandler | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.sync_handler = sync_handler
        self.on_refused = on_refused  # called with a reason for each refused peer input
        self.secret = secret
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.rejected = 0  # handshakes refused (wrong or missing secret)
        self.host = host
        self.port = port
        self.handler = handler
        self._server: asyncio.Server | None = None
        self._peers: dict[str, PeerConnection] = {}
        self._inbound: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.server_ssl
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._inbound):
            writer.close()
        for conn in list(self._peers.values()):
            await conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def peer(self, address: str) -> PeerConnection:
        conn = self._peers.get(address)
        if conn is None:
            conn = PeerConnection(
                self.node_id, address, secret=self.secret, ssl_context=self.client_ssl
            )
            self._peers[address] = conn
        return conn

    def lost(self) -> list[tuple[str, PeerConnection]]:
        """The peers this service has connected to (or tried) that are down now."""
        return [(address, conn) for address, conn in self._peers.items() if conn.down]

    def is_down(self, address: str) -> bool:
        """Whether the peer at ``address`` is known unreachable (never tried: no)."""
        conn = self._peers.get(address)
        return conn is not None and conn.down

    def is_connected(self, address: str) -> bool:
        conn = self._peers.get(address)
        return conn is not None and conn.connected

    def supports(self, address: str, feature: str) -> bool:
        """Whether the peer at ``address`` announced ``feature`` on our current connection
        (False while not connected: then the first protocol is used)."""
        conn = self._peers.get(address)
        return conn is not None and conn.connected and feature in conn.features

    async def request(self, address: str, verb: str, body: Any, timeout: float) -> Any:
        return await self.peer(address).request(verb, body, timeout)

    def call(self, address: str, verb: str, body: Any, timeout: float) -> asyncio.Future[Any]:
        """``request`` as a future (no task while the connection is up)."""
        return self.peer(address).call(verb, body, timeout)

    # -- inbound ------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._inbound.add(writer)
        _drop_dead_peers(writer)
        try:
            kind, request_id, verb, body = await asyncio.wait_for(
                read_frame(reader, HANDSHAKE_FRAME), HANDSHAKE_TIMEOUT
            )
            if kind != REQUEST or verb != "hello" or not isinstance(body, dict):
                writer.write(encode_frame(ERROR, request_id, verb, "expected hello"))
                return
            keys = await self._authenticate(reader, writer, request_id, body)
            if keys is None:
                return
            sealer, opener = keys
            outbox = _Outbox(writer, sealer=sealer)
            buffer = bytearray()
            sync_handler = self.sync_handler
            while True:
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    break
                buffer += chunk
                for kind, request_id, verb, body in take_frames(buffer, MAX_FRAME, opener):
                    if kind != REQUEST:
                        continue
                    if sync_handler is not None:
                        try:
                            result = sync_handler(verb, body)
                        except Exception as exc:
                            log.debug("peer request %s failed: %r", verb, exc)
                            outbox.add(
                                encode_frame(
                                    ERROR, request_id, verb, f"{type(exc).__name__}: {exc}"
                                )
                            )
                            continue
                        if result is not DEFER:
                            outbox.add(encode_frame(REPLY, request_id, verb, result))
                            continue
                    task = asyncio.create_task(self._dispatch(outbox, request_id, verb, body))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                if outbox.backlog() > FLUSH_NOW:
                    outbox.flush()
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, OSError):
            pass
        except FrameAuthError as exc:
            self._refused("forged", "dropped a peer connection: %s", exc)
        except ValueError as exc:  # BadFrame, and anything a decoder let through
            self._refused("malformed", "dropped a peer connection after a malformed frame: %s", exc)
        finally:
            self._inbound.discard(writer)
            writer.close()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request_id: int,
        hello: dict[str, Any],
    ) -> tuple[FrameSealer | None, FrameOpener | None] | None:
        """Run the handshake; None when refused, else the frame sealer and opener of the
        connection (both None without a cluster secret)."""
        if self.secret is None:
            hello_reply = {"node": self.node_id, "features": list(FEATURES)}
            writer.write(encode_frame(REPLY, request_id, "hello", hello_reply))
            return None, None
        caller, their_nonce = str(hello.get("node")), hello.get("nonce")
        if not isinstance(their_nonce, bytes) or len(their_nonce) < 16:
            self._reject(writer, request_id, "hello without a nonce")
            return None
        nonce = auth.new_nonce()
        mine = auth.proof(self.secret, b"server", self.node_id, nonce, their_nonce)
        writer.write(
            encode_frame(REPLY, request_id, "hello", {"node": self.node_id, "nonce": nonce,
                                                       "proof": mine, "features": list(FEATURES)})
        )  # fmt: skip
        try:
            kind, request_id, verb, body = await asyncio.wait_for(
                read_frame(reader, HANDSHAKE_FRAME), HANDSHAKE_TIMEOUT
            )
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ValueError):
            # The caller could not prove the secret (it hung up or went silent after our
            # challenge): a process without the cluster secret.
            self._reject(writer, request_id, f"{caller!r} did not complete authentication")
            return None
        if (
            kind != REQUEST
            or verb != "auth"
            or not isinstance(body, dict)
            or not auth.verify(
                self.secret, b"client", caller, their_nonce, nonce, body.get("proof")
            )
        ):
            self._reject(writer, request_id, "authentication failed")
            return None
        writer.write(encode_frame(REPLY, request_id, "auth", {}))
        # From here on every frame carries a tag under this connection's session keys.
        inbound, outbound = session_keys(self.secret, caller, self.node_id, their_nonce, nonce)
        return FrameSealer(outbound), FrameOpener(inbound)

    def _reject(self, writer: asyncio.StreamWriter, request_id: int, why: str) -> None:
        self.rejected += 1
        self._refused("handshake", "refused a peer connection: %s", why)
        writer.write(encode_frame(ERROR, request_id, "auth", why))

    def _refused(self, reason: str, message: str, detail: object) -> None:
        """Count refused peer input and log it, at most once in a while per reason."""
        if self.on_refused is not None:
            self.on_refused(reason)
        _limited.warning(f"peer-{reason}", message, detail)

    async def _dispatch(self, outbox: _Outbox, request_id: int, verb: str, body: Any) -> None:
        try:
            result = await self.handler(verb, body)
            frame = encode_frame(REPLY, request_id, verb, result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("peer request %s failed: %r", verb, exc)
            frame = encode_frame(ERROR, request_id, verb, f"{type(exc).__name__}: {exc}")
        outbox.add(frame)
