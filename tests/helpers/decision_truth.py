"""Scoring the monitor's decisions against what the simulator knows to be true (bench/decision_quality.py).

Pure functions over plain records, so a test can check the accounting on cases worked out by hand and the
benchmark reports the same arithmetic before and after the decision logic changes.

The capacity model (the simulator's engine, monitor/sim/engine.py): one step costs
`(step_base_s + step_s_per_seq × seqs + prefill_s_per_token × prefill_tokens) × latency_multiplier / speed`
and gives every running sequence one token. A request of P prompt tokens and L output tokens (L: the
engine draws `1 + int(expovariate(1 / mean_output_tokens))`, mean ≈ mean_output_tokens + 0.5) therefore
costs, when all `max_num_seqs` = S slots are busy, L/S of the fixed step cost, L per-sequence costs and its
own prefill, so one replica finishes at most

    mu = speed / (latency_multiplier × (L × (step_base_s / S + step_s_per_seq) + P × prefill_s_per_token))

requests per second. Past that, requests queue without bound. A pool serving `rate` requests/s needs

    needed = max(min_replicas, ceil(rate / (HEADROOM × mu))) + replicas that cannot serve

with HEADROOM 0.8 (the KV-cache saturation target the scaler uses: a replica run at 100% of its
throughput has an unbounded queue) and, added, every member whose truth is sick or asleep: an autoscaler
counts them as replicas, and they carry no load.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

HEADROOM = 0.8
SICK, ASLEEP, WELL = "sick", "asleep", "healthy"  # an instance's truth
EJECTED, DEGRADED, SLEEPING = "ejected", "degraded", "sleeping"
# membership states: an instance joining or leaving is not a flap
MEMBERSHIP = frozenset({"starting", "leaving", "removed", ""})


@dataclass(frozen=True, slots=True)
class Capacity:
    """The engine parameters the capacity model reads (monitor.sim.params.InstanceParams' names)."""

    max_num_seqs: int
    step_base_s: float
    step_s_per_seq: float
    prefill_s_per_token: float
    mean_output_tokens: float
    prompt_tokens: float
    speed: float = 1.0


def replica_throughput(c: Capacity, latency_multiplier: float = 1.0) -> float:
    """mu: requests/s one replica finishes with every slot busy (see the module docstring)."""
    output = c.mean_output_tokens + 0.5
    per_request = output * (c.step_base_s / c.max_num_seqs + c.step_s_per_seq) + c.prompt_tokens * c.prefill_s_per_token
    return c.speed / (latency_multiplier * per_request)


def needed_replicas(rate: float, mu: float, *, not_serving: int = 0, min_replicas: int = 1) -> int:
    """Replicas a pool needs for `rate` requests/s at `mu` per replica, plus those that cannot serve."""
    load = math.ceil(rate / (HEADROOM * mu) - 1e-9) if rate > 0 else 0
    return max(min_replicas, load) + not_serving


@dataclass(frozen=True, slots=True)
class StateChange:
    """One verdict change of one instance, with the instance's truth at that moment."""

    at: float
    instance: str
    from_state: str
    to_state: str
    truth: str
    reason: str = ""  # the verdict's first reason: which signal made the decision


@dataclass(frozen=True, slots=True)
class Fault:
    """One instance's truth over an interval: `truth` from `start` to `end` (None: the run's end)."""

    instance: str
    truth: str
    start: float
    end: float | None = None


def false_ejections(changes: Iterable[StateChange]) -> int:
    """Ejections of an instance that was not sick (healthy, asleep, merely slow by its model)."""
    return sum(1 for c in changes if c.to_state == EJECTED and c.from_state != EJECTED and c.truth != SICK)


def missed_ejections(faults: Iterable[Fault], changes: Sequence[StateChange], run_end: float) -> int:
    """Sick intervals during which the instance was never ejected."""
    missed = 0
    for f in faults:
        if f.truth != SICK:
            continue
        end = run_end if f.end is None else f.end
        if not any(c.instance == f.instance and c.to_state == EJECTED and f.start <= c.at <= end for c in changes):
            missed += 1
    return missed


def detection_times(faults: Iterable[Fault], changes: Sequence[StateChange]) -> list[float | None]:
    """Per fault, seconds from its start to the instance's first verdict change that says so
    (ejected or degraded for a sick one, sleeping for an asleep one); None when never."""
    out: list[float | None] = []
    for f in faults:
        wanted = {EJECTED, DEGRADED} if f.truth == SICK else {SLEEPING}
        hits = [c.at for c in changes if c.instance == f.instance and c.at >= f.start and c.to_state in wanted]
        out.append(min(hits) - f.start if hits else None)
    return out


def flaps(changes: Sequence[StateChange], truth_changes: Mapping[str, Sequence[float]]) -> int:
    """Verdict changes of instances whose truth did not change: every change, less the first one after
    each change of that instance's truth (the reaction to it), membership moves not counted."""
    count = 0
    answered: set[tuple[str, float]] = set()
    for c in sorted(changes, key=lambda c: c.at):
        if c.from_state in MEMBERSHIP or c.to_state in MEMBERSHIP:
            continue
        if c.from_state == "unknown":  # first judged after the start: not a change of mind
            continue
        moments = [t for t in truth_changes.get(c.instance, ()) if t <= c.at]
        if moments and (c.instance, moments[-1]) not in answered:
            answered.add((c.instance, moments[-1]))
            continue
        count += 1
    return count


@dataclass(frozen=True, slots=True)
class ReplicaScore:
    max_desired: int
    error_after_settle: int | None  # max |desired - needed| from the settle time on (None: run too short)
    over_gpu_minutes: float  # integral of max(0, desired - needed)
    under_gpu_minutes: float  # integral of max(0, needed - desired)
    scale_changes: int  # times desired_replicas changed


def replica_score(samples: Sequence[tuple[float, int, int]], interval_s: float, settle_at: float) -> ReplicaScore:
    """samples: (time, desired, needed) once per cycle, each standing for `interval_s` seconds."""
    over = sum(max(0, d - n) for _, d, n in samples) * interval_s / 60.0
    under = sum(max(0, n - d) for _, d, n in samples) * interval_s / 60.0
    settled = [abs(d - n) for t, d, n in samples if t >= settle_at]
    changes = sum(1 for a, b in zip(samples, samples[1:]) if a[1] != b[1])
    return ReplicaScore(max((d for _, d, _ in samples), default=0), max(settled) if settled else None,
                        over, under, changes)


def scale_detection(samples: Sequence[tuple[float, int, int]]) -> float | None:
    """Seconds from the first change of the needed count to the first move of desired toward it."""
    for (t0, _, n0), (t1, _, n1) in zip(samples, samples[1:]):
        if n1 != n0:
            start, direction = t1, (1 if n1 > n0 else -1)
            before = next(d for t, d, _ in samples if t == t0)
            for t, d, _ in samples:
                if t >= start and (d - before) * direction > 0:
                    return t - start
            return None
    return None
