"""A real NGINX (Debian nginx-light) under its own prefix in a temporary folder, as a child process
(for the tests and the benchmarks).

Every path NGINX writes (pid, error log, temp folders) is inside `root`, so tests never touch the
machine's own NGINX and can run side by side.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.helpers.ports import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class NginxServer:
    """`proxy_pass http://<upstream>` on a free loopback port; `command(...)` builds the check/reload
    commands the service runs against this instance. Error log at `notice`, where the master logs a
    "reconfiguring" line for every reload."""

    def __init__(self, root: Path, upstream_file: Path, upstream: str, port: int, *, worker_connections: int = 1024,
                 location: str = "") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.conf = root / "nginx.conf"
        self.error_log = root / "error.log"
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (root / sub).mkdir(exist_ok=True)
        self.conf.write_text(f"""
worker_processes 1;
pid {root}/nginx.pid;
error_log {self.error_log} notice;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    include {upstream_file};
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://{upstream};
            {location}
        }}
    }}
}}
""")
        self.base = [NGINX, "-e", str(self.error_log), "-p", f"{root}/", "-c", str(self.conf)]
        self.process: subprocess.Popen | None = None

    def command(self, *args: str) -> str:
        return " ".join([*self.base, *args])

    def start(self, timeout_s: float = 10.0) -> None:
        self.process = subprocess.Popen([*self.base, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log.read_text() if self.error_log.exists() else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start listening")

    @property
    def pid(self) -> int:
        assert self.process is not None, "nginx not started"
        return self.process.pid

    def check(self) -> None:
        """Raise with its error log if the master has exited."""
        if self.process is not None and self.process.poll() is not None:
            log = self.error_log.read_text(errors="replace")[-4000:] if self.error_log.exists() else ""
            raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{log}")

    def reloads(self) -> int:
        """How many reloads the master has carried out (each SIGHUP it logs as `reconfiguring`)."""
        return self.error_log.read_text(errors="replace").count("reconfiguring") if self.error_log.exists() else 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


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
