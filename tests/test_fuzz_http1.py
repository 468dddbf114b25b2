"""The scraping HTTP/1.1 client against hostile answers: whatever bytes a server sends, only
`RawHttpError` comes out, in bounded time, and a connection goes back to the pool only when its
answer was framed exactly (no byte past the Content-Length or the last chunk). Properties feed the
parser through a real `asyncio.StreamReader`; the pooling rule is also checked on a loopback socket."""

from __future__ import annotations

import asyncio
from typing import Self

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.http1 import (
    HEAD_LIMIT,
    BadUrl,
    ConnectionPool,
    Exchange,
    RawHttpError,
    Response,
    _read_head,
)

FAST = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])


async def _parse(data: bytes, method: str = "GET") -> tuple[Response | None, bytes, bool]:
    """(response, body, all bytes consumed) of `data` as one answer on a connection closed after it."""
    reader = asyncio.StreamReader(limit=HEAD_LIMIT)
    reader.feed_data(data)
    reader.feed_eof()
    parsed = await _read_head(reader)
    if parsed is None:
        return None, b"", True
    status, headers = parsed
    response = Response(reader, status, headers, has_body=method != "HEAD" and status not in (204, 304))
    body = await response.read()
    return response, body, not reader._buffer


def parse(data: bytes) -> tuple[Response | None, bytes, bool]:
    return asyncio.run(asyncio.wait_for(_parse(data), 5))


head_line = st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 200 OK\r\n",
                             b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", b"HTTP/1.1 204 No\r\n", b"HTTP/2 200\r\n", b"\r\n"])
header = st.one_of(
    st.builds(lambda n: b"Content-Length: " + n + b"\r\n",
              st.sampled_from([b"0", b"5", b"3", b"5, 5", b"5, 6", b"\xb2", b"-1", b"0x5", b"99999999999999999999"])),
    st.sampled_from([b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip, chunked\r\n",
                     b"Connection: close\r\n", b"Connection: keep-alive\r\n", b"X: y\r\n", b" bad\r\n", b"x\r\n"]),
)
chunk_size = st.sampled_from([b"5", b"0", b"0x5", b"+5", b"5_0", b"ffffffffffffffffff", b"5;ext=1", b"", b"-0"])
body_piece = st.one_of(st.binary(max_size=20), st.builds(lambda s: s + b"\r\nhello\r\n", chunk_size),
                       st.just(b"0\r\n\r\n"), st.just(b"hello"))
answer = st.builds(lambda h, hs, b: h + b"".join(hs) + b"\r\n" + b"".join(b),
                   head_line, st.lists(header, max_size=4), st.lists(body_piece, max_size=4))


@FAST
@given(st.one_of(st.binary(max_size=300), answer))
def test_any_bytes_from_a_server_raise_only_raw_http_errors(data):
    try:
        parse(data)
    except RawHttpError:
        pass


@FAST
@given(answer)
def test_an_answer_counts_as_reusable_only_when_its_framing_used_every_byte_and_no_more(data):
    try:
        response, _, consumed = parse(data)
    except RawHttpError:
        return
    if response is None or not response.keep_alive:
        return
    # keep_alive alone says the framing ended; with the bytes after it still waiting it is not reusable
    assert response.reusable == consumed
    if response.reusable:  # framed by its length, its chunks, or by having no body at all
        assert ("content-length" in response.headers or "chunked" in response.headers.get("transfer-encoding", "")
                or response.status in (204, 304))


@FAST
@given(st.binary(min_size=1, max_size=30))
def test_bytes_after_a_content_length_body_make_the_connection_not_reusable(extra):
    response, body, _ = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + extra)
    assert body == b"hello" and response is not None and response.keep_alive and not response.reusable


@pytest.mark.parametrize("line", [b"0x5", b"+5", b"5_0", b" 5 5"])
def test_a_chunk_size_python_would_read_but_http_does_not_allow_is_refused(line):
    with pytest.raises(RawHttpError, match="bad chunk size"):
        parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + line + b"\r\nhello\r\n0\r\n\r\n")


def test_a_content_length_of_a_non_ascii_digit_is_refused():
    with pytest.raises(RawHttpError, match="bad Content-Length"):
        parse(b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nab")


class Loopback:
    """Answers every request on a connection with `reply`, and counts connections."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.connections = 0

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(self.reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def get(pool: ConnectionPool, url: str) -> bytes:
    async with asyncio.timeout(5):
        async with Exchange(pool, url) as response:
            return await response.read()


async def test_a_body_that_runs_past_its_content_length_is_not_pooled_and_the_next_request_reads_cleanly():
    async with Loopback(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA bytes nobody asked for") as server:
        pool = ConnectionPool()
        assert await get(pool, server.url + "/a") == b"hello"
        assert await get(pool, server.url + "/b") == b"hello"  # not "not an HTTP/1.x response: b'EXTRA..."
        assert server.connections == 2
        await pool.aclose()


async def test_an_exact_answer_is_pooled_and_reused():
    async with Loopback(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello") as server:
        pool = ConnectionPool()
        assert [await get(pool, server.url + "/a") for _ in range(3)] == [b"hello"] * 3
        assert server.connections == 1
        await pool.aclose()


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/metrics€", "http://127.0.0.1:1/a b", "http://127.0.0.1:1/a\x00",
                                 "http://127.0.0.1:x/", "https://127.0.0.1:1/", "http://[::1/"])
async def test_a_request_that_cannot_be_sent_is_a_raw_http_error_before_any_connection(url):
    pool = ConnectionPool()
    with pytest.raises(BadUrl) as refused:
        async with Exchange(pool, url):
            pass
    assert isinstance(refused.value, RawHttpError)
