"""The demo's arithmetic and routing, without running a fleet: phases and the traffic shift from
records, machine-readable lines, and the load generator routing by the service's upstream file
exactly as NGINX's smooth weighted round-robin would."""

from __future__ import annotations

import re
from collections import Counter
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.act.nginx import UpstreamServer, render_file
from monitor.demo.balancer import SmoothWeighted, UpstreamWeights, parse_upstream
from monitor.demo.report import (
    MIN_REQUESTS,
    MIN_SPAN_S,
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


# --- properties: whatever the timeline and the duration, the summary agrees with itself and the events ---

STATES = ["healthy", "degraded", "ejected", "unknown", "starting"]
PROPS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def timelines(draw: st.DrawFn) -> dict:
    end = draw(st.floats(0.0, 90.0, allow_nan=False))
    fault_at = draw(st.none() | st.floats(-2.0, 95.0, allow_nan=False))
    times = st.floats(-2.0, 95.0, allow_nan=False)
    decisions = draw(st.lists(st.builds(Decision, times, st.sampled_from(["health", "health", "scaling"]),
                                        st.sampled_from([B, B, B, A]), st.just("?"), st.sampled_from(STATES),
                                        st.just(())), max_size=8))
    # traffic: requests at random times; the faulted one's share depends on nothing (any share must be told truly)
    served = draw(st.lists(st.builds(Served, times, st.sampled_from([A, B, C])), max_size=250))
    answered = draw(st.lists(st.builds(Answered, times, st.none() | st.floats(0.0, 3.0, allow_nan=False)),
                             max_size=120))
    return {"fault_at": fault_at, "decisions": decisions, "end": end, "served": served, "answered": answered,
            "instances": draw(st.integers(1, 5))}


def _story(t: dict):
    return fault_story(t["fault_at"], t["decisions"], t["end"], t["served"], t["answered"], B, 0.25, t["instances"])


def _state_at(t: dict, at: float) -> str:
    """The faulted instance's state at `at` from the decisions alone: the last health decision on it at or
    before `at` (those at or before 0 set the state the run started in), `unknown` without one."""
    mine = sorted((d for d in t["decisions"] if d.kind == "health" and d.instance == B and d.at <= max(at, 0.0)),
                  key=lambda d: d.at)  # stable: of decisions at the same time, the later one in the log stands
    return mine[-1].to_state if mine else "unknown"


@PROPS
@given(timelines())
def test_the_phases_tile_the_run_and_count_every_request_in_it_once(t):
    phases = _story(t).phases
    end = max(t["end"], 0.0)
    assert phases[0].start == 0.0 and phases[-1].end == end
    assert all(a.end == b.start for a, b in pairwise(phases))
    assert all(p.start < p.end for p in phases) or len(phases) == 1
    inside = [s for s in t["served"] if 0.0 <= s.at < end]
    assert sum(p.served for p in phases) == len(inside)
    assert sum(p.to_faulted for p in phases) == sum(1 for s in inside if s.instance == B)


@PROPS
@given(timelines())
def test_every_share_is_a_fraction_and_only_a_measurable_phase_has_one(t):
    story = _story(t)
    for p in story.phases:
        assert (p.faulted_share is not None) == (p.span_s >= MIN_SPAN_S and p.served >= MIN_REQUESTS)
        assert p.faulted_share is None or 0.0 <= p.faulted_share <= 1.0
        assert p.ttft_p99_s is None or (p.answered >= MIN_REQUESTS and p.span_s >= MIN_SPAN_S)
    for s in (story.baseline, story.ejected, *story.stretches):
        assert s.faulted_share is None or 0.0 <= s.faulted_share <= 1.0
    text = " ".join(story_sentences(story))
    assert "nan" not in text and "n/a" not in text
    share_sentence = story_sentences(story)[2]
    assert share_sentence.count("%") == sum(1 for p in story.phases if p.measurable)
    assert share_sentence.count("too short to measure") == sum(1 for p in story.phases if not p.measurable)
    for p in story.phases:  # each phase with its time span
        assert f"({round(p.start, 1) + 0.0:.1f}-{round(p.end, 1) + 0.0:.1f} s" in share_sentence


@PROPS
@given(timelines())
def test_each_phase_has_the_state_the_decisions_give_and_the_ejections_are_its_ejected_stretches(t):
    story = _story(t)
    for p in story.phases:
        for at in (p.start, (p.start + p.end) / 2):
            if p.start <= at < p.end or p.start == p.end:
                got = _state_at(t, at)
                assert p.state == got or {p.state, got} <= {"healthy", "unknown"}
        assert (p.name == "ejected") == (p.state == "ejected")
        fault = t["fault_at"]
        assert p.fault_on == (fault is not None and fault <= t["end"] and p.start >= max(fault, 0.0))
        if p.name in ("baseline", "fault"):  # no verdict has been made (since the fault, for `fault`)
            assert p.state in ("healthy", "unknown")
    ejected = [(p.start, p.end) for p in story.phases if p.state == "ejected"]
    assert sum(b - a for a, b in story.ejection_periods) == pytest.approx(sum(b - a for a, b in ejected))
    periods = story.ejection_periods  # one per ejection: apart, in time order
    assert all(b1 < a2 for (_, b1), (a2, _) in pairwise(periods))


@PROPS
@given(timelines())
def test_what_moved_is_claimed_only_from_the_ejected_phases_against_the_one_before_the_fault(t):
    story = _story(t)
    moved_sentence = story_sentences(story)[3]
    text = " ".join(story_sentences(story))
    assert "no traffic moved away" not in text
    if not story.ejection_periods:
        assert story.moved is None and "never ejected" in moved_sentence and "moved to" not in moved_sentence
        return
    assert "never ejected" not in text and moved_sentence.startswith("It was ejected ")
    before, after = story.baseline.faulted_share, story.ejected.faulted_share
    if before is None or after is None:
        assert story.moved is None and "too short to measure" in moved_sentence
        return
    assert story.moved == pytest.approx(before - after)
    points = round((before - after) * 100)
    if points >= 1:
        assert f"so {points} points of the fleet's traffic" in moved_sentence
    else:
        assert "moved to" not in moved_sentence and "its share did not fall" in moved_sentence


@PROPS
@given(timelines())
def test_the_sentence_on_the_end_matches_the_last_event_and_the_fault_window(t):
    story = _story(t)
    sentences = story_sentences(story)
    end_sentence = sentences[4]
    end = max(t["end"], 0.0)
    in_run = [d for d in t["decisions"] if d.kind == "health" and d.instance == B and 0.0 < d.at < end]
    # decisions at the same time: the later one in the audit log stands; none in the run: the state it began in
    last = max(reversed(in_run), key=lambda d: d.at).to_state if in_run else _state_at(t, 0.0)
    assert story.final_state == last
    if t["fault_at"] is not None and t["fault_at"] <= end:
        assert end_sentence.startswith(f"The fault was still on when the run ended at {round(end, 1) + 0.0:.1f} s; ")
        assert "was still on when the run ended" in sentences[0]
    else:
        assert end_sentence.startswith("The run ended at ") and "before the fault" in end_sentence
    if story.final_state == "ejected":
        assert f"{B} was ejected (since " in end_sentence
    elif story.final_state in ("healthy", "unknown"):
        assert f"{B} was back in rotation" in end_sentence or f"{B} was in rotation" in end_sentence
        assert (f"{B} was back in rotation" in end_sentence) == (story.phases[-1].name == "returned")
    else:
        assert f"{B} was {story.final_state} (since " in end_sentence
    late = [d for d in t["decisions"] if d.kind == "health" and d.instance == B and d.at >= end]
    assert ("After the run ended" in end_sentence) == bool(late)


@PROPS
@given(timelines())
def test_the_times_in_the_summary_add_up_as_printed(t):
    sentences = story_sentences(_story(t))
    text = " ".join(sentences)
    for start, end, length in re.findall(r"began at (\d+\.\d) s and was still on when the run ended at (\d+\.\d) s "
                                         r"\((\d+\.\d) s with the fault\)", text):
        assert round(float(end) - float(start), 1) == float(length)
    ended = re.search(r"[Tt]he run ended at (\d+\.\d) s[ ;]", sentences[4])  # the sentence on the end
    for since, before_end in re.findall(r"(?:since|let it back at) (\d+\.\d) s, (\d+\.\d) s before the end", text):
        assert ended is not None and round(float(ended.group(1)) - float(since), 1) == float(before_end)
    inside = re.search(r"It was ejected \S+(?: times)? \(([^;]*); (\d+\.\d) s in all\)", text)
    if inside:
        spans = [tuple(map(float, s.split("-"))) for s in inside.group(1).replace(" s", "").split(", ")]
        assert round(sum(b - a for a, b in spans), 1) == float(inside.group(2))
