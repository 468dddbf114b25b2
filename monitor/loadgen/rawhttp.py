"""A minimal HTTP/1.1 client for plain-http streaming POSTs, used by the load generator.

A streamed answer is one small event per token; through httpx each costs about ten times what the
simulator spends producing it, so the load generator, not the servers, would be what saturates.
This client does only what a load test needs — keep-alive connections per host, a JSON POST, a
chunked or length-delimited response read line by line — on asyncio streams. https targets, and
anything unusual (proxies, redirects), go through httpx instead.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator
from urllib.parse import urlsplit


class RawHttpError(Exception):
    """The connection failed or the server broke the protocol; the message is shown to users."""


class ConnectionPool:
    """Idle keep-alive connections per (host, port); a connection is used by one request at a time."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    async def acquire(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        idle = self._idle.get((host, port))
        while idle:
            reader, writer = idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return reader, writer, False

    def release(self, host: str, port: int, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self._idle.setdefault((host, port), []).append(conn)

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()


class Response:
    """Status and headers of an answer; `lines()` then yields its body line by line."""

    def __init__(self, reader: asyncio.StreamReader, status: int, headers: dict[str, str]) -> None:
        self.reader = reader
        self.status = status
        self.headers = headers
        self.complete = False  # the whole body was read, so the connection can be reused

    @property
    def keep_alive(self) -> bool:
        return self.complete and self.headers.get("connection", "").lower() != "close"

    async def _chunks(self) -> AsyncIterator[bytes]:
        reader = self.reader
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await reader.readline()
                if not size_line:
                    raise RawHttpError("connection closed mid-response")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self.complete = True
                    return
                data = await reader.readexactly(size)
                await reader.readexactly(2)
                yield data
        elif "content-length" in self.headers:
            remaining = int(self.headers["content-length"])
            while remaining > 0:
                data = await reader.read(min(remaining, 1 << 16))
                if not data:
                    raise RawHttpError("connection closed mid-response")
                remaining -= len(data)
                yield data
            self.complete = True
        else:
            while data := await reader.read(1 << 16):
                yield data

    async def lines(self) -> AsyncIterator[str]:
        pending = b""
        async for data in self._chunks():
            pending += data
            if b"\n" not in data:
                continue
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.rstrip(b"\r").decode("utf-8", "replace")
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8", "replace")

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self._chunks()])


def split_url(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not a plain http URL: {url}")
    return parts.hostname, parts.port or 80, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]] | None:
    status_line = await reader.readline()
    if not status_line:
        return None
    try:
        status = int(status_line.split(None, 2)[1])
    except (IndexError, ValueError):
        raise RawHttpError(f"not an HTTP response: {status_line[:80]!r}") from None
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            return status, headers
        if not line:
            raise RawHttpError("connection closed in the response headers")
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()


class Exchange:
    """`async with Exchange(pool, url, body) as response`: one POST; the connection goes back to the
    pool only when the response was read to its end."""

    def __init__(self, pool: ConnectionPool, url: str, body: bytes) -> None:
        self.pool = pool
        self.host, self.port, self.path = split_url(url)
        self.body = body
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._response: Response | None = None

    async def __aenter__(self) -> Response:
        head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Accept: text/event-stream, application/json\r\nContent-Length: {len(self.body)}\r\n\r\n").encode()
        for _ in range(2):  # an idle keep-alive connection may have been closed by the server: retry once
            reader, writer, reused = await self.pool.acquire(self.host, self.port)
            try:
                writer.write(head + self.body)
                await writer.drain()
                parsed = await _read_head(reader)
            except (ConnectionError, OSError):
                writer.close()
                if reused:
                    continue
                raise
            if parsed is None:
                writer.close()
                if reused:
                    continue
                raise RawHttpError("connection closed before the response")
            self._conn = (reader, writer)
            self._response = Response(reader, *parsed)
            return self._response
        raise RawHttpError("connection closed before the response")

    async def __aexit__(self, *exc_info) -> None:
        if self._conn is None:
            return
        if self._response is not None and self._response.keep_alive and exc_info[0] is None:
            self.pool.release(self.host, self.port, self._conn)
        else:
            self._conn[1].close()
