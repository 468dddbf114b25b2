"""The demo's summary in figures: what the verdicts changed, when each decision and step came, and
the SLOs. Pure functions over plain records, so the arithmetic is tested without running a fleet.

Times are demo seconds: seconds since the load started. Two sources meet here and are kept apart on
purpose: which instance served a request comes from the simulator's ground truth (the server's side,
the only side that knows when the load goes through NGINX), and how long the first token took comes
from the load generator (the client's side: what a user of the fleet saw, NGINX included).

Every machine-readable line is `word key=value ...` with no spaces inside a value, except `why=`,
which is last and runs to the end of the line (tests and scripts split on the first `why=`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

from monitor.loadgen.report import percentile


@dataclass(frozen=True, slots=True)
class Served:
    """One request as an instance saw it (a ground-truth row)."""

    at: float  # arrival, demo seconds
    instance: str  # host:port


@dataclass(frozen=True, slots=True)
class Answered:
    """One request as the client saw it."""

    at: float  # sent, demo seconds
    ttft_s: float | None  # None: failed


@dataclass(frozen=True, slots=True)
class Decision:
    at: float  # demo seconds
    kind: str  # health | scaling
    instance: str  # "" for pool decisions
    from_state: str
    to_state: str
    reasons: tuple[str, ...]


def served_rows(rows: Iterable[Mapping[str, Any]], t0_wall: float) -> list[Served]:
    """Ground-truth rows (monitor/sim/groundtruth.py) to `Served`, arrival in demo seconds."""
    return [Served(float(r["arrival"]) - t0_wall, str(r["instance"])) for r in rows if r.get("arrival") is not None]


# --- the fault scenario: phases of the faulted instance ---------------------------------------------

# A share or a p99 from under a second of traffic, or from a handful of requests, is noise (three
# instances round-robin: 2 of 8 requests is 25% or 38% by the luck of one pick). Such a phase is
# listed with its requests but gets no percentage: "too short to measure".
MIN_SPAN_S = 1.0
MIN_REQUESTS = 10

# the faulted instance's states in which it is in rotation at full weight (`unknown`: not yet judged)
_IN_ROTATION = frozenset({"healthy", "unknown"})
# what each phase is called in words (other states: `while <state>`)
_PHASE_WORDS = {
    "baseline": "before the fault",
    "fault": "with the fault on while still in rotation",
    "degraded": "while degraded",
    "ejected": "while ejected",
    "returned": "after it was let back",
}


def measurable(span_s: float, requests: int) -> bool:
    """Whether a stretch of the run has enough traffic for a percentage (see MIN_SPAN_S)."""
    return span_s >= MIN_SPAN_S and requests >= MIN_REQUESTS


@dataclass(frozen=True, slots=True)
class Phase:
    """One stretch of the run in which the faulted instance kept one state and the fault one
    condition. `name`: `baseline` (before the fault, judged healthy), `fault` (the fault on, still
    in rotation, no verdict on it yet), `degraded`, `ejected`, `returned` (let back after a verdict),
    or another state the service gave it (`starting`, ...)."""

    name: str
    start: float
    end: float
    served: int  # requests that reached an instance
    to_faulted: int
    answered: int  # requests the client got a first token for
    ttft_p99_s: float | None  # None: too short to measure
    over_threshold: float | None  # share of answered requests slower (TTFT) than the threshold; None: too short
    state: str = "healthy"  # the service's state for the faulted instance
    fault_on: bool = False

    @property
    def span_s(self) -> float:
        return self.end - self.start

    @property
    def measurable(self) -> bool:
        return measurable(self.span_s, self.served)

    @property
    def faulted_share(self) -> float | None:
        """The faulted instance's share of the requests; None when too short to measure."""
        return self.to_faulted / self.served if self.measurable else None


def phase(name: str, start: float, end: float, served: Sequence[Served], answered: Sequence[Answered],
          faulted: str, threshold_s: float, state: str = "healthy", fault_on: bool = False) -> Phase:
    mine = [s for s in served if start <= s.at < end]
    got = [a.ttft_s for a in answered if start <= a.at < end and a.ttft_s is not None]
    ok = measurable(end - start, len(got))
    return Phase(name, start, end, len(mine), sum(1 for s in mine if s.instance == faulted), len(got),
                 percentile(got, 99) if ok else None,
                 sum(1 for t in got if t > threshold_s) / len(got) if ok else None, state, fault_on)


def state_changes(decisions: Iterable[Decision], instance: str, end: float) -> tuple[str, list[Decision]]:
    """The instance's state when the load started (the last health decision at or before 0, else
    `unknown`) and the health decisions on it during the run (0 < at < end), in time order."""
    mine = sorted((d for d in decisions if d.kind == "health" and d.instance == instance), key=lambda d: d.at)
    initial = "unknown"
    for d in mine:
        if d.at <= 0:
            initial = d.to_state
    return initial, [d for d in mine if 0 < d.at < end]


def _phase_name(state: str, after_fault: bool, verdict_before: bool) -> str:
    if state not in _IN_ROTATION:
        return state
    if verdict_before:
        return "returned"
    return "fault" if after_fault else "baseline"


def fault_phases(fault_at: float | None, verdicts: Sequence[Decision], end: float, served: Sequence[Served],
                 answered: Sequence[Answered], faulted: str, threshold_s: float) -> list[Phase]:
    """The run cut where the fault began and wherever the service changed the faulted instance's
    state; the phases tile [0, end] with no gap. `verdicts`: health decisions (others are ignored).
    The fault, once on, stays on to the end (the demo never clears it). A `returned` phase follows
    any verdict (degraded, ejected, ...) once the instance is back to healthy, before or after the
    fault; `fault` is only the stretch between the fault and the first verdict after it."""
    end = max(end, 0.0)
    fault = None if fault_at is None or fault_at > end else max(fault_at, 0.0)  # after the end: never injected
    initial, changes = state_changes(verdicts, faulted, end)
    cuts = sorted({0.0, end, *(d.at for d in changes), *(() if fault is None else (fault,))})
    out: list[Phase] = []
    for start, stop in pairwise(cuts):
        before = [d for d in changes if d.at <= start]
        state = before[-1].to_state if before else initial
        after_fault = fault is not None and start >= fault
        since = fault if after_fault and fault is not None else 0.0
        at_since = [d for d in changes if d.at <= since]
        verdict_before = ((at_since[-1].to_state if at_since else initial) not in _IN_ROTATION
                          or any(d.to_state not in _IN_ROTATION for d in before if d.at >= since))
        name = _phase_name(state, after_fault, verdict_before)
        if out and out[-1].name == name and out[-1].fault_on == after_fault:
            start = out.pop().start  # the same phase goes on: a decision that changed nothing, unknown -> healthy
        out.append(phase(name, start, stop, served, answered, faulted, threshold_s, state, after_fault))
    if not out:  # a run of no length
        out.append(phase(_phase_name(initial, fault is not None, initial not in _IN_ROTATION), 0.0, end, served,
                         answered, faulted, threshold_s, initial, fault is not None))
    return out


def ejections(phases: Sequence[Phase]) -> list[tuple[float, float]]:
    """Each period the faulted instance was ejected (consecutive `ejected` phases are one period)."""
    out: list[tuple[float, float]] = []
    for p in phases:
        if p.name != "ejected":
            continue
        if out and out[-1][1] == p.start:
            out[-1] = (out[-1][0], p.end)
        else:
            out.append((p.start, p.end))
    return out


@dataclass(frozen=True, slots=True)
class Stretch:
    """Every phase of one name taken together (all the ejection periods, ...): its requests, the
    faulted instance's share of them, and the fleet's TTFT p99 over their answered requests."""

    name: str
    spans: tuple[tuple[float, float], ...]
    served: int
    to_faulted: int
    answered: int
    ttft_p99_s: float | None  # None: too short to measure

    @property
    def span_s(self) -> float:
        return sum(b - a for a, b in self.spans)

    @property
    def measurable(self) -> bool:
        return measurable(self.span_s, self.served)

    @property
    def faulted_share(self) -> float | None:
        return self.to_faulted / self.served if self.measurable else None


def stretch(name: str, phases: Sequence[Phase], answered: Sequence[Answered]) -> Stretch:
    mine = [p for p in phases if p.name == name]
    spans = tuple((p.start, p.end) for p in mine)
    got = [a.ttft_s for a in answered if a.ttft_s is not None and any(s <= a.at < e for s, e in spans)]
    span_s = sum(e - s for s, e in spans)
    return Stretch(name, spans, sum(p.served for p in mine), sum(p.to_faulted for p in mine), len(got),
                   percentile(got, 99) if measurable(span_s, len(got)) else None)


@dataclass(frozen=True, slots=True)
class FaultStory:
    """What the summary of the fault scenario says, as data: the phases, the share before the fault
    against the share while ejected (the only phases where a verdict took traffic away), and the
    state at the end. Every sentence of `story_sentences` is read off this."""

    faulted: str
    fault_at: float | None  # None: the run ended before the fault
    end: float
    phases: tuple[Phase, ...]
    baseline: Stretch
    ejected: Stretch
    ejection_periods: tuple[tuple[float, float], ...]
    stretches: tuple[Stretch, ...]  # one per phase name, in the order they first came
    final_state: str
    last_decision: Decision | None  # the last decision on the faulted instance during the run
    late: tuple[Decision, ...]  # decisions on it after the run ended (the last poll)
    instances: int

    @property
    def fault_on_at_end(self) -> bool:
        return self.fault_at is not None and self.fault_at <= self.end

    @property
    def moved(self) -> float | None:
        """Share before the fault minus share while ejected; None unless ejected and both measurable."""
        before, after = self.baseline.faulted_share, self.ejected.faulted_share
        if not self.ejection_periods or before is None or after is None:
            return None
        return before - after

    @property
    def moved_points(self) -> int | None:
        """`moved` in whole percentage points, as the sentence says it."""
        return None if self.moved is None else round(self.moved * 100)


def fault_story(fault_at: float | None, decisions: Sequence[Decision], end: float, served: Sequence[Served],
                answered: Sequence[Answered], faulted: str, threshold_s: float, instances: int) -> FaultStory:
    phases = fault_phases(fault_at, decisions, end, served, answered, faulted, threshold_s)
    end = phases[-1].end
    _, changes = state_changes(decisions, faulted, end)
    late = tuple(sorted((d for d in decisions if d.kind == "health" and d.instance == faulted and d.at >= end),
                        key=lambda d: d.at))
    fault = None if fault_at is None or fault_at > end else max(fault_at, 0.0)
    stretches = tuple(stretch(name, phases, answered) for name in dict.fromkeys(p.name for p in phases))
    return FaultStory(faulted, fault, end, tuple(phases), stretch("baseline", phases, answered),
                      stretch("ejected", phases, answered), tuple(ejections(phases)), stretches, phases[-1].state,
                      changes[-1] if changes else None, late, instances)



def first_verdict(decisions: Iterable[Decision], instance: str, states: Sequence[str] = ("degraded", "ejected"),
                  after: float = 0.0) -> Decision | None:
    """The first health decision at or after `after` that took `instance` into one of `states`."""
    found = [d for d in decisions if d.kind == "health" and d.instance == instance and d.to_state in states
             and d.at >= after]
    return min(found, key=lambda d: d.at) if found else None


def decision_from_api(item: Mapping[str, Any], t0_wall: float) -> Decision:
    """One `GET /api/v1/decisions` item (`at` in RFC 3339)."""
    at = datetime.fromisoformat(str(item["at"]).replace("Z", "+00:00")).timestamp() - t0_wall
    return Decision(at, str(item.get("kind") or ""), str(item.get("instance") or ""), str(item.get("from") or ""),
                    str(item.get("to") or ""), tuple(str(r) for r in item.get("reasons") or ()))


# --- lines ------------------------------------------------------------------------------------------


def _t(at: float) -> str:
    """Demo seconds to one decimal, without a `-0.0` for what came a hair before the load started."""
    return f"{round(at, 1) + 0.0:.1f}"


def _f(value: float | None, digits: int = 3) -> str:
    return "nan" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f} ms"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def decision_line(d: Decision) -> str:
    """`decision at=20.3s kind=health instance=h:p from=healthy to=degraded why=...`."""
    why = "; ".join(dict.fromkeys(d.reasons)) or "-"
    return (f"decision at={_t(d.at)}s kind={d.kind} instance={d.instance or '-'} from={d.from_state or '-'} "
            f"to={d.to_state} why={why}")


def phase_table(phases: Sequence[Phase], faulted: str, threshold_s: float) -> list[str]:
    lines = [(f"  {'phase':<9} {'from':>7} {'to':>7} {'requests':>9} {'to ' + faulted:>24} "
              f"{'fleet TTFT p99':>15} {'TTFT > ' + _ms(threshold_s):>14}")]
    for p in phases:
        share = _pct(p.faulted_share) if p.measurable else "too short"
        lines.append(f"  {p.name:<9} {p.start:>6.1f}s {p.end:>6.1f}s {p.served:>9} "
                     f"{f'{p.to_faulted} ({share})':>24} {_ms(p.ttft_p99_s) if p.ttft_p99_s is not None else '-':>15} "
                     f"{_pct(p.over_threshold) if p.over_threshold is not None else '-':>14}")
    if not all(p.measurable for p in phases):
        lines.append(f"  too short: under {MIN_SPAN_S:g} s or under {MIN_REQUESTS} requests, no percentage")
    return lines


def phase_line(p: Phase) -> str:
    return (f"phase name={p.name} from={p.start:.1f}s to={p.end:.1f}s requests={p.served} "
            f"to_faulted={p.to_faulted} faulted_share={_f(p.faulted_share)} ttft_p99_s={_f(p.ttft_p99_s)} "
            f"over_threshold={_f(p.over_threshold)} state={p.state} fault={'on' if p.fault_on else 'off'}")


def _span(start: float, end: float) -> str:
    return f"{_t(start)}-{_t(end)} s"


def _dur(start: float, end: float) -> str:
    """A duration as the difference of the two times as printed, so the sentence adds up."""
    return f"{round(end, 1) - round(start, 1) + 0.0:.1f}"


def _durs(spans: Sequence[tuple[float, float]]) -> str:
    return f"{sum(round(b, 1) - round(a, 1) for a, b in spans) + 0.0:.1f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _phase_words(p: Phase, fault_known: bool) -> str:
    words = _PHASE_WORDS.get(p.name, f"while {p.name}")
    if p.name == "returned" and p.fault_on:
        words += ", the fault still on"
    elif fault_known and not p.fault_on and p.name != "baseline":
        words += ", before the fault"
    return words


def _since(phases: Sequence[Phase]) -> float:
    """When the faulted instance took the state it ended in (the phases of that state run back to it)."""
    start = phases[-1].start
    for p in reversed(phases[:-1]):
        if p.state != phases[-1].state:
            break
        start = p.start
    return start


def story_sentences(story: FaultStory, fault_text: str = "the fault") -> list[str]:
    """The fault scenario's summary in words, each sentence read off `story`: the fault's window,
    the whole run, the faulted instance's share per phase (with its time span, or "too short to
    measure"), what the ejections moved (only ejected phases against the one before the fault), the
    state at the end, and the fleet's TTFT p99 per kind of phase."""
    f, end, phases = story.faulted, story.end, story.phases
    out: list[str] = []
    if story.fault_at is None:
        out.append(f"The run ended at {_t(end)} s, before the fault was injected: there was no fault to judge.")
    else:
        out.append(f"The fault ({fault_text} on {f}) began at {_t(story.fault_at)} s and was still on when the run "
                   f"ended at {_t(end)} s ({_dur(story.fault_at, end)} s with the fault).")

    total, mine = sum(p.served for p in phases), sum(p.to_faulted for p in phases)
    whole = f"{mine} of {total} requests" + (f" ({_pct(mine / total)})" if measurable(end, total) else
                                             " (too short to measure a share)")
    out.append(f"Over the whole run ({_span(0.0, end)}) {f} served {whole}; an even share among "
               f"{_plural(story.instances, 'instance')} is {100 / max(story.instances, 1):.0f}%.")

    parts = []
    for p in phases:
        words = f"{_phase_words(p, story.fault_at is not None)} ({_span(p.start, p.end)}"
        parts.append(f"{words}): {_pct(p.faulted_share)}" if p.measurable
                     else f"{words}, {_plural(p.served, 'request')}): too short to measure")
    out.append(f"Its share of the requests: {'; '.join(parts)}.")

    out.append(_moved_sentence(story))
    out.append(_end_sentence(story))
    out.append(_ttft_sentence(story))
    return out


def _moved_sentence(story: FaultStory) -> str:
    periods, ejected, baseline = story.ejection_periods, story.ejected, story.baseline
    others = story.instances - 1
    where = f"the {_plural(others, 'other instance')}" if others > 0 else "the other instances"
    if not periods:
        degraded = [p for p in story.phases if p.name == "degraded"]
        if degraded:
            return (f"It was never ejected, so no ejection moved traffic away from it; it was degraded (in rotation at "
                    f"a lower weight) {', '.join(_span(p.start, p.end) for p in degraded)}.")
        if story.fault_at is None:
            return "It was never ejected: no verdict moved traffic away from it."
        return (f"It was never ejected: no verdict moved traffic away from it in the "
                f"{_dur(story.fault_at, story.end)} s with the fault.")
    times = "once" if len(periods) == 1 else f"{len(periods)} times"
    head = (f"It was ejected {times} ({', '.join(_span(a, b) for a, b in periods)}; "
            f"{_durs(ejected.spans)} s in all)")
    points = story.moved_points
    if story.moved is None or points is None:
        if not ejected.measurable:
            return (f"{head}: too short to measure how much traffic moved away "
                    f"({_plural(ejected.served, 'request')} while ejected, {ejected.to_faulted} of them to it).")
        return (f"{head}: its share while ejected was {_pct(ejected.faulted_share)}, but the time before the fault "
                f"is too short to measure a share to compare it with.")
    if points >= 1:
        about = round(ejected.served * story.moved)
        return (f"{head}: its share fell from {_pct(baseline.faulted_share)} before the fault to "
                f"{_pct(ejected.faulted_share)} while ejected, so {points} points of the fleet's traffic "
                f"(about {_plural(about, 'request')}) moved to {where}.")
    return (f"{head}: its share did not fall ({_pct(baseline.faulted_share)} before the fault, "
            f"{_pct(ejected.faulted_share)} while ejected): the load balancer did not follow the ejection.")


def _end_sentence(story: FaultStory) -> str:
    f, end, state = story.faulted, story.end, story.final_state
    head = (f"The run ended at {_t(end)} s before the fault" if story.fault_at is None
            else f"The fault was still on when the run ended at {_t(end)} s")
    since = _since(story.phases)
    if state == "ejected":
        text = f"{head}; {f} was ejected (since {_t(since)} s, {_dur(since, end)} s before the end)."
    elif state == "degraded":
        text = f"{head}; {f} was degraded (since {_t(since)} s): in rotation at a lower weight."
    elif state in _IN_ROTATION and story.phases[-1].name == "returned":
        text = (f"{head}; {f} was back in rotation: the service let it back at {_t(since)} s, "
                f"{_dur(since, end)} s before the end, after it was {_verdict_history(story)}, and made no decision "
                f"on it after that.")
    elif state in _IN_ROTATION:
        text = f"{head}; {f} was in rotation: the service made no verdict on it during the run."
    else:
        text = f"{head}; {f} was {state} (since {_t(since)} s)."
    if story.late:
        text += (" After the run ended (the last poll) the service also took it to "
                 f"{', '.join(f'{d.to_state} at {_t(d.at)} s' for d in story.late)}.")
    return text


def _verdict_history(story: FaultStory) -> str:
    """`ejected at 24.9 s` or `degraded at 22.0 s, ejected at 24.9 s`: the phases out of full rotation."""
    seen = [p for p in story.phases if p.state not in _IN_ROTATION]
    merged: list[Phase] = []
    for p in seen:
        if merged and merged[-1].state == p.state and merged[-1].end == p.start:
            continue
        merged.append(p)
    return ", ".join(f"{p.state} at {_t(p.start)} s" for p in merged) or "judged"


def _ttft_sentence(story: FaultStory) -> str:
    parts = []
    for s in story.stretches:
        size = f"{_plural(s.answered, 'request')} answered in {_durs(s.spans)} s"
        if len(s.spans) > 1:
            size = f"{len(s.spans)} periods, {size}"
        figure = _ms(s.ttft_p99_s) if s.ttft_p99_s is not None else "too short to measure"
        parts.append(f"{figure} {_PHASE_WORDS.get(s.name, f'while {s.name}')} ({size})")
    return f"Fleet TTFT p99 (client side): {', '.join(parts)}."


def shift_line(story: FaultStory, balancer: str) -> str:
    """`shift ...`: the story's figures for scripts. share_before: before the fault; share_after and
    ttft_p99_after_s: while ejected (all periods); share_end: in the last phase; nan: not measurable."""
    named = {s.name: s for s in story.stretches}
    return (f"shift faulted={story.faulted} balancer={balancer} final_state={story.final_state} "
            f"fault_on_at_end={'yes' if story.fault_on_at_end else 'no'} "
            f"share_before={_f(story.baseline.faulted_share)} share_after={_f(story.ejected.faulted_share)} "
            f"moved={_f(story.moved)} ejections={len(story.ejection_periods)} ejected_s={story.ejected.span_s:.1f} "
            f"share_end={_f(story.phases[-1].faulted_share)} "
            f"ttft_p99_baseline_s={_f(story.baseline.ttft_p99_s)} "
            f"ttft_p99_before_s={_f(named['fault'].ttft_p99_s if 'fault' in named else None)} "
            f"ttft_p99_after_s={_f(story.ejected.ttft_p99_s)}")


def next_steps(scenario: str) -> list[str]:
    """What to run next, the summary's last lines."""
    other = ("./scripts/run demo --scenario autoscale   # load triples; the service asks for replicas and the fleet "
             "grows" if scenario == "fault" else
             "./scripts/run demo --duration 60   # one slow instance among 3: ejected, let back, judged again")
    return ["Next:",
            f"  {other}",
            "  slo-monitor serve --config slo-monitor.yaml   # on your own vLLM fleet: docs/getting-started.md",
            "  slo-monitor demo --help   # the demo's options (--duration, --fault-at, --rate, --balancer)"]



def indicator_words(indicator: Mapping[str, Any], objective: float) -> str:
    """`TTFT under 250 ms for 99% of requests`, from an SLO's indicator as the API shows it."""
    kind = indicator.get("type")
    share = f"{objective * 100:g}%"
    if kind == "latency":
        metric = str(indicator.get("metric", "")).upper()
        threshold = indicator.get("threshold")
        limit = _ms(float(threshold)) if isinstance(threshold, (int, float)) else str(threshold)
        return f"{metric} under {limit} for {share} of requests"
    if kind == "error_ratio":
        return f"{share} of requests without error"
    if kind == "availability":
        return f"instances up {share} of the time"
    if kind == "saturation":
        return f"{indicator.get('metric')} under {indicator.get('threshold')} {share} of the time"
    return f"{kind} {share}"


def slo_line(item: Mapping[str, Any]) -> str:
    """`slo name=... objective=0.99 sli=... budget_left=... burn_5m=... burn_1h=... alert=...` from
    one `GET /api/v1/slos` object."""
    burns = item.get("burn_rates") or {}
    return (f"slo name={item.get('name')} objective={item.get('objective')} sli={_f(item.get('sli'), 4)} "
            f"budget_left={_f(item.get('error_budget_remaining'), 3)} burn_5m={_f(burns.get('5m'), 2)} "
            f"burn_1h={_f(burns.get('1h'), 2)} alert={item.get('alert') or 'none'}")


def slo_words(item: Mapping[str, Any]) -> str:
    """One SLO's state in words, for the live view."""
    burns = item.get("burn_rates") or {}
    budget = item.get("error_budget_remaining")
    burn = burns.get("5m")
    alert = item.get("alert") or "none"
    return (f"{item.get('name')}: budget left {_pct(budget)}, burn {_f(burn, 1) if burn is not None else 'n/a'}x"
            f"{'' if alert == 'none' else f', {alert.upper()}'}")


@dataclass(frozen=True, slots=True)
class AlertChange:
    at: float
    slo: str
    from_alert: str
    to_alert: str


def alert_changes(previous: Mapping[str, str], slos: Iterable[Mapping[str, Any]], at: float) -> list[AlertChange]:
    """Alert levels that changed since `previous` (SLO name -> level), at demo time `at`."""
    out = []
    for item in slos:
        name, level = str(item.get("name")), str(item.get("alert") or "none")
        before = previous.get(name, "none")
        if level != before:
            out.append(AlertChange(at, name, before, level))
    return out


def alert_line(c: AlertChange) -> str:
    return f"alert at={_t(c.at)}s slo={c.slo} from={c.from_alert} to={c.to_alert}"


# --- the autoscale scenario's steps -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    at: float
    what: str
    value: str
    why: str = ""


class Steps:
    """The autoscale story as it happens: each step is recorded once, at its first time. A step is
    one per (what, value) (`desired_replicas` 2 and 3, `healthy` of each instance), or one per
    `what` when `once` (a figure crossing a line: its value then is the one kept)."""

    def __init__(self) -> None:
        self.items: list[Step] = []
        self._seen: set[tuple[str, str]] = set()

    def mark(self, at: float, what: str, value: object, why: str = "", *, once: bool = False) -> Step | None:
        key = (what, "" if once else str(value))
        if key in self._seen:
            return None
        self._seen.add(key)
        step = Step(at, what, str(value), why)
        self.items.append(step)
        return step

    def first(self, what: str, value: str | None = None) -> Step | None:
        found = [s for s in self.items if s.what == what and (value is None or s.value == value)]
        return min(found, key=lambda s: s.at) if found else None

    def ordered(self) -> list[Step]:
        return sorted(self.items, key=lambda s: s.at)


def step_line(s: Step) -> str:
    """`step at=12.3s what=desired_replicas value=3 why=...`."""
    return f"step at={_t(s.at)}s what={s.what} value={s.value}" + (f" why={s.why}" if s.why else "")
