"""Loopback TCP servers that misbehave on purpose, below HTTP libraries' good manners.

`RawServer(behaviour)` accepts connections and hands each one, after reading the request head, to
`behaviour(conn, path)`, which writes whatever bytes it likes: nothing at all, a body that never
ends, a gzip bomb. Each connection has its own daemon thread; a behaviour that waits should wait on
`conn` (recv returns b"" once the client hangs up), so no thread outlives the test by much.
"""

from __future__ import annotations

import gzip
import socket
import struct
import threading
import time
import zlib
from typing import Callable

Behaviour = Callable[[socket.socket, str], None]


class RawServer:
    """`with RawServer(behaviour) as s:` → `s.url`; `s.connections` counts accepted connections."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.paths: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            parts = head.split(b" ", 2)
            path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
            self.paths.append(path)
            self.behaviour(conn, path)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass


def wait_for_hangup(conn: socket.socket, limit_s: float = 60.0) -> None:
    """Block until the client closes the connection (or `limit_s`), reading and dropping its bytes."""
    conn.settimeout(limit_s)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def respond(conn: socket.socket, status: str, headers: dict[str, str], body: bytes = b"") -> None:
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    conn.sendall(head.encode("latin-1") + body)


# -- behaviours ------------------------------------------------------------------------------------


def hung(conn: socket.socket, path: str) -> None:
    """Reads the request and never answers."""
    wait_for_hangup(conn)


def slow(conn: socket.socket, path: str) -> None:
    """Answers a valid page, but 10 s late."""
    conn.settimeout(10.0)
    try:
        if conn.recv(1) == b"":  # the client gave up first
            return
    except OSError:
        pass
    respond(conn, "200 OK", {"Content-Length": "2"}, b"ok")


def trickle(conn: socket.socket, path: str) -> None:
    """Headers at once, then one byte of body every 50 ms, forever (each read is quick: a per-read
    timeout never fires)."""
    respond(conn, "200 OK", {"Transfer-Encoding": "chunked", "Content-Type": "text/plain"})
    while True:
        conn.sendall(b"1\r\n#\r\n")
        time.sleep(0.05)


def endless_headers(conn: socket.socket, path: str) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while True:
        conn.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")


def huge_declared(conn: socket.socket, path: str) -> None:
    """A 50 MB body announced by Content-Length (and sent, for a client that reads it)."""
    size = 50 * 2**20
    respond(conn, "200 OK", {"Content-Length": str(size), "Content-Type": "text/plain"})
    block = b"# " + b"x" * 65533 + b"\n"
    for _ in range(size // len(block)):
        conn.sendall(block)


def huge_undeclared(conn: socket.socket, path: str) -> None:
    """50 MB with no Content-Length, ended by closing the connection."""
    respond(conn, "200 OK", {"Connection": "close", "Content-Type": "text/plain"})
    block = b"# " + b"x" * 65533 + b"\n"
    for _ in range(50 * 2**20 // len(block)):
        conn.sendall(block)


def endless_chunked(conn: socket.socket, path: str) -> None:
    """A chunked body, as fast as loopback takes it, that never ends."""
    respond(conn, "200 OK", {"Transfer-Encoding": "chunked", "Content-Type": "text/plain"})
    chunk = b"%x\r\n" % 65536 + b"#" * 65535 + b"\n" + b"\r\n"
    while True:
        conn.sendall(chunk)


_BOMB: dict[str, bytes] = {}


def _bomb(layers: int) -> bytes:
    """1 GiB of zeros behind gzip (about 1 MB), and once more behind a second gzip (a few KB).

    Built from one fully flushed deflate block of 1 MiB of zeros repeated 1024 times (a full flush
    makes each block independent), so it takes a fraction of a second instead of compressing 1 GiB.
    """
    key = f"gzip{layers}"
    if key not in _BOMB:
        zero, count = bytes(2**20), 1024
        raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        block = raw.compress(zero) + raw.flush(zlib.Z_FULL_FLUSH)
        crc = 0
        for _ in range(count):
            crc = zlib.crc32(zero, crc)
        body = (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + block * count + raw.flush()
                + struct.pack("<II", crc, (count * len(zero)) & 0xFFFFFFFF))
        for _ in range(layers - 1):
            body = gzip.compress(body, 9)
        _BOMB[key] = body
    return _BOMB[key]


def gzip_bomb(conn: socket.socket, path: str) -> None:
    body = _bomb(1)
    respond(conn, "200 OK", {"Content-Encoding": "gzip", "Content-Length": str(len(body)),
                             "Content-Type": "text/plain"}, body)


def nested_gzip_bomb(conn: socket.socket, path: str) -> None:
    body = _bomb(2)
    respond(conn, "200 OK", {"Content-Encoding": "gzip, gzip", "Content-Length": str(len(body)),
                             "Content-Type": "text/plain"}, body)


def garbage(conn: socket.socket, path: str) -> None:
    body = bytes(range(256)) * 64
    respond(conn, "200 OK", {"Content-Length": str(len(body))}, body)


def not_http(conn: socket.socket, path: str) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n" + bytes(range(256)))


def reset(conn: socket.socket, path: str) -> None:
    """Closes with RST in the middle of the headers."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def bad_gzip(conn: socket.socket, path: str) -> None:
    body = b"\x1f\x8b\x08\x00" + bytes(200)
    respond(conn, "200 OK", {"Content-Encoding": "gzip", "Content-Length": str(len(body))}, body)


def redirect_to(url: str) -> Behaviour:
    def behaviour(conn: socket.socket, path: str) -> None:
        respond(conn, "302 Found", {"Location": url + path, "Content-Length": "0"})
    return behaviour


def malformed_vllm(conn: socket.socket, path: str) -> None:
    body = b'vllm:num_requests_running{model_name="m" 3\nvllm:time_to_first_token_seconds_bucket{le="x"} 1\n'
    respond(conn, "200 OK", {"Content-Length": str(len(body))}, body)


def gzip_page(text: Callable[[], str]) -> Behaviour:
    """A valid page, gzip-compressed as vLLM's /metrics answers a client that accepts gzip."""
    def behaviour(conn: socket.socket, path: str) -> None:
        if path == "/health":
            respond(conn, "200 OK", {"Content-Length": "0"})
            return
        body = gzip.compress(text().encode())
        respond(conn, "200 OK", {"Content-Encoding": "gzip", "Content-Length": str(len(body)),
                                 "Content-Type": "text/plain; version=0.0.4"}, body)
    return behaviour
