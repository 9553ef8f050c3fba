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

Hot path (issue 7): frames written in one event-loop iteration go out in one ``write`` (an
``_Outbox`` per connection, flushed by ``call_soon``); both ends are ``asyncio.Protocol`` objects
(``_Caller`` for our outbound connections, ``_Callee`` for inbound ones), which decode every
complete frame of a read where it arrives, with no stream reader and no task woken per read;
requests time out through one ``call_later`` handle each instead of ``asyncio.wait_for``;
``call`` hands back the reply future itself, so a
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

log = logging.getLogger(__name__)

REQUEST, REPLY, ERROR = 0, 1, 2
MAX_FRAME = 64 * 1024 * 1024
HANDSHAKE_FRAME = 4096  # before authentication a peer may send only small frames
_HEADER = struct.Struct(">I")

READ_CHUNK = 256 * 1024
FLUSH_NOW = 4 * 1024 * 1024  # above this much queued output, wait for the socket to drain
#: A peer connection whose sent data stays unacknowledged this long is dropped by the kernel
#: (TCP_USER_TIMEOUT) and redialled by name. Without it, a peer that went away without a reset
#: -- a pod replaced onto a new IP, its old address silent -- looks connected for the ~15
#: minutes of TCP retries, and every request sent on it times out. Heartbeats (every 0.5 s)
#: keep data in flight, so a silent address is noticed within this time.
DEAD_PEER_SECONDS = 10


Handler = Callable[[str, Any], Awaitable[Any]]
#: Answers a verb synchronously, or returns ``DEFER`` to have ``Handler`` run it in a task.
SyncHandler = Callable[[str, Any], Any]
DEFER: Any = object()


#: What this node understands beyond the first protocol (announced in the answer to ``hello``).
FEATURES = ("record",)


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


_packer = msgpack.Packer(use_bin_type=True)


def encode_frame(kind: int, request_id: int, verb: str, body: Any) -> bytes:
    payload: bytes = _packer.pack([kind, request_id, verb, body])
    return _HEADER.pack(len(payload)) + payload


def _decode(payload: bytes | bytearray) -> tuple[int, int, str, Any]:
    frame = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    if not isinstance(frame, list) or len(frame) != 4:
        raise ValueError("malformed frame")
    kind, request_id, verb, body = frame
    if kind not in (REQUEST, REPLY, ERROR) or not isinstance(request_id, int):
        raise ValueError("malformed frame header")
    return kind, request_id, str(verb), body


def take_frames(
    buffer: bytearray, max_size: int = MAX_FRAME, limit: int | None = None
) -> list[tuple[int, int, str, Any]]:
    """Decode and remove every complete frame (at most ``limit``) at the start of ``buffer``."""
    frames: list[tuple[int, int, str, Any]] = []
    pos, size = 0, len(buffer)
    while size - pos >= 4 and (limit is None or len(frames) < limit):
        (length,) = _HEADER.unpack_from(buffer, pos)
        if length > max_size:
            raise ValueError(f"frame of {length} bytes exceeds the {max_size} byte limit")
        end = pos + 4 + length
        if end > size:
            break
        frames.append(_decode(buffer[pos + 4 : end]))
        pos = end
    if pos:
        del buffer[:pos]
    return frames


class _Outbox:
    """Frames queued for one connection, written together once per loop iteration."""

    __slots__ = ("loop", "on_error", "parts", "scheduled", "transport")

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.transport = transport
        # Kept: asyncio.get_running_loop() costs a getpid() system call on Python 3.11.
        self.loop = asyncio.get_running_loop()
        self.parts: list[bytes] = []
        self.scheduled = False
        self.on_error = on_error

    def add(self, frame: bytes) -> None:
        self.parts.append(frame)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        parts, self.parts = self.parts, []
        if not parts or self.transport.is_closing():
            return
        try:
            self.transport.write(parts[0] if len(parts) == 1 else b"".join(parts))
        except (ConnectionError, OSError, RuntimeError) as exc:
            if self.on_error is not None:
                self.on_error(exc)

    def backlog(self) -> int:
        return self.transport.get_write_buffer_size()


class _Frames(asyncio.Protocol):
    """A framed connection: decodes every complete frame of each read (``frames_received``)
    and tracks write flow control for ``drained``. The subclasses are the two ends."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.batch: int | None = None  # frames decoded per frames_received call (None: all)
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self._drain: asyncio.Future[None] | None = None  # set while writing is paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
            with contextlib.suppress(OSError, AttributeError, TypeError):
                sock.setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_PEER_SECONDS * 1000
                )

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer and self.transport is not None:
            batch = self.batch
            try:
                frames = take_frames(self.buffer, self.max_frame, batch)
            except (ValueError, msgpack.UnpackException) as exc:
                self.malformed(exc)
                return
            if not frames:
                return
            self.frames_received(frames)
            if batch is None:  # everything complete was taken
                return

    def frames_received(self, frames: list[tuple[int, int, str, Any]]) -> None:
        raise NotImplementedError

    def malformed(self, exc: BaseException) -> None:
        log.warning("dropping peer connection after a malformed frame: %s", exc)
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.resume_writing()

    async def drained(self) -> None:
        """Return once the transport's write buffer is below its high-water mark."""
        if self._drain is not None:
            await asyncio.shield(self._drain)


class _Caller(_Frames):
    """Our end of an outbound connection: hands replies to the ``PeerConnection``; during the
    handshake, queues frames for ``next_frame``."""

    def __init__(self) -> None:
        super().__init__(MAX_FRAME)
        self.owner: PeerConnection | None = None  # set once the handshake is done
        self.early: list[tuple[int, int, str, Any]] = []
        self.waiter: asyncio.Future[None] | None = None
        self.error: BaseException | None = None

    def frames_received(self, frames: list[tuple[int, int, str, Any]]) -> None:
        if self.owner is not None:
            self.owner.replies_received(frames)
            return
        self.early.extend(frames)
        self._wake()

    def malformed(self, exc: BaseException) -> None:
        self.error = exc
        super().malformed(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.error is None:
            self.error = exc or ConnectionError("connection closed by the peer")
        self._wake()
        if self.owner is not None:
            self.owner.lost(self, self.error)

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_frame(self, timeout: float) -> tuple[int, int, str, Any]:
        """The next frame of the handshake (``TimeoutError``, or the connection's error)."""
        if not self.early:
            if self.transport is None:
                raise ConnectionError(f"connection lost: {self.error!r}")
            self.waiter = self.loop.create_future()
            await asyncio.wait_for(asyncio.shield(self.waiter), timeout)
            if not self.early:
                raise ConnectionError(f"connection lost: {self.error!r}")
        return self.early.pop(0)


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
        self._proto: _Caller | None = None  # the connection, once its handshake is done
        self._pending: dict[int, _Pending] = {}
        self._outbox: _Outbox | None = None
        self._next_id = 1
        self._connecting: asyncio.Future[None] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._closed = False

    @property
    def connected(self) -> bool:
        proto = self._proto
        return (
            proto is not None and proto.transport is not None and not proto.transport.is_closing()
        )

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
        if outbox is not None and self.connected and outbox.backlog() <= FLUSH_NOW:
            return self._send(verb, body, timeout)
        return asyncio.ensure_future(self.request(verb, body, timeout))

    async def request(self, verb: str, body: Any, timeout: float) -> Any:
        if not self.connected:
            await self._connect()
        outbox, proto = self._outbox, self._proto
        if outbox is None or proto is None:
            raise PeerNotReached(f"no connection to {self.address}")
        future = self._send(verb, body, timeout)
        if outbox.backlog() > FLUSH_NOW:
            outbox.flush()
            await proto.drained()
        return await future

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
        proto: _Caller | None = None
        try:
            host, _, port = self.address.rpartition(":")
            _, opened = await asyncio.wait_for(
                loop.create_connection(_Caller, host, int(port), ssl=self.ssl_context),
                self.connect_timeout,
            )
            proto = opened
            transport = opened.transport
            assert transport is not None
            nonce = auth.new_nonce()
            hello = {"node": self.local_id, "nonce": nonce}
            transport.write(encode_frame(REQUEST, 0, "hello", hello))
            kind, _, _, body = await opened.next_frame(self.connect_timeout)
            if kind != REPLY or not isinstance(body, dict):
                raise PeerUnavailable(f"{self.address} refused the handshake: {body}")
            remote = str(body.get("node"))
            if self.secret is not None:
                their_nonce = body.get("nonce")
                if not isinstance(their_nonce, bytes) or not auth.verify(
                    self.secret, b"server", remote, their_nonce, nonce, body.get("proof")
                ):
                    raise PeerUnavailable(f"{self.address} failed to prove the cluster secret")
                mine = auth.proof(self.secret, b"client", self.local_id, nonce, their_nonce)
                transport.write(encode_frame(REQUEST, 0, "auth", {"proof": mine}))
                kind, _, _, answer = await opened.next_frame(self.connect_timeout)
                if kind != REPLY:
                    raise PeerUnavailable(f"{self.address} rejected our proof: {answer}")
            if opened.transport is None or opened.early:
                raise PeerUnavailable(f"{self.address} broke the handshake")
            self.remote_id = remote
            features = body.get("features")
            self.features = frozenset(
                f for f in (features if isinstance(features, list) else ()) if isinstance(f, str)
            )
            opened.owner = self
            self._proto = opened
            self._outbox = _Outbox(transport, self._on_write_error(opened))
            self._failures = 0
        except (
            OSError, TimeoutError, ValueError, PeerUnavailable,
        ) as exc:  # fmt: skip
            if proto is not None and self._proto is not proto:
                proto.close()  # a handshake that failed half-way must not leak its socket
            self._failures += 1
            backoff = min(0.05 * 2 ** min(self._failures, 5), 1.0)
            self._retry_at = loop.time() + backoff
            raise PeerNotReached(f"cannot connect to {self.address}: {exc!r}") from None
        finally:
            done, self._connecting = self._connecting, None
            if not done.done():
                done.set_result(None)

    def replies_received(self, frames: list[tuple[int, int, str, Any]]) -> None:
        pending = self._pending
        for kind, request_id, _verb, body in frames:
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

    def lost(self, proto: _Caller, error: BaseException | None) -> None:
        """The connection ``proto`` closed (EOF, reset, garbage, or ours)."""
        if self._proto is proto:
            self._drop(error)

    def _drop(self, error: BaseException | None) -> None:
        proto, self._proto = self._proto, None
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.parts.clear()
        if proto is not None:
            proto.close()
            if error is not None:  # the peer went away: fail fast until a reconnect succeeds
                self._failures += 1
                self._retry_at = asyncio.get_running_loop().time() + 0.05
        failure = PeerUnavailable(f"connection to {self.address} lost: {error!r}")
        pending, self._pending = self._pending, {}
        for future, timer in pending.values():
            timer.cancel()
            if not future.done():
                future.set_exception(failure)

    def _on_write_error(self, proto: _Caller) -> Callable[[BaseException], None]:
        def failed(exc: BaseException) -> None:
            if self._proto is proto:
                self._drop(exc)

        return failed

    async def close(self) -> None:
        self._closed = True
        self._drop(None)


HANDSHAKE_TIMEOUT = 5.0  # seconds an inbound connection has to complete hello (and auth)


class _Callee(_Frames):
    """An inbound connection: the handshake (``hello``, then ``auth`` with a cluster secret),
    then requests, answered inline by the sync handler or in a task by the async one."""

    def __init__(self, service: MessagingService) -> None:
        super().__init__(HANDSHAKE_FRAME)  # before authentication, only small frames...
        self.batch = 1  # ...taken one at a time, as each may change the limits
        self.service = service
        self.state = "hello"  # then "auth" (with a secret), then "ready"
        self.outbox: _Outbox | None = None
        self.caller = ""
        self.their_nonce = b""
        self.nonce = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.service._inbound.add(self)
        self.timer = self.loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == "auth":  # it hung up after our challenge: it lacks the secret
            self.service._reject(None, 0, f"{self.caller!r} did not complete authentication")
        super().connection_lost(exc)
        self.service._inbound.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.outbox is not None:
            self.outbox.parts.clear()

    def _handshake_timeout(self) -> None:
        if self.state == "auth":
            self.state = "closing"
            self.service._reject(
                self.transport, 0, f"{self.caller!r} did not complete authentication"
            )
        self.close()

    def frames_received(self, frames: list[tuple[int, int, str, Any]]) -> None:
        if self.state == "ready":
            self._serve(frames)
        elif self.state != "closing":
            for frame in frames:  # one (see batch)
                self._handshake(*frame)

    def _handshake(self, kind: int, request_id: int, verb: str, body: Any) -> bool:
        """One handshake frame; False when the connection is refused (and closing)."""
        transport = self.transport
        if transport is None:
            return self._refuse()
        service = self.service
        if self.state == "hello":
            if kind != REQUEST or verb != "hello" or not isinstance(body, dict):
                transport.write(encode_frame(ERROR, request_id, verb, "expected hello"))
                return self._refuse()
            if service.secret is None:
                hello = {"node": service.node_id, "features": list(FEATURES)}
                transport.write(encode_frame(REPLY, request_id, "hello", hello))
                self._ready()
                return True
            self.caller, their_nonce = str(body.get("node")), body.get("nonce")
            if not isinstance(their_nonce, bytes) or len(their_nonce) < 16:
                service._reject(transport, request_id, "hello without a nonce")
                return self._refuse()
            self.their_nonce, self.nonce = their_nonce, auth.new_nonce()
            mine = auth.proof(service.secret, b"server", service.node_id, self.nonce, their_nonce)
            transport.write(
                encode_frame(REPLY, request_id, "hello", {"node": service.node_id,
                             "nonce": self.nonce, "proof": mine, "features": list(FEATURES)})
            )  # fmt: skip
            self.state = "auth"
            return True
        # "auth": the caller must prove the secret over our nonce
        assert service.secret is not None
        if (
            kind != REQUEST
            or verb != "auth"
            or not isinstance(body, dict)
            or not auth.verify(
                service.secret,
                b"client",
                self.caller,
                self.their_nonce,
                self.nonce,
                body.get("proof"),
            )
        ):
            service._reject(transport, request_id, "authentication failed")
            return self._refuse()
        transport.write(encode_frame(REPLY, request_id, "auth", {}))
        self._ready()
        return True

    def _refuse(self) -> bool:
        self.state = "closing"
        self.buffer.clear()
        self.close()
        return False

    def _ready(self) -> None:
        assert self.transport is not None
        self.state = "ready"
        self.max_frame, self.batch = MAX_FRAME, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.outbox = _Outbox(self.transport)

    def _serve(self, frames: list[tuple[int, int, str, Any]]) -> None:
        outbox = self.outbox
        assert outbox is not None
        sync_handler = self.service.sync_handler
        for kind, request_id, verb, body in frames:
            if kind != REQUEST:
                continue
            if sync_handler is not None:
                try:
                    result = sync_handler(verb, body)
                except Exception as exc:
                    log.debug("peer request %s failed: %r", verb, exc)
                    error = f"{type(exc).__name__}: {exc}"
                    outbox.add(encode_frame(ERROR, request_id, verb, error))
                    continue
                if result is not DEFER:
                    outbox.add(encode_frame(REPLY, request_id, verb, result))
                    continue
            self.service._spawn(self.service._dispatch(outbox, request_id, verb, body))
        if outbox.backlog() > FLUSH_NOW and self.transport is not None:
            # The caller sends faster than it reads our answers: stop reading until they drain.
            outbox.flush()
            if self._drain is not None:
                self.transport.pause_reading()
                self._drain.add_done_callback(self._resume_reading)

    def _resume_reading(self, _: asyncio.Future[None]) -> None:
        if self.transport is not None:
            self.transport.resume_reading()


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
    ) -> None:
        self.node_id = node_id
        self.sync_handler = sync_handler
        self.secret = secret
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.rejected = 0  # handshakes refused (wrong or missing secret)
        self.host = host
        self.port = port
        self.handler = handler
        self._server: asyncio.Server | None = None
        self._peers: dict[str, PeerConnection] = {}
        self._inbound: set[_Callee] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Callee(self), self.host, self.port, ssl=self.server_ssl
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._inbound):
            conn.close()
        for peer in list(self._peers.values()):
            await peer.close()
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

    def _reject(self, transport: asyncio.WriteTransport | None, request_id: int, why: str) -> None:
        self.rejected += 1
        log.warning("refused a peer connection: %s", why)
        if transport is not None and not transport.is_closing():
            transport.write(encode_frame(ERROR, request_id, "auth", why))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
