"""The lean HTTP/1.1 client that scrapes plain-http targets and drives the load generator.

Against a scripted loopback server that answers each request on a kept-alive connection with bytes
the test chooses: bodies in every framing HTTP/1.1 has, connections reused (and retried when the
server dropped an idle one), basic auth from the URL, and every read bounded against a peer that
sends a head, a chunk size line or a chunk that never ends.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Callable

import pytest

from monitor.http1 import ConnectionPool, Exchange, RawHttpError

Answer = Callable[[str, int], bytes | None]  # (request head, n-th request on this connection) -> bytes to send


class ScriptedServer:
    """Reads request heads off each connection and writes `answer(head, n)`; None hangs up, an answer
    ending in `CLOSE` is followed by hanging up, one ending in `HANG` by waiting for the client to."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.heads: list[str] = []
        self.connections = 0
        self.hangups = 0  # connections the client closed

    async def __aenter__(self) -> "ScriptedServer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head.decode("latin-1"))
                reply = self.answer(self.heads[-1], n)
                n += 1
                if reply is None:
                    break
                hang, close = reply.endswith(HANG), reply.endswith(CLOSE)
                writer.write(reply.removesuffix(HANG).removesuffix(CLOSE))
                await writer.drain()
                if close:
                    break
                if hang:
                    await reader.read()  # until the client closes
                    self.hangups += 1
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            self.hangups += 1
        except asyncio.CancelledError:  # the test's loop is closing
            pass
        finally:
            writer.close()


HANG = b"<hang>"
CLOSE = b"<close>"


def ok(body: bytes, **headers: str) -> bytes:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def chunked(*pieces: bytes) -> bytes:
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for piece in pieces:
        out += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\nX-Trailer: yes\r\n\r\n"


async def get(pool: ConnectionPool, url: str) -> tuple[int, bytes, dict[str, str]]:
    async with Exchange(pool, url) as response:
        return response.status, await response.read(), response.headers


async def test_bodies_in_every_framing_on_one_kept_alive_connection():
    answers = [ok(b"hello"), chunked(b"a" * 70_000, b"bc"), b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after 1xx"),
               b"HTTP/1.1 204 No Content\r\n\r\n", ok(b"last")]
    async with ScriptedServer(lambda head, n: answers[n]) as server:
        pool = ConnectionPool()
        got = [await get(pool, server.url + f"/r{i}?q=1") for i in range(len(answers))]
        await pool.aclose()
    assert [(status, body) for status, body, _ in got] == [
        (200, b"hello"), (200, b"a" * 70_000 + b"bc"), (200, b"after 1xx"), (204, b""), (200, b"last")]
    assert server.connections == 1  # every answer was read to its end, so the connection was reused
    assert [h.split(" ")[1] for h in server.heads] == [f"/r{i}?q=1" for i in range(5)]
    assert all(f"Host: 127.0.0.1:{server.url.rsplit(':', 1)[1]}\r\n" in h for h in server.heads)


async def test_close_delimited_and_connection_close_answers_are_not_reused():
    answers = {0: b"HTTP/1.0 200 OK\r\n\r\nuntil close" + CLOSE, 1: ok(b"x", Connection="close") + CLOSE}
    async with ScriptedServer(lambda head, n: answers[len(server.heads) - 1]) as server:
        pool = ConnectionPool()
        first = await get(pool, server.url)
        second = await get(pool, server.url)
        await pool.aclose()
    assert first[:2] == (200, b"until close") and second[:2] == (200, b"x")
    assert server.connections == 2 and pool._idle == {}


async def test_a_dropped_idle_connection_is_retried_once_on_a_new_one():
    # answers once per connection, then closes it without saying so (a server's idle timeout)
    async with ScriptedServer(lambda head, n: ok(b"fresh") if n == 0 else None) as server:
        pool = ConnectionPool()
        results = [await get(pool, server.url) for _ in range(3)]
        await pool.aclose()
    assert [r[:2] for r in results] == [(200, b"fresh")] * 3
    assert server.connections == 3


async def test_basic_auth_comes_from_the_url_and_keeps_connections_apart():
    async with ScriptedServer(lambda head, n: ok(b"")) as server:
        pool = ConnectionPool()
        authed = server.url.replace("http://", "http://us%40er:p%3Ass@")
        await get(pool, authed + "/metrics")
        await get(pool, server.url + "/metrics")
        await pool.aclose()
    expected = base64.b64encode(b"us@er:p:ss").decode()
    assert f"Authorization: Basic {expected}\r\n" in server.heads[0]
    assert "Authorization" not in server.heads[1]
    assert server.connections == 2  # an authenticated connection is not lent to an anonymous request


@pytest.mark.parametrize("reply, message", [
    (b"SSH-2.0-OpenSSH_9.6\r\n", "not an HTTP/1.x response"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * 70_000 + b"\r\n\r\n", "longer than 65536"),
    (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70)) + b"\r\n",
     "head longer than 65536"),
    (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", "more than 100"),
    (b"HTTP/1.1 200 OK\r\nBad header\r\n\r\n", "bad header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 70_000, "chunk size line longer than"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n", "longer than its declared"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort" + CLOSE, "closed before the end of the body"),
    (b"HTTP/1.1 200 OK\r\nContent-Le" + CLOSE, "closed in the response head"),
])
async def test_broken_answers_are_named_errors_and_their_connection_is_dropped(reply, message):
    async with ScriptedServer(lambda head, n: reply) as server:
        pool = ConnectionPool()
        with pytest.raises(RawHttpError, match=message):
            await get(pool, server.url)
        await pool.aclose()
    assert pool._idle == {}


async def test_a_huge_declared_chunk_arrives_in_bounded_pieces_and_a_timeout_closes_the_connection():
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40000000\r\n" + b"z" * 300_000 + HANG  # 1 GiB
    async with ScriptedServer(lambda h, n: head) as server:
        pool = ConnectionPool()
        sizes: list[int] = []
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                async with Exchange(pool, server.url) as response:
                    async for piece in response.aiter_raw():
                        sizes.append(len(piece))
        for _ in range(50):
            if server.hangups:
                break
            await asyncio.sleep(0.02)
        await pool.aclose()
    assert sum(sizes) == 300_000 and max(sizes) <= 65536
    assert server.hangups == 1 and pool._idle == {}  # the half-read connection was closed, not kept


async def test_a_hung_server_cancelled_before_its_head_leaves_nothing_behind():
    async with ScriptedServer(lambda h, n: HANG) as server:
        pool = ConnectionPool()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await get(pool, server.url)
        for _ in range(50):
            if server.hangups:
                break
            await asyncio.sleep(0.02)
        await pool.aclose()
    assert server.hangups == 1 and pool._idle == {}


async def test_idle_connections_per_host_are_capped():
    async with ScriptedServer(lambda head, n: ok(b"x")) as server:
        pool = ConnectionPool(idle_per_host=2)
        await asyncio.gather(*(get(pool, server.url) for _ in range(5)))
        kept = sum(len(v) for v in pool._idle.values())
        await pool.aclose()
    assert server.connections == 5 and kept == 2


async def test_a_body_left_mid_chunk_reads_on_where_it_stopped_and_the_connection_is_reused():
    # the load generator stops at `data: [DONE]` and then drains the rest of the stream
    answers = [chunked(b"data: 1\n" * 20_000, b"data: [DONE]\n", b"\n"), ok(b"next")]
    async with ScriptedServer(lambda head, n: answers[n]) as server:
        pool = ConnectionPool()
        async with Exchange(pool, server.url) as response:
            async for piece in response.aiter_raw():
                break  # a 160 KB chunk: stopped inside it
            rest = [line async for line in response.lines()]
            assert response.complete
        following = await get(pool, server.url)
        await pool.aclose()
    assert len(piece) < 160_000 and rest[-2:] == ["data: [DONE]", ""]
    assert following[:2] == (200, b"next") and server.connections == 1
