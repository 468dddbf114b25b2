"""Health checks answered on a thread of their own, so that they never wait for the cycle.

The scrape cycle runs on the service's event loop, and parsing 1,000 pages or evaluating their SLOs holds
that loop (and the GIL) for tens to hundreds of milliseconds at a time: a check answered by the loop waited
for it (p99 209 ms, max 348 ms at 1,000 instances with traffic; seconds at 5,000, past HAProxy's 2 s
default check timeout). Here the API's listening socket is owned by `FrontDoor`, on `CheckLoop`'s thread:

- a request `GET /upstreams/{pool}/{instance}` is answered there from the last published snapshot
  (monitor/publish/checks.py), with the same status, body and `X-Decided-At` header as the API route;
- anything else (another path, another method, a body, HTTP/1.0, a head it cannot read) hands the
  connection, with the bytes read so far, to the service's loop, where uvicorn serves it as if it had
  accepted it (and keeps it to the end: a connection is handed over once).

The thread competes for the GIL, not for the loop: a check waits at most a few switch intervals
(`sys.setswitchinterval`) for a cycle that is busy in Python code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from monitor.publish.checks import CheckAnswer

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024  # a longer request head is not a check: uvicorn answers it
KEEPALIVE_S = 5.0  # as uvicorn's default timeout_keep_alive
PREFIX = b"/upstreams/"

Answer = Callable[[str, str], CheckAnswer]
Handoff = Callable[[socket.socket, bytes], None]


class CheckLoop:
    """An event loop on a daemon thread: the health-check listeners (this front door, the HAProxy agent)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="slo-monitor-checks", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> CheckLoop:
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def submit(self, work: Coroutine[Any, Any, Any]) -> Awaitable[Any]:
        """Run `work` on the check loop; await the result from another loop."""
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))

    def start_soon(self, work: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run `work` on the check loop without waiting for it: from any thread, with or without an
        event loop of its own (`submit`'s wrapping needs one)."""
        return asyncio.run_coroutine_threadsafe(work, self.loop)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10.0)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()


def parse_check(head: bytes) -> tuple[tuple[str, str] | None, bool]:
    """((pool, instance) when the request head is a check this door answers, else None; whether the
    client asked to close). Pure: the head is the bytes before the blank line."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or parts[2] != b"HTTP/1.1":
        return None, False
    close = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            return None, False
        name = name.strip().lower()
        if name in (b"content-length", b"transfer-encoding", b"expect", b"upgrade") and value.strip() != b"0":
            return None, False
        if name == b"connection" and b"close" in value.lower():
            close = True
    path = parts[1].split(b"?", 1)[0]
    if not path.startswith(PREFIX):
        return None, close
    try:
        segments = unquote(path[len(PREFIX):].decode("ascii"), errors="strict").split("/")
    except UnicodeError:
        return None, close
    if len(segments) != 2 or not all(segments) or segments[1] == "nginx.conf":
        return None, close
    return (segments[0], segments[1]), close


_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}" for s in HTTPStatus}
_date: tuple[int, str] = (0, "")  # the second and its Date header value: formatted once a second, not per answer


def http_date(now: float | None = None) -> str:
    global _date
    second = int(time.time() if now is None else now)
    if second != _date[0]:
        _date = (second, formatdate(second, usegmt=True))  # one assignment: a reader sees either pair whole
    return _date[1]


def render(answer: CheckAnswer, close: bool) -> bytes:
    body = answer.body.encode()
    status_line = _STATUS_LINES.get(answer.status) or f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}"
    head = [status_line, f"date: {http_date()}",
            f"content-length: {len(body)}", "content-type: text/plain; charset=utf-8"]
    if answer.decided_at is not None:
        head.append(f"x-decided-at: {answer.decided_at}")
    if close:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class FrontDoor:
    """The API socket's listener on the check loop: answers checks, hands the rest to `handoff`.

    Connections are asyncio protocols, not tasks: a check is parsed in `data_received` and its answer
    written at once, with no task, future or reader registration per request (a task per `sock_recv`
    made the thread cost more than its answers). Idle connections are closed by one sweep a second."""

    def __init__(self, sock: socket.socket, answer: Answer, handoff: Handoff) -> None:
        self.sock = sock
        self.answer = answer
        self.handoff = handoff
        self.answered = 0
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task | None = None
        self._open: set[_CheckConnection] = set()

    async def serve(self) -> None:
        """Accept until `close` (on the check loop)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _CheckConnection(self), sock=self.sock, backlog=2048)
        self._sweeper = asyncio.current_task()
        try:
            while True:
                await asyncio.sleep(1.0)
                self._sweep(loop.time())
        finally:
            self._server.close()

    def _sweep(self, now: float) -> None:
        for connection in list(self._open):
            limit = 30.0 if connection.buffer else KEEPALIVE_S
            if now - connection.active_at > limit:
                connection.close()

    async def close(self) -> None:
        """Stop accepting and close the connections still held here (on the check loop)."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self._open):
            connection.close()


class _CheckConnection(asyncio.Protocol):
    """One client connection while the front door holds it: checks answered in order, then (at the
    first request that is not a check) the socket and the bytes read so far handed over."""

    def __init__(self, door: FrontDoor) -> None:
        self.door = door
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.active_at = 0.0
        self._handing = False  # no more reading: the connection goes to uvicorn once its answers have left
        self._given = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.active_at = asyncio.get_running_loop().time()
        self.door._open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.door._open.discard(self)

    def close(self) -> None:
        """Idle too long, or the service stops: answers still buffered are sent first, unless the
        connection was waiting to be handed over (its client is not reading)."""
        if self.transport is not None and not self._given:
            if self._handing:
                self.transport.abort()
            else:
                self.transport.close()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self._handing:
            return
        self.active_at = asyncio.get_running_loop().time()
        self.buffer += data
        door = self.door
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._hand_over()  # not a check: uvicorn answers it
                return
            check, close = parse_check(self.buffer[:end])
            if check is None:
                self._hand_over()
                return
            try:
                answer = door.answer(*check)
            except Exception:
                log.exception("check answer failed for %s/%s", *check)
                self._hand_over()
                return
            transport.write(render(answer, close))
            door.answered += 1
            self.buffer = self.buffer[end + 4:]
            if close:
                transport.close()
                return

    def _hand_over(self) -> None:
        """Give the connection to uvicorn once every answer written here has left: reading stops, and the
        hand-over waits for the write buffer to drain (`resume_writing` at a low-water mark of 0)."""
        transport = self.transport
        assert transport is not None
        self._handing = True
        transport.pause_reading()
        if transport.get_write_buffer_size():
            transport.set_write_buffer_limits(high=0, low=0)  # resume_writing once drained
            return
        self._give()

    def resume_writing(self) -> None:
        if self._handing:
            self._give()

    def _give(self) -> None:
        transport = self.transport
        assert transport is not None
        self._given = True
        raw = transport.get_extra_info("socket")
        try:
            conn = socket.socket(raw.family, raw.type, raw.proto, fileno=os.dup(raw.fileno()))
            conn.setblocking(False)
        except OSError:
            transport.abort()
            return
        transport.abort()  # this loop lets go of its descriptor; the duplicate carries the connection on
        self.door.handoff(conn, self.buffer)
