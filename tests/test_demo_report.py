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
    fault_story,
    next_steps,
    shift_line,
    step_line,
    story_sentences,
)

A, B, C = "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"


def _served(until: float, per_s: int, pattern: list[str], start: float = 0.0) -> list[Served]:
    out = []
    n = int((until - start) * per_s)
    for i in range(n):
        out.append(Served(start + i / per_s, pattern[i % len(pattern)]))
    return out


def test_phases_follow_the_decisions_on_the_faulted_instance_and_the_shift_compares_healthy_with_ejected():
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
    story = fault_story(10.0, decisions, 30.0, served, answered, B, 0.25, 3)
    assert story.final_state == "ejected" and story.ejection_periods == ((20.0, 30.0),)
    assert round(story.baseline.faulted_share or 0, 3) == 0.333 and story.ejected.faulted_share == 0.0
    assert story.moved_points == 33
    line = shift_line(story, "nginx")
    assert line.startswith(f"shift faulted={B} balancer=nginx final_state=ejected fault_on_at_end=yes "
                           "share_before=0.333 share_after=0.000 moved=0.333 ejections=1 ejected_s=10.0 ")
    assert "ttft_p99_after_s=0.060" in line


def _fleet_run(end: float, ejected: list[tuple[float, float]]) -> tuple[list[Served], list[Answered]]:
    """6 requests/s round-robin over A, B, C; B gets none while ejected."""
    served, t, i = [], 0.0, 0
    while t < end:
        out = any(a <= t < b for a, b in ejected)
        served.append(Served(t, [A, C][i % 2] if out else [A, B, C][i % 3]))
        t, i = t + 1 / 6, i + 1
    return served, [Answered(s.at, 0.05) for s in served]


def test_a_run_that_ends_just_after_the_instance_is_let_back_says_traffic_moved_while_it_was_ejected():
    """Issue 20: `--duration 60` used to say "no traffic moved away" from the 1.5 s after the return."""
    served, answered = _fleet_run(60.5, [(24.9, 59.0)])
    decisions = [Decision(-0.1, "health", B, "unknown", "healthy", ()),
                 Decision(24.9, "health", B, "healthy", "ejected", ("TPOT p99 66ms > eject threshold 50ms",)),
                 Decision(59.0, "health", B, "ejected", "healthy", ("returned after 3 good intervals",))]
    story = fault_story(20.0, decisions, 60.5, served, answered, B, 0.25, 3)
    assert [p.name for p in story.phases] == ["baseline", "fault", "ejected", "returned"]
    assert story.phases[-1].faulted_share is None  # 1.5 s: too short to measure
    text = "\n".join(story_sentences(story, "latency x4"))
    assert "no traffic moved" not in text and "never ejected" not in text
    assert "after it was let back, the fault still on (59.0-60.5 s, 9 requests): too short to measure" in text
    assert ("It was ejected once (24.9-59.0 s; 34.1 s in all): its share fell from 33% before the fault to 0% "
            "while ejected, so 33 points of the fleet's traffic") in text
    assert ("The fault was still on when the run ended at 60.5 s; " + B + " was back in rotation: the service let it "
            "back at 59.0 s, 1.5 s before the end, after it was ejected at 24.9 s") in text
    assert "began at 20.0 s and was still on when the run ended at 60.5 s (40.5 s with the fault)" in text


def test_a_run_that_ends_while_the_instance_is_ejected_says_so_and_since_when():
    served, answered = _fleet_run(35.0, [(20.8, 35.0)])
    decisions = [Decision(20.8, "health", B, "healthy", "ejected", ("TPOT",))]
    story = fault_story(17.5, decisions, 35.0, served, answered, B, 0.25, 3)
    sentences = story_sentences(story)
    assert sentences[-2].startswith(f"The fault was still on when the run ended at 35.0 s; {B} was ejected "
                                    "(since 20.8 s, 14.2 s before the end).")
    assert "33 points of the fleet's traffic (about 28 requests) moved to the 2 other instances" in sentences[3]


def test_an_ejection_too_short_to_measure_is_named_with_its_time_but_given_no_share():
    served, answered = _fleet_run(30.0, [(29.4, 30.0)])
    story = fault_story(15.0, [Decision(29.4, "health", B, "healthy", "ejected", ("TPOT",))], 30.0, served,
                        answered, B, 0.25, 3)
    assert story.moved is None
    assert story_sentences(story)[3].startswith("It was ejected once (29.4-30.0 s; 0.6 s in all): too short to "
                                                "measure how much traffic moved away")


def test_two_ejections_are_each_listed_and_measured_together():
    served, answered = _fleet_run(100.0, [(25.0, 55.0), (70.0, 100.0)])
    decisions = [Decision(25.0, "health", B, "healthy", "ejected", ()),
                 Decision(55.0, "health", B, "ejected", "healthy", ()),
                 Decision(70.0, "health", B, "healthy", "ejected", ())]
    story = fault_story(20.0, decisions, 100.0, served, answered, B, 0.25, 3)
    assert [p.name for p in story.phases] == ["baseline", "fault", "ejected", "returned", "ejected"]
    assert story.ejection_periods == ((25.0, 55.0), (70.0, 100.0)) and story.ejected.span_s == 60.0
    assert "It was ejected 2 times (25.0-55.0 s, 70.0-100.0 s; 60.0 s in all)" in story_sentences(story)[3]


def test_without_a_verdict_nothing_is_said_to_have_moved_and_without_a_fault_one_phase():
    served = _served(10, 6, [A, B, C])
    story = fault_story(5.0, [], 10.0, served, [], B, 0.25, 3)
    assert story.moved is None and [p.name for p in story.phases] == ["baseline", "fault"]
    assert story_sentences(story)[3] == "It was never ejected: no verdict moved traffic away from it in the 5.0 s with the fault."
    assert [p.name for p in fault_phases(None, [], 10.0, served, [], B, 0.25)] == ["baseline"]
    early = fault_story(None, [], 4.0, served, [], B, 0.25, 3)
    assert story_sentences(early)[0] == "The run ended at 4.0 s, before the fault was injected: there was no fault to judge."


def test_the_summary_ends_with_what_to_run_next():
    assert "./scripts/run demo --scenario autoscale" in next_steps("fault")[1]
    assert any("slo-monitor serve --config" in line and "docs/getting-started.md" in line
               for line in next_steps("fault"))
    assert "--scenario autoscale" not in "".join(next_steps("autoscale"))


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
