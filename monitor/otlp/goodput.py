"""Goodput and exact latency SLIs from request records. Pure: records and `now` in, numbers out.

Goodput (vLLM's serving benchmark, NVIDIA AIPerf): the requests per second that met **every**
latency objective at once. A request with TTFT within its SLO but TPOT over it is not good, which is
exactly what per-metric histograms cannot tell. Here:
- the objectives are the pool's latency SLOs (`indicator.type: latency`, metric ttft/tpot/e2e/queue);
  "met" is at or under the threshold, as the SLO engine counts it;
- a good request must also have completed (status ok): an error or a client abort delivered no
  answer, good latency or not; both stay in `requests`;
- a TPOT objective is met by a request with fewer than two output tokens (no inter-token gap exists,
  as vLLM's benchmark scores it); any other objective whose metric the span lacks is not met;
- with no latency SLO for the pool, every completed request is good (goodput = completed throughput);
- `goodput_rps` = good requests / the seconds covered: the window, or less while traces have been
  arriving for a shorter time than the window (never under one second), so a receiver started a
  minute ago does not report a fifth of the real rate over a 5-minute window.

Latency SLIs from traces (`latency_counts`) are exact: each request is compared with the threshold,
no histogram bucket interpolation. They count every request whose metric is known, whatever its
status, as vLLM's histograms do; errors belong to the error-ratio SLO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

from monitor.otlp.records import RequestRecord
from monitor.settings import LatencyIndicator, SloConfig
from monitor.units import format_duration

Metric = Literal["ttft", "tpot", "e2e", "queue", "itl"]
_ATTR = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "e2e_s", "queue": "queue_s"}


@dataclass(frozen=True, slots=True)
class LatencyObjective:
    slo: str
    metric: Metric
    threshold_s: float


def latency_objectives(slos: Sequence[SloConfig], pool: str) -> tuple[LatencyObjective, ...]:
    """The latency SLOs that apply to `pool` (an SLO without `pools` applies to all). ITL SLOs are
    left out: a span has no per-token intervals, so no request could be judged against one."""
    return tuple(
        LatencyObjective(s.name, s.indicator.metric, s.indicator.threshold)
        for s in slos
        if isinstance(s.indicator, LatencyIndicator) and s.indicator.metric in _ATTR
        and (s.pools is None or pool in s.pools)
    )


def metric_value(record: RequestRecord, metric: str) -> float | None:
    """The record's value of `metric`; None where a span cannot carry it (itl)."""
    attr = _ATTR.get(metric)
    return getattr(record, attr) if attr else None


def meets(record: RequestRecord, objective: LatencyObjective) -> bool:
    value = metric_value(record, objective.metric)
    if value is None:
        return objective.metric == "tpot" and record.output_tokens is not None and record.output_tokens < 2
    return value <= objective.threshold_s


def is_good(record: RequestRecord, objectives: Sequence[LatencyObjective]) -> bool:
    return record.completed and all(meets(record, o) for o in objectives)


def latency_counts(records: Iterable[RequestRecord], objective: LatencyObjective) -> tuple[int, int]:
    """(good, total) for one latency SLO: exact SLI events from traces."""
    good = total = 0
    for r in records:
        value = metric_value(r, objective.metric)
        if value is None:
            if objective.metric == "tpot" and r.output_tokens is not None and r.output_tokens < 2:
                good += 1
                total += 1
            continue
        total += 1
        good += value <= objective.threshold_s
    return good, total


@dataclass(frozen=True, slots=True)
class SloOutcome:
    slo: str
    metric: str
    threshold_s: float
    met: int  # requests that met this one objective (of `requests`)


@dataclass(frozen=True, slots=True)
class Goodput:
    """Goodput of one pool (and model, None = every model) over one window ending at `now`."""

    pool: str
    model: str | None
    now: float
    window_s: float
    covered_s: float
    requests: int
    completed: int
    good_requests: int
    slos: tuple[SloOutcome, ...]

    @property
    def goodput_rps(self) -> float:
        return self.good_requests / self.covered_s if self.covered_s > 0 else 0.0

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.covered_s if self.covered_s > 0 else 0.0

    @property
    def good_ratio(self) -> float | None:
        return self.good_requests / self.requests if self.requests else None

    def to_json(self) -> dict[str, Any]:
        """The public fields (docs/api.md: `pool`, `window`, `requests`, `good_requests`, `goodput_rps`,
        `slos`) and context."""
        return {
            "pool": self.pool,
            "model_name": self.model,
            "window": format_duration(self.window_s),
            "window_seconds": self.window_s,
            "covered_seconds": self.covered_s,
            "requests": self.requests,
            "completed_requests": self.completed,
            "good_requests": self.good_requests,
            "good_ratio": self.good_ratio,
            "goodput_rps": self.goodput_rps,
            "throughput_rps": self.throughput_rps,
            # with no span received there is nothing to be exact about: say so instead of "exact"
            "source": "traces" if self.requests else "none",
            "exact": self.requests > 0,
            "slos": [{"name": s.slo, "metric": s.metric, "threshold_seconds": s.threshold_s, "met": s.met}
                     for s in self.slos],
        }


def covered_seconds(now: float, window_s: float, first_at: float | None) -> float:
    """The part of the window traces can speak for: from the first record on, at least one second."""
    if first_at is None:
        return window_s
    return max(min(window_s, now - first_at), min(window_s, 1.0))


def compute_goodput(records: Iterable[RequestRecord], objectives: Sequence[LatencyObjective], *, pool: str,
                    now: float, window_s: float, first_at: float | None = None,
                    model: str | None = None) -> Goodput:
    """Goodput over (now − window_s, now]. `records` may hold other pools, models and times: filtered here."""
    start = now - window_s
    requests = completed = good = 0
    met = [0] * len(objectives)
    for r in records:
        if r.pool != pool or not start < r.at <= now or (model is not None and r.model != model):
            continue
        requests += 1
        all_met = r.completed
        completed += r.completed
        for i, o in enumerate(objectives):
            if meets(r, o):
                met[i] += 1
            else:
                all_met = False
        good += all_met
    outcomes = tuple(SloOutcome(o.slo, o.metric, o.threshold_s, met[i]) for i, o in enumerate(objectives))
    # no span in the window and none ever received: the traces cover nothing, and the answer says so
    covered = covered_seconds(now, window_s, first_at) if requests or first_at is not None else 0.0
    return Goodput(pool, model, now, window_s, covered, requests, completed, good, outcomes)


def goodput_report(records: Sequence[RequestRecord], objectives: Sequence[LatencyObjective], *, pool: str,
                   now: float, window_s: float, first_at: float | None = None) -> dict[str, Any]:
    """The `GET /api/v1/pools/{pool}/goodput` body: the pool as a whole, then each model under `models`."""
    whole = compute_goodput(records, objectives, pool=pool, now=now, window_s=window_s, first_at=first_at)
    models = sorted({r.model for r in records if r.pool == pool and r.model is not None})
    body = whole.to_json()
    body["models"] = [compute_goodput(records, objectives, pool=pool, now=now, window_s=window_s,
                                      first_at=first_at, model=m).to_json() for m in models]
    return body
