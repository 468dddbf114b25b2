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
import socket
import threading
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


def render(answer: CheckAnswer, close: bool) -> bytes:
    body = answer.body.encode()
    phrase = HTTPStatus(answer.status).phrase
    head = [f"HTTP/1.1 {answer.status} {phrase}", f"date: {formatdate(usegmt=True)}",
            f"content-length: {len(body)}", "content-type: text/plain; charset=utf-8"]
    if answer.decided_at is not None:
        head.append(f"x-decided-at: {answer.decided_at}")
    if close:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class FrontDoor:
    """The API socket's listener on the check loop: answers checks, hands the rest to `handoff`."""

    def __init__(self, sock: socket.socket, answer: Answer, handoff: Handoff) -> None:
        self.sock = sock
        self.answer = answer
        self.handoff = handoff
        self.answered = 0
        self._task: asyncio.Task | None = None
        self._connections: set[asyncio.Task] = set()

    async def serve(self) -> None:
        """Accept until cancelled (on the check loop)."""
        self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        try:
            self.sock.listen(2048)
        except OSError:
            pass  # already listening
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:  # e.g. EMFILE: try again shortly
                log.warning("API listener: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._connection(conn))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def close(self) -> None:
        """Stop accepting and close the connections still held here (on the check loop)."""
        for task in [self._task, *self._connections]:
            if task is not None:
                task.cancel()

    async def _connection(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        buffer = b""
        handed = False
        try:
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        break  # not a check: uvicorn answers it
                    chunk = await asyncio.wait_for(loop.sock_recv(conn, 65536), KEEPALIVE_S if not buffer else 30.0)
                    if not chunk:
                        conn.close()
                        return
                    buffer += chunk
                    continue
                check, close = parse_check(buffer[:end])
                if check is None:
                    break
                try:
                    answer = self.answer(*check)
                except Exception:
                    log.exception("check answer failed for %s/%s", *check)
                    break
                await loop.sock_sendall(conn, render(answer, close))
                self.answered += 1
                buffer = buffer[end + 4:]
                if close:
                    conn.close()
                    return
            handed = True
            self.handoff(conn, buffer)
        except (TimeoutError, OSError):
            conn.close()
        except asyncio.CancelledError:
            if not handed:
                conn.close()
            raise
