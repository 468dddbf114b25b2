"""The commands as users run them: `simulate` until SIGTERM, `load` against it, bad input exits 2."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from monitor.cli import main


def consecutive_free_ports(n: int) -> int:
    """A base port with n free ports after it (bound and released; retried if one is taken)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + n):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no run of free ports")


def wait_healthy(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never became healthy")
        time.sleep(0.1)


@pytest.mark.e2e
def test_simulate_serves_until_sigterm_and_load_reports_a_summary(tmp_path):
    base = consecutive_free_ports(2)
    truth = tmp_path / "truth.jsonl"
    sim = subprocess.Popen([sys.executable, "-m", "monitor", "simulate", "--instances", "2", "--base-port", str(base),
                            "--metrics-version", "v0", "--ground-truth", str(truth), "--speed", "1,0.5"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        urls = [f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"]
        for url in urls:
            wait_healthy(url)
        assert "vllm:gpu_cache_usage_perc" in httpx.get(urls[1] + "/metrics").text
        summary_file = tmp_path / "summary.json"
        load = subprocess.run([sys.executable, "-m", "monitor", "load", "--targets", *urls, "--rate", "8",
                               "--duration", "2", "--output-tokens", "16", "--goodput", "ttft:1000", "tpot:200",
                               "--json", str(summary_file)], capture_output=True, text=True, timeout=60)
        assert load.returncode == 0, load.stderr
        assert "Serving Benchmark Result" in load.stdout
        assert "Request goodput (req/s):" in load.stdout and "P99 TTFT (ms):" in load.stdout
        summary = json.loads(summary_file.read_text())
        assert summary["completed"] >= 5 and summary["failed"] == 0
        assert set(summary["per_target"]) == set(urls)
    finally:
        sim.send_signal(signal.SIGTERM)
        out, err = sim.communicate(timeout=20)
    assert sim.returncode == 0, err
    assert urls[0] in out and "stopped" in out
    rows = [json.loads(line) for line in truth.read_text().splitlines()]
    assert len(rows) == summary["completed"]
    assert {r["instance"] for r in rows} == {f"127.0.0.1:{base}", f"127.0.0.1:{base + 1}"}


def test_bad_arguments_exit_2(capsys):
    assert main(["simulate", "--instances", "0", "--base-port", "8000"]) == 2
    assert main(["simulate", "--instances", "2", "--base-port", "65535"]) == 2
    assert main(["simulate", "--instances", "1", "--base-port", "8000", "--speed", "0"]) == 2
    assert main(["load", "--targets", "not-a-url", "--rate", "1", "--duration", "1"]) == 2
    assert main(["load", "--targets", "http://127.0.0.1:1", "--rate", "0", "--duration", "1"]) == 2
    assert main(["load", "--targets", "http://127.0.0.1:1", "--rate", "1", "--duration", "soon"]) == 2
    assert main(["load", "--targets", "http://127.0.0.1:1", "--rate", "1", "--duration", "1",
                 "--goodput", "latency:5"]) == 2
    assert main(["demo", "--duration", "-3"]) == 2
    err = capsys.readouterr().err
    assert "--instances: must be at least 1" in err and "--goodput" in err


def test_load_against_nothing_fails_with_one_line(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["load", "--targets", f"http://127.0.0.1:{port}", "--rate", "1", "--duration", "1"]) == 1
    assert "cannot start the load" in capsys.readouterr().err
