"""The demo's arithmetic and routing, without running a fleet: phases and the traffic shift from
records, machine-readable lines, and the load generator routing by the service's upstream file
exactly as NGINX's smooth weighted round-robin would."""

from __future__ import annotations

from collections import Counter

from monitor.act.nginx import UpstreamServer, render_file
from monitor.demo.balancer import SmoothWeighted, UpstreamWeights, parse_upstream
from monitor.demo.report import (
    Answered,
    Decision,
    Served,
    Steps,
    decision_from_api,
    decision_line,
    fault_phases,
    shift_line,
    step_line,
    traffic_shift,
)

A, B, C = "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"


def _served(until: float, per_s: int, pattern: list[str], start: float = 0.0) -> list[Served]:
    out = []
    n = int((until - start) * per_s)
    for i in range(n):
        out.append(Served(start + i / per_s, pattern[i % len(pattern)]))
    return out


def test_phases_follow_the_decisions_on_the_faulted_instance_and_the_shift_compares_healthy_with_the_last_state():
    served = (_served(10, 6, [A, B, C]) + _served(12, 6, [A, B, C], start=10)
              + _served(20, 6, [A, C, A, C, A, C, A, C, B], start=12) + _served(30, 6, [A, C], start=20))
    answered = ([Answered(i / 6, 0.05) for i in range(60)] + [Answered(10 + i / 6, 0.4 if i % 3 == 1 else 0.05)
                                                              for i in range(12)]
                + [Answered(12 + i / 6, 0.06) for i in range(108)])
    decisions = [Decision(-0.1, "health", B, "unknown", "healthy", ()),
                 Decision(12.0, "health", B, "healthy", "degraded", ("slow",)),
                 Decision(20.0, "health", B, "degraded", "ejected", ("TPOT",)),
                 Decision(15.0, "health", A, "healthy", "degraded", ("not the faulted one",))]
    phases = fault_phases(10.0, decisions, 30.0, served, answered, B, 0.25)
    assert [(p.name, p.start, p.end) for p in phases] == [
        ("baseline", 0.0, 10.0), ("fault", 10.0, 12.0), ("degraded", 12.0, 20.0), ("ejected", 20.0, 30.0)]
    assert [round(p.faulted_share or 0, 3) for p in phases] == [0.333, 0.333, 0.104, 0.0]  # 5 of 48: one in nine
    assert phases[1].over_threshold == 4 / 12 and phases[3].over_threshold == 0.0
    shift = traffic_shift(phases, served, B)
    assert shift is not None and shift.final_state == "ejected"
    assert round(shift.share_before or 0, 3) == 0.333 and shift.share_after == 0.0
    assert round(shift.moved or 0, 3) == 0.333
    line = shift_line(shift, "nginx")
    assert line.startswith(f"shift faulted={B} balancer=nginx final_state=ejected share_before=0.333 share_after=0.000 ")
    assert "ttft_p99_after_s=0.060" in line


def test_without_a_verdict_there_is_no_shift_and_without_a_fault_one_phase():
    served = _served(10, 6, [A, B, C])
    assert traffic_shift(fault_phases(5.0, [], 10.0, served, [], B, 0.25), served, B) is None
    assert [p.name for p in fault_phases(None, [], 10.0, served, [], B, 0.25)] == ["baseline"]


def test_a_decision_from_the_api_is_placed_in_demo_seconds_and_printed_as_one_parseable_line():
    d = decision_from_api({"at": "2026-12-04T22:53:14.500Z", "kind": "health", "instance": B, "from": "healthy",
                           "to": "ejected", "reasons": ["TPOT p99 71ms > eject threshold 50ms", "a; b"]},
                          t0_wall=1796424780.0)
    assert round(d.at, 3) == 14.5 and (d.from_state, d.to_state) == ("healthy", "ejected")
    line = decision_line(d)
    head, _, why = line.partition(" why=")
    assert head == f"decision at=14.5s kind=health instance={B} from=healthy to=ejected"
    assert why == "TPOT p99 71ms > eject threshold 50ms; a; b"


def test_steps_are_kept_once_per_value_or_once_per_kind():
    steps = Steps()
    assert steps.mark(1.0, "desired_replicas", 2) is not None
    assert steps.mark(2.0, "desired_replicas", 2) is None
    assert steps.mark(3.0, "desired_replicas", 3) is not None
    assert steps.mark(4.0, "ttft_burn", "7.50", once=True) is not None
    assert steps.mark(5.0, "ttft_burn", "25.00", once=True) is None
    assert [step_line(s) for s in steps.ordered()] == [
        "step at=1.0s what=desired_replicas value=2", "step at=3.0s what=desired_replicas value=3",
        "step at=4.0s what=ttft_burn value=7.50"]


def test_the_upstream_file_the_service_writes_parses_to_nginxs_servers_and_weights():
    text = render_file({"demo": [UpstreamServer(A, "healthy"), UpstreamServer(B, "degraded", 0.25),
                                 UpstreamServer(C, "ejected"), UpstreamServer("10.0.0.4:8000", "starting")],
                        "other": [UpstreamServer("10.9.9.9:1", "healthy")]})
    entries = {e.address: (e.weight, e.down) for e in parse_upstream(text, "demo")}
    assert entries == {A: (4, False), B: (1, False), C: (1, True)}  # starting ones are left out of the block
    assert [e.address for e in parse_upstream(text, "other")] == ["10.9.9.9:1"]


def test_smooth_weighted_round_robin_gives_each_server_its_share_spread_out():
    rr = SmoothWeighted()
    rr.set({A: 4, B: 1, C: 4})
    picks = [rr.pick() for _ in range(90)]
    assert Counter(picks) == {A: 40, B: 10, C: 40}
    assert max(len(run) for run in "".join("b" if p == B else "." for p in picks).split(".")) == 1


def test_the_load_generator_follows_the_upstream_file_as_the_service_rewrites_it(tmp_path):
    path = tmp_path / "upstreams.conf"
    urls = [f"http://{A}", f"http://{B}", f"http://{C}"]
    path.write_text(render_file({"demo": [UpstreamServer(a, "healthy") for a in (A, B, C)]}))
    route = UpstreamWeights(path, "demo", urls)
    assert Counter(route(i) for i in range(30)) == {u: 10 for u in urls}
    replacement = tmp_path / "new.conf"  # written aside and renamed over, as the service does
    replacement.write_text(render_file({"demo": [UpstreamServer(A, "healthy"), UpstreamServer(B, "ejected"),
                                                 UpstreamServer(C, "healthy")]}))
    replacement.replace(path)
    assert Counter(route(i) for i in range(30)) == {f"http://{A}": 15, f"http://{C}": 15}
