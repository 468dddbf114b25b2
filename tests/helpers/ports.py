"""Loopback ports for the servers tests and benchmarks start."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the kernel just handed out and released (another process could take it first; rarely does)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_range(start: int, count: int, limit: int = 32767) -> int:
    """The first base port >= start such that base..base+count-1 are all free.

    Below the ephemeral range by default, so a benchmark's fixed block of ports does not collide with
    the client sockets of its own load.
    """
    base = start
    while base + count - 1 <= limit:
        busy = next((p for p in range(base, base + count) if not port_free(p)), None)
        if busy is None:
            return base
        base = busy + 1
    raise RuntimeError(f"no {count} free ports from {start} below {limit}")
