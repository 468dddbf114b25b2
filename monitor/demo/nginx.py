"""A real NGINX under its own prefix (pid, logs, temp folders inside `root`) on a loopback port, as a
child process: the demo routes its load through one, and the tests and benchmarks use the same runner.
Nothing of the machine's own NGINX is touched, so several can run side by side."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")

# what the demo proxies with: unbuffered streaming, or a buffered proxy would hold server-sent tokens
# back and falsify every TTFT the client measures
STREAMING = ('proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; '
             "proxy_read_timeout 600s;")


def find_nginx() -> str | None:
    """The nginx binary: on PATH, else where Debian and source builds put it (/usr/sbin is not on
    every user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    return next((c for c in NGINX_CANDIDATES if os.access(c, os.X_OK)), None)


class PrivateNginx:
    """`proxy_pass http://<upstream>` (from `upstream_file`) on 127.0.0.1:`port`; `command(...)` builds
    the check/reload commands the service runs against this instance. Error log at `notice`, where the
    master logs a `reconfiguring` line for every reload."""

    def __init__(self, binary: str, root: Path, upstream_file: Path, upstream: str, port: int, *,
                 worker_connections: int = 1024, location: str = "") -> None:
        self.binary = binary
        self.root = root
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.conf = root / "nginx.conf"
        self.error_log = root / "error.log"
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""worker_processes 1;
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
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            {location}
        }}
    }}
}}
""")
        self.base = [binary, "-e", str(self.error_log), "-p", f"{root}/", "-c", str(self.conf)]
        self.process: subprocess.Popen[bytes] | None = None

    def command(self, *args: str) -> str:
        return shlex.join([*self.base, *args])

    @property
    def check_command(self) -> str:
        return self.command("-t", "-q")

    @property
    def reload_command(self) -> str:
        return self.command("-s", "reload")

    @property
    def pid(self) -> int:
        assert self.process is not None, "nginx not started"
        return self.process.pid

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
            self.check()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on 127.0.0.1:{self.port} within {timeout_s:g} s")

    def check(self) -> None:
        """Raise with its error log if the master has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self._log().strip()}")

    def reloads(self) -> int:
        """Reloads the master carried out (it logs `reconfiguring` for each at `notice`)."""
        try:
            return self.error_log.read_text(errors="replace").count("reconfiguring")
        except OSError:
            return 0

    def _log(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Graceful stop (SIGQUIT lets streams in flight finish), killed after 10 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
