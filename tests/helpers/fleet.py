"""A fleet that changes, for the discovery and reload tests: vLLM-shaped backends that NGINX can route
to (each says who answered and when), `slo-monitor serve` as a subprocess with its log in a file, and
Prometheus file_sd files written the way a generator writes them (whole, atomically).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.vllm_pages import ClockedVllm, send_text
from tests.helpers.waiting import wait_until


class Backend:
    """One instance: `/metrics` a vLLM V1 page whose counters advance with wall-clock time, `/health`
    200, and `/` its own name (what NGINX routed to), with the time of every such request kept.

    The port is bound at once but listened on only from `start()`: until then a connection is
    refused, as a vLLM still loading its model refuses it.
    """

    def __init__(self, name: str, seed: int = 0, rps: float = 10.0, host: str = "127.0.0.1", port: int = 0,
                 delay_s: float = 0.0) -> None:
        """`host`: any 127.x.y.z, so that instances found by A records can share one port; `delay_s`:
        how long /metrics takes to answer (a scrape in flight for that long)."""
        self.name = name
        self.delay_s = delay_s
        self.page = ClockedVllm(rps=rps, ttft=(0.05, 0.1), kv=0.3, waiting=0, seed=seed)
        self.routed: list[float] = []  # unix times of the requests NGINX sent here
        self.pages = 0  # /metrics pages served
        self.counts: list[int] = []  # the finished requests each /metrics page showed
        self.lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/metrics":
                    time.sleep(outer.delay_s)
                    with outer.lock:  # the page and the count it showed, in the order served
                        status, body = outer.page(self.path)
                        outer.pages += 1
                        outer.counts.append(outer.page.done)
                elif self.path == "/health":
                    status, body = 200, b""
                else:
                    with outer.lock:
                        outer.routed.append(time.time())
                    status, body = 200, outer.name.encode()
                send_text(self, status, body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), _Handler, bind_and_activate=False)
        self.httpd.daemon_threads = True
        self.httpd.server_bind()
        self.port = self.httpd.server_address[1]
        self.address = f"{host}:{self.port}"
        self.url = f"http://{self.address}"
        self._thread: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        return self._thread is not None

    def start(self) -> Backend:
        self.httpd.server_activate()
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()

    def first_routed_after(self, t: float) -> float | None:
        with self.lock:
            return next((x for x in self.routed if x >= t), None)

    def routed_between(self, start: float, end: float = float("inf")) -> int:
        with self.lock:
            return sum(1 for x in self.routed if start <= x < end)

    def freeze(self) -> None:
        """No more requests finish from now on (the counters stop where they are)."""
        with self.page.lock:
            self.page.rps = 0.0

    def set_ttft(self, low: float, high: float) -> None:
        """A latency fault (or its end) from now on."""
        with self.page.lock:
            self.page.ttft = (low, high)


def write_file_sd(path: Path, addresses: list[str], labels: dict[str, str] | None = None) -> float:
    """The file replaced whole (temp file and rename, as a generator should); returns when, in unix time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    groups = [{"targets": list(addresses), "labels": labels or {}}] if addresses else []
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(groups))
    at = time.time()
    os.replace(tmp, path)
    return at


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the first series `name` in a Prometheus text page whose labels include `labels`."""
    for found in re.finditer(rf"^{re.escape(name)}(?:{{(.*)}})? (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', found.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(found.group(2))
    return None


class ServeProcess:
    """`slo-monitor serve --config FILE` on a free port, its output in a file (a pipe nobody reads
    could fill and block it). `get`/`post` talk to its API; `sighup()` asks for a reload."""

    def __init__(self, config: Path, port: int, log: Path, token: str | None = None) -> None:
        self.config = config
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
            stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.client = httpx.Client(timeout=10, headers={"Authorization": f"Bearer {token}"} if token else {})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"slo-monitor serve exited with {self.proc.returncode}:\n{self.output()[-4000:]}")

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(self.base + path, params=params or None)

    def json(self, path: str, **params: Any) -> Any:
        answer = self.get(path, **params)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
        return answer.json()

    def post(self, path: str) -> httpx.Response:
        return self.client.post(self.base + path)

    def metrics(self) -> str:
        return self.get("/metrics").text

    def cycles(self) -> int:
        return self.json("/healthz")["cycles"]

    def instances(self) -> dict[str, dict]:
        return {row["instance"]: row for row in self.json("/api/v1/instances")}

    def slos(self) -> dict[str, dict]:
        return {row["name"]: row for row in self.json("/api/v1/slos")}

    def health_decisions(self) -> list[dict]:
        """The audit log's health entries, oldest first."""
        return list(reversed(self.json("/api/v1/decisions", kind="health", limit=1000)))

    def wait(self, predicate: Any, deadline_s: float, what: str, poll_s: float = 0.05) -> Any:
        return wait_until(predicate, deadline_s, poll_s, what,
                          not_yet=(httpx.TransportError, AssertionError, KeyError), procs=[self])

    def wait_ready(self, deadline_s: float = 60.0) -> None:
        self.wait(lambda: self.get("/readyz").status_code == 200, deadline_s, "serve ready")

    def wait_cycles(self, n: int, deadline_s: float = 60.0) -> int:
        """Until `n` more cycles have completed; returns the count then."""
        target = self.cycles() + n
        return self.wait(lambda: (c := self.cycles()) >= target and c, deadline_s, f"{n} more cycles")

    def sighup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def log_count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.output()))

    def stop(self) -> str:
        """SIGTERM, then the whole output; the exit status must be 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self.client.close()
        output = self.output()
        assert self.proc.returncode == 0, output[-4000:]
        return output
