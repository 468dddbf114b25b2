"""A real NGINX (Debian nginx-light) under its own prefix in a temporary folder, as a child process
(for the tests and the benchmarks).

Every path NGINX writes (pid, error log, temp folders) is inside `root`, so tests never touch the
machine's own NGINX and can run side by side.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

from monitor.demo.nginx import PrivateNginx, find_nginx
from tests.helpers.ports import free_port

NGINX = find_nginx() or "/usr/sbin/nginx"


class NginxServer(PrivateNginx):
    """The product's own private-NGINX runner (the demo routes through it) on Debian's binary."""

    def __init__(self, root: Path, upstream_file: Path, upstream: str, port: int, *, worker_connections: int = 1024,
                 location: str = "") -> None:
        super().__init__(NGINX, root, upstream_file, upstream, port, worker_connections=worker_connections,
                         location=location)

    def workers(self) -> int:
        """Worker processes of the master now: more than one while a reload's old worker shuts down."""
        count = 0
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                if f"\nPPid:\t{self.pid}\n" in status.read_text():
                    count += 1
            except OSError:
                continue
        return count


class RoutingNginx(NginxServer):
    """NGINX on a free port proxying to upstream `p`, with a plain client that reads which backend answered."""

    def __init__(self, root: Path, upstream_file: Path) -> None:
        super().__init__(root, upstream_file, "p", free_port(), worker_connections=64)

    def get(self) -> str:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/", headers={"Connection": "close"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read().decode()

    def names(self, n: int = 20) -> list[str]:
        return [self.get() for _ in range(n)]
