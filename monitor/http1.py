"""A small HTTP/1.1 client on asyncio streams, for the two hot paths that talk plain http on loopback
or a private network: scraping the fleet's `/metrics` and `/health`, and the load generator's
streamed POSTs.

Through httpx each request costs 4-5 ms of CPU (measured at 200 targets: a ~58 KB page and a health
probe per target), most of it in httpcore's and anyio's layers rather than in the bytes; a raw
keep-alive GET costs about 0.2 ms. At 1,000 targets every 5 s that difference alone is most of a
core. This client does only what those paths need — keep-alive connections per host, one request
at a time on each, Content-Length, chunked or close-delimited bodies, basic auth from the URL —
and bounds every read, because its peers are exactly the servers that misbehave: a status line or
head that never ends, a chunk size line of a megabyte, a chunk that declares a gigabyte. https, and
anything unusual (proxies, redirects), go through httpx instead.

Timeouts are the caller's: wrap the exchange in `asyncio.timeout`; a cancelled exchange closes its
connection, so a half-read answer is never handed to the next request.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
from dataclasses import dataclass
from typing import AsyncIterator
from urllib.parse import unquote, urlsplit

HEAD_LIMIT = 64 * 1024  # status line + headers; Prometheus and Go's net/http use the same order of size
MAX_HEADERS = 100
READ_SIZE = 1 << 16


class RawHttpError(Exception):
    """The connection failed, the server broke the protocol, or the request cannot be written as
    HTTP/1.1; the message is shown to users. The only error this module raises (cancellation aside)."""


class BadUrl(RawHttpError, ValueError):
    """A URL this client cannot send: not plain http, a bad port, or a path or header that would
    not survive as one line of ASCII in the request head."""


_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one URL's requests go, and what every request to it carries."""

    host: str
    port: int
    path: str  # with the query, if any
    host_header: str
    authorization: str | None  # from user:password@ in the URL

    @property
    def key(self) -> tuple[str, int, str | None]:
        return self.host, self.port, self.authorization


@functools.lru_cache(maxsize=16384)  # every target's two URLs, asked again each cycle
def split_url(url: str) -> Origin:
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError as exc:  # a port that is not a number, "Invalid IPv6 URL"
        raise BadUrl(f"not a plain http URL: {url!r:.200} ({exc})") from None
    if parts.scheme != "http" or not parts.hostname:
        raise BadUrl(f"not a plain http URL: {url!r:.200}")
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin(host, port, path, f"{shown}:{port}" if parts.port else shown, authorization)


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class ConnectionPool:
    """Idle keep-alive connections per origin; a connection is used by one request at a time.

    One dictionary lookup per request whatever the number of hosts (httpcore's pool scans every
    connection it holds on each request event, which is why the scraper once needed a client per target).
    """

    def __init__(self, idle_per_host: int | None = None) -> None:
        self._idle: dict[tuple[str, int, str | None], list[Connection]] = {}
        self.idle_per_host = idle_per_host

    async def acquire(self, origin: Origin) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        idle = self._idle.get(origin.key)
        while idle:
            reader, writer = idle.pop()
            if not writer.is_closing() and not reader.at_eof() and not buffered(reader):
                return reader, writer, True
            writer.close()  # closed, or bytes arrived while idle that no request asked for
        reader, writer = await asyncio.open_connection(origin.host, origin.port, limit=HEAD_LIMIT)
        return reader, writer, False

    def release(self, origin: Origin, conn: Connection) -> None:
        idle = self._idle.setdefault(origin.key, [])
        if self.idle_per_host is not None and len(idle) >= self.idle_per_host:
            conn[1].close()
        else:
            idle.append(conn)

    def retain(self, keys: set[tuple[str, int, str | None]]) -> None:
        """Close and forget the idle connections of every origin not in `keys` (targets that left
        the fleet: each would otherwise hold its sockets open for as long as the process runs)."""
        for key in [k for k in self._idle if k not in keys]:
            for _, writer in self._idle.pop(key):
                writer.close()

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()


class Response:
    """Status and headers of an answer; `aiter_raw()`, `lines()` or `read()` then give its body."""

    def __init__(self, reader: asyncio.StreamReader, status: int, headers: dict[str, str], *,
                 has_body: bool = True) -> None:
        self.reader = reader
        self.status = status
        self.headers = headers
        self.complete = not has_body  # the whole body was read, so the connection can be reused
        self._has_body = has_body
        self._close_delimited = False
        self._body: AsyncIterator[bytes] | None = None

    @property
    def status_code(self) -> int:  # httpx's name, so callers can take either kind of response
        return self.status

    @property
    def keep_alive(self) -> bool:
        return self.complete and not self._close_delimited and self.headers.get("connection", "").lower() != "close"

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry the next request: the body was read to exactly its
        framed end, and nothing came after it. Bytes already waiting (a body that ran past its
        Content-Length, a second answer nobody asked for) would be read as the next answer's head."""
        return self.keep_alive and not buffered(self.reader)

    def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives, still content-encoded, in pieces of at most 64 KiB. One reader
        of the body for the response's life: a loop that stops early and another that reads on
        continue where the first left off (a chunk may be half-read in between)."""
        if self._body is None:
            self._body = self._read_body()
        return self._body

    async def _read_body(self) -> AsyncIterator[bytes]:
        if not self._has_body:
            return
        reader = self.reader
        encoding = self.headers.get("transfer-encoding", "").lower()
        if encoding.rsplit(",", 1)[-1].strip() == "chunked":
            while True:
                size_line = await _readline(reader, "chunk size")
                size_text = size_line.split(b";", 1)[0].strip()
                if not _CHUNK_SIZE.fullmatch(size_text):  # int(..., 16) would take "0x1f", "+1", "1_0"
                    raise RawHttpError(f"bad chunk size line {size_line[:40]!r}")
                size = int(size_text, 16)
                if size == 0:
                    for _ in range(MAX_HEADERS):  # trailers, then the empty line
                        if (await _readline(reader, "trailer")) in (b"\r\n", b"\n"):
                            self.complete = True
                            return
                    raise RawHttpError("too many trailer lines")
                async for piece in _exactly(reader, size):
                    yield piece
                if (await _readline(reader, "chunk end")) not in (b"\r\n", b"\n"):
                    raise RawHttpError("chunk longer than its declared size")
        elif not encoding and "content-length" in self.headers:
            async for piece in _exactly(reader, content_length(self.headers)):
                yield piece
            self.complete = True
        else:
            self._close_delimited = True
            while data := await reader.read(READ_SIZE):
                yield data
            self.complete = True

    async def lines(self) -> AsyncIterator[str]:
        pending = b""
        async for data in self.aiter_raw():
            pending += data
            if b"\n" not in data:
                continue
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.rstrip(b"\r").decode("utf-8", "replace")
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8", "replace")

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_raw()])


def content_length(headers: dict[str, str]) -> int:
    value = headers["content-length"]
    values = {v.strip() for v in value.split(",")}  # "5, 5" is allowed (RFC 9110), "5, 6" is not
    if len(values) != 1 or not _DIGITS.fullmatch(only := values.pop()):  # str.isdigit() takes "²"
        raise RawHttpError(f"bad Content-Length {value[:40]!r}")
    return int(only)


def buffered(reader: asyncio.StreamReader) -> int:
    """Bytes received and not read yet. StreamReader has no public way to ask; its buffer has been
    `_buffer` since asyncio began, and if that ever changes this says 0 and only the check is lost."""
    return len(getattr(reader, "_buffer", b""))


async def _readline(reader: asyncio.StreamReader, what: str) -> bytes:
    try:
        line = await reader.readline()
    except ValueError:  # longer than the reader's limit (HEAD_LIMIT)
        raise RawHttpError(f"{what} line longer than {HEAD_LIMIT} bytes") from None
    if not line.endswith(b"\n"):
        raise RawHttpError(f"connection closed in the {what}")
    return line


async def _exactly(reader: asyncio.StreamReader, size: int) -> AsyncIterator[bytes]:
    """`size` bytes in pieces: a declared size is never allocated at once (a chunk may claim a GiB)."""
    while size > 0:
        data = await reader.read(min(size, READ_SIZE))
        if not data:
            raise RawHttpError("connection closed before the end of the body")
        size -= len(data)
        yield data


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]] | None:
    """(status, headers) with lower-case names, None if the connection closed before a byte came."""
    size = 0
    while True:  # 1xx answers (100 Continue, 103 Early Hints) come before the real one
        try:
            status_line = await reader.readline()
        except ValueError:
            raise RawHttpError(f"status line longer than {HEAD_LIMIT} bytes") from None
        if not status_line and size == 0:
            return None
        if not status_line.endswith(b"\n"):
            raise RawHttpError(f"connection closed in the status line {status_line[:60]!r}")
        size += len(status_line)
        fields = status_line.split(None, 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/1.") or not fields[1].isdigit():
            raise RawHttpError(f"not an HTTP/1.x response: {status_line[:60]!r}")
        status = int(fields[1])
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = await _readline(reader, "response head")
            size += len(line)
            if size > HEAD_LIMIT:
                raise RawHttpError(f"response head longer than {HEAD_LIMIT} bytes")
            if line in (b"\r\n", b"\n"):
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise RawHttpError(f"bad header line {line[:60]!r}")
            name = name.lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        else:
            raise RawHttpError(f"more than {MAX_HEADERS} response headers")
        if fields[0] == b"HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
            headers["connection"] = "close"
        if not 100 <= status < 200 or status == 101:
            return status, headers


@functools.lru_cache(maxsize=16384)  # the same few heads per target, cycle after cycle
def request_head(origin: Origin, method: str, headers: tuple[tuple[str, str], ...],
                 content_length: int | None) -> bytes:
    """The request head; BadUrl for a path or header that cannot be sent as it is (a space,
    a control character or non-ASCII in the path would change what the line means; a CR or
    LF in a header would start another)."""
    path = origin.path
    if any(not " " < c <= "~" for c in path):
        raise BadUrl(f"path {path[:80]!r} cannot be sent: non-ASCII, a space or a control character "
                     "(percent-encode it)")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {origin.host_header}"]
    if origin.authorization:
        lines.append(f"Authorization: {origin.authorization}")
    lines += [f"{name}: {value}" for name, value in headers]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    if any(c in line for line in lines[1:] for c in "\r\n\0"):
        raise BadUrl("a header holds a line break")
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError as exc:
        raise BadUrl(f"the request head cannot be sent as Latin-1: {exc.reason} at "
                     f"{exc.object[exc.start:exc.end]!r}") from None


class Exchange:
    """`async with Exchange(pool, url) as response`: one request; the connection goes back to the
    pool only when the response was read to its end, and is closed on any error or cancellation."""

    def __init__(self, pool: ConnectionPool, url: str, body: bytes | None = None, *, method: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.pool = pool
        self.origin = split_url(url)
        self.body = body
        self.method = method or ("GET" if body is None else "POST")
        self.headers = headers or {}
        self._conn: Connection | None = None
        self._response: Response | None = None

    def _head(self) -> bytes:
        return request_head(self.origin, self.method, tuple(self.headers.items()),
                            None if self.body is None else len(self.body))

    async def __aenter__(self) -> Response:
        request = self._head() + (self.body or b"")  # BadUrl, before any connection is taken
        for _ in range(2):  # an idle keep-alive connection may have been closed by the server: retry once
            try:
                reader, writer, reused = await self.pool.acquire(self.origin)
            except (OSError, UnicodeError, ValueError) as exc:  # UnicodeError: a name IDNA cannot encode
                raise RawHttpError(f"{type(exc).__name__}: {exc}") from None
            try:
                writer.write(request)
                await writer.drain()
                parsed = await _read_head(reader)
            except OSError as exc:  # ConnectionError included
                writer.close()
                if reused:
                    continue
                raise RawHttpError(f"{type(exc).__name__}: {exc}") from None
            except BaseException:  # a protocol error, or cancelled by the caller's timeout
                writer.close()
                raise
            if parsed is None:
                writer.close()
                if reused:
                    continue
                raise RawHttpError("connection closed before the response")
            status, headers = parsed
            self._conn = (reader, writer)
            has_body = self.method != "HEAD" and status not in (204, 304)
            self._response = Response(reader, status, headers, has_body=has_body)
            return self._response
        raise RawHttpError("connection closed before the response")

    async def __aexit__(self, *exc_info: object) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        if self._response is not None and self._response.reusable and exc_info[0] is None:
            self.pool.release(self.origin, conn)
        else:
            conn[1].close()
