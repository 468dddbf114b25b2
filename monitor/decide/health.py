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

Everything here is pure: the caller passes plain `InstanceSignals` (monitor/evaluate/signals.py) and
the time; monitor/decide/fleet.py runs every pool's rules once per cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from monitor.decide.verdicts import (
    ERRORS,
    GPU,
    HANG,
    HEALTH_CHECK,
    LATENCY,
    SATURATED,
    STATES,
    UNKNOWN,
    UNREACHABLE,
    Finding,
)
from monitor.decide.wording import count, num, pct, secs
from monitor.evaluate.signals import InstanceSignals
from monitor.settings import HealthSettings

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
    last_progress: tuple[float | None, ...] | None = None  # (tokens, finished, iterations) last seen
    health_timeouts: int = 0  # consecutive observations with /metrics answering and /health timing out
    joined_at: float | None = None  # set for instances that joined after the start (discovery, reload)
    left_at: float | None = None  # set while leaving
    warm_from: float | None = None  # slow start: when it first turned healthy after starting
    held_state: str | None = None  # the state before leaving or sleeping, resumed on return
    woke_at: float | None = None  # when its engine last woke from sleep (latency then still holds the sleep)
    # requests it must serve after being degraded by a rule that needs volume (latency, errors,
    # outliers) before an interval counts toward recovery: its window restarted with the change
    evidence_needed: float = 0.0
    last_signals: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Every field, shallow: asdict's deep copy cost a third of saving a 1,000-instance pool's state,
        which happens on every change of state; the fields hold numbers, strings and tuples, and
        `last_signals` is replaced each cycle, never changed in place (its copy here is for the reader)."""
        data = {name: getattr(self, name) for name in _FIELDS}
        data["reasons"] = list(self.reasons)
        data["ejection_reasons"] = list(self.ejection_reasons)
        data["last_signals"] = dict(self.last_signals)
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
        timed_out = sig.scrape_error is None and "timed out" in (sig.health_error or "")
        self.health_timeouts = self.health_timeouts + 1 if timed_out else 0
        if sig.scrape_error is None:
            self._observe_progress(sig)
        return True

    def _observe_progress(self, sig: InstanceSignals) -> None:
        """Count intervals with work present (running or waiting) and nothing moving since the last one:
        no generation token, no finished request, no engine iteration. vllm#39863: a dead EngineCore
        leaves the API server answering, running 0 and waiting climbing; requiring running > 0 missed it.

        A counter that went down (restart) or appeared counts as progress: a new process is not hung.
        An idle instance (nothing running, nothing waiting) is never hung.
        """
        marks = (sig.generation_tokens_total, sig.finished_total, sig.iterations_total)
        busy = (sig.requests_running or 0) > 0 or (sig.requests_waiting or 0) > 0
        previous, self.last_progress = self.last_progress, marks
        self.last_generation_tokens = sig.generation_tokens_total
        known = [(a, b) for a, b in zip(marks, previous or (None,) * 3) if a is not None and b is not None]
        if previous is None or not busy or not known or any(a != b for a, b in known):
            self.stalled_intervals = 0
        else:
            self.stalled_intervals += 1

    def volume(self, sig: InstanceSignals) -> str:
        """What the window figures rest on, in words: `60s window, 50 requests`, or after a change
        of state `6 requests in the 22s since it turned healthy` (the window restarted with it)."""
        if sig.judged_since is not None and sig.observed_at is not None:
            span = max(0.0, sig.observed_at - sig.judged_since)
            return f"{count(sig.requests, 'request')} in the {secs(span)} since it turned {self.state}"
        window = f"{secs(sig.window_s)} window, " if sig.window_s else ""
        return f"{window}{count(sig.requests, 'request')}"

    def findings(self, sig: InstanceSignals, s: HealthSettings) -> list[Finding]:
        """The rules that look at this instance alone."""
        out: list[Finding] = []
        if self.failures >= s.failure_threshold:
            kind = UNREACHABLE if sig.scrape_error is not None else HEALTH_CHECK
            what = "scrape failed" if kind == UNREACHABLE else "/health failed"
            out.append(Finding("eject", kind, f"{what} {self.failures}x in a row: {self.last_failure}",
                               1000.0 + self.failures))
        if s.hang_intervals is not None and self.stalled_intervals >= s.hang_intervals:
            moved = [name for name, value in (("generation token", sig.generation_tokens_total),
                                              ("finished request", sig.finished_total),
                                              ("engine iteration", sig.iterations_total)) if value is not None]
            out.append(Finding(
                "eject", HANG,
                f"hung: {num(sig.requests_running)} running and {num(sig.requests_waiting)} waiting, and no "
                f"{', no '.join(moved) or 'progress'} for {self.stalled_intervals} intervals "
                "(vLLM's /health may still answer 200)", 500.0 + self.stalled_intervals))
        if s.hang_intervals is not None and self.health_timeouts >= s.failure_threshold:
            out.append(Finding(
                "eject", HANG, f"hung: /metrics answers but /health timed out {self.health_timeouts}x in a row",
                600.0 + self.health_timeouts))
        needed = max(s.min_requests, 1)
        if sig.requests >= needed:
            volume = f"({self.volume(sig)})"
            found: list[Finding] = []
            for label, value, degraded, eject in (
                ("TTFT p99", sig.ttft_p99_s, s.ttft_p99_degraded, s.ttft_p99_eject),
                ("TPOT p99", sig.tpot_p99_s, s.tpot_p99_degraded, s.tpot_p99_eject),
                ("e2e p99", sig.e2e_p99_s, s.e2e_p99_degraded, s.e2e_p99_eject),
            ):
                found.extend(_threshold_findings(LATENCY, label, value, degraded, eject, secs, volume))
            found.extend(_threshold_findings(ERRORS, "error ratio", sig.error_ratio, s.error_ratio_degraded,
                                             s.error_ratio_eject, pct, volume))
            out.extend(replace(f, min_requests=float(needed)) for f in found)
        if (s.kv_cache_threshold is not None and sig.kv_cache_usage is not None
                and sig.kv_cache_usage >= s.kv_cache_threshold
                and (sig.requests_waiting or 0) >= s.kv_cache_min_waiting):
            out.append(Finding(
                "degrade", SATURATED,
                f"KV cache {pct(sig.kv_cache_usage)} >= {pct(s.kv_cache_threshold)} with "
                f"{num(sig.requests_waiting)} requests waiting", sig.kv_cache_usage / s.kv_cache_threshold))
        for reason in sig.external_reasons:
            out.append(Finding("degrade", GPU, reason, 1.0))
        return out


_FIELDS = tuple(InstanceHealth.__dataclass_fields__)  # to_dict's, in declaration order


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
