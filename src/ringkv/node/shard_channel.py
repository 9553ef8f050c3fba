"""The local channel between the shards of one node: client requests handed to their shard.

A client request that reaches a shard which does not serve it (a key another shard owns; a
node-wide request on a shard other than 0) is handed to the shard that does over a Unix
domain socket in the node's data directory (``shard-I.sock``, owner-only), one connection per
pair of siblings and direction. It is not a peer frame: the peer protocol's handshake, frame
authentication, verb dispatch and per-request task are for other nodes; a sibling is the same
program on the same disk. What the channel does instead:

- **Already parsed.** The request goes as one msgpack array (method, path, query, headers,
  repeated header names, body, keep-alive), so the owning shard does not parse HTTP again.
- **Answered as HTTP.** For a client's key request the owning shard answers with the bytes of
  the HTTP response its own wrapper and handler produced (``http.serialize``), and the shard
  that holds the client's connection writes them out as they are (``_Connection.answer_raw``):
  no Response is rebuilt or serialized twice. Requests the forwarding shard still has to read
  (a batch's part, whose results it merges) get status, body and headers instead.
- **Batched.** Everything handed to one sibling in one event-loop turn goes out in one write,
  and the answers a shard finishes in one turn go back in one write.
- **Once-only checks stay where they were.** The owning shard's wrapper (``Api.wrap``)
  applies authentication and the overload limit, as for a request on its own port; the
  channel itself grants nothing a client could not do on the client port. The socket file is
  its owner's only, so another local user can neither connect nor stand in for a sibling.

A sibling that is not running (no socket, connection refused) or that dies with requests
outstanding (the connection closes) makes those requests a 503 ``unavailable`` naming the
shard at once; one that stops answering makes them a 503 after the request timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from typing import TYPE_CHECKING, Any

import msgpack

from ringkv.node.http import Request, Response, error_response, serialize

if TYPE_CHECKING:
    from ringkv.node.http import _Connection
    from ringkv.node.server import Api

log = logging.getLogger(__name__)

#: The longest socket path bound or dialled as it is (``sun_path`` holds 108 bytes); a longer
#: one is reached through ``/proc/self/fd`` and an open descriptor of its directory.
MAX_SOCKET_PATH = 100
#: How often outstanding requests are checked against their deadline (seconds).
SWEEP_INTERVAL = 0.5

RAW, PARTS = 0, 1  # an answer as HTTP bytes to write out, or as status, body and headers


def socket_name(shard: int) -> str:
    return f"shard-{shard}.sock"


class _Directory:
    """Where the sockets are: the node's data directory, by a short name if need be."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    def address(self, name: str) -> str:
        full = os.path.join(self.path, name)
        if len(full.encode()) <= MAX_SOCKET_PATH:
            return full
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self.fd}/{name}"

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ShardChannel:
    """This shard's end of the channel: the server its siblings hand requests to, and one
    client link per sibling it hands requests to."""

    def __init__(self, api: Api, data_dir: str) -> None:
        node = api.node
        assert node.layout is not None
        self.api = api
        self.layout = node.layout
        self.directory = _Directory(data_dir)
        self.timeout = node.config.request_timeout + 2.0
        self.siblings: dict[int, _Sibling] = {}
        self.server: asyncio.AbstractServer | None = None
        self.inbound: set[_Inbound] = set()

    # -- serving siblings ------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on this shard's socket (one a dead predecessor left behind is replaced)."""
        loop = asyncio.get_running_loop()
        address = self.directory.address(socket_name(self.layout.index))
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(address).st_mode):
                os.unlink(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address)
            os.chmod(address, 0o600)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        self.server = await loop.create_unix_server(lambda: _Inbound(self), sock=sock)

    async def close(self, timeout: float) -> None:
        """Stop listening, give the requests siblings handed here ``timeout`` to finish, and
        close every connection (requests this shard handed out then fail as 503)."""
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(OSError):  # the file would outlive the shard
                os.unlink(self.directory.address(socket_name(self.layout.index)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(c.running for c in self.inbound) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.inbound):
            conn.close()
        for sibling in self.siblings.values():
            sibling.close()
        self.directory.close()

    # -- handing requests over -------------------------------------------------------------

    def sibling(self, shard: int) -> _Sibling:
        link = self.siblings.get(shard)
        if link is None:
            link = self.siblings[shard] = _Sibling(self, shard)
        return link

    def hand_over_raw(self, conn: _Connection, request: Request, shard: int) -> None:
        """Serve ``request`` of client connection ``conn`` on ``shard``: the answer (the HTTP
        bytes the sibling produced, or a 503) is written to ``conn`` when it comes."""
        keep_alive = request.keep_alive and not conn.server.closing
        self.sibling(shard).send(RAW, request, keep_alive, (conn, request))

    async def hand_over(self, request: Request, shard: int) -> Response:
        """Serve ``request`` on ``shard`` and return its answer (or a 503)."""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.sibling(shard).send(PARTS, request, request.keep_alive, future)
        return await future


def unavailable(shard: int, why: str) -> Response:
    return error_response(503, "unavailable", f"shard {shard} of this node is not running: {why}")


class _Sibling(asyncio.Protocol):
    """The link to one sibling: requests written in one loop turn go out in one write, and
    each answer is matched to its request by id."""

    def __init__(self, channel: ShardChannel, shard: int) -> None:
        self.channel = channel
        self.shard = shard
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.connecting = False
        self.out: list[bytes] = []
        self.flush_scheduled = False
        # id -> (mode, the connection and request, or the future; deadline)
        self.pending: dict[int, tuple[int, Any, float]] = {}
        self.next_id = 0
        self.packer = msgpack.Packer()
        self.unpacker = msgpack.Unpacker(raw=False)
        self.sweeper: asyncio.TimerHandle | None = None

    def send(self, mode: int, request: Request, keep_alive: bool, waiter: Any) -> None:
        self.next_id += 1
        request_id = self.next_id
        repeated = sorted(request.repeated) if request.repeated else None
        self.out.append(self.packer.pack((
            request_id, mode, request.method, request.path, request.query_string,
            request.headers, repeated, request.body, keep_alive,
        )))  # fmt: skip
        self.pending[request_id] = (mode, waiter, self.loop.time() + self.channel.timeout)
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)
        if self.transport is not None:
            if not self.flush_scheduled:
                self.flush_scheduled = True
                self.loop.call_soon(self._flush)
        elif not self.connecting:
            self.connecting = True
            self.loop.create_task(self._connect())

    def _flush(self) -> None:
        self.flush_scheduled = False
        out, self.out = self.out, []
        if out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    async def _connect(self) -> None:
        address = self.channel.directory.address(socket_name(self.shard))
        try:
            await self.loop.create_unix_connection(lambda: self, address)
        except OSError as exc:
            self.connecting = False
            self._fail_all(exc.strerror or str(exc))
            return
        self.connecting = False
        self._flush()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.unpacker = msgpack.Unpacker(raw=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail_all("it stopped while serving the request")

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        pending = self.pending
        for answer in self.unpacker:
            entry = pending.pop(answer[0], None)
            if entry is None:
                continue  # timed out already
            mode, waiter, _deadline = entry
            if mode == RAW:
                conn, _request = waiter
                conn.answer_raw(answer[1], answer[2])
            elif not waiter.done():
                waiter.set_result(Response(answer[1], answer[2], [tuple(h) for h in answer[3]]))

    # -- failures --------------------------------------------------------------------------

    def _fail(self, entry: tuple[int, Any, float], why: str) -> None:
        mode, waiter, _deadline = entry
        response = unavailable(self.shard, why)
        if mode == RAW:
            conn, request = waiter
            conn.answer(request, response)
        elif not waiter.done():
            waiter.set_result(response)

    def _fail_all(self, why: str) -> None:
        pending, self.pending = self.pending, {}
        self.out.clear()
        for entry in pending.values():
            self._fail(entry, why)

    def _sweep(self) -> None:
        """Answer 503 to the requests past their deadline (a sibling that stopped answering
        but keeps its connection open: stopped, or stuck)."""
        self.sweeper = None
        now = self.loop.time()
        expired = [i for i, (_m, _w, deadline) in self.pending.items() if deadline <= now]
        for request_id in expired:
            self._fail(self.pending.pop(request_id), "no answer in time")
        if self.pending:
            self.sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        if self.transport is not None:
            self.transport.close()


class _Inbound(asyncio.Protocol):
    """One sibling's connection to this shard: each request handed over is served by this
    shard's wrapper and handler, and answered as soon as it is done."""

    def __init__(self, channel: ShardChannel) -> None:
        self.channel = channel
        self.api = channel.api
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.unpacker = msgpack.Unpacker(raw=False)
        self.packer = msgpack.Packer()
        self.out: list[bytes] = []
        self.running = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.channel.inbound.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.channel.inbound.discard(self)

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        for frame in self.unpacker:
            request_id, mode, method, path, query, headers, repeated, body, keep_alive = frame
            request = Request(method, path, query, headers, set(repeated) if repeated else None,
                              body, keep_alive)  # fmt: skip
            resolved = self.api.router.resolve(method, path)
            if isinstance(resolved, Response):
                self._answer(request_id, mode, request, resolved)
                continue
            self.running += 1
            self.loop.create_task(self._serve(request_id, mode, request, resolved))

    async def _serve(self, request_id: int, mode: int, request: Request, handler: Any) -> None:
        """One task per request, as on a client connection; answered in the task's own step
        (no done-callback turn)."""
        try:
            response = await self.api.wrap(request, handler)
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.path)
            response = error_response(500, "internal", "internal error; see the node log")
        finally:
            self.running -= 1
        self._answer(request_id, mode, request, response)

    def _answer(self, request_id: int, mode: int, request: Request, response: Response) -> None:
        if self.transport is None:
            return
        if mode == RAW:
            keep_alive = request.keep_alive
            date = self.api.server.clock.date()
            head_only = request.method == "HEAD"
            try:
                data = b"".join(serialize(response, head_only, keep_alive, date))
            except Exception:  # a handler's header that HTTP cannot carry
                log.exception("cannot send the answer to %s %s", request.method, request.path)
                keep_alive = False
                internal = error_response(500, "internal", "internal error; see the node log")
                data = b"".join(serialize(internal, False, keep_alive, date))
            frame = self.packer.pack((request_id, data, keep_alive))
        else:
            frame = self.packer.pack((request_id, response.status, response.body,
                                      response.headers))  # fmt: skip
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.append(frame)

    def _flush(self) -> None:
        out, self.out = self.out, []
        if out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self) -> None:
        if self.transport is not None:
            self._flush()
            self.transport.close()
