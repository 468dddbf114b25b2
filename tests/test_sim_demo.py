"""`slo-monitor demo --duration 30` on loopback: exits 0, and what the service reports shows the
instance that got the latency fault with a higher TTFT p99 than the others."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e  # every test here starts a process or a server on a real port


def test_demo_runs_for_its_duration_and_shows_the_faulted_instance_slower(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "demo", "--duration", "30", "--db", str(tmp_path / "demo.db")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    results = re.findall(r"^result instance=(\S+) state=(\S+) fault=(\S+) ttft_p99_s=(\S+) ", out, re.MULTILINE)
    assert len(results) == 3, out[-3000:]
    faulted = [(inst, float(ttft)) for inst, _, fault, ttft in results if fault != "none"]
    others = [float(ttft) for _, _, fault, ttft in results if fault == "none"]
    assert len(faulted) == 1 and faulted[0][0] and len(others) == 2, results
    # the service was scraping every instance (not `unknown`); verdicts beyond that are later issues
    assert all(state in ("healthy", "degraded", "ejected") for _, state, _, _ in results), results
    assert faulted[0][1] > max(others), results
    assert re.search(r"^verdict: faulted instance \S+ TTFT p99 .*: higher$", out, re.MULTILINE), out[-3000:]
    assert "Serving Benchmark Result" in out
    assert "Final view of the service" in out
