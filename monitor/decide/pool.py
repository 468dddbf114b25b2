"""One pool's health: each instance's rules (monitor/decide/health.py) plus the rules that need the
whole pool — the ejection cap, failing open, outliers, relative slowness — and membership.

Membership has its own states, which are never failures: an instance that joined after the start
is `starting` until it is first seen serving (vLLM does not listen before its model is loaded), one
that left discovery is `leaving` (drained, kept visible for `drain_time`, then dropped), and one
whose engine sleeps is `sleeping`. None of them counts toward the cap, fail-open or outliers.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from monitor.decide.comparison import compare_with_pool, pool_wide_slowness
from monitor.decide.health import InstanceHealth
from monitor.decide.verdicts import (
    DEGRADED,
    EJECTED,
    FAIL_OPEN_PREFIX,
    HEALTHY,
    LATENCY,
    LEAVING,
    OUTLIER,
    REMOVED,
    SLEEPING,
    STARTING,
    UNKNOWN,
    UNREACHABLE,
    Finding,
    InstanceVerdict,
    PoolVerdicts,
    Transition,
)
from monitor.decide.wording import clock, count, main_kind, ordinal, progress, secs
from monitor.evaluate.signals import InstanceSignals
from monitor.settings import HealthSettings

SLEEP_LEVELS = {1: "weights offloaded", 2: "weights and KV cache discarded"}


class PoolHealth:
    """The health of every instance of one pool; `evaluate` once per interval (each scrape cycle).

    State it keeps between calls: one `InstanceHealth` per instance and the last verdicts.
    """

    def __init__(self, pool: str, instances: Iterable[str], settings: HealthSettings | None = None,
                 interval_s: float = 5.0) -> None:
        self.pool = pool
        self.settings = settings or HealthSettings()
        self.interval_s = interval_s
        self.instances: dict[str, InstanceHealth] = {i: InstanceHealth(i) for i in instances}
        self.last_decision: PoolVerdicts | None = None
        # when the verdicts were last made on fresh data (an evaluate that did not fail open for
        # the monitor's own staleness, or a restore); outputs fail open once it is older than
        # `stale_after` (FleetDecisions.verdict), whether or not evaluate still runs
        self.decided_at: float | None = None
        self._now: float | None = None
        # (instance, from, to, reasons) since the last evaluate: each change with the words of its moment
        self._membership: list[tuple[str, str, str, tuple[str, ...]]] = []

    @property
    def stale_after(self) -> float:
        return self.settings.stale_after or 3.0 * self.interval_s

    # -- membership ---------------------------------------------------------------------------------

    def set_members(self, instances: Iterable[str], *, joining: bool = True) -> None:
        """New members start `starting` (`joining=False`, for the fleet found at start: `unknown`
        until first scraped, as a restart must not take a serving fleet out of traffic); members no
        longer listed become `leaving`; a leaving one that comes back resumes."""
        wanted = list(dict.fromkeys(instances))
        for i in wanted:
            h = self.instances.get(i)
            if h is None and not joining:
                self.instances[i] = InstanceHealth(i)
            elif h is None:  # joined_at is stamped by the next evaluate: its grace starts with it
                self.instances[i] = InstanceHealth(i, state=STARTING, kind=None,
                                                   reasons=("joined: waiting for a successful scrape with /health 200",))
                self._membership.append((i, "", STARTING, self.instances[i].reasons))
            elif h.state == LEAVING:
                # back before being dropped (a pod out of a headless Service while not ready, say):
                # it resumes where it was, an ejection included, and earns nothing by the detour
                h.left_at = None
                h.state, h.held_state = h.held_state or (UNKNOWN if h.seen else STARTING), None
                h.reasons = ("rejoined the fleet",) + tuple(r for r in h.ejection_reasons if h.state == EJECTED)
                if h.state == STARTING and h.joined_at is None:
                    h.joined_at = self._now
                self._membership.append((i, LEAVING, h.state, h.reasons))
        for i, h in self.instances.items():
            if i not in wanted and h.state != LEAVING:
                before = h.state
                h.held_state = before if before != SLEEPING else h.held_state
                h.state, h.kind, h.left_at = LEAVING, None, None  # left_at: stamped by the next evaluate
                h.reasons = (f"left the fleet (was {before}): drained, dropped after "
                             f"{secs(self.settings.drain_time)}",)
                self._membership.append((i, before, LEAVING, h.reasons))

    def current_replicas(self) -> int:
        """Members that are not leaving: what an autoscaler counts as the pool's replicas now."""
        return sum(1 for h in self.instances.values() if h.state != LEAVING)

    # -- one interval ---------------------------------------------------------------------------------

    def evaluate(self, signals: Mapping[str, InstanceSignals], now: float, *, data_at: float | None,
                 cycle_duration_s: float | None = None) -> PoolVerdicts:
        """Advance every instance by one interval.

        signals: instance (`host:port`) → its signals; a missing instance counts as not scraped.
        data_at: when the data was collected (the end of the last scrape cycle); None = no data yet.
        cycle_duration_s: how long that cycle took; a cycle much longer than planned means the
        monitor itself is starved and its timeouts are its own, so it fails open too.
        """
        s = self.settings
        self._now = now
        transitions = [Transition(now, self.pool, i, a, b, why, {}) for i, a, b, why in self._membership]
        self._membership = []
        for h in self.instances.values():
            if h.joined_at is None and h.state == STARTING:
                h.joined_at = h.since = now
            if h.left_at is None and h.state == LEAVING:
                h.left_at = h.since = now
        for i in [i for i, h in self.instances.items() if h.state == LEAVING and now - (h.left_at or now) >= s.drain_time]:
            del self.instances[i]
            transitions.append(Transition(now, self.pool, i, LEAVING, REMOVED, (f"drained for {secs(s.drain_time)}",), {}))
        members = {i: h for i, h in self.instances.items() if h.state != LEAVING}
        sigs = {i: signals.get(i) or InstanceSignals() for i in members}
        new = {i: h.observe(sigs[i]) for i, h in members.items()}
        for i, h in members.items():
            h.last_signals = {**sigs[i].values(), "consecutive_failures": h.failures,
                              "stalled_intervals": h.stalled_intervals, "good_intervals": h.good_intervals}
        before = {i: h.state for i, h in members.items()}
        notes: list[str] = []

        asleep = {i for i in members if (sigs[i].sleep_level or 0) > 0 and not sigs[i].failed}
        judged = {i: h for i, h in members.items() if i not in asleep and not self._starting(h, now)}
        fail_open, own = self._fail_open_reason({i: sigs[i] for i in judged}, now, data_at, cycle_duration_s)
        if not own:  # verdicts made (or held, every target failing at once) on this cycle's fresh data
            self.decided_at = now
        if fail_open is not None:
            for h in members.values():
                core = tuple(r for r in h.reasons if not r.startswith(FAIL_OPEN_PREFIX))
                h.reasons = core + (fail_open,)
            decision = PoolVerdicts(self.pool, now, self.verdicts(), tuple(transitions), fail_open, ())
            self.last_decision = decision
            return decision

        for i in asleep:
            h = members[i]
            if h.state != SLEEPING:
                h.held_state = h.state  # an ejection outlives the sleep
            level = int(sigs[i].sleep_level or 0)
            self._set(h, SLEEPING, (f"engine asleep ({SLEEP_LEVELS.get(level, f'level {level}')}): drained, "
                                    "not a failure",), None, now)
            h.good_intervals = 0
            h.stalled_intervals = 0  # a sleeping engine queues requests and moves nothing: not a hang, nor after waking
        for h in judged.values():
            if h.state == SLEEPING:  # awake again this interval
                h.woke_at = now
                if h.held_state == EJECTED and (h.ejected_until or 0.0) > now:
                    h.state, h.reasons = EJECTED, h.ejection_reasons
                h.held_state = None
        findings = {i: h.findings(sigs[i], s) for i, h in judged.items()}
        eligible = [i for i, h in judged.items() if h.state != EJECTED and h.seen and not sigs[i].failed]
        for i, found in compare_with_pool(eligible, len(judged), sigs, s, notes).items():
            findings[i].extend(found)
        measured = [i for i, h in judged.items() if h.seen and not sigs[i].failed]  # the ejected ones too
        for i, slow in pool_wide_slowness(measured, sigs, s).items():
            findings[i] = [_held_back(f, slow) for f in findings[i]]
        for i, h in judged.items():
            # requests queued while the engine slept finish with the sleep in their latency: until the
            # window holds only requests served awake, latency says nothing about the instance
            if h.woke_at is not None and now - h.woke_at < (sigs[i].window_s or 0.0):
                findings[i] = [f for f in findings[i] if f.kind not in (LATENCY, OUTLIER)]
            elif h.woke_at is not None:
                h.woke_at = None

        candidates: list[tuple[InstanceHealth, list[Finding]]] = []
        for i, h in judged.items():
            sig, found = sigs[i], findings[i]
            good = new[i] and not sig.failed and not found
            # degraded by a rule that needs volume, and too few requests since to let it speak: the
            # interval says nothing either way (the window restarted with the state; judged on what
            # it does now, it is not judged on too little of it)
            unproven = good and h.state == DEGRADED and sig.requests < h.evidence_needed
            if new[i] and not unproven:
                h.good_intervals = h.good_intervals + 1 if good else 0
            self._decide_one(h, sig, found, good and not unproven, new[i], now, candidates)
        for i, h in members.items():
            if i not in judged and i not in asleep:  # still starting, within its grace
                self._starting_reasons(h, now)

        # never the last judged server in rotation: an ejection that empties a pool (a one-instance
        # pool, say) leaves HAProxy and Envoy nothing to route to, which is worse than a slow server
        limit = min(s.ejection_limit(len(judged)), max(0, len(judged) - 1))
        ejected = sum(1 for h in judged.values() if h.state == EJECTED)
        candidates.sort(key=lambda c: (-max(f.severity for f in c[1]), c[0].instance))
        for h, found in candidates:
            eject_level = [f for f in found if f.level == "eject"]
            if ejected < limit:
                self._eject(h, eject_level, now)
                ejected += 1
            elif not h.seen:  # never served: held back by the cap, it still gets no traffic
                self._starting_reasons(h, now)
            elif ejected >= len(judged) - 1:
                held = (f"ejection held back: {ejected} of {count(len(judged), 'instance')} already ejected, "
                        "and the last server in rotation is never ejected")
                self._degrade(h, found, tuple(f.reason for f in found) + (held,), eject_level[0].kind, now)
            else:
                held = (f"ejection held back: {ejected} of {count(len(judged), 'instance')} already ejected "
                        f"(max_ejection_percent {s.max_ejection_percent:g}%)")
                self._degrade(h, found, tuple(f.reason for f in found) + (held,), eject_level[0].kind, now)

        for i, h in members.items():
            if h.state != before[i]:
                transitions.append(Transition(now, self.pool, i, before[i], h.state, h.reasons, dict(h.last_signals)))
        decision = PoolVerdicts(self.pool, now, self.verdicts(), tuple(transitions), None, tuple(notes))
        self.last_decision = decision
        return decision

    def _starting(self, h: InstanceHealth, now: float) -> bool:
        """Joined, never seen serving, and still inside `startup_grace`."""
        return (h.joined_at is not None and not h.seen
                and now - h.joined_at < self.settings.startup_grace)

    def _starting_reasons(self, h: InstanceHealth, now: float) -> None:
        waited = now - (h.joined_at or now)
        detail = f" (last try: {h.last_failure})" if h.last_failure else ""
        grace = self.settings.startup_grace
        when = (f"starting for {secs(waited)} of startup_grace {secs(grace)}" if waited < grace
                else f"past startup_grace {secs(grace)}, judged like any instance")
        self._set(h, STARTING, (f"{when}: no successful scrape with /health 200 yet{detail}",), None, now)

    def _decide_one(self, h: InstanceHealth, sig: InstanceSignals, found: list[Finding], good: bool,
                    new: bool, now: float, candidates: list[tuple[InstanceHealth, list[Finding]]]) -> None:
        s = self.settings
        if h.state == EJECTED:
            until = h.ejected_until or now
            if now >= until and h.good_intervals >= s.recovery_intervals:
                self._set(h, HEALTHY, (f"returned after {count(h.good_intervals, 'good interval')} in a row "
                                       f"(was ejected: {'; '.join(h.ejection_reasons) or 'no reason kept'}); "
                                       "judged only on the requests it serves from now on",), None, now)
                h.ejected_until = None
                h.decay_from = now
                return
            if now < until:
                waiting = (f"ejected until {clock(until)} ({_nth_ejection(h.ejections)}); "
                           f"{progress(h.good_intervals, s.recovery_intervals, 'good interval')}")
            else:  # the time is served: what is left is earning the way back
                waiting = (f"ejection time served at {clock(until)} ({_nth_ejection(h.ejections)}); returns after "
                           f"{count(s.recovery_intervals, 'good interval')} in a row, {h.good_intervals} so far")
            current = tuple(f.reason for f in found)
            # the same rule firing again says so once, with today's figures (`TPOT p99 66ms > ...`)
            fresh = {_rule(r) for r in current}
            h.reasons = tuple(r for r in h.ejection_reasons if _rule(r) not in fresh) + current + (waiting,)
            return
        if not h.seen and h.joined_at is None:
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
        if not h.seen:  # joined, past startup_grace, not failing often enough yet to be ejected
            self._starting_reasons(h, now)
            return
        if degrade:
            self._degrade(h, degrade, tuple(f.reason for f in degrade), main_kind(degrade), now)
            return
        if h.state == DEGRADED and h.good_intervals < s.recovery_intervals:
            core = tuple(r for r in h.reasons if not r.startswith(("recovering:", FAIL_OPEN_PREFIX)))
            recovering = f"recovering: {progress(h.good_intervals, s.recovery_intervals, 'good interval')}"
            if sig.requests < h.evidence_needed:
                recovering += (f"; an interval counts once {progress(sig.requests, h.evidence_needed, 'request')} "
                               f"since it turned degraded at {clock(h.since or now)} are in")
            h.reasons = core + (recovering,)
            return
        if h.state == STARTING and s.slow_start:
            h.warm_from = now
        notes: tuple[str, ...] = ()
        if h.state == SLEEPING:
            notes = ("engine awake again",)
        elif h.failures:
            notes = (f"the last {count(h.failures, 'observation')} failed (ejected at "
                     f"{s.failure_threshold} in a row): {h.last_failure}",)
        self._set(h, HEALTHY, notes, None, now)
        h.evidence_needed = 0.0
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
            f"ejected for {secs(duration)} until {clock(h.ejected_until)} ({_nth_ejection(h.ejections)})",),
            main_kind(found), now)

    def _degrade(self, h: InstanceHealth, found: list[Finding], reasons: tuple[str, ...], kind: str | None,
                 now: float) -> None:
        """Degraded by `found`: to return it must serve as many requests as those rules need, since
        (fewer would not let them fire, so their silence would prove nothing)."""
        self._set(h, DEGRADED, reasons, kind, now)
        h.evidence_needed = max((f.min_requests for f in found), default=0.0)

    @staticmethod
    def _set(h: InstanceHealth, state: str, reasons: tuple[str, ...], kind: str | None, now: float) -> None:
        if state != h.state:
            h.since = now
        h.state, h.reasons, h.kind = state, tuple(dict.fromkeys(reasons)), kind

    def _fail_open_reason(self, sigs: Mapping[str, InstanceSignals], now: float, data_at: float | None,
                          cycle_duration_s: float | None) -> tuple[str | None, bool]:
        """(why the pool fails open this interval or None, whether the cause is the monitor's own:
        no data, stale data, a starved cycle; then the verdicts are not renewed and age)."""
        limit = self.stale_after
        if data_at is None:
            return FAIL_OPEN_PREFIX + "the monitor has no scrape data yet", True
        age = now - data_at
        if age > limit:
            return (FAIL_OPEN_PREFIX + f"the monitor's own data is stale (last scrape cycle {secs(age)} ago, "
                    f"limit {secs(limit)})"), True
        if cycle_duration_s is not None and cycle_duration_s > limit:
            return (FAIL_OPEN_PREFIX + f"the monitor's last scrape cycle took {secs(cycle_duration_s)} "
                    f"(limit {secs(limit)}); its timeouts may be its own"), True
        observed = [sig for sig in sigs.values() if sig.observed_at is not None]
        if len(sigs) > 0 and len(observed) == len(sigs) and all(sig.failed for sig in observed):
            kinds = sorted({(sig.scrape_error or sig.health_error or "")[:80] for sig in observed})
            if len(sigs) == 1:  # not "all 1 targets ... than every instance"
                return (FAIL_OPEN_PREFIX + f"the only target of pool {self.pool} failed ({'; '.join(kinds)}); "
                        "the last server in rotation is never ejected"), False
            return (FAIL_OPEN_PREFIX + f"all {len(sigs)} targets of pool {self.pool} failed at once "
                    f"({'; '.join(kinds)}): more likely the monitor's side than every instance"), False
        return None, False

    def stale_reason(self, now: float) -> str | None:
        """Why this pool's verdicts no longer hold as outputs read them at `now` (older than
        `stale_after`), or None while they are fresh or none was made yet."""
        return stale_reason(self.decided_at, self.stale_after, now)

    # -- outputs and persistence ----------------------------------------------------------------------

    def verdicts(self) -> dict[str, InstanceVerdict]:
        return {i: self.verdict_of(h) for i, h in self.instances.items()}

    def verdict_of(self, h: InstanceHealth) -> InstanceVerdict:
        s = self.settings
        if h.state in (EJECTED, STARTING, LEAVING, SLEEPING):
            weight = 0.0
        elif h.state == DEGRADED:
            weight = s.degraded_weight
        elif h.state == HEALTHY and s.slow_start and h.warm_from is not None and self._now is not None:
            # four steps, not a continuous ramp: every new weight is an NGINX reload
            ramp = math.floor(4 * min(1.0, max(0.0, (self._now - h.warm_from) / s.slow_start))) / 4
            weight = s.degraded_weight + (1.0 - s.degraded_weight) * ramp
        else:
            weight = 1.0
        return InstanceVerdict(self.pool, h.instance, h.state, h.reasons, h.kind, h.since,
                               h.ejected_until if h.state == EJECTED else None, weight,
                               {**h.last_signals, **({"joined_at": h.joined_at} if h.joined_at else {})},
                               self.decided_at)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {i: h.to_dict() for i, h in self.instances.items()}

    def restore(self, saved: Mapping[str, Mapping[str, Any]], now: float | None = None) -> None:
        """Put back saved per-instance states; instances no longer in the pool are dropped, new ones start unknown.

        The observation marks are cleared so the first scrape after a restart counts as new.
        `now`: the restore counts as a decision made then (an ejection restored holds until the
        first cycles decide again, and fails open like any verdict if they never do).
        """
        if now is not None:
            self.decided_at = now
        for i, data in saved.items():
            if i in self.instances:
                h = InstanceHealth.from_dict({**data, "instance": i})
                h.last_observed_at = None
                h.last_generation_tokens = None
                h.last_progress = None
                h.stalled_intervals = 0
                h.health_timeouts = 0
                h.good_intervals = 0  # an ejected instance earns its way back again after a restart
                if h.state in (LEAVING, STARTING):
                    h.state = UNKNOWN
                self.instances[i] = h


def _held_back(finding: Finding, slow: Mapping[str, str]) -> Finding:
    """An eject-level latency finding on a figure the whole pool shares degrades instead, saying why."""
    if finding.level != "eject" or finding.kind != LATENCY:
        return finding
    why = next((w for label, w in slow.items() if finding.reason.startswith(label)), None)
    if why is None:
        return finding
    return Finding("degrade", finding.kind, f"{finding.reason}; {why}", finding.severity, finding.min_requests)


def _nth_ejection(n: int) -> str:
    """`first ejection`, `2nd ejection in a row`: the backoff step an ejection's length follows
    (in a row: not parted by `backoff_decay` of healthy time)."""
    return "first ejection" if n <= 1 else f"{ordinal(n)} ejection in a row"


def _rule(reason: str) -> str:
    """Which rule a reason comes from: its words before the first figure (`TPOT p99`, `hung:`)."""
    words = []
    for word in reason.split():
        if any(c.isdigit() for c in word):
            break
        words.append(word)
    return " ".join(words)


def stale_reason(decided_at: float | None, stale_after: float, now: float) -> str | None:
    """Why verdicts decided at `decided_at` no longer hold at `now` (older than `stale_after`), or None
    while they are fresh or none was made yet. A plain function: the check answers' snapshot
    (monitor/publish/checks.py) applies it outside the pool, from another thread."""
    if decided_at is None:
        return None
    age = now - decided_at
    if age <= stale_after:
        return None
    return (FAIL_OPEN_PREFIX + f"the verdicts are stale (last decided {secs(age)} ago, stale_after "
            f"{secs(stale_after)}): every server serves until the monitor decides again")
