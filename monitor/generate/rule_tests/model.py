"""A model of what the generated SLO rules compute from given input: Prometheus's `rate()`
extrapolation, the 5-minute recordings, `sum_over_time` of them, the burn pairs and the minimum
bad-event count.

The promtool tests' expectations come from here, not from hand-written numbers; a scenario whose
outcome sits within `MARGIN` of a threshold is refused (`ScenarioError`), so no expectation hinges
on a rounding difference between this model and Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import monitor.generate.expressions as q
from monitor.config import parse_duration
from monitor.evaluate.slo import BurnPair
from monitor.generate.expressions import RATE_RANGE_S

MARGIN = 0.03  # relative distance every modelled comparison must keep from its threshold


class ScenarioError(ValueError):
    """The scenario's outcome would sit too close to a threshold to be predicted safely."""


@dataclass(frozen=True)
class Clock:
    """SLO scenarios run in steps of the rule interval: input samples, promtool evaluations and the
    rules' recordings all one step apart, so `sum_over_time(...) * interval` counts what the model
    counts whatever `--rule-interval` was."""

    step_s: float

    def steps(self, seconds: float) -> int:
        n = seconds / self.step_s
        if abs(n - round(n)) > 1e-9:
            raise ValueError(f"{seconds:g}s is not a whole number of {self.step_s:g}s rule intervals")
        return round(n)

    def at(self, steps: int) -> str:
        return q.duration(steps * self.step_s) if steps else "0s"

    @property
    def rate_range(self) -> int:
        return self.steps(RATE_RANGE_S)


def prom_rate(samples: Sequence[float], t: int, range_steps: int = 5, step_s: float = 60.0) -> float | None:
    """Prometheus 2's `rate(x[range])` at step t over samples one step apart from step 0 (range
    inclusive at both ends; extrapolation as in promql/functions.go `extrapolatedRate`)."""
    first_t = max(0, t - range_steps)
    if t - first_t < 1 or t >= len(samples):
        return None
    first, last = samples[first_t], samples[t]
    delta = last - first  # no resets in generated input
    sampled = (t - first_t) * step_s
    avg_between = sampled / (t - first_t)
    to_start = (first_t - (t - range_steps)) * step_s
    to_end = 0.0
    if delta > 0 and first >= 0:
        to_zero = sampled * (first / delta)
        to_start = min(to_start, to_zero)
    threshold = avg_between * 1.1
    extrapolate = sampled
    extrapolate += to_start if to_start < threshold else avg_between / 2
    extrapolate += to_end if to_end < threshold else avg_between / 2
    return delta * (extrapolate / sampled) / (range_steps * step_s)


def avg_over_all(samples: Sequence[float], range_steps: int) -> list[float]:
    """`avg_over_time(x[range])` at every step (samples inclusive at both ends, as Prometheus 2)."""
    prefix = [0.0]
    for value in samples:
        prefix.append(prefix[-1] + value)
    out = []
    for t in range(len(samples)):
        lo = max(0, t - range_steps)
        out.append((prefix[t + 1] - prefix[lo]) / (t + 1 - lo))
    return out


@dataclass
class Model:
    """Valid/bad 5-minute rates per step, as the rules record them, and what follows from them."""

    valid_rate: list[float | None]
    bad_rate: list[float | None]
    clock: Clock = Clock(60.0)

    def counts(self, window_s: float, t: int) -> tuple[float, float]:
        """(bad, valid) events over the window: `sum_over_time` of the 5m rates times the step."""
        lo = max(0, t - self.clock.steps(window_s) + 1)
        bad = sum(r for r in self.bad_rate[lo:t + 1] if r is not None) * self.clock.step_s
        valid = sum(r for r in self.valid_rate[lo:t + 1] if r is not None) * self.clock.step_s
        return bad, valid

    def coverage(self, window_s: float, t: int) -> float:
        """`slo:period_coverage:ratio`: the 5-minute recording's samples over the window, times the
        step, over the window (at most 1)."""
        lo = max(0, t - self.clock.steps(window_s) + 1)
        samples = sum(1 for r in self.valid_rate[lo:t + 1] if r is not None)
        return min(samples * self.clock.step_s / window_s, 1.0)

    def ratio(self, window_s: float, t: int) -> float | None:
        if window_s == RATE_RANGE_S:
            bad, valid = self.bad_rate[t], self.valid_rate[t]
        else:
            bad, valid = self.counts(window_s, t)
        if valid is None or bad is None or valid <= 0:
            return None
        return bad / valid

    def pair_fires(self, pair: BurnPair, period_s: float, budget: float, min_bad: float, t: int) -> bool:
        threshold = round(pair.factor(period_s), 6) * budget
        verdicts = []
        for window in (pair.long, pair.short):
            ratio = self.ratio(parse_duration(window), t)
            if ratio is None:
                return False
            _clear(ratio, threshold, f"{pair.name} error ratio over {window}")
            verdicts.append(ratio > threshold)
        if min_bad > 0:
            # as the rules count them: the long window's sum, or the last 5 minutes' if larger
            bad = max(self.counts(parse_duration(pair.long), t)[0], (self.bad_rate[t] or 0.0) * RATE_RANGE_S)
            _clear(bad, min_bad, f"{pair.name} bad events")
            verdicts.append(bad >= min_bad)
        return all(verdicts)


def _clear(value: float, threshold: float, what: str) -> None:
    if threshold == 0:
        if value == 0:
            raise ScenarioError(f"{what} sits at the threshold 0")
        return
    if abs(value / threshold - 1.0) < MARGIN:
        raise ScenarioError(f"{what}: {value:.6g} is within {MARGIN:.0%} of the threshold {threshold:.6g}")


__all__ = ["Clock", "MARGIN", "Model", "ScenarioError", "avg_over_all", "prom_rate"]
