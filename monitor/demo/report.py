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

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

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
class Phase:
    name: str
    start: float
    end: float
    served: int  # requests that reached an instance
    to_faulted: int
    answered: int  # requests the client got a first token for
    ttft_p99_s: float | None
    over_threshold: float | None  # share of answered requests slower (TTFT) than the threshold

    @property
    def faulted_share(self) -> float | None:
        return self.to_faulted / self.served if self.served else None


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


def phase(name: str, start: float, end: float, served: Sequence[Served], answered: Sequence[Answered],
          faulted: str, threshold_s: float) -> Phase:
    mine = [s for s in served if start <= s.at < end]
    got = [a.ttft_s for a in answered if start <= a.at < end and a.ttft_s is not None]
    return Phase(name, start, end, len(mine), sum(1 for s in mine if s.instance == faulted), len(got),
                 percentile(got, 99), sum(1 for t in got if t > threshold_s) / len(got) if got else None)


def fault_phases(fault_at: float | None, verdicts: Sequence[Decision], end: float, served: Sequence[Served],
                 answered: Sequence[Answered], faulted: str, threshold_s: float) -> list[Phase]:
    """`baseline` (before the fault), `fault` (until the first decision on the faulted instance),
    then one phase per decision on it, named by the state it took (`degraded`, `ejected`, `healthy`
    when let back), to the end. `verdicts`: the health decisions on the faulted instance."""
    if fault_at is None:
        return [phase("baseline", 0.0, end, served, answered, faulted, threshold_s)]
    cuts = [(fault_at, "fault")] + [(d.at, d.to_state) for d in sorted(verdicts, key=lambda d: d.at)
                                     if d.instance == faulted and fault_at <= d.at < end]
    out = [phase("baseline", 0.0, fault_at, served, answered, faulted, threshold_s)]
    for (start, name), (stop, _) in zip(cuts, cuts[1:] + [(end, "")], strict=True):
        out.append(phase(name, start, stop, served, answered, faulted, threshold_s))
    return out


@dataclass(frozen=True, slots=True)
class Shift:
    """What the verdicts changed: the faulted instance's share of the requests while the service
    still judged it healthy (from the start to the first verdict) against its share in the state it
    ended in, and the fleet's TTFT p99 between the fault and that verdict against the same last phase."""

    faulted: str
    share_before: float | None
    share_after: float | None
    final_state: str
    ttft_p99_baseline_s: float | None
    ttft_p99_before_s: float | None  # between the fault and the first verdict
    ttft_p99_after_s: float | None  # in the last phase
    before: Phase
    after: Phase

    @property
    def moved(self) -> float | None:
        if self.share_before is None or self.share_after is None:
            return None
        return self.share_before - self.share_after


def traffic_shift(phases: Sequence[Phase], served: Sequence[Served], faulted: str) -> Shift | None:
    """None unless a verdict came after the fault (phases: baseline, fault, then one per decision)."""
    if len(phases) < 3 or phases[1].name != "fault":
        return None
    verdict_at = phases[2].start
    judged_healthy = [s for s in served if s.at < verdict_at]
    share_before = (sum(1 for s in judged_healthy if s.instance == faulted) / len(judged_healthy)
                    if judged_healthy else None)
    last = phases[-1]
    return Shift(faulted, share_before, last.faulted_share, last.name, phases[0].ttft_p99_s, phases[1].ttft_p99_s,
                 last.ttft_p99_s, phases[1], last)


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
    lines = [f"  {'phase':<9} {'from':>7} {'to':>7} {'requests':>9} {'to ' + faulted:>24} "
             f"{'fleet TTFT p99':>15} {'TTFT > ' + _ms(threshold_s):>14}"]
    for p in phases:
        lines.append(f"  {p.name:<9} {p.start:>6.1f}s {p.end:>6.1f}s {p.served:>9} "
                     f"{f'{p.to_faulted} ({_pct(p.faulted_share)})':>24} {_ms(p.ttft_p99_s):>15} "
                     f"{_pct(p.over_threshold):>14}")
    return lines


def phase_line(p: Phase) -> str:
    return (f"phase name={p.name} from={p.start:.1f}s to={p.end:.1f}s requests={p.served} "
            f"to_faulted={p.to_faulted} faulted_share={_f(p.faulted_share)} ttft_p99_s={_f(p.ttft_p99_s)} "
            f"over_threshold={_f(p.over_threshold)}")


def shift_sentences(shift: Shift, phases: Sequence[Phase], others: int) -> list[str]:
    """The traffic shift and the fleet's TTFT in words."""
    where = f"the {others} other instance{'s' if others != 1 else ''}" if others else "the others"
    shares = ", ".join(f"{_pct(p.faulted_share)} while {p.name} ({p.start:.1f}-{p.end:.1f} s)" for p in phases[2:])
    first = (f"{shift.faulted} served {_pct(shift.share_before)} of the requests while the service judged it "
             f"healthy, then {shares}")
    moved = shift.moved
    if moved is not None and moved > 0:
        first += f": {moved * 100:.0f} points of the fleet's traffic moved to {where}"
    elif moved is not None:
        first += ": no traffic moved away"
    ttft = (f"fleet TTFT p99 (client side): {_ms(shift.ttft_p99_baseline_s)} before the fault, "
            f"{_ms(shift.ttft_p99_before_s)} between the fault and the first verdict "
            f"({shift.before.answered} requests in {shift.before.end - shift.before.start:.1f} s), "
            f"{_ms(shift.ttft_p99_after_s)} while {shift.final_state} ({shift.after.answered} requests)")
    return [first, ttft]


def shift_line(shift: Shift, balancer: str) -> str:
    return (f"shift faulted={shift.faulted} balancer={balancer} final_state={shift.final_state} "
            f"share_before={_f(shift.share_before)} share_after={_f(shift.share_after)} moved={_f(shift.moved)} "
            f"ttft_p99_baseline_s={_f(shift.ttft_p99_baseline_s)} ttft_p99_before_s={_f(shift.ttft_p99_before_s)} "
            f"ttft_p99_after_s={_f(shift.ttft_p99_after_s)}")


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
