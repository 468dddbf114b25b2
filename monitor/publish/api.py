"""HTTP routes: /healthz, /readyz, /metrics, the load-balancer checks and the JSON API (docs/api.md)."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any, Awaitable, Callable, Sequence

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from monitor.act.nginx import UpstreamServer, render_upstream
from monitor.decide.verdicts import STALE_SERVES, UNKNOWN, InstanceVerdict
from monitor.evaluate.fleet import InstanceView
from monitor.evaluate.slo import WINDOW_NAMES
from monitor.evaluate.slo.engine import SloStatus
from monitor.gpu.publish import gpus_json
from monitor.otlp.goodput import goodput_report, latency_objectives
from monitor.publish.canaries import install_canary_routes
from monitor.publish.cost import service_pool_cost
from monitor.publish.exclusions import install_exclusion_routes
from monitor.publish.finite_json import FiniteJSONResponse as JSONResponse
from monitor.publish.fleet_text import fleet_text
from monitor.publish.metrics import Collected, FleetCollector, make_registry
from monitor.publish.state import MonitorState
from monitor.publish.ui.auth import cookie_reads
from monitor.publish.ui.routes import install_ui
from monitor.store import StoreBusy
from monitor.units import format_duration, parse_duration, redact_url, rfc3339

AUDIT_KINDS = ("health", "scaling", "canary")

# the fields docs/api.md promises in `metrics`; more may be added, none removed
# How long the audit-log endpoint waits for the database before answering from memory: a database
# that is down or hung must cost the API an answer no later than this, never a 500 or a hang.
DB_READ_TIMEOUT_S = 2.0

METRIC_FIELDS = ("ttft_p99_s", "tpot_p99_s", "e2e_p99_s", "error_ratio", "kv_cache_usage",
                 "requests_running", "requests_waiting", "generation_tokens_per_s")


MAX_DECISIONS = 1000  # entries one /api/v1/decisions answer may hold (`limit`)


def query_count(key: str, value: str | None, *, default: int, most: int) -> int:
    """A count from the query string: 1 to `most`, in plain digits. Anything else is a 400 naming
    the key, never read as something else (`limit=-5` is not one item, `limit=5000` not 1,000)."""
    if value is None:
        return default
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 12 or not 1 <= int(text) <= most:
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise HTTPException(status_code=400, detail=f"{key}: expected a whole number from 1 to {most:,}, got {shown!r}")
    return int(text)


def instance_json(view: InstanceView, verdict: InstanceVerdict | None, source: str = "static",
                  joined_at: float | None = None) -> dict[str, Any]:
    return {
        "pool": view.pool,
        "instance": view.instance,
        "url": redact_url(view.url),  # a target URL may carry basic-auth credentials
        "state": verdict.state if verdict else UNKNOWN,
        # series of the last page that were not used (NaN/Inf, duplicates) are named beside the verdict's
        "reasons": [*(verdict.reasons if verdict else ()), *_bad_sample_reasons(view.bad_samples)],
        # the time of the cycle that made the verdict, and why outputs fail open (stale), if they do
        "decided_at": rfc3339(verdict.decided_at if verdict else None),
        "fail_open": verdict.fail_open if verdict else None,
        "source": source,  # static, file, http, dns or prometheus: how the instance joined
        "joined_at": rfc3339(joined_at),
        "last_scrape": rfc3339(view.last_scrape),
        "metrics": view.figures,
        # figure -> the vLLM family it was read from where there is a choice (e.g. tpot per request
        # or per token), so two instances' figures can be told apart when their servers differ
        "sources": view.sources,
        "models": view.models,
        "scrape": {
            "error": view.scrape_error,
            "duration_s": view.scrape_duration_s,
            "health_status": view.health_status,
            "bad_samples": list(view.bad_samples),
        },
    }


def served(verdict: InstanceVerdict) -> InstanceVerdict | UpstreamServer:
    """What an NGINX block renders of a verdict: one failing open (stale) serves at full weight,
    never `down`, whatever its last state said."""
    if verdict.fail_open is not None and verdict.state in STALE_SERVES:
        return UpstreamServer(verdict.instance, UNKNOWN, 1.0)
    return verdict


def _bad_sample_reasons(bad: tuple[str, ...], shown: int = 5) -> list[str]:
    return [*bad[:shown], *([f"and {len(bad) - shown} more bad samples"] if len(bad) > shown else [])]


def _evaluation_json(status: SloStatus) -> dict[str, Any]:
    """The evaluated figures, shared by the pool-wide object and its per-model entries."""
    ev = status.evaluation
    return {
        "sli": ev.sli,
        "exact": ev.exact,
        "source": status.source,  # latency: "traces" (exact, per request) or "histograms"
        "good": ev.good,
        "total": ev.total,
        "error_budget_remaining": ev.error_budget_remaining,
        "burn_rates": {w: ev.burn_rates.get(w) for w in WINDOW_NAMES},
        "burn_rate_events": {w: {"good": ev.window_events[w][0], "total": ev.window_events[w][1]}
                             for w in WINDOW_NAMES if w in ev.window_events},
        "alert": ev.alert,
        "fired": list(ev.fired),
        "held": list(ev.held),
        # complete alerting (added fields): the budget had no maintenance window been declared, and
        # whether ErrorBudgetExhausted fires
        "error_budget_remaining_without_exclusions": ev.error_budget_remaining_unexcluded,
        "error_budget_exhausted": status.exhausted,
        # what the figures stand on (issue 20): share of the SLO window with data, the valid events
        # over it, and why "exhausted" is held back while either is under its minimum
        "coverage": ev.coverage,
        "covered": ev.covered,
        "valid_events": ev.valid_events,
        "error_budget_held": ev.budget_held,
    }


def slo_json(status: SloStatus, models: Sequence[SloStatus] = ()) -> dict[str, Any]:
    """One `/api/v1/slos` object per SLO and pool. docs/api.md fixes `name`, `pool`, `objective`,
    `sli`, `error_budget_remaining`, `burn_rates` (5m..3d) and `alert`; the rest is added context.

    Per-model evaluations (a pool serving several models) are nested under `models`, as in
    /api/v1/instances, so the list stays one object per SLO and pool for every consumer.
    """
    ev = status.evaluation
    slo = status.config
    return {
        "name": status.key.slo,
        "pool": status.key.pool,
        "objective": ev.objective,
        "window": format_duration(ev.period),
        "window_seconds": ev.period,
        "indicator": slo.indicator.model_dump(),
        **_evaluation_json(status),
        "burn_factors": dict(ev.factors),
        "min_bad_events": slo.min_bad_events,
        "budget_min_events": slo.budget_min_events,
        "budget_min_coverage": slo.budget_min_coverage,
        "runbook_url": slo.runbook_url,
        "models": {m.key.model_name: _evaluation_json(m) for m in models},
        "evaluated_at": rfc3339(status.evaluated_at),
        "window_set": slo.window_set,
        "labels": dict(slo.labels),
        "metric_absent": status.absent,
        "metric_last_seen": rfc3339(status.metric_last_seen),
        "absent_for_seconds": slo.absent_for,
        "excluded": status.excluded,
        "exclusions": [{"source": w.source, "start": rfc3339(w.start), "end": rfc3339(w.end), "reason": w.reason}
                       for w in status.exclusions],
    }


def slos_json(statuses: list[SloStatus]) -> list[dict[str, Any]]:
    per_model: dict[tuple[str, str], list[SloStatus]] = {}
    for status in statuses:
        if status.model_name:
            per_model.setdefault((status.key.slo, status.key.pool), []).append(status)
    return [slo_json(s, per_model.get((s.key.slo, s.key.pool), [])) for s in statuses if not s.model_name]


def install_routes(app: FastAPI, service: MonitorState,
                   reload: Callable[[], Awaitable[tuple[bool, list[str]]]] | None = None) -> None:
    """`reload()` re-reads the configuration: (applied, problems), for `POST /-/reload`."""
    registry = make_registry(service, fleet=False)
    fleet_series = FleetCollector(service)
    token = service.config.api.token

    def require_token(request: Request) -> None:
        """Bearer token on the JSON API when `api.token` is set; compared in constant time."""
        if not token or cookie_reads(request, token):  # the console's cookie opens reads, never changes
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    install_exclusion_routes(app, service, require_token)  # maintenance windows: /api/v1/exclusions
    install_ui(app, service, require_token, instance_json=instance_json, slos_json=slos_json)  # /ui/, /status
    install_canary_routes(app, service, require_token)  # /api/v1/canaries (monitor/publish/canaries.py)
    # OTLP/HTTP traces, as vLLM's --otlp-traces-endpoint sends them (token in OTEL_EXPORTER_OTLP_HEADERS)
    app.include_router(service.receiver.router(dependencies=[Depends(require_token)]))

    @app.get("/api/v1/openapi.json", dependencies=[Depends(require_token)], include_in_schema=False)
    async def openapi_schema() -> JSONResponse:
        """The OpenAPI description, under the token (FastAPI's open /openapi.json and /docs are off)."""
        return JSONResponse(app.openapi())

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness: 200 while the loop runs, failing stages included (they are listed, with their
        cause, in `failing`); 503 only when no cycle completed for max(10 intervals, 60 s): the loop
        itself is dead and a restart is the cure."""
        fleet = service.fleet
        stalled = service.stalled()
        body: dict[str, Any] = {
            "status": "stalled" if stalled else "ok", "cycles": service.cycles,
            "last_cycle": rfc3339(fleet.last_cycle_at), "leader": service.is_leader(),
            "last_cycle_success": rfc3339(service.last_cycle_success_at),
            "failing": service.stages.snapshot(),  # where (stage or stage/pool, stage/instance) -> cause
            "stale_pools": {p: why for p, why in service.fail_open.items() if why and "stale" in why},
        }
        if stalled:
            body["stalled"] = stalled
        if service.leadership is not None:  # ha: which replica this is and which one leads
            body.update(replica=service.leadership.replica_id, leader_id=service.leadership.holder,
                        term=service.leadership.term)
        return JSONResponse(body, status_code=503 if stalled else 200)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready once migrations ran and a first cycle completed (a Kubernetes readiness probe):
        before that the figures and verdicts are not there to serve."""
        ready = service.ready()
        return JSONResponse({"ready": ready, "cycles": service.cycles}, status_code=200 if ready else 503)

    @app.post("/-/reload", dependencies=[Depends(require_token)])
    async def reload_config() -> JSONResponse:
        """Re-read the config file, as SIGHUP does (Prometheus's endpoint name). A config that fails
        validation is not applied: 400 with every problem by key path, the old config goes on."""
        if reload is None:
            raise HTTPException(status_code=404, detail="this service was not started from a config file")
        applied, problems = await reload()
        return JSONResponse({"status": "reloaded" if applied else "refused", "problems": problems},
                            status_code=200 if applied else 400)

    @app.get("/metrics")
    async def metrics() -> Response:
        # The figures are read on the event loop (the service mutates them there); the per-instance
        # series are built from a copy, and the text written, in a worker thread: at 1,000 instances
        # that is 16,000 samples, 1.8 MB and 0.5-1 s, which on the loop would hold every health-check
        # answer up for as long.
        snapshot, others = fleet_series.snapshot(), list(registry.collect())

        def render() -> bytes:
            return fleet_text(snapshot).encode() + generate_latest(Collected(FleetCollector.totals(snapshot) + others))

        return Response(await asyncio.to_thread(render), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/instances", dependencies=[Depends(require_token)])
    async def instances(pool: str | None = None) -> JSONResponse:
        views = service.fleet.views(service.figures_at())
        if pool is not None:
            if service.config.pool(pool) is None:
                raise HTTPException(status_code=404, detail=f"no pool named {pool!r}")
            views = [v for v in views if v.pool == pool]
        return JSONResponse([instance_json(v, service.decisions.verdict(v.pool, v.instance),
                                           *service.member_info(v.instance)) for v in views])

    @app.get("/api/v1/slos", dependencies=[Depends(require_token)])
    async def slos(pool: str | None = None, name: str | None = None) -> JSONResponse:
        """As of the last scrape cycle (`evaluated_at`): every output shows the same evaluation."""
        statuses = service.slo.statuses
        if pool is not None:
            if service.config.pool(pool) is None:
                raise HTTPException(status_code=404, detail=f"no pool named {pool!r}")
            statuses = [s for s in statuses if s.key.pool == pool]
        if name is not None:
            if all(s.name != name for s in service.config.slos):
                raise HTTPException(status_code=404, detail=f"no SLO named {name!r}")
            statuses = [s for s in statuses if s.key.slo == name]
        return JSONResponse(slos_json(statuses))

    # -- health checks for load balancers: open like /metrics (a load balancer sends no token) ----

    @app.get("/upstreams/{pool}/nginx.conf")
    async def upstream_block(pool: str) -> PlainTextResponse:
        """The pool's NGINX upstream block as it would be rendered now."""
        if service.config.pool(pool) is None:
            return PlainTextResponse(f"no pool named {pool}\n", status_code=404)
        return PlainTextResponse(render_upstream(pool, [served(v) for v in service.decisions.pool_verdicts(pool)]))

    @app.get("/upstreams/{pool}/{instance}")
    async def upstream_check(pool: str, instance: str) -> PlainTextResponse:
        """200 while the instance should receive traffic (healthy, degraded, unknown: fail open),
        503 when ejected, 404 when it is not in the pool; a one-line reason in the body."""
        if service.config.pool(pool) is None:
            known = ", ".join(p.name for p in service.config.pools)
            return PlainTextResponse(f"unknown pool {pool!r} (pools: {known})\n", status_code=404)
        verdict = service.decisions.verdict(pool, instance)
        if verdict is None:
            return PlainTextResponse(f"unknown instance {instance} in pool {pool}\n", status_code=404)
        # past the pool's stale_after the verdict fails open: 200 and "failing open: ... stale" in the body
        decided = rfc3339(verdict.decided_at)
        headers = {"X-Decided-At": decided} if decided is not None else None
        return PlainTextResponse(verdict.reason_line + "\n", status_code=verdict.http_status, headers=headers)

    @app.get("/api/v1/pools/{pool}/scaling", dependencies=[Depends(require_token)])
    async def scaling(pool: str) -> JSONResponse:
        settings = service.config.pool(pool)
        if settings is None:
            raise HTTPException(status_code=404, detail=f"no pool named {pool!r}")
        decision = service.decisions.recommendation(pool)
        if decision is None:
            targets = len(service.decisions.pool_verdicts(pool))
            bound = settings.scaling.max_replicas_for(targets)  # never above it, even now
            return JSONResponse({"pool": pool, "current_replicas": targets, "desired_replicas": min(targets, bound),
                                 "max_replicas": bound, "reason": "no evaluation yet", "signals": {}})
        body = decision.to_json()
        body["at"] = rfc3339(decision.at)
        return JSONResponse(body)

    @app.get("/api/v1/decisions", dependencies=[Depends(require_token)])
    async def decisions(pool: str | None = None, instance: str | None = None, kind: str | None = None,
                        limit: str | None = None) -> JSONResponse:
        """The audit log, newest first: health state changes and scaling recommendation changes."""
        if kind is not None and kind not in AUDIT_KINDS:
            raise HTTPException(status_code=400,
                                detail=f"kind: unknown kind {kind!r} (use one of: {', '.join(AUDIT_KINDS)})")
        count = query_count("limit", limit, default=100, most=MAX_DECISIONS)
        found: list | None = None
        if service.store is not None and service.store.last_error is None:
            try:
                found = await service.store.run(service.store.decisions, pool=pool, instance=instance, kind=kind,
                                                limit=count, timeout=DB_READ_TIMEOUT_S)
            except (SQLAlchemyError, TimeoutError, StoreBusy):
                found = None  # the database went away since the last flush: answer from memory
        if found is not None:
            # entries not flushed yet are in memory only (the database keeps microseconds: an entry
            # it holds reads back up to half a microsecond earlier than the one in memory)
            pending = [d for d in service.recent_decisions if d.at > (found[0].at if found else 0.0) + 1e-6]
        else:
            found, pending = [], list(service.recent_decisions)
        pending = [d for d in pending if (pool is None or d.pool == pool) and
                   (instance is None or d.instance == instance) and (kind is None or d.kind == kind)]
        # newest first; entries of one moment (a join and the first verdict of the same cycle) in the
        # reverse of the order they happened, as the database's (at, id) order gives them
        rows = [d for _, d in sorted(enumerate(pending), key=lambda p: (p[1].at, p[0]), reverse=True)] + found
        out = []
        for d in rows[:count]:
            item = d.to_json()
            item["at"] = rfc3339(d.at)
            out.append(item)
        return JSONResponse(out)

    @app.get("/api/v1/gpus", dependencies=[Depends(require_token)])
    async def gpus() -> JSONResponse:
        return JSONResponse(gpus_json(service.gpus, time.time()))

    @app.get("/api/v1/pools/{pool}/cost", dependencies=[Depends(require_token)])
    async def cost(pool: str) -> JSONResponse:
        """GPU cost per hour, per million generated tokens, per request (and per good request)."""
        if service.config.pool(pool) is None:
            raise HTTPException(status_code=404, detail=f"no pool named {pool!r}")
        found = service_pool_cost(service, pool)
        if found is None:
            raise HTTPException(status_code=404, detail=f"pool {pool!r} has no `cost` (gpu_hour) in the config")
        return JSONResponse(found.to_json())

    @app.get("/api/v1/pools/{pool}/goodput", dependencies=[Depends(require_token)])
    async def goodput(pool: str, window: str | None = None) -> JSONResponse:
        """Requests from traces that met every latency SLO of the pool at once, over `window`."""
        if service.config.pool(pool) is None:
            raise HTTPException(status_code=404, detail=f"no pool named {pool!r}")
        try:
            window_s = parse_duration(window) if window else service.config.traces.goodput_window
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=f"window: {exc}") from None
        window_s = min(window_s, service.config.traces.retention)
        now = time.time()
        records = service.traces.records(pool, since=now - window_s)
        return JSONResponse(goodput_report(records, latency_objectives(service.config.slos, pool), pool=pool, now=now,
                                           window_s=window_s, first_at=service.traces.first_at(pool)))
