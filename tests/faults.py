"""Network fault injection for multi-process tests: partitions, blackholes and latency.

`FaultProxy` sits in front of ONE node's peer port. It speaks just enough of the peer protocol
(`ringkv.node.messaging`: 4-byte big-endian length + msgpack frame, the first frame of every
connection a ``hello`` naming the caller) to know who is calling, and forwards whole frames both
ways. Faults are per caller and act at once, also on connections already open:

    proxy = FaultProxy(target_port=node.peer_port).start()   # listens on 127.0.0.1:proxy.port
    proxy.block("n1")        # frames from/to n1 silently dropped; connections stay open
    proxy.unblock("n1")
    proxy.block_all()        # everybody, including callers that sent no hello
    proxy.delay(0.2)         # every forwarded frame waits 0.2 s more (order kept)
    proxy.heal()             # no blocks, no delay
    proxy.counters("n1")     # ProxyCounters(frames_in=..., dropped_frames=..., ...)
    proxy.stop()             # also a context manager

A blackhole drops whole frames, never part of one, so a connection stays well-framed and carries
traffic again after `unblock`/`heal` (the dropped requests simply time out, as over a lossy
network). While a caller is blocked nothing about its connections reaches the other side: a new
connection is accepted but its hello is held back (the node learns of it only after the heal,
and only if the caller still waits), and a close on either side is passed on only after the heal.

`PartitionedCluster` is a `tests.cluster.Cluster` whose every node advertises its proxy
(``--peer-advertise``) and is seeded with the proxy addresses, so all node-to-node traffic goes
through the proxies:

    cluster = PartitionedCluster(tmp_path, nodes=3).start()
    cluster.partition(["n1"], ["n2", "n3"])   # or 0-based indexes; both directions
    cluster.isolate("n3")                     # = partition(["n3"], everybody else)
    cluster.heal()
    cluster.stop()                            # kills the nodes, then stops the proxies

Only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from ringkv.node.messaging import MAX_FRAME, REQUEST
from tests.cluster import HOST, Cluster, wait_until

__all__ = ["FaultProxy", "PartitionedCluster", "ProxyCounters"]

_HEADER = struct.Struct(">I")
HELLO_TIMEOUT = 10.0  # a caller that sends no first frame in this long is dropped
CONNECT_TIMEOUT = 2.0  # to the node behind the proxy
QUEUE_FRAMES = 256  # frames buffered per direction before the reader waits
HIGH_WATER = 1024 * 1024  # bytes buffered in a writer before the forwarder waits for it
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class ProxyCounters:
    """What a proxy did, for one caller or for all. "in" is caller -> node, "out" node -> caller."""

    connections: int = 0
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    dropped_frames: int = 0
    dropped_bytes: int = 0

    @property
    def frames_forwarded(self) -> int:
        return self.frames_in + self.frames_out

    @property
    def bytes_forwarded(self) -> int:
        return self.bytes_in + self.bytes_out

    def __add__(self, other: ProxyCounters) -> ProxyCounters:
        return ProxyCounters(
            *(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__)
        )


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    """One whole frame, header included."""
    header = await reader.readexactly(4)
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds the {MAX_FRAME} byte limit")
    return header + await reader.readexactly(length)


def _hello_caller(frame: bytes) -> str | None:
    """The caller's node id if `frame` is a hello request, else None."""
    try:
        decoded = msgpack.unpackb(frame[4:], raw=False, strict_map_key=False)
    except Exception:
        return None
    if not isinstance(decoded, list) or len(decoded) != 4:
        return None
    kind, _, verb, body = decoded
    if kind != REQUEST or verb != "hello" or not isinstance(body, dict) or "node" not in body:
        return None
    return str(body["node"])


def _close(writer: asyncio.StreamWriter | None, abort: bool = False) -> None:
    if writer is None:
        return
    with contextlib.suppress(Exception):
        if abort:
            writer.transport.abort()
        else:
            writer.close()


class _Link:
    """One proxied connection: the caller's socket and (once opened) the node's."""

    __slots__ = ("caller", "client", "node", "tasks")

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.caller: str | None = None
        self.client = client
        self.node: asyncio.StreamWriter | None = None
        self.tasks: set[asyncio.Task[Any]] = set()


class FaultProxy:
    """A frame-aware TCP proxy in front of one node's peer port, with per-caller blackholes.

    The listening socket is bound at construction (so `port` is known before `start`, and is
    not racy); connections are refused until `start`. All controls are thread-safe.
    """

    def __init__(
        self,
        target_port: int,
        *,
        target_host: str = HOST,
        listen_port: int = 0,
        name: str = "",
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.name = name or f"proxy->{target_port}"
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((HOST, listen_port))
        except OSError:
            self._sock.close()
            raise
        self.port: int = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        self._blocked: set[str] = set()
        self._block_all = False
        self._delay = 0.0
        self._counts: dict[str | None, dict[str, int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._changed: asyncio.Event | None = None
        self._links: set[_Link] = set()
        self._stopped = False

    def __repr__(self) -> str:
        return f"FaultProxy({self.name}, {self.address} -> {self.target_host}:{self.target_port})"

    @property
    def address(self) -> str:
        """HOST:PORT to dial (what the node advertises)."""
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        assert self._thread is None and not self._stopped, "a FaultProxy starts only once"
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name=f"FaultProxy-{self.port}")
        self._thread.daemon = True  # never keeps the interpreter alive; stop() joins it
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(), loop).result(STOP_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close the listener and every connection (abruptly), end the thread. Idempotent."""
        self._stopped = True
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(STOP_TIMEOUT)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_TIMEOUT)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults (thread-safe, immediate) --------------------------------------------------

    def block(self, node_id: str) -> None:
        """Blackhole everything from and to `node_id`, on open and new connections."""
        with self._lock:
            self._blocked.add(node_id)
        self._notify()

    def unblock(self, node_id: str) -> None:
        with self._lock:
            self._blocked.discard(node_id)
        self._notify()

    def block_all(self) -> None:
        """Blackhole every caller (also those whose first frame was not a hello)."""
        with self._lock:
            self._block_all = True
        self._notify()

    def heal(self) -> None:
        """No blocked caller, no block_all, no delay."""
        with self._lock:
            self._blocked.clear()
            self._block_all = False
            self._delay = 0.0
        self._notify()

    def delay(self, seconds: float) -> None:
        """Add `seconds` of latency to every frame forwarded from now on (0 to remove)."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        with self._lock:
            self._delay = float(seconds)
        self._notify()

    @property
    def blocked(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._blocked)

    def is_blocked(self, caller: str | None) -> bool:
        with self._lock:
            return self._block_all or (caller is not None and caller in self._blocked)

    # -- counters --------------------------------------------------------------------------

    def counters(self, caller: str | None = None) -> ProxyCounters:
        """Totals for one caller id, or (no argument) for everybody."""
        with self._lock:
            if caller is not None:
                return ProxyCounters(**self._counts.get(caller, {}))
            total = ProxyCounters()
            for counts in self._counts.values():
                total = total + ProxyCounters(**counts)
            return total

    def callers(self) -> set[str]:
        """Node ids that have said hello through this proxy."""
        with self._lock:
            return {c for c in self._counts if c is not None}

    def open_connections(self) -> int:
        return len(self._links)

    def _count(self, caller: str | None, **deltas: int) -> None:
        with self._lock:
            counts = self._counts.setdefault(caller, {})
            for key, value in deltas.items():
                counts[key] = counts.get(key, 0) + value

    # -- the event loop thread ---------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    async def _open(self) -> None:
        self._changed = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, sock=self._sock)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            _close(link.client, abort=True)
            _close(link.node, abort=True)
            for task in link.tasks:
                task.cancel()
        self._links.clear()

    def _notify(self) -> None:
        """Wake whatever waits for a fault change (called from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_unblocked(self, caller: str | None) -> None:
        while True:
            changed = self._changed
            assert changed is not None
            if not self.is_blocked(caller):
                return
            await changed.wait()

    # -- one connection -----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        self._links.add(link)
        try:
            await self._proxy(link, reader)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, TimeoutError, ValueError):
            pass
        finally:
            for task in link.tasks:
                task.cancel()
            _close(link.client)
            _close(link.node)
            self._links.discard(link)

    async def _proxy(self, link: _Link, client_reader: asyncio.StreamReader) -> None:
        hello = await asyncio.wait_for(_read_frame(client_reader), HELLO_TIMEOUT)
        link.caller = _hello_caller(hello)
        self._count(link.caller, connections=1)
        inbound: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_FRAMES)
        self._spawn(link, self._read_into(client_reader, inbound))
        if not await self._hold(link, inbound):
            return  # the caller left while blocked: the node never heard of it
        node_reader, node_writer = await asyncio.wait_for(
            asyncio.open_connection(self.target_host, self.target_port), CONNECT_TIMEOUT
        )  # refused: the caller sees its connection closed, as it would without a proxy
        link.node = node_writer
        node_writer.write(hello)
        self._count(link.caller, frames_in=1, bytes_in=len(hello))
        outbound: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_FRAMES)
        self._spawn(link, self._read_into(node_reader, outbound))
        forwarders = {
            self._spawn(link, self._forward(link, inbound, node_writer, "in")),
            self._spawn(link, self._forward(link, outbound, link.client, "out")),
        }
        # Either side closing (passed on only once the caller is not blocked) ends the link.
        await asyncio.wait(forwarders, return_when=asyncio.FIRST_COMPLETED)

    def _spawn(self, link: _Link, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        link.tasks.add(task)
        return task

    async def _hold(self, link: _Link, inbound: asyncio.Queue[tuple[float, bytes] | None]) -> bool:
        """Keep the hello back while the caller is blocked, dropping anything else it sends.
        False if the caller went away meanwhile."""
        while True:
            changed = self._changed
            assert changed is not None
            if not self.is_blocked(link.caller):
                return True
            get = asyncio.ensure_future(inbound.get())
            wake = asyncio.ensure_future(changed.wait())
            done, pending = await asyncio.wait({get, wake}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if get in done:
                item = get.result()
                if item is None:
                    return False
                self._count(link.caller, dropped_frames=1, dropped_bytes=len(item[1]))

    async def _read_into(
        self, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes] | None]
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            while True:
                frame = await _read_frame(reader)
                await queue.put((loop.time(), frame))
        await queue.put(None)  # end of stream (EOF, reset or garbage)

    async def _forward(
        self,
        link: _Link,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
        direction: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await queue.get()
            if item is None:  # the source closed: a partition hides that until it heals
                await self._wait_unblocked(link.caller)
                return
            arrived, frame = item
            with self._lock:
                delay = self._delay
            wait = arrived + delay - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.is_blocked(link.caller):
                self._count(link.caller, dropped_frames=1, dropped_bytes=len(frame))
                continue
            if writer.is_closing():
                return
            writer.write(frame)
            self._count(link.caller, **{f"frames_{direction}": 1, f"bytes_{direction}": len(frame)})
            if writer.transport.get_write_buffer_size() > HIGH_WATER:
                try:
                    await writer.drain()
                except (ConnectionError, OSError):
                    return


class PartitionedCluster(Cluster):
    """A `Cluster` whose node-to-node traffic all goes through one `FaultProxy` per node.

    Node i advertises its proxy (``--peer-advertise 127.0.0.1:<proxy port>``) and every node is
    seeded with the proxy addresses; the command lines never change, so a restarted node is
    behind the same proxy. The proxies start with `start()` and stop with `stop()`.
    """

    def __init__(
        self,
        tmp_path: Path,
        nodes: int = 3,
        zones: int = 3,
        replication_factor: int = 3,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(tmp_path, nodes, zones, replication_factor, extra_args)
        self.proxies: list[FaultProxy] = []
        try:
            for node in self.nodes:
                self.proxies.append(FaultProxy(node.peer_port, name=node.node_id))
        except BaseException:
            self._stop_proxies()
            raise
        seeds = ",".join(proxy.address for proxy in self.proxies)
        for node, proxy in zip(self.nodes, self.proxies, strict=True):
            at = node.args.index("--seeds")
            node.args[at + 1] = seeds
            node.args += ["--peer-advertise", proxy.address]

    def proxy(self, which: int | str) -> FaultProxy:
        """The proxy in front of that node (0-based index or node id)."""
        return self.proxies[self.nodes.index(self.node(which))]

    def start(self, deadline: float = 30) -> PartitionedCluster:
        for proxy in self.proxies:
            if not proxy.running:
                proxy.start()
        super().start(deadline)
        return self

    def wait_ready(self, deadline: float = 30) -> None:
        """`Cluster.wait_ready`, then /health/ready once more on every running node: the base
        checks readiness before membership, so a node could pass while a peer it already saw
        alive had not yet claimed tokens (its ring one node short, `w=all` refused)."""
        end = time.monotonic() + deadline
        super().wait_ready(deadline)
        running = [node for node in self.nodes if node.running]
        try:
            wait_until(
                lambda: all(node.ready() for node in running),
                max(0.1, end - time.monotonic()),
                message="every node ready with the ring settled",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tails()}") from None

    def stop(self) -> None:
        """SIGKILL every node, close the clients, then stop the proxies."""
        try:
            super().stop()
        finally:
            self._stop_proxies()

    def _stop_proxies(self) -> None:
        for proxy in self.proxies:
            proxy.stop()

    def __enter__(self) -> PartitionedCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    # -- faults -----------------------------------------------------------------------------

    def _ids(self, group: Iterable[int | str]) -> list[str]:
        return [self.node(which).node_id for which in group]

    def partition(self, group_a: Iterable[int | str], group_b: Iterable[int | str]) -> None:
        """Nodes of A can no longer reach nodes of B, nor B reach A (other pairs unchanged)."""
        a, b = self._ids(group_a), self._ids(group_b)
        if set(a) & set(b):
            raise ValueError(f"a node cannot be on both sides: {sorted(set(a) & set(b))}")
        for x in a:
            for y in b:
                self.proxy(y).block(x)  # x -> y traffic, and y's answers to x
                self.proxy(x).block(y)  # y -> x traffic, and x's answers to y

    def isolate(self, which: int | str) -> None:
        """Cut one node off from every other node."""
        node_id = self.node(which).node_id
        self.partition([node_id], [n.node_id for n in self.nodes if n.node_id != node_id])

    def heal(self) -> None:
        """Every proxy back to a healthy network (no blocks, no delay)."""
        for proxy in self.proxies:
            proxy.heal()
