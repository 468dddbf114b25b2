"""`slo-monitor demo --scenario canary`, as CI runs it: three v1 instances and a v2 whose TPOT is 1.5x,
labelled through file_sd; the judge is inconclusive while evidence is short (saying what is missing),
fails the slow v2 with its sentence, the demo rolls it back, deploys a fixed v2, and the judge passes
it. Read from the `step at=... what=... value=...` and `canary at=...` lines of the output."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e  # starts the demo: simulated instances, the service, a load on real ports


def _steps(out: str) -> dict[tuple[str, str], tuple[float, str]]:
    found: dict[tuple[str, str], tuple[float, str]] = {}
    for at, what, value, why in re.findall(r"^step at=([-\d.]+)s what=(\S+) value=(\S+)(?: why=(.*))?$", out,
                                          re.MULTILINE):
        found.setdefault((what, value), (float(at), why))
    return found


def test_the_canary_scenario_fails_the_slow_v2_with_its_sentence_and_passes_the_fixed_one(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "demo", "--scenario", "canary", "--balancer", "weights",
         "--duration", "150", "--db", str(tmp_path / "demo.db")],
        capture_output=True, text=True, timeout=240, check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-3000:]
    summary = out[out.rindex("Timeline"):] if "Timeline" in out else out[-6000:]
    steps = _steps(out)

    # evidence first: inconclusive, naming what is missing
    collecting = [why for (what, _), (_, why) in steps.items() if what == "collecting"]
    # (a candidate just deployed may first read "no v2 instances": what is missing too)
    assert collecting and all(("needed" in why or "no v2 instances" in why) and why.endswith("inconclusive")
                              for why in collecting), summary
    assert any("needed" in why for why in collecting), summary

    failed, passed = steps.get(("verdict", "fail")), steps.get(("verdict", "pass"))
    assert failed is not None, summary
    assert passed is not None, summary
    rollback = next(at for (what, _), (at, _) in steps.items() if what == "rollback")
    deploy = next(at for (what, _), (at, _) in steps.items() if what == "deploy")
    assert failed[0] <= rollback <= deploy <= passed[0], summary

    # the failing verdict's sentence: a metric, its change with an interval, the evidence, the verdict
    sentence = re.compile(r"(TTFT|TPOT|ITL|e2e latency) p(99|50)( per \w+ token)? \+\d+% \[[-+]\d+%, [-+]\d+%\] "
                          r"on [\d,]+ v2 requests against [\d,]+ v1: fail$")
    assert sentence.search(failed[1]), failed[1]
    assert re.search(r" on [\d,]+ v2 requests against [\d,]+ v1: pass$", passed[1]), passed[1]
    # the per-metric figures of the failure show the decode regression itself
    assert re.search(r"^metric name=tpot .* verdict=fail", summary, re.MULTILINE), summary
    assert re.search(r"^the x1.5 v2 failed at [\d.]+ s: .*: fail$", summary, re.MULTILINE), summary
    assert re.search(r"^the fixed v2 passed at [\d.]+ s: .*: pass$", summary, re.MULTILINE), summary
    assert "Next:" in summary
