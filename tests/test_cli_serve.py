"""`slo-monitor serve` as a real process: start-up failures are one line and an exit code, and SIGHUP
does not stop it (issue 13 item 1)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import httpx
import pytest

from tests.helpers.ports import free_port
from tests.helpers.procs import start_ready, stop_process
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.e2e  # every test here starts `slo-monitor serve`


def write_config(tmp_path, db) -> str:
    """One pool whose only target is a port nothing listens on: the instance is just unreachable. A
    config `check` has nothing to warn about (max_replicas set), so what serve prints is its own."""
    config = tmp_path / "config.yaml"
    config.write_text(f'storage: {{url: "sqlite:///{db}"}}\n'
                      f"pools: [{{name: p, targets: [http://127.0.0.1:{free_port()}], "
                      "scaling: {max_replicas: 4}}]\n")
    return str(config)


def serve_argv(config: str, port: int) -> list[str]:
    return [sys.executable, "-m", "monitor", "serve", "--config", config, "--listen", f"127.0.0.1:{port}"]


def test_sighup_does_not_stop_serve(tmp_path):
    port = free_port()
    log_path = tmp_path / "serve.log"
    proc, log = start_ready(serve_argv(write_config(tmp_path, tmp_path / "m.db"), port), log_path,
                            f"http://127.0.0.1:{port}/healthz", "slo-monitor serve", timeout_s=60)
    try:
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP:" in log_path.read_text(), 30, what="the SIGHUP log line")
        assert proc.poll() is None, log_path.read_text()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text()
    finally:
        stop_process(proc, log)
    assert "Traceback" not in log_path.read_text()


def test_a_busy_port_exits_1_with_one_line_before_anything_starts(tmp_path):
    db = tmp_path / "m.db"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(serve_argv(write_config(tmp_path, db), port), capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"slo-monitor: cannot listen on 127.0.0.1:{port}: address already in use"], done.stderr
    assert done.stdout == ""
    assert not db.exists()  # nothing started: not even the database was opened
