"""Running `slo-monitor serve` as a real process in end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def serve(config: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "monitor", "serve", "--config", str(config),
                             "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    return output


def wait_until(predicate, deadline_s: float, poll_s: float = 0.1, what: str = "condition",
               not_yet: tuple[type[BaseException], ...] = (httpx.TransportError,)):
    """Poll until `predicate()` is truthy and return its value; errors in `not_yet` count as not yet."""
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except not_yet as exc:
            last = exc
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {deadline_s:g}s waiting for {what}; last: {last!r}")
