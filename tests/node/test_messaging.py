"""The node-to-node protocol (ringkv.node.messaging) between in-process services.

Two ``MessagingService`` objects talk over loopback, or a raw socket speaks to one so that the
bytes on the wire (split reads, garbage, a silent caller) are exactly the ones written here.
Each test runs on the default asyncio loop and on uvloop (see conftest.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import pytest

from ringkv.node import auth, messaging
from ringkv.node.frame_auth import FrameOpener, FrameSealer, session_keys
from ringkv.node.messaging import (
    DEFER,
    ERROR,
    REPLY,
    REQUEST,
    MessagingService,
    PeerError,
    PeerNotReached,
    PeerUnavailable,
    RemoteError,
    encode_frame,
    take_frames,
)
from tests.node.conftest import Run

TIMEOUT = 5.0
SECRET = b"s" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def echo(verb: str, body: Any) -> Any:
    if verb == "fail":
        raise RuntimeError("as asked")
    if verb == "slow":
        await asyncio.sleep(body)
    return {"verb": verb, "body": body, "async": True}


def inline(verb: str, body: Any) -> Any:
    if verb == "sync":
        return {"verb": verb, "body": body, "async": False}
    if verb == "sync_fail":
        raise ValueError("inline failure")
    return DEFER


@asynccontextmanager
async def service(
    name: str, secret: bytes | None = None, port: int = 0
) -> AsyncIterator[MessagingService]:
    svc = MessagingService(
        name, "127.0.0.1", port or free_port(), echo, secret=secret, sync_handler=inline
    )
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


def address(svc: MessagingService) -> str:
    return f"127.0.0.1:{svc.port}"


async def read_frames(reader: asyncio.StreamReader, count: int) -> list[tuple[Any, ...]]:
    buffer, frames = bytearray(), []
    while len(frames) < count:
        chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
        frames += take_frames(buffer)
    return frames


def session(caller_nonce: bytes, callee_nonce: bytes) -> tuple[FrameSealer, FrameOpener]:
    """The frame sealer and opener of a raw caller "raw" talking to "callee"."""
    outbound, inbound = session_keys(SECRET, "raw", "callee", caller_nonce, callee_nonce)
    return FrameSealer(outbound), FrameOpener(inbound)


async def read_sealed(reader: asyncio.StreamReader, opener: FrameOpener) -> tuple[Any, ...]:
    buffer = bytearray()
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
        frames = take_frames(buffer, messaging.MAX_FRAME, opener)
        if frames:
            return frames[0]


async def authenticated(
    svc: MessagingService,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, FrameSealer, FrameOpener]:
    """A raw connection that completed the handshake as "raw"."""
    reader, writer = await connect(svc)
    nonce = auth.new_nonce()
    writer.write(encode_frame(REQUEST, 0, "hello", {"node": "raw", "nonce": nonce}))
    (hello,) = await read_frames(reader, 1)
    proof = auth.proof(SECRET, b"client", "raw", nonce, hello[3]["nonce"])
    writer.write(encode_frame(REQUEST, 1, "auth", {"proof": proof}))
    assert (await messaging.read_frame(reader))[:2] == (REPLY, 1)
    return reader, writer, *session(nonce, hello[3]["nonce"])


async def connect(svc: MessagingService) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to ``svc``'s peer port."""
    return await asyncio.open_connection("127.0.0.1", svc.port)


async def closed_by_peer(reader: asyncio.StreamReader) -> None:
    """Return once the peer has closed the connection (``TimeoutError`` if it does not)."""
    try:
        while await asyncio.wait_for(reader.read(65536), TIMEOUT):
            pass
    except ConnectionError:
        pass


async def still_serves(callee: MessagingService, body: int) -> None:
    """A well-behaved caller still gets answers (a bad connection hurt only itself)."""
    async with service("caller") as caller:
        assert (await caller.request(address(callee), "sync", body, TIMEOUT))["body"] == body


@pytest.mark.parametrize("secret", [None, SECRET], ids=["open", "secret"])
def test_requests_get_their_own_replies_inline_async_and_errors(
    run: Run, secret: bytes | None
) -> None:
    async def main() -> None:
        async with service("callee", secret) as callee, service("caller", secret) as caller:
            target = address(callee)
            calls = [caller.call(target, "sync", i, TIMEOUT) for i in range(50)]
            calls += [caller.call(target, "later", i, TIMEOUT) for i in range(50)]
            replies = await asyncio.gather(*calls)
            assert [r["body"] for r in replies] == [*range(50), *range(50)]
            assert [r["async"] for r in replies] == [False] * 50 + [True] * 50
            with pytest.raises(RemoteError, match="as asked"):
                await caller.request(target, "fail", None, TIMEOUT)
            with pytest.raises(RemoteError, match="inline failure"):
                await caller.request(target, "sync_fail", None, TIMEOUT)
            assert caller.supports(target, "record")
            assert caller.peer(target).remote_id == "callee"
            assert callee.rejected == 0

    run(main())


def test_replies_come_back_out_of_order_and_a_late_one_times_out(run: Run) -> None:
    async def main() -> None:
        async with service("callee") as callee, service("caller") as caller:
            target = address(callee)
            slow = caller.call(target, "slow", 0.3, TIMEOUT)
            fast = caller.call(target, "sync", "quick", TIMEOUT)
            assert (await fast)["body"] == "quick"
            assert not slow.done()
            assert (await slow)["body"] == 0.3
            with pytest.raises(messaging.PeerTimeout):
                await caller.request(target, "slow", 1.0, 0.1)

    run(main())


def test_large_frames_cross_many_reads(run: Run) -> None:
    async def main() -> None:
        async with service("callee") as callee, service("caller") as caller:
            value = bytes(range(256)) * 16384  # 4 MiB: many reads each way
            reply = await caller.request(address(callee), "sync", value, TIMEOUT)
            assert reply["body"] == value

    run(main())


def test_frames_split_into_single_bytes_are_reassembled(run: Run) -> None:
    async def main() -> None:
        async with service("callee") as callee:
            reader, writer = await connect(callee)
            data = encode_frame(REQUEST, 0, "hello", {"node": "raw"})
            data += encode_frame(REQUEST, 7, "sync", "a") + encode_frame(REQUEST, 8, "x", "b")
            for i in range(len(data)):
                writer.write(data[i : i + 1])
                await writer.drain()
            frames = await read_frames(reader, 3)
            assert frames[0][:3] == (REPLY, 0, "hello")
            by_id = {f[1]: f for f in frames[1:]}
            assert by_id[7][0] == REPLY and by_id[7][3]["body"] == "a"
            assert by_id[8][0] == REPLY and by_id[8][3]["async"] is True
            writer.close()

    run(main())


def test_a_caller_that_does_not_say_hello_is_refused(run: Run) -> None:
    async def main() -> None:
        async with service("callee") as callee:
            reader, writer = await connect(callee)
            writer.write(encode_frame(REQUEST, 3, "replicate", {"key": b"k"}))
            (frame,) = await read_frames(reader, 1)
            assert frame[:2] == (ERROR, 3) and "hello" in frame[3]
            await closed_by_peer(reader)
            writer.close()

    run(main())


def test_a_large_frame_before_the_handshake_closes_the_connection(run: Run) -> None:
    async def main() -> None:
        async with service("callee") as callee:
            reader, writer = await connect(callee)
            big = {"node": "x", "pad": b"p" * (messaging.HANDSHAKE_FRAME + 1)}
            writer.write(encode_frame(REQUEST, 0, "hello", big))
            await closed_by_peer(reader)
            writer.close()
            await still_serves(callee, 1)

    run(main())


def test_garbage_after_the_handshake_drops_only_that_connection(run: Run) -> None:
    async def main() -> None:
        async with service("callee") as callee:
            reader, writer = await connect(callee)
            writer.write(encode_frame(REQUEST, 0, "hello", {"node": "raw"}))
            await read_frames(reader, 1)
            payload = b"\xc1\xc1\xc1"  # never valid msgpack
            writer.write(len(payload).to_bytes(4, "big") + payload)
            await closed_by_peer(reader)
            writer.close()
            await still_serves(callee, 2)

    run(main())


def test_a_caller_without_the_secret_is_rejected(run: Run) -> None:
    async def main() -> None:
        async with service("callee", SECRET) as callee:
            async with service("intruder", b"w" * 32) as intruder:
                with pytest.raises(PeerNotReached):
                    await intruder.request(address(callee), "sync", 1, TIMEOUT)
            async with service("open") as open_caller:  # no secret: its request is refused
                with pytest.raises(RemoteError, match="authentication failed"):
                    await open_caller.request(address(callee), "sync", 1, TIMEOUT)
            # a raw caller that proves nothing and hangs up after the challenge
            reader, writer = await connect(callee)
            writer.write(encode_frame(REQUEST, 0, "hello", {"node": "raw", "nonce": b"n" * 16}))
            (frame,) = await read_frames(reader, 1)
            assert frame[0] == REPLY and isinstance(frame[3]["nonce"], bytes)
            writer.write(encode_frame(REQUEST, 1, "auth", {"proof": b"wrong"}))
            (refusal,) = await read_frames(reader, 1)
            assert refusal[0] == ERROR
            await closed_by_peer(reader)
            writer.close()
            assert callee.rejected >= 3

    run(main())


def test_a_valid_proof_pipelined_with_requests_is_served(run: Run) -> None:
    """The proof and the first requests may arrive in one read."""

    async def main() -> None:
        async with service("callee", SECRET) as callee:
            reader, writer = await connect(callee)
            nonce = auth.new_nonce()
            writer.write(encode_frame(REQUEST, 0, "hello", {"node": "raw", "nonce": nonce}))
            (hello,) = await read_frames(reader, 1)
            body = hello[3]
            assert auth.verify(SECRET, b"server", "callee", body["nonce"], nonce, body["proof"])
            proof = auth.proof(SECRET, b"client", "raw", nonce, body["nonce"])
            big = b"v" * (messaging.HANDSHAKE_FRAME * 4)  # allowed once authenticated
            sealer, opener = session(nonce, body["nonce"])
            writer.write(
                encode_frame(REQUEST, 1, "auth", {"proof": proof})
                + sealer.seal(encode_frame(REQUEST, 2, "sync", big))
            )
            assert (await messaging.read_frame(reader))[:2] == (REPLY, 1)
            frame = await read_sealed(reader, opener)
            assert frame[:2] == (REPLY, 2) and frame[3]["body"] == big
            writer.close()

    run(main())


def test_a_silent_caller_is_closed_after_the_handshake_timeout(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messaging, "HANDSHAKE_TIMEOUT", 0.2)

    async def main() -> None:
        async with service("callee", SECRET) as callee:
            reader, writer = await connect(callee)
            await closed_by_peer(reader)  # said nothing at all
            writer.close()
            reader, writer = await connect(callee)
            writer.write(encode_frame(REQUEST, 0, "hello", {"node": "raw", "nonce": b"n" * 16}))
            await read_frames(reader, 1)  # the challenge; then silence
            await closed_by_peer(reader)
            writer.close()
            assert callee.rejected == 1

    run(main())


def test_a_lost_connection_fails_pending_calls_and_the_next_request_reconnects(
    run: Run,
) -> None:
    async def main() -> None:
        port = free_port()
        async with service("caller") as caller:
            target = f"127.0.0.1:{port}"
            async with service("callee", port=port):
                assert (await caller.request(target, "sync", 1, TIMEOUT))["body"] == 1
                pending = caller.call(target, "slow", 2.0, TIMEOUT)
                await asyncio.sleep(0)  # let it be written
            with pytest.raises(PeerUnavailable):
                await pending
            assert not caller.is_connected(target)
            with pytest.raises(PeerNotReached):  # nobody listens now
                await caller.request(target, "sync", 2, TIMEOUT)
            async with service("callee", port=port):
                deadline = asyncio.get_running_loop().time() + TIMEOUT
                while True:  # the back-off after the failure is short (< 1 s)
                    try:
                        reply = await caller.request(target, "sync", 3, TIMEOUT)
                        break
                    except PeerNotReached:
                        assert asyncio.get_running_loop().time() < deadline
                        await asyncio.sleep(0.05)
                assert reply["body"] == 3

    run(main())


def test_stop_fails_outstanding_calls(run: Run) -> None:
    async def main() -> None:
        async with service("callee") as callee:
            caller = MessagingService("caller", "127.0.0.1", free_port(), echo)
            await caller.start()
            target = address(callee)
            await caller.request(target, "sync", 0, TIMEOUT)
            pending = caller.call(target, "slow", 2.0, TIMEOUT)
            await caller.stop()
            with pytest.raises(PeerError):
                await pending
            with pytest.raises(PeerNotReached):
                await caller.request(target, "sync", 1, TIMEOUT)

    run(main())


def test_take_frames_takes_complete_frames_and_leaves_a_partial_one() -> None:
    frames = [encode_frame(REQUEST, i, "v", {"i": i}) for i in range(3)]
    buffer = bytearray(b"".join(frames) + frames[0][:5])
    assert [f[1] for f in take_frames(buffer)] == [0, 1, 2]
    assert bytes(buffer) == frames[0][:5]
    with pytest.raises(ValueError, match="exceeds"):
        take_frames(bytearray(frames[0]), max_size=4)
    packed = msgpack.packb([REQUEST, 1, "v"])
    with pytest.raises(ValueError, match="malformed"):
        take_frames(bytearray(len(packed).to_bytes(4, "big") + packed))


def test_frames_after_the_handshake_must_carry_their_tag(run: Run) -> None:
    """Someone on the path (no TLS) cannot inject, alter or replay frames on an authenticated
    connection: each is refused and the connection closed, nothing is served."""

    async def main() -> None:
        async with service("callee", SECRET) as callee:
            # a well-tagged frame is served
            reader, writer, sealer, opener = await authenticated(callee)
            writer.write(sealer.seal(encode_frame(REQUEST, 2, "sync", "ok")))
            assert (await read_sealed(reader, opener))[3]["body"] == "ok"
            writer.close()
            # injected: a frame with a made-up tag (or a plain one, whose "tag" is then the
            # start of whatever follows it)
            reader, writer, sealer, opener = await authenticated(callee)
            writer.write(encode_frame(REQUEST, 2, "sync", "injected") + bytes(16))
            await closed_by_peer(reader)
            writer.close()
            # altered: one payload byte flipped
            reader, writer, sealer, opener = await authenticated(callee)
            sealed = bytearray(sealer.seal(encode_frame(REQUEST, 2, "sync", "payload")))
            sealed[-20] ^= 1
            writer.write(bytes(sealed))
            await closed_by_peer(reader)
            writer.close()
            # replayed: a frame tagged for sequence number 0, sent again as number 1
            reader, writer, sealer, opener = await authenticated(callee)
            first = sealer.seal(encode_frame(REQUEST, 2, "sync", "once"))
            writer.write(first)
            assert (await read_sealed(reader, opener))[3]["body"] == "once"
            writer.write(first)
            await closed_by_peer(reader)
            writer.close()

    run(main())


def test_undecodable_frames_are_counted_and_close_the_connection(run: Run) -> None:
    refused: list[str] = []

    async def main() -> None:
        svc = MessagingService(
            "callee", "127.0.0.1", free_port(), echo, sync_handler=inline,
            on_refused=refused.append,
        )  # fmt: skip
        await svc.start()
        try:
            for payload in (bytes.fromhex("81910102"), b"\xc1", b"\x91" * 3000):
                reader, writer = await connect(svc)
                writer.write(len(payload).to_bytes(4, "big") + payload)
                await closed_by_peer(reader)
                writer.close()
        finally:
            await svc.stop()

    run(main())
    assert refused == ["malformed"] * 3


def test_a_slow_name_is_looked_up_once_at_a_time_and_not_reused_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer name that takes longer to resolve than the connect timeout (missing while its pod
    is recreated, the resolver walking its search list) occupies one resolver thread, not one
    per attempt: lookups cannot be stopped, and a pile of them delays every later lookup,
    also of peers that are back. Default loop only: it resolves through socket.getaddrinfo in
    a thread, which the test slows down (uvloop resolves in libuv's pool)."""
    import threading
    import time

    real = socket.getaddrinfo
    lock = threading.Lock()
    calls: list[float] = []
    running = [0, 0]  # now, most at once
    answer = ["missing"]

    def slow(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "slow.peer.test":
            return real(host, port, *args, **kwargs)
        with lock:
            calls.append(time.monotonic())
            running[0] += 1
            running[1] = max(running)
        try:
            time.sleep(0.6)
            if answer[0] == "missing":
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real("127.0.0.1", port, *args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(socket, "getaddrinfo", slow)

    async def main() -> None:
        async with service("callee") as callee:
            peer = messaging.PeerConnection(
                "caller", f"slow.peer.test:{callee.port}", connect_timeout=0.1
            )
            try:
                loop = asyncio.get_running_loop()
                end = loop.time() + 2.0
                while loop.time() < end:  # every attempt times out while the name is slow
                    peer.reset_backoff()
                    with pytest.raises(PeerNotReached):
                        await peer.request("sync", 1, TIMEOUT)
                    await asyncio.sleep(0.02)
                assert running[1] == 1, running  # one lookup at a time, not one per attempt
                assert 2 <= len(calls) <= 5, calls  # back to back: each one taken over
                # The name appears (the pod is back): a lookup that started before is not
                # trusted; the next fresh one finds it and the peer is reached.
                answer[0] = "there"
                end = loop.time() + 10.0
                while True:
                    peer.reset_backoff()
                    try:
                        reply = await peer.request("sync", 2, TIMEOUT)
                        break
                    except PeerNotReached:
                        assert loop.time() < end
                        await asyncio.sleep(0.05)
                assert reply["body"] == 2
                assert running[1] == 1
            finally:
                await peer.close()

    with asyncio.Runner() as r:
        r.run(asyncio.wait_for(main(), 30))
