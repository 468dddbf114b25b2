"""Helpers shared by the benchmarks: child processes, /proc readings, tables.

The real-server runners (Prometheus, Alertmanager, NGINX), ports and waiting are the tests' own,
from tests/helpers/: benchmarks run as `.venv/bin/python bench/NAME.py` from the repository root,
so the root goes on sys.path here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers.am_server import Alertmanager, alertmanager_config
from tests.helpers.nginx_server import NginxServer
from tests.helpers.ports import free_range
from tests.helpers.prom_server import Prometheus
from tests.helpers.waiting import wait_until

__all__ = ["HERE", "ROOT", "PYTHON", "Alertmanager", "NginxServer", "Prometheus", "Proc", "ProcStat", "Sampler",
           "alertmanager_config", "free_range", "load_average", "percentile", "python_module", "ratio", "ready",
           "table", "wait_for", "BENCH_NGINX_LOCATION"]

PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
# what the benchmarks' NGINX adds to its location: every answer says which server it came from
BENCH_NGINX_LOCATION = ("proxy_http_version 1.1; proxy_buffering off; proxy_read_timeout 600s; "
                        "add_header X-Upstream $upstream_addr always;")


class Proc:
    """A child process whose output is kept (for error messages) and which is stopped by its pid."""

    def __init__(self, args: list[str], name: str | None = None, **kwargs: Any) -> None:
        self.args = [str(a) for a in args]
        self.name = name or Path(self.args[0]).name
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kwargs)
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


python_module = lambda *args: [PYTHON, "-m", "monitor", *args]


def wait_for(what: str, check: Callable[[], Any], timeout: float, procs: Iterable[Any] = (), poll: float = 0.1) -> Any:
    """tests.helpers.waiting.wait_until, with the errors a benchmark's half-started stack gives counted as
    not yet, and each of `procs` checked for an early exit on every round."""
    return wait_until(check, timeout, poll, what, (httpx.HTTPError, OSError, ValueError, KeyError), procs)


def ready(url: str) -> bool:
    return httpx.get(url, timeout=1).status_code == 200


class ProcStat:
    """CPU seconds (all threads, user + system) and memory of a running process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_s(self) -> float:
        text = Path(f"/proc/{self.pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)

    def status(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
        return out

    def rss_mib(self) -> float:
        return self.status()["VmRSS"] / 1024

    def hwm_mib(self) -> float:
        return self.status()["VmHWM"] / 1024


class Sampler:
    """Samples CPU and RSS of some pids every `every` seconds in a thread, from start() to stop()."""

    def __init__(self, pids: dict[str, int], every: float = 1.0) -> None:
        self.stats = {name: ProcStat(pid) for name, pid in pids.items()}
        self.every = every
        self.rss: dict[str, list[float]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self.t0 = time.monotonic()
        self.cpu0 = {name: s.cpu_s() for name, s in self.stats.items()}
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for name, s in self.stats.items():
                try:
                    self.rss[name].append(s.rss_mib())
                except OSError:
                    pass

    def stop(self) -> dict[str, dict[str, float]]:
        self._stop.set()
        self._thread.join()
        elapsed = time.monotonic() - self.t0
        out = {}
        for name, s in self.stats.items():
            rss = self.rss[name] or [s.rss_mib()]
            out[name] = {"cpu_share": (s.cpu_s() - self.cpu0[name]) / elapsed, "rss_mib": rss[-1],
                         "rss_max_mib": max(rss), "hwm_mib": s.hwm_mib(), "elapsed_s": elapsed}
        return out


def percentile(values: list[float], q: float) -> float:
    """Exact quantile by the nearest-rank method (q in 0..1)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-q * len(ordered) // 1))  # ceil(q * n), at least 1
    return ordered[int(rank) - 1]


def table(rows: list[tuple], header: tuple) -> str:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ratio(ours: float, baseline: float) -> str:
    if not baseline or ours != ours or baseline != baseline:
        return "-"
    return f"{ours / baseline:.2f}"


def load_average() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3]) + f" on {os.cpu_count()} cores"
