"""The default demo, run as CI runs it: `slo-monitor demo --duration 20` on loopback exits 0; the
instance that got the latency fault ends degraded or ejected and the others healthy; the summary says
when each decision came and why, how much traffic moved away from the faulted instance (through a
real nginx where one is installed, as in CI) and the SLOs it configured."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from monitor.demo.nginx import find_nginx
from tests.helpers.ci import IN_CI

pytestmark = pytest.mark.e2e  # every test here starts a process or a server on a real port


def _fields(line: str) -> dict[str, str]:
    """`word k=v k=v ... why=rest of the line` -> {k: v}."""
    head, _, why = line.partition(" why=")
    out = dict(part.split("=", 1) for part in head.split()[1:])
    if why:
        out["why"] = why
    return out


def test_the_default_demo_ends_with_the_faulted_instance_out_of_rotation_and_says_what_that_changed(tmp_path):
    if IN_CI:
        assert find_nginx() is not None, "CI=true: nginx (Debian nginx-light) must be installed for the demo's load"
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "demo", "--duration", "20", "--db", str(tmp_path / "demo.db")],
        capture_output=True, text=True, timeout=150, env={**os.environ, "COLUMNS": "160"},
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-3000:]
    results = [_fields(line) for line in re.findall(r"^result instance=.*$", out, re.MULTILINE)]
    assert len(results) == 3, out[-4000:]
    faulted = [r for r in results if r["fault"] != "none"]
    others = [r for r in results if r["fault"] == "none"]
    assert len(faulted) == 1 and faulted[0]["fault"] == "latencyx4", results
    assert faulted[0]["state"] in ("degraded", "ejected"), out[-6000:]
    assert [r["state"] for r in others] == ["healthy", "healthy"], out[-6000:]
    assert float(faulted[0]["ttft_p99_s"]) > max(float(r["ttft_p99_s"]) for r in others), results
    assert re.search(r"^verdict: faulted instance \S+ TTFT p99 .*: higher$", out, re.MULTILINE), out[-3000:]

    # when each decision came and why: the audit log's entries, the one against the faulted instance after the fault
    instance = faulted[0]["instance"]
    fault = _fields(re.search(r"^fault at=.*$", out, re.MULTILINE).group(0))
    decisions = [_fields(line) for line in re.findall(r"^decision at=.*$", out, re.MULTILINE)]
    against = [d for d in decisions if d["instance"] == instance and d["to"] in ("degraded", "ejected")]
    assert against, out[-6000:]
    assert float(against[0]["at"].rstrip("s")) >= float(fault["at"].rstrip("s"))
    assert against[0]["why"] and against[0]["why"] != "-"

    # what it changed: the faulted instance's share of the requests fell while it was ejected
    shift = _fields(re.search(r"^shift faulted=.*$", out, re.MULTILINE).group(0))
    assert shift["faulted"] == instance and shift["final_state"] == faulted[0]["state"]
    assert shift["balancer"] == ("nginx" if find_nginx() is not None else "weights")
    assert shift["fault_on_at_end"] == "yes" and shift["ttft_p99_before_s"] != "nan"
    if shift["ejections"] != "0":  # degraded only: nothing was ejected, so nothing is said to have moved
        assert float(shift["share_after"]) < float(shift["share_before"]), shift
        assert float(shift["moved"]) > 0 and shift["ttft_p99_after_s"] != "nan"
        assert re.search(r"^It was ejected once \(.*so \d+ points of the fleet's traffic", out, re.MULTILINE)
    assert re.search(r"^Its share of the requests: before the fault \(0\.0-[\d.]+ s\): \d+%", out, re.MULTILINE)
    assert re.search(rf"^The fault was still on when the run ended at [\d.]+ s; {re.escape(instance)} was ",
                     out, re.MULTILINE)
    assert "no traffic moved away" not in out

    # the SLOs it configured, with budget, burn and alert
    slos = {s["name"]: s for s in (_fields(line) for line in re.findall(r"^slo name=.*$", out, re.MULTILINE))}
    assert set(slos) == {"ttft-250ms", "tpot-50ms", "errors"}, out[-3000:]
    assert all(set(s) >= {"objective", "sli", "budget_left", "burn_5m", "alert"} for s in slos.values())
    assert slos["tpot-50ms"]["alert"] in ("none", "ticket", "page")
    assert "TTFT under 250 ms for 99% of requests" in out
    assert "Serving Benchmark Result" in out
    assert "Final view of the service" in out
    assert out.rstrip().splitlines()[-4] == "Next:", out[-1000:]  # it ends with what to run next
