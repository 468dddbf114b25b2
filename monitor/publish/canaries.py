"""Canary verdicts as rollout tools read them: `GET /api/v1/canaries` and `/api/v1/canaries/{name}`
(an Argo Rollouts `web` metric reads `{$.verdict}`), and the `/metrics` gauges
`slo_monitor_canary_verdict{canary,verdict}` and `slo_monitor_canary_regression{canary,metric}`
(Flagger's and Argo's Prometheus providers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from fastapi import Depends, FastAPI, HTTPException
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from monitor.decide.canary import INCONCLUSIVE, VERDICTS
from monitor.publish.finite_json import FiniteJSONResponse as JSONResponse
from monitor.publish.state import NAMESPACE
from monitor.units import rfc3339


class CanaryBook(Protocol):
    """What is read of the service's canaries (monitor/service/canaries.py: `Canaries`)."""

    states: Mapping[str, Any]  # name -> CanaryState (config, verdict, verdict_since, began_at, members)


class HasCanaries(Protocol):
    canaries: CanaryBook


def canary_json(state: Any) -> dict[str, Any]:
    """One canary as the API serves it: `name`, `verdict`, `reason`, `metrics`, `requests`, `since`."""
    config, verdict = state.config, state.verdict
    base, cand = state.members
    body: dict[str, Any] = {
        "name": config.name,
        "pool": config.pool,
        "verdict": verdict.verdict if verdict is not None else INCONCLUSIVE,
        "reason": verdict.reason if verdict is not None else "not judged yet (no cycle since start): inconclusive",
        "metrics": {m: r.to_json() for m, r in verdict.metrics.items()} if verdict is not None else {},
        "requests": {"baseline": round(verdict.requests[0]) if verdict else 0,
                     "candidate": round(verdict.requests[1]) if verdict else 0},
        "since": rfc3339(state.verdict_since),  # when the current verdict was first given
        "evidence_since": rfc3339(state.began_at),  # when both groups had members: the evidence's start
        "judged_at": rfc3339(state.judged_at),
        "baseline": {"selector": config.baseline.describe(config.pool), "instances": list(base)},
        "candidate": {"selector": config.candidate.describe(config.pool), "instances": list(cand)},
        "confidence": config.confidence,
        "min_requests": config.min_requests,
    }
    return body


def install_canary_routes(app: FastAPI, service: HasCanaries, require_token: Callable[..., None]) -> None:
    """The routes sit behind the API token like every /api/v1 route; an Argo `web` metric sends it
    with `headers` (or the user exempts these paths at their proxy)."""

    @app.get("/api/v1/canaries", dependencies=[Depends(require_token)])
    async def canaries() -> JSONResponse:
        return JSONResponse([canary_json(s) for s in service.canaries.states.values()])

    @app.get("/api/v1/canaries/{name}", dependencies=[Depends(require_token)])
    async def canary(name: str) -> JSONResponse:
        state = service.canaries.states.get(name)
        if state is None:
            known = ", ".join(sorted(service.canaries.states)) or "none configured"
            raise HTTPException(status_code=404, detail=f"no canary named {name[:100]!r} (canaries: {known})")
        return JSONResponse(canary_json(state))


class CanaryCollector(Collector):
    def __init__(self, service: HasCanaries) -> None:
        self.service = service

    def collect(self) -> Iterator:
        verdict = GaugeMetricFamily(f"{NAMESPACE}_canary_verdict",
                                    "1 for the canary's current verdict (pass, fail, inconclusive), 0 for the others.",
                                    labels=["canary", "verdict"])
        change = GaugeMetricFamily(f"{NAMESPACE}_canary_regression",
                                   "The candidate's change against the baseline per metric: relative for latencies "
                                   "(0.46 = +46% on the quantile judged) and preemptions, absolute for errors "
                                   "(0.004 = +0.4 points of error ratio).", labels=["canary", "metric"])
        requests = GaugeMetricFamily(f"{NAMESPACE}_canary_requests",
                                     "Requests in the canary's evidence, by group (baseline, candidate).",
                                     labels=["canary", "group"])
        for name, state in self.service.canaries.states.items():
            current = state.verdict.verdict if state.verdict is not None else INCONCLUSIVE
            for v in VERDICTS:
                verdict.add_metric([name, v], 1.0 if v == current else 0.0)
            if state.verdict is None:
                continue
            for metric, result in state.verdict.metrics.items():
                if result.change is not None:
                    change.add_metric([name, metric], result.change)
            for group, count in zip(("baseline", "candidate"), state.verdict.requests):
                requests.add_metric([name, group], count)
        yield verdict
        yield change
        yield requests
