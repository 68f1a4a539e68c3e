"""The connections' write joining (``service.connections.JoinedWrites``) over real loopback
sockets: what a turn of the event loop writes leaves at its end, joined and in order, up to
``JOIN_BYTES``; beyond, at once; ``close`` sends what is held first."""

from __future__ import annotations

import asyncio
from typing import Any

from service.connections import JOIN_BYTES, JoinedWrites


class Recording:
    """The real transport, with its ``write`` calls recorded (what reached the socket)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class Pair:
    """A loopback connection: the peer's stream, the server side's recorded transport and
    the joined writes over it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 rec: Recording, joined: JoinedWrites, server: asyncio.Server) -> None:
        self.reader, self.writer, self.rec, self.joined, self.server = \
            reader, writer, rec, joined, server

    async def close(self) -> None:
        self.joined.close()
        self.writer.close()
        await self.writer.wait_closed()
        self.server.close()
        await self.server.wait_closed()


async def _pair() -> Pair:
    made: asyncio.Future[asyncio.Transport] = asyncio.get_running_loop().create_future()

    class Side(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.set_result(transport)  # type: ignore[arg-type]

    server = await asyncio.get_running_loop().create_server(Side, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    recording = Recording(await made)
    joined = JoinedWrites(recording, asyncio.get_running_loop())  # type: ignore[arg-type]
    return Pair(reader, writer, recording, joined, server)


async def _next_turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_turns_writes_leave_at_its_end_joined_and_several_connections_together() -> None:
    async def main() -> None:
        a = await _pair()
        b = await _pair()
        # one turn: a response's head and body on each of two connections
        a.joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
        a.joined.write(memoryview(b"body-a"))
        b.joined.write(bytearray(b"HTTP/1.1 200 OK\r\n\r\n"))
        b.joined.write(b"body-b")
        assert a.rec.writes == [] and b.rec.writes == []  # nothing sent within the turn
        await _next_turns()
        assert a.rec.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody-a"]
        assert b.rec.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody-b"]
        assert await a.reader.readexactly(25) == b"HTTP/1.1 200 OK\r\n\r\nbody-a"
        assert await b.reader.readexactly(25) == b"HTTP/1.1 200 OK\r\n\r\nbody-b"
        # the next turn's write is held again, then sent alone
        a.joined.write(b"next")
        assert len(a.rec.writes) == 1
        await _next_turns()
        assert a.rec.writes[1:] == [b"next"]
        assert await a.reader.readexactly(4) == b"next"
        await a.close()
        await b.close()

    asyncio.run(main())


def test_past_the_join_size_writes_leave_at_once_in_order() -> None:
    async def main() -> None:
        p = await _pair()
        rec, joined = p.rec, p.joined
        big = bytes(range(256)) * (JOIN_BYTES // 256 + 1)
        joined.write(b"head")
        joined.write(b"-small")
        assert rec.writes == []
        joined.write(big)  # held + big > JOIN_BYTES: both at once, held first
        assert rec.writes == [b"head-small", big]
        joined.write(b"tail")  # held again until the turn ends
        assert len(rec.writes) == 2
        await _next_turns()
        assert rec.writes[2:] == [b"tail"]
        want = b"head-small" + big + b"tail"
        assert await p.reader.readexactly(len(want)) == want
        await p.close()

    asyncio.run(main())


def test_close_sends_what_is_held_before_the_end_of_the_stream() -> None:
    async def main() -> None:
        p = await _pair()
        rec, joined = p.rec, p.joined
        joined.write(b"last words")
        joined.close()
        assert rec.writes == [b"last words"]
        assert joined.is_closing()
        assert await p.reader.read() == b"last words"  # then EOF
        await _next_turns()  # the turn's flush finds nothing left to send
        assert rec.writes == [b"last words"]
        await p.close()

    asyncio.run(main())
