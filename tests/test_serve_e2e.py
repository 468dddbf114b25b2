"""End to end: `slo-monitor serve` against live vLLM-shaped endpoints on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.helpers.ports import free_port
from tests.helpers.vllm_pages import ClockedVllm, PageServer

pytestmark = pytest.mark.e2e  # every test here starts a process or a server on a real port


def hang(path: str) -> tuple[int, bytes]:
    time.sleep(30)
    return 200, b""


def garbage(path: str) -> tuple[int, bytes]:
    return 200, b'vllm:num_requests_running{model_name="m" 3 \x00\xff garbage\n'


@pytest.fixture
def fleet():
    fast = ClockedVllm(rps=20, ttft=(0.1, 0.25), kv=0.42, waiting=3, seed=1)
    slow = ClockedVllm(rps=10, ttft=(0.3, 0.45), kv=0.9, waiting=11, seed=2)
    with PageServer(fast) as a, PageServer(slow) as b, PageServer(hang) as c, PageServer(garbage) as d:
        yield a, b, c, d


def test_serve_reports_instances_and_error_states(fleet, tmp_path):
    a, b, c, d = fleet
    port = free_port()
    db = tmp_path / "monitor.db"
    config = tmp_path / "config.yaml"
    config.write_text(f"""
storage: {{url: "sqlite:///{db}"}}
scrape: {{interval: 500ms, timeout: 400ms}}
evaluation: {{window: 4s}}
pools:
  - name: llama
    targets: [{a.url}, {b.url}, {c.url}, {d.url}]
""")
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "serve", "--config", str(config),
                             "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        by_address = _wait_for_figures(base, [a, b])
        fast, slow = by_address[f"127.0.0.1:{a.port}"], by_address[f"127.0.0.1:{b.port}"]

        # p99 by interpolation inside the bucket that holds it: (0.1, 0.25] and (0.25, 0.5]
        assert 0.1 < fast["metrics"]["ttft_p99_s"] <= 0.25
        assert fast["metrics"]["ttft_p99_s"] == pytest.approx(0.1 + 0.15 * 0.99, abs=0.01)
        assert 0.25 < slow["metrics"]["ttft_p99_s"] <= 0.5
        assert abs(slow["metrics"]["ttft_p99_s"] - 0.4485) <= 0.25  # within the bucket's width
        assert fast["metrics"]["generation_tokens_per_s"] == pytest.approx(200, rel=0.15)
        assert slow["metrics"]["generation_tokens_per_s"] == pytest.approx(100, rel=0.15)
        assert fast["metrics"]["kv_cache_usage"] == 0.42 and slow["metrics"]["kv_cache_usage"] == 0.9
        assert fast["metrics"]["requests_waiting"] == 3 and slow["metrics"]["requests_waiting"] == 11
        assert fast["metrics"]["error_ratio"] == 0
        assert fast["state"] == "healthy" and fast["reasons"] == []
        # KV cache at its 0.9 threshold with 11 requests waiting: still serving, at a lower weight
        assert slow["state"] == "degraded"
        assert any("KV" in r or "kv" in r for r in slow["reasons"]), slow["reasons"]
        for row in (fast, slow):
            assert row["last_scrape"].endswith("Z")
            assert set(row["metrics"]) >= {"ttft_p99_s", "tpot_p99_s", "e2e_p99_s", "error_ratio", "kv_cache_usage",
                                           "requests_running", "requests_waiting", "generation_tokens_per_s"}

        hung = by_address[f"127.0.0.1:{c.port}"]
        assert hung["state"] == "unknown"
        assert any("timed out after 0.4s" in r for r in hung["reasons"])
        broken = by_address[f"127.0.0.1:{d.port}"]
        assert broken["state"] == "unknown"
        assert any("malformed metrics page" in r for r in broken["reasons"])
        assert broken["metrics"]["ttft_p99_s"] is None

        exposition = httpx.get(f"{base}/metrics", timeout=5).text
        assert f'slo_monitor_instance_kv_cache_usage_ratio{{instance="127.0.0.1:{a.port}",' in exposition
        assert f'slo_monitor_instance_up{{instance="127.0.0.1:{c.port}",pool="llama"}} 0.0' in exposition
        assert 'quantile="0.99"' in exposition
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output

    # the shutdown flushed what it had: rollups for the two good instances, outcomes for all four
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rolled = conn.execute(text(
            "select i.address, sum(r.requests) from instance_rollups r join instances i on i.id = r.instance_id "
            "group by i.address")).all()
        outcomes = dict(conn.execute(text(
            "select i.address, sum(o.failures) from scrape_outcomes o join instances i on i.id = o.instance_id "
            "group by i.address")).all())
    engine.dispose()
    assert {addr for addr, n in rolled if n > 0} == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}
    assert outcomes[f"127.0.0.1:{a.port}"] == 0 and outcomes[f"127.0.0.1:{c.port}"] > 0


def _wait_for_figures(base: str, good: list[PageServer], deadline_s: float = 30.0) -> dict[str, dict]:
    """Poll the API until both good instances have a full window of figures."""
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        try:
            rows = httpx.get(f"{base}/api/v1/instances", timeout=2).json()
            last = {row["instance"]: row for row in rows}
            ready = [last.get(f"127.0.0.1:{s.port}") for s in good]
            started = float(rows and 1)
            if all(r and r["metrics"]["generation_tokens_per_s"] for r in ready) and started:
                time.sleep(4.5)  # let the window fill so rates average over several scrapes
                rows = httpx.get(f"{base}/api/v1/instances", timeout=2).json()
                return {row["instance"]: row for row in rows}
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"figures never appeared: {last}")
