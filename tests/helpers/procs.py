"""Starting the real servers tests and benchmarks use (Prometheus, Alertmanager, ...) and waiting until they answer."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import IO

import httpx


def start_ready(argv: list[str], log_path: Path, ready_url: str, name: str,
                timeout_s: float = 15.0) -> tuple[subprocess.Popen, IO[str]]:
    """Start `argv` with its output in `log_path`; return once `ready_url` answers 200.

    Output goes to a file, never a pipe: a server whose pipe nobody reads blocks when it fills.
    """
    log = open(log_path, "w")  # noqa: SIM115 - the caller closes it when it stops the process
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"{name} exited: {log_path.read_text()}")
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return proc, log
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    log.close()
    raise RuntimeError(f"{name} did not become ready in {timeout_s:g} s")


def stop_process(proc: subprocess.Popen | None, log: IO[str] | None) -> None:
    """Terminate (then kill after 10 s) and close its log."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if log is not None:
        log.close()


class LoggedServer:
    """A server started by `start_ready`, its output in a log file: `check()`, `pid`, `stop()`.

    `check()` and `stop()` are what `wait_until(procs=...)` and the benchmarks' process lists expect.
    """

    name = "server"
    proc: subprocess.Popen | None = None
    log: IO[str] | None = None
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} not started"
        return self.proc.pid

    def check(self) -> None:
        """Raise with the tail of its log if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            text = self.log_path.read_text(errors="replace")[-4000:] if self.log_path and self.log_path.exists() else ""
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{text}")

    def stop(self) -> None:
        stop_process(self.proc, self.log)
        self.log = None
