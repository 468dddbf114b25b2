"""`slo-monitor demo --scenario autoscale`, as CI runs it: load triples, TTFT burns, the service's
desired replicas rise, the autoscaler adds instances, each joins through file discovery (`starting`),
turns `healthy`, enters the upstream the service writes (nginx reloads from it in CI), takes
requests, and the pool's TTFT p99 comes back under its SLO threshold, in that order. Read from the
`step at=... what=... value=...` lines of the summary."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from monitor.demo.nginx import find_nginx
from tests.helpers.ci import IN_CI

pytestmark = pytest.mark.e2e  # every test here starts a process or a server on a real port

TTFT_SLO_S = 0.5  # the scenario's ttft-500ms SLO
CLOCKS_S = 0.1  # decision times come from the service's clock, the rest from the demo's: allow this much


def _steps(out: str) -> dict[tuple[str, str], float]:
    """(what, value) -> its time; the summary repeats the live lines, the first time of each is kept."""
    found: dict[tuple[str, str], float] = {}
    for at, what, value in re.findall(r"^step at=([-\d.]+)s what=(\S+) value=(\S+)", out, re.MULTILINE):
        found.setdefault((what, value), float(at))
    return found


def test_the_autoscale_scenario_grows_the_fleet_through_discovery_until_ttft_recovers(tmp_path):
    if IN_CI:
        assert find_nginx() is not None, "CI=true: nginx (Debian nginx-light) must be installed for the demo's load"
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "demo", "--scenario", "autoscale", "--db", str(tmp_path / "demo.db")],
        capture_output=True, text=True, timeout=200,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-3000:]
    steps = _steps(out)
    summary = out[out.rindex("Timeline"):] if "Timeline" in out else out

    def first(what: str) -> tuple[str, float]:
        found = sorted(((at, value) for (w, value), at in steps.items() if w == what))
        assert found, f"no `{what}` step:\n{summary[:6000]}"
        return found[0][1], found[0][0]

    _, tripled = first("load")
    _, over = first("ttft_over_slo")
    desired = sorted((at, int(v)) for (w, v), at in steps.items() if w == "desired_replicas" and int(v) > 1)
    assert desired, summary[:6000]
    desired_at = desired[0][0]
    instance, added = first("instance_added")
    starting = steps.get(("starting", instance))
    healthy = steps.get(("healthy", instance))
    in_upstream = steps.get(("in_upstream", instance))
    first_request = steps.get(("first_request", instance))
    recovered_value, recovered = first("ttft_recovered")
    assert None not in (starting, healthy, in_upstream, first_request), summary[:6000]
    sequence = [("load tripled", tripled), ("desired replicas up", desired_at), ("added", added),
                ("starting", starting), ("healthy", healthy), ("in the upstream", in_upstream),
                ("first request", first_request), ("TTFT recovered", recovered)]
    for (a, at_a), (b, at_b) in zip(sequence, sequence[1:]):
        assert at_a <= at_b + CLOCKS_S, f"{a} at {at_a}s came after {b} at {at_b}s:\n{summary[:6000]}"
    assert tripled <= over <= recovered
    assert float(recovered_value) <= TTFT_SLO_S

    # every instance the autoscaler added took part, and the service's last view has none still starting
    added_all = {v for (w, v) in steps if w == "instance_added"}
    assert added_all and all(("in_upstream", i) in steps for i in added_all), summary[:6000]
    states = dict(re.findall(r"^result instance=(\S+) state=(\S+) ", out, re.MULTILINE))
    assert added_all <= set(states) and len(states) == 1 + len(added_all), states
    assert not {s for s in states.values()} & {"starting", "unknown", "ejected"}, states
    assert re.search(r"^TTFT p99 back under its SLO at [\d.]+ s \(\+[\d.]+ s\)$", out, re.MULTILINE), summary[:6000]
    assert "Serving Benchmark Result" in out
