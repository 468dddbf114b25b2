"""Instance health: `healthy`, `degraded`, `ejected` or `unknown`, with reasons, once per evaluation interval.

vLLM's own `/health` stays 200 while an instance is overloaded, hung or half broken, and open-source
NGINX never notices slowness, so this module turns what the service sees into the state a load
balancer acts on. A wrong decision takes capacity out of production, hence the shape of the rules:

* Getting worse is immediate, getting better is earned. An eject-level signal ejects at once (the
  seed guidance: "remove an instance above the latency threshold at once") and a degrade-level one
  lowers the weight at once; returning takes `recovery_intervals` good intervals in a row, and an
  ejection lasts at least `base_ejection_time` × backoff (Envoy: +1 per ejection, −1 per healthy
  period, capped by `max_ejection_time`). A flapping signal therefore cannot flap the load balancer.
* Never more than `max_ejection_percent` of a pool is ejected (at least one ejectable); an instance
  held back by the cap is degraded instead, and the reason says so.
* Fail open. When the service's own data is stale, or every target of a pool fails at the same
  moment (the monitor's network, DNS or a shared dependency is the likelier culprit than N
  simultaneous instance faults), nothing is newly ejected and nothing returns: every state is held
  and the reason says why. An instance never scraped successfully stays `unknown` rather than
  ejected: a vLLM server does not listen until its model is loaded, which can take minutes.
* Outliers against the rest of the pool count only with enough hosts and requests (Envoy's
  success-rate rule), and only when the gap is also large in absolute terms, because identical
  peers have a stdev of zero and any difference would otherwise be "an outlier".

Everything here is pure: the caller passes plain `InstanceSignals` and the time; `FleetHealth` is a
thin adapter that builds those from the service's `FleetView` each scrape cycle.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any, Callable, Iterable, Literal, Mapping, Sequence

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from monitor.units import Duration, Ratio, instance_address

if TYPE_CHECKING:
    from monitor.config import Config
    from monitor.evaluate.fleet import FleetView, InstanceTrack
    from monitor.evaluate.windows import WindowStats

HEALTHY, DEGRADED, EJECTED, UNKNOWN = "healthy", "degraded", "ejected", "unknown"
STATES = (HEALTHY, DEGRADED, EJECTED, UNKNOWN)

# What a finding is about. The first three mean the instance cannot serve at all, so HAProxy is
# told `down` rather than `drain` (there is nothing in flight worth letting finish).
UNREACHABLE, HEALTH_CHECK, HANG = "unreachable", "health_check", "hang"
LATENCY, ERRORS, SATURATED, OUTLIER = "latency", "errors", "saturated", "outlier"
GPU = "gpu"
HARD_KINDS = frozenset({UNREACHABLE, HEALTH_CHECK, HANG})

FAIL_OPEN_PREFIX = "failing open: "


# --- settings -----------------------------------------------------------------------------------


def parse_percent(value: Any) -> float:
    """A percentage in [0, 100] from ``50``, ``50%`` or ``"50"``.

    A fraction such as ``0.5`` is read as 0.5 %, as Envoy's `max_ejection_percent` reads it; the
    name says percent, and guessing "you meant 50 %" would silently allow a hundred times more.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a percentage: {value!r}")
    if isinstance(value, str):
        text = value.strip().removesuffix("%").strip()
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"not a percentage: {value!r} (use e.g. 50 or 50%)") from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise ValueError(f"not a percentage: {value!r} (use e.g. 50 or 50%)")
    if not 0.0 <= number <= 100.0:
        raise ValueError(f"percentage out of range [0, 100]: {value!r}")
    return number


Percent = Annotated[float, BeforeValidator(parse_percent)]


class HealthSettings(BaseModel):
    """`pools[].health`: when an instance is degraded, ejected and let back. Every field has a default.

    Thresholds set to `null` switch their rule off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(3, ge=1, description="consecutive failed scrapes or /health probes that eject")
    window: Duration | None = Field(None, description="window of the latency and error figures; default evaluation.window")
    min_requests: int = Field(5, ge=0, description="requests in the window before latency and error ratio count")
    ttft_p99_degraded: Duration | None = 0.5
    ttft_p99_eject: Duration | None = 1.0
    e2e_p99_degraded: Duration | None = None
    e2e_p99_eject: Duration | None = None
    error_ratio_degraded: Ratio | None = 0.05
    error_ratio_eject: Ratio | None = 0.25
    hang_intervals: int | None = Field(
        6, ge=1, description="intervals with requests in flight and no generation token that mean a hang")
    kv_cache_threshold: Ratio | None = Field(0.9, description="KV-cache usage that, with requests waiting, degrades")
    kv_cache_min_waiting: int = Field(1, ge=1)
    outlier_stdev_factor: float | None = Field(1.9, gt=0, description="k in mean ± k·stdev of the rest of the pool")
    outlier_min_hosts: int = Field(5, ge=3, description="hosts with enough requests before outliers are judged")
    outlier_min_requests: int = Field(100, ge=0, description="requests per host in the window to take part")
    outlier_min_latency_ratio: float = Field(1.5, ge=1.0, description="and at least this many times the rest's mean")
    outlier_min_success_rate_drop: Ratio = Field(0.05, description="and at least this far below the rest's mean")
    outlier_action: Literal["degrade", "eject"] = "eject"
    base_ejection_time: Duration = 30.0
    max_ejection_time: Duration = 300.0
    backoff_decay: Duration = Field(60.0, description="healthy time that takes one step off the backoff")
    recovery_intervals: int = Field(3, ge=1, description="good intervals in a row before degraded/ejected return")
    max_ejection_percent: Percent = 50.0
    degraded_weight: Ratio = Field(0.25, description="share of a healthy server's weight a degraded one gets")
    stale_after: Duration | None = Field(None, description="monitor data older than this fails open; default 3 scrape intervals")

    @model_validator(mode="after")
    def _consistent(self) -> HealthSettings:
        problems = []
        for name in ("ttft_p99", "e2e_p99", "error_ratio"):
            low, high = getattr(self, f"{name}_degraded"), getattr(self, f"{name}_eject")
            if low is not None and high is not None and low > high:
                problems.append(f"{name}_degraded must not exceed {name}_eject")
        if self.max_ejection_time < self.base_ejection_time:
            problems.append("max_ejection_time must not be shorter than base_ejection_time")
        if self.degraded_weight <= 0:
            problems.append("degraded_weight must be above 0 (an instance with no weight is ejected, say so instead)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def ejection_limit(self, pool_size: int) -> int:
        """How many instances of a pool of this size may be ejected at once.

        At least one whenever ejection is allowed at all (Envoy's `always_eject_one_host`), so small
        pools are not left unprotected; `max_ejection_percent: 0` switches ejection off.
        """
        if self.max_ejection_percent <= 0 or pool_size <= 0:
            return 0
        return max(1, math.floor(pool_size * self.max_ejection_percent / 100.0 + 1e-9))


# --- plain data in and out ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstanceSignals:
    """What the service knows about one instance at one evaluation, as plain values.

    `observed_at` identifies the observation (the latest scrape's start, successful or not):
    interval counters (failures, hang, good intervals) move only when it changes, so evaluating
    twice on the same scrape counts nothing twice. Window figures may be None (no traffic).
    """

    observed_at: float | None = None
    scrape_error: str | None = None
    health_error: str | None = None
    ttft_p99_s: float | None = None
    e2e_p99_s: float | None = None
    error_ratio: float | None = None
    requests: float = 0.0  # requests seen in the window (the volume behind the figures)
    kv_cache_usage: float | None = None
    requests_running: float | None = None
    requests_waiting: float | None = None
    generation_tokens_total: float | None = None  # cumulative counter at observed_at
    window_s: float | None = None
    # reasons from outside the metrics page (GPU memory, XID events): they degrade, never eject,
    # because a GPU reading alone cannot tell a fault from vLLM's normal 90% memory reservation
    external_reasons: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.scrape_error is not None or self.health_error is not None

    def values(self) -> dict[str, float | str | None]:
        """The signal values an audit record keeps (shallow: asdict's deep copy cost a tenth of a
        cycle's decisions at 1,000 instances, for fields that are all numbers, strings and tuples)."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule that fired: `degrade` or `eject`, what about, why, and how bad (orders candidates)."""

    level: Literal["degrade", "eject"]
    kind: str
    reason: str
    severity: float


@dataclass(frozen=True, slots=True)
class InstanceVerdict:
    """What outputs read: the state, its reasons, and the weight share a load balancer should use."""

    pool: str
    instance: str
    state: str
    reasons: tuple[str, ...]
    kind: str | None  # the main finding's kind (e.g. `latency`, `unreachable`), None when healthy
    since: float | None
    ejected_until: float | None
    weight: float  # 1.0 healthy or unknown, settings.degraded_weight degraded, 0.0 ejected
    signals: Mapping[str, Any] = field(default_factory=dict)

    @property
    def serves_traffic(self) -> bool:
        """Healthy, degraded and unknown serve; only ejected does not (unknown fails open)."""
        return self.state != EJECTED

    @property
    def http_status(self) -> int:
        """The `/upstreams/{pool}/{instance}` answer: 503 when ejected, else 200."""
        return 503 if self.state == EJECTED else 200

    @property
    def reason_line(self) -> str:
        """One line for a health-check body or a log."""
        text = "; ".join(self.reasons) if self.reasons else "ok"
        return f"{self.state}: {text}".replace("\n", " ").replace("\r", " ")


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change, as the audit log stores it."""

    at: float
    pool: str
    instance: str
    from_state: str
    to_state: str
    reasons: tuple[str, ...]
    signals: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PoolDecision:
    """The outcome of one evaluation of one pool."""

    pool: str
    at: float
    verdicts: Mapping[str, InstanceVerdict]
    transitions: tuple[Transition, ...] = ()
    fail_open: str | None = None  # why nothing was changed this interval, None when decisions were made
    notes: tuple[str, ...] = ()  # pool-level remarks (e.g. why outlier detection did not run)


# --- one instance -------------------------------------------------------------------------------


@dataclass(slots=True)
class InstanceHealth:
    """The state machine of one instance: its state plus the counters the rules need.

    Mutable, owned by its `PoolHealth`; `to_dict`/`from_dict` round-trip it through the database so
    that after a restart an ejected instance stays ejected until it has earned its way back.
    """

    instance: str
    state: str = UNKNOWN
    reasons: tuple[str, ...] = ("not scraped yet",)
    kind: str | None = None
    since: float | None = None
    seen: bool = False  # ever scraped successfully
    ejections: int = 0  # backoff multiplier
    ejected_until: float | None = None
    ejection_reasons: tuple[str, ...] = ()
    decay_from: float | None = None
    good_intervals: int = 0
    failures: int = 0  # consecutive failed observations (scrape or /health)
    last_failure: str | None = None
    stalled_intervals: int = 0
    last_observed_at: float | None = None
    last_generation_tokens: float | None = None
    last_signals: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        data["ejection_reasons"] = list(self.ejection_reasons)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstanceHealth:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("reasons", "ejection_reasons"):
            if key in known:
                known[key] = tuple(known[key])
        if known.get("state") not in STATES:
            known["state"] = UNKNOWN
        return cls(**known)

    def observe(self, sig: InstanceSignals) -> bool:
        """Move the interval counters by one if this is a new observation; True when it was."""
        if sig.observed_at is None or (self.last_observed_at is not None and sig.observed_at <= self.last_observed_at):
            return False
        self.last_observed_at = sig.observed_at
        if sig.failed:
            self.failures += 1
            self.last_failure = sig.scrape_error or sig.health_error
        else:
            self.failures = 0
            self.last_failure = None
            self.seen = True
        if sig.scrape_error is None:
            self._observe_progress(sig)
        return True

    def _observe_progress(self, sig: InstanceSignals) -> None:
        """Count intervals with work in flight and no generation token produced since the last one.

        A counter that went down (restart) or appeared counts as progress: a new process is not hung.
        """
        tokens, busy = sig.generation_tokens_total, (sig.requests_running or 0) > 0
        previous, self.last_generation_tokens = self.last_generation_tokens, tokens
        if tokens is None or previous is None or not busy or tokens != previous:
            self.stalled_intervals = 0
        else:
            self.stalled_intervals += 1

    def findings(self, sig: InstanceSignals, s: HealthSettings) -> list[Finding]:
        """The rules that look at this instance alone."""
        out: list[Finding] = []
        if self.failures >= s.failure_threshold:
            kind = UNREACHABLE if sig.scrape_error is not None else HEALTH_CHECK
            what = "scrape failed" if kind == UNREACHABLE else "/health failed"
            out.append(Finding("eject", kind, f"{what} {self.failures}x in a row: {self.last_failure}",
                               1000.0 + self.failures))
        if s.hang_intervals is not None and self.stalled_intervals >= s.hang_intervals:
            out.append(Finding(
                "eject", HANG,
                f"hang: {_num(sig.requests_running)} requests running and no generation token for "
                f"{self.stalled_intervals} intervals", 500.0 + self.stalled_intervals))
        window = f"{_secs(sig.window_s)} window, " if sig.window_s else ""
        if sig.requests >= max(s.min_requests, 1):
            volume = f"({window}{_num(sig.requests)} requests)"
            for label, value, degraded, eject in (
                ("TTFT p99", sig.ttft_p99_s, s.ttft_p99_degraded, s.ttft_p99_eject),
                ("e2e p99", sig.e2e_p99_s, s.e2e_p99_degraded, s.e2e_p99_eject),
            ):
                out.extend(_threshold_findings(LATENCY, label, value, degraded, eject, _secs, volume))
            out.extend(_threshold_findings(ERRORS, "error ratio", sig.error_ratio, s.error_ratio_degraded,
                                           s.error_ratio_eject, _pct, volume))
        if (s.kv_cache_threshold is not None and sig.kv_cache_usage is not None
                and sig.kv_cache_usage >= s.kv_cache_threshold
                and (sig.requests_waiting or 0) >= s.kv_cache_min_waiting):
            out.append(Finding(
                "degrade", SATURATED,
                f"KV cache {_pct(sig.kv_cache_usage)} >= {_pct(s.kv_cache_threshold)} with "
                f"{_num(sig.requests_waiting)} requests waiting", sig.kv_cache_usage / s.kv_cache_threshold))
        for reason in sig.external_reasons:
            out.append(Finding("degrade", GPU, reason, 1.0))
        return out


def _threshold_findings(kind: str, label: str, value: float | None, degraded: float | None,
                        eject: float | None, fmt: Any, volume: str) -> list[Finding]:
    if value is None:
        return []
    if eject is not None and value > eject:
        return [Finding("eject", kind, f"{label} {fmt(value)} > eject threshold {fmt(eject)} {volume}",
                        value / eject if eject > 0 else math.inf)]
    if degraded is not None and value > degraded:
        return [Finding("degrade", kind, f"{label} {fmt(value)} > degraded threshold {fmt(degraded)} {volume}",
                        value / degraded if degraded > 0 else math.inf)]
    return []


def _secs(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    return f"{value:.3g}s"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.3g}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


# --- one pool -----------------------------------------------------------------------------------


class PoolHealth:
    """The health of every instance of one pool; `evaluate` once per interval (each scrape cycle).

    State it keeps between calls: one `InstanceHealth` per instance and the last decision.
    """

    def __init__(self, pool: str, instances: Iterable[str], settings: HealthSettings | None = None,
                 interval_s: float = 5.0) -> None:
        self.pool = pool
        self.settings = settings or HealthSettings()
        self.interval_s = interval_s
        self.instances: dict[str, InstanceHealth] = {i: InstanceHealth(i) for i in instances}
        self.last_decision: PoolDecision | None = None

    @property
    def stale_after(self) -> float:
        return self.settings.stale_after or 3.0 * self.interval_s

    def evaluate(self, signals: Mapping[str, InstanceSignals], now: float, *, data_at: float | None,
                 cycle_duration_s: float | None = None) -> PoolDecision:
        """Advance every instance by one interval.

        signals: instance (`host:port`) → its signals; a missing instance counts as not scraped.
        data_at: when the data was collected (the end of the last scrape cycle); None = no data yet.
        cycle_duration_s: how long that cycle took; a cycle much longer than planned means the
        monitor itself is starved and its timeouts are its own, so it fails open too.
        """
        s = self.settings
        sigs = {i: signals.get(i) or InstanceSignals() for i in self.instances}
        new = {i: h.observe(sigs[i]) for i, h in self.instances.items()}
        for i, h in self.instances.items():
            h.last_signals = {**sigs[i].values(), "consecutive_failures": h.failures,
                              "stalled_intervals": h.stalled_intervals, "good_intervals": h.good_intervals}
        before = {i: h.state for i, h in self.instances.items()}
        transitions: list[Transition] = []
        notes: list[str] = []

        fail_open = self._fail_open_reason(sigs, now, data_at, cycle_duration_s)
        if fail_open is not None:
            for h in self.instances.values():
                core = tuple(r for r in h.reasons if not r.startswith(FAIL_OPEN_PREFIX))
                h.reasons = core + (fail_open,)
            decision = PoolDecision(self.pool, now, self.verdicts(), (), fail_open, ())
            self.last_decision = decision
            return decision

        findings = {i: h.findings(sigs[i], s) for i, h in self.instances.items()}
        for i, found in self._outliers(sigs, notes).items():
            findings[i].extend(found)

        candidates: list[tuple[InstanceHealth, list[Finding]]] = []
        for i, h in self.instances.items():
            sig, found = sigs[i], findings[i]
            good = new[i] and not sig.failed and not found
            if new[i]:
                h.good_intervals = h.good_intervals + 1 if good else 0
            self._decide_one(h, sig, found, good, new[i], now, candidates)

        limit = s.ejection_limit(len(self.instances))
        ejected = sum(1 for h in self.instances.values() if h.state == EJECTED)
        candidates.sort(key=lambda c: (-max(f.severity for f in c[1]), c[0].instance))
        for h, found in candidates:
            eject_level = [f for f in found if f.level == "eject"]
            if ejected < limit:
                self._eject(h, eject_level, now)
                ejected += 1
            else:
                held = (f"ejection held back: {ejected} of {len(self.instances)} already ejected "
                        f"(max_ejection_percent {s.max_ejection_percent:g}%)")
                self._set(h, DEGRADED, tuple(f.reason for f in found) + (held,), eject_level[0].kind, now)

        for i, h in self.instances.items():
            if h.state != before[i]:
                transitions.append(Transition(now, self.pool, i, before[i], h.state, h.reasons, dict(h.last_signals)))
        decision = PoolDecision(self.pool, now, self.verdicts(), tuple(transitions), None, tuple(notes))
        self.last_decision = decision
        return decision

    def _decide_one(self, h: InstanceHealth, sig: InstanceSignals, found: list[Finding], good: bool,
                    new: bool, now: float, candidates: list[tuple[InstanceHealth, list[Finding]]]) -> None:
        s = self.settings
        if h.state == EJECTED:
            until = h.ejected_until or now
            if now >= until and h.good_intervals >= s.recovery_intervals:
                self._set(h, HEALTHY, (f"returned after {h.good_intervals} good intervals (was ejected: "
                                       f"{'; '.join(h.ejection_reasons) or 'no reason kept'})",), None, now)
                h.ejected_until = None
                h.decay_from = now
                return
            waiting = (f"ejected until {_clock(until)} (ejection #{h.ejections}); "
                       f"{h.good_intervals}/{s.recovery_intervals} good intervals")
            current = tuple(f.reason for f in found)
            h.reasons = h.ejection_reasons + tuple(r for r in current if r not in h.ejection_reasons) + (waiting,)
            return
        if not h.seen:
            if sig.observed_at is None:
                self._set(h, UNKNOWN, ("not scraped yet",), None, now)
            else:
                self._set(h, UNKNOWN, (f"never scraped successfully ({h.failures}x: {h.last_failure}); not ejected "
                                       "before it is first seen, as a loading model does not listen yet",),
                          UNREACHABLE, now)
            return
        eject = [f for f in found if f.level == "eject"]
        degrade = [f for f in found if f.level == "degrade"]
        if not good and new:
            h.decay_from = now
        if eject:
            candidates.append((h, found))
            return
        if degrade:
            self._set(h, DEGRADED, tuple(f.reason for f in degrade), _main_kind(degrade), now)
            return
        if h.state == DEGRADED and h.good_intervals < s.recovery_intervals:
            core = tuple(r for r in h.reasons if not r.startswith(("recovering:", FAIL_OPEN_PREFIX)))
            h.reasons = core + (f"recovering: {h.good_intervals}/{s.recovery_intervals} good intervals",)
            return
        notes: tuple[str, ...] = ()
        if h.failures:
            notes = (f"last {h.failures} observation(s) failed ({h.failures}/{s.failure_threshold} before "
                     f"ejection): {h.last_failure}",)
        self._set(h, HEALTHY, notes, None, now)
        if good and h.ejections > 0:
            if h.decay_from is None:
                h.decay_from = now
            elif now - h.decay_from >= s.backoff_decay:
                h.ejections -= 1
                h.decay_from = now

    def _eject(self, h: InstanceHealth, found: list[Finding], now: float) -> None:
        s = self.settings
        h.ejections += 1
        duration = min(s.base_ejection_time * h.ejections, s.max_ejection_time)
        h.ejected_until = now + duration
        h.good_intervals = 0
        h.ejection_reasons = tuple(f.reason for f in found)
        self._set(h, EJECTED, h.ejection_reasons + (
            f"ejected for {_secs(duration)} (ejection #{h.ejections}, until {_clock(h.ejected_until)})",),
            _main_kind(found), now)

    @staticmethod
    def _set(h: InstanceHealth, state: str, reasons: tuple[str, ...], kind: str | None, now: float) -> None:
        if state != h.state:
            h.since = now
        h.state, h.reasons, h.kind = state, reasons, kind

    def _fail_open_reason(self, sigs: Mapping[str, InstanceSignals], now: float, data_at: float | None,
                          cycle_duration_s: float | None) -> str | None:
        limit = self.stale_after
        if data_at is None:
            return FAIL_OPEN_PREFIX + "the monitor has no scrape data yet"
        age = now - data_at
        if age > limit:
            return (FAIL_OPEN_PREFIX + f"the monitor's own data is stale (last scrape cycle {_secs(age)} ago, "
                    f"limit {_secs(limit)})")
        if cycle_duration_s is not None and cycle_duration_s > limit:
            return (FAIL_OPEN_PREFIX + f"the monitor's last scrape cycle took {_secs(cycle_duration_s)} "
                    f"(limit {_secs(limit)}); its timeouts may be its own")
        observed = [sig for sig in sigs.values() if sig.observed_at is not None]
        if sigs and len(observed) == len(sigs) and all(sig.failed for sig in observed):
            kinds = sorted({(sig.scrape_error or sig.health_error or "")[:80] for sig in observed})
            return (FAIL_OPEN_PREFIX + f"all {len(sigs)} targets of pool {self.pool} failed at once "
                    f"({'; '.join(kinds)}): more likely the monitor's side than every instance")
        return None

    def _outliers(self, sigs: Mapping[str, InstanceSignals], notes: list[str]) -> dict[str, list[Finding]]:
        """Latency and success-rate outliers against the rest of the pool (leave-one-out mean ± k·stdev)."""
        s = self.settings
        if s.outlier_stdev_factor is None:
            return {}
        k = s.outlier_stdev_factor
        eligible = [i for i, h in self.instances.items()
                    if h.state != EJECTED and h.seen and not sigs[i].failed
                    and sigs[i].requests >= s.outlier_min_requests]
        if len(eligible) < s.outlier_min_hosts:
            if len(self.instances) >= s.outlier_min_hosts:
                notes.append(f"outlier detection skipped: {len(eligible)} hosts with >= {s.outlier_min_requests} "
                             f"requests, needs {s.outlier_min_hosts}")
            return {}
        out: dict[str, list[Finding]] = {}
        latency = {i: sigs[i].ttft_p99_s for i in eligible if sigs[i].ttft_p99_s is not None}
        success = {i: 1.0 - sigs[i].error_ratio for i in eligible if sigs[i].error_ratio is not None}
        if len(latency) >= s.outlier_min_hosts:
            for i, x in latency.items():
                rest = [v for j, v in latency.items() if j != i]
                mean, sd = statistics.fmean(rest), statistics.pstdev(rest)
                if x > mean + k * sd and x > 0 and x >= s.outlier_min_latency_ratio * mean:
                    out.setdefault(i, []).append(Finding(
                        s.outlier_action, OUTLIER,
                        f"outlier: TTFT p99 {_secs(x)} vs rest of pool {_secs(mean)} ± {_secs(sd)} (k={k:g})",
                        x / mean if mean > 0 else math.inf))
        if len(success) >= s.outlier_min_hosts:
            for i, x in success.items():
                rest = [v for j, v in success.items() if j != i]
                mean, sd = statistics.fmean(rest), statistics.pstdev(rest)
                if x < mean - k * sd and mean - x >= s.outlier_min_success_rate_drop:
                    out.setdefault(i, []).append(Finding(
                        s.outlier_action, OUTLIER,
                        f"outlier: success rate {_pct(x)} vs rest of pool {_pct(mean)} ± {_pct(sd)} (k={k:g})",
                        (mean - x) / max(1.0 - mean, 1e-3)))
        return out

    def verdicts(self) -> dict[str, InstanceVerdict]:
        return {i: self.verdict_of(h) for i, h in self.instances.items()}

    def verdict_of(self, h: InstanceHealth) -> InstanceVerdict:
        weight = {EJECTED: 0.0, DEGRADED: self.settings.degraded_weight}.get(h.state, 1.0)
        return InstanceVerdict(self.pool, h.instance, h.state, h.reasons, h.kind, h.since,
                               h.ejected_until if h.state == EJECTED else None, weight, dict(h.last_signals))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {i: h.to_dict() for i, h in self.instances.items()}

    def restore(self, saved: Mapping[str, Mapping[str, Any]]) -> None:
        """Put back saved per-instance states; instances no longer in the pool are dropped, new ones start unknown.

        The observation marks are cleared so the first scrape after a restart counts as new.
        """
        for i, data in saved.items():
            if i in self.instances:
                h = InstanceHealth.from_dict({**data, "instance": i})
                h.last_observed_at = None
                h.last_generation_tokens = None
                h.stalled_intervals = 0
                h.good_intervals = 0  # an ejected instance earns its way back again after a restart
                self.instances[i] = h


def _main_kind(found: Sequence[Finding]) -> str | None:
    return max(found, key=lambda f: f.severity).kind if found else None


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%H:%M:%SZ")


# --- adapter from the service's fleet view ------------------------------------------------------


def signals_from_track(track: InstanceTrack, stats: WindowStats | None, window_s: float | None = None) -> InstanceSignals:
    """Build one instance's signals from the fleet's track and its merged window stats.

    Gauges and the generation-token counter come from the latest successful sample (the hang rule
    compares counters between observations); latency and error figures from the window.
    """
    from monitor.evaluate.windows import instance_figures

    last = track.last
    if last is None:
        return InstanceSignals()
    health_error = last.health_error
    if health_error is None and last.health_status is not None and last.health_status != 200:
        health_error = f"/health answered {last.health_status}"
    figures = instance_figures(stats)
    requests = 0.0
    if stats is not None:
        counts = [h.count for key, h in stats.histograms.items() if key in ("ttft", "e2e")]
        attempted = stats.finished_total + stats.increases.get("admission_rejections", 0.0)
        requests = max([attempted, *counts])
    running = waiting = tokens = None
    if last.ok and last.models:
        gauges = [m.gauges for m in last.models]
        running = sum(g.get("running", 0.0) for g in gauges) if any("running" in g for g in gauges) else None
        waiting = sum(g.get("waiting", 0.0) for g in gauges) if any("waiting" in g for g in gauges) else None
        counters = [m.counters["generation_tokens"] for m in last.models if "generation_tokens" in m.counters]
        tokens = sum(counters) if counters else None
    return InstanceSignals(
        observed_at=last.started_at,
        scrape_error=last.error,
        health_error=health_error,
        ttft_p99_s=figures["ttft_p99_s"],
        e2e_p99_s=figures["e2e_p99_s"],
        error_ratio=figures["error_ratio"],
        requests=requests,
        kv_cache_usage=figures["kv_cache_usage"],
        requests_running=running if running is not None else figures["requests_running"],
        requests_waiting=waiting if waiting is not None else figures["requests_waiting"],
        generation_tokens_total=tokens,
        window_s=window_s,
    )


class FleetHealth:
    """Every pool's `PoolHealth`, fed from the service's `FleetView`. Call `evaluate` after each ingest."""

    def __init__(self, config: Config, settings: Mapping[str, HealthSettings] | None = None) -> None:
        self.pools: dict[str, PoolHealth] = {}
        self.pool_of: dict[str, str] = {}
        for pool in config.pools:
            chosen = (settings or {}).get(pool.name) or getattr(pool, "health", None) or HealthSettings()
            addresses = [instance_address(u) for u in pool.targets]
            self.pools[pool.name] = PoolHealth(pool.name, addresses, chosen, config.scrape.interval)
            self.pool_of.update(dict.fromkeys(addresses, pool.name))

    def windows(self, default: float) -> set[float]:
        """The windows `evaluate` reads each instance over (a pool's own, else the fleet's `default`)."""
        return {pool.settings.window or default for pool in self.pools.values()}

    def evaluate(self, fleet: FleetView, now: float, *,
                 external: Callable[[str, str], tuple[str, ...]] | None = None) -> list[PoolDecision]:
        """external(pool, instance): reasons from other sources (GPU telemetry) that degrade."""
        from monitor.evaluate.windows import merge_stats

        decisions = []
        for name, pool in self.pools.items():
            window = pool.settings.window or fleet.window  # see windows()
            signals = {}
            for instance in pool.instances:
                track = fleet.tracks.get(instance)
                if track is None:
                    continue
                merged = merge_stats(list(fleet.stats(track, now, window).values()))
                signals[instance] = signals_from_track(track, merged, window)
                if external is not None and (extra := external(name, instance)):
                    signals[instance] = replace(signals[instance], external_reasons=tuple(extra))
            decisions.append(pool.evaluate(signals, now, data_at=fleet.last_cycle_at,
                                           cycle_duration_s=fleet.last_cycle_duration_s))
        return decisions

    def verdict(self, pool: str, instance: str) -> InstanceVerdict | None:
        health = self.pools.get(pool)
        if health is None or instance not in health.instances:
            return None
        return health.verdict_of(health.instances[instance])

    def find(self, name: str) -> InstanceVerdict | None:
        """A verdict by `pool/host:port` or by `host:port` alone (instances are unique across pools)."""
        name = name.strip()
        if "/" in name:
            pool, _, instance = name.partition("/")
            return self.verdict(pool, instance)
        pool = self.pool_of.get(name)
        return self.verdict(pool, name) if pool else None

    def pool_verdicts(self, pool: str) -> list[InstanceVerdict]:
        health = self.pools.get(pool)
        return list(health.verdicts().values()) if health else []

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {name: pool.snapshot() for name, pool in self.pools.items()}

    def restore(self, saved: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        for name, states in saved.items():
            if name in self.pools:
                self.pools[name].restore(states)
