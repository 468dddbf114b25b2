"""How the demo's load follows the service's verdicts: the upstream file the service writes, read
either by a real NGINX or by the load generator itself.

The demo configures the service's NGINX output (`nginx.upstream_file`) in its temporary folder, so
the file it routes by is the one a production NGINX would include. When an `nginx` binary is
installed, the demo runs it under a private prefix on a loopback port (nothing of the machine's own
NGINX is touched) and the service validates and reloads it as it would in production; the load goes
through it. Without NGINX, `UpstreamWeights` reads the same file and picks a server for each request
by NGINX's own smooth weighted round-robin, so the share each instance gets is the one NGINX would
give it: `down` servers none, a degraded one its lower weight.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")

_SERVER = re.compile(r"^\s*server\s+([^\s;]+)([^;]*);")
_WEIGHT = re.compile(r"\bweight=(\d+)\b")


def find_nginx() -> str | None:
    """The nginx binary: on PATH, else where Debian and source builds put it (/usr/sbin is not on
    every user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    return next((c for c in NGINX_CANDIDATES if os.access(c, os.X_OK)), None)


@dataclass(frozen=True, slots=True)
class UpstreamEntry:
    address: str  # host:port
    weight: int
    down: bool


def parse_upstream(text: str, pool: str) -> list[UpstreamEntry]:
    """The `server` lines of `upstream <pool> { ... }` in an upstream file the service wrote."""
    entries: list[UpstreamEntry] = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if not inside:
            inside = stripped.startswith(f"upstream {pool} ") or stripped == f"upstream {pool}{{"
            continue
        if stripped.startswith("}"):
            break
        match = _SERVER.match(line)
        if match is None:
            continue
        options = match.group(2)
        weight = _WEIGHT.search(options)
        entries.append(UpstreamEntry(match.group(1), int(weight.group(1)) if weight else 1,
                                     "down" in options.split()))
    return entries


class SmoothWeighted:
    """NGINX's smooth weighted round-robin (ngx_http_upstream_get_peer): each pick adds every
    server's weight to its current value, takes the largest, and subtracts the total from it. Over
    any run of picks each server gets its share, spread out rather than in bursts."""

    def __init__(self) -> None:
        self.weights: dict[str, int] = {}
        self.current: dict[str, int] = {}

    def set(self, weights: dict[str, int]) -> None:
        self.weights = {a: w for a, w in weights.items() if w > 0}
        self.current = {a: self.current.get(a, 0) for a in self.weights}

    def pick(self) -> str | None:
        if not self.weights:
            return None
        total = 0
        best: str | None = None
        for address, weight in self.weights.items():
            self.current[address] += weight
            total += weight
            if best is None or self.current[address] > self.current[best]:
                best = address
        assert best is not None
        self.current[best] -= total
        return best


class UpstreamWeights:
    """Routes each request as NGINX would by the service's upstream file, re-read whenever it is
    replaced (the service writes it atomically, so a new inode or mtime means new content)."""

    def __init__(self, path: Path, pool: str, fallback: list[str]) -> None:
        self.path = path
        self.pool = pool
        self.fallback = [u.rstrip("/") for u in fallback]
        self.rr = SmoothWeighted()
        self.rr.set({u.split("://", 1)[1]: 1 for u in self.fallback})
        self._stamp: tuple[int, int, int] | None = None
        self.entries: list[UpstreamEntry] = []

    def refresh(self) -> None:
        try:
            st = self.path.stat()
        except OSError:
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            entries = parse_upstream(self.path.read_text(), self.pool)
        except OSError:
            return
        self._stamp = stamp
        if not entries:
            return
        self.entries = entries
        serving = {e.address: e.weight for e in entries if not e.down}
        # the service never marks every server down (it fails open); should a file do so, NGINX answers 502
        # and this keeps the last choice rather than sending nowhere
        if serving:
            self.rr.set(serving)

    def __call__(self, sent: int) -> str:
        self.refresh()
        address = self.rr.pick()
        return f"http://{address}" if address else self.fallback[sent % len(self.fallback)]


class DemoNginx:
    """A real NGINX under its own prefix (pid, logs, temp folders inside `root`), listening on a
    loopback port and proxying to upstream `pool` from `upstream_file`, streaming unbuffered (a
    buffered proxy would hold server-sent tokens back and falsify every TTFT the client measures)."""

    def __init__(self, binary: str, root: Path, upstream_file: Path, pool: str, port: int) -> None:
        self.binary = binary
        self.root = root
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.error_log = root / "error.log"
        conf = root / "nginx.conf"
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        conf.write_text(f"""worker_processes 1;
pid {root}/nginx.pid;
error_log {self.error_log} notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    include {upstream_file};
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{pool};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
""")
        self.base = [binary, "-e", str(self.error_log), "-p", f"{root}/", "-c", str(conf)]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def check_command(self) -> str:
        return shlex.join([*self.base, "-t", "-q"])

    @property
    def reload_command(self) -> str:
        return shlex.join([*self.base, "-s", "reload"])

    def version(self) -> str:
        try:
            done = subprocess.run([self.binary, "-v"], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return "nginx"
        return (done.stderr or done.stdout).strip().rpartition(": ")[2] or "nginx"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start and wait until it accepts connections; RuntimeError with its error log otherwise."""
        # its errors go to error_log (-e), so nothing is piped that could fill up and block it
        self.process = subprocess.Popen([*self.base, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}: {self._log().strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on 127.0.0.1:{self.port} within {timeout_s:g} s")

    def reloads(self) -> int:
        """Reloads the master carried out (it logs `reconfiguring` for each at `notice`)."""
        return self._log().count("reconfiguring")

    def _log(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Graceful stop (SIGQUIT lets streams in flight finish), killed after 5 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
