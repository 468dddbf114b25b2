"""The console's routes: the pages under /ui/, the login, the public /status page, the monthly report
and the budget history the burn-down chart reads (`GET /api/v1/slos/{name}/history`).

Every page is rendered here, on the server, from the same JSON objects the API answers (so a field
added to /api/v1/slos or /api/v1/instances shows without a change in two places); console.js then
re-reads the page every scrape interval and swaps its <main> in, draws the charts with uPlot, and
writes times in the browser's zone. Nothing here imports the service: it reads `MonitorState`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from monitor.evaluate.slo import minute_ranges, slo_pairs, slo_windows
from monitor.evaluate.slo.engine import SloStatus
from monitor.gpu.publish import gpus_json
from monitor.publish.cost import service_pool_cost
from monitor.publish.finite_json import FiniteJSONResponse
from monitor.publish.state import MonitorState
from monitor.publish.ui import figures
from monitor.publish.ui.auth import (
    COOKIE,
    MAX_AGE_S,
    bearer_ok,
    safe_next,
    served_over_https,
    session_ok,
    session_value,
    token_matches,
)
from monitor.publish.ui.html import (
    SECURITY_HEADERS,
    badge,
    data_json,
    esc,
    number,
    page,
    percent,
    seconds,
    table,
    url_part,
    when,
    when_text,
)
from monitor.store import StoreBusy
from monitor.units import format_duration, parse_duration

STATIC = Path(__file__).with_name("static")
STATIC_FILES = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}
DB_TIMEOUT_S = 2.0
MAX_FORM = 4096
DECISIONS_SHOWN = 200
STATUS_SPANS = (("24 h", 86400.0), ("7 d", 7 * 86400.0), ("30 d", 30 * 86400.0))
STATUS_KINDS = ("availability", "latency")

InstanceJson = Callable[..., dict[str, Any]]
SlosJson = Callable[[list[SloStatus]], list[dict[str, Any]]]


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def _reasons(reasons: Any) -> str:
    if not reasons:
        return '<span class="muted">–</span>'
    return "<br>".join(esc(r) for r in reasons)


def _login_page(next_path: str, message: str = "") -> str:
    error = f'<p class="error" role="alert">{esc(message)}</p>' if message else ""
    form = (f'{error}<form method="post" action="/ui/login" class="login">'
            f'<input type="hidden" name="next" value="{esc(next_path)}">'
            '<label for="token">API token (<code>api.token</code>)</label>'
            '<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>'
            '<button type="submit">Sign in</button></form>'
            '<p class="muted">The token is sent once, in this form; the console keeps an HttpOnly cookie.</p>')
    return page("Sign in", form, nav=False)


def install_ui(app: FastAPI, service: MonitorState, require_token: Callable[..., None], *,
               instance_json: InstanceJson, slos_json: SlosJson) -> None:
    """The console's routes. `require_token` is the API's check (bearer header, or the console's
    cookie on reads); `instance_json`/`slos_json` build the API's objects, which the pages show."""
    token = service.config.api.token

    def signed_in(request: Request) -> bool:
        return not token or session_ok(request, token) or bearer_ok(request, token)

    def to_login(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={url_part(safe_next(target))}", status_code=303,
                                headers=SECURITY_HEADERS)

    def refresh() -> float:
        return service.config.scrape.interval

    def console(title: str, main: str, path: str, *, charts: bool = False, status: int = 200) -> HTMLResponse:
        # an error page (unknown instance 404, bad period 400) is not refreshed: reloading will not mend it
        return _html(page(title, main, path=path, refresh_s=refresh() if status == 200 else None,
                          logout=bool(token), charts=charts), status)

    def guarded(render: Callable[..., Awaitable[HTMLResponse | Response]]) -> Callable[..., Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            if not signed_in(request):
                return to_login(request)
            return await render(request)
        handler.__name__ = render.__name__
        return handler

    # -- static files and the login ------------------------------------------------------------------

    @app.get("/ui/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        kind = STATIC_FILES.get(name)
        if kind is None:
            raise HTTPException(status_code=404, detail="no such file")
        return Response((STATIC / name).read_bytes(), media_type=kind,
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=300"})

    @app.get("/ui", include_in_schema=False)
    async def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=308)

    @app.get("/ui/login", include_in_schema=False)
    async def login_form(request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next"))
        if not token or signed_in(request):
            return RedirectResponse(next_path, status_code=303)
        return _html(_login_page(next_path))

    @app.post("/ui/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_FORM:
            return _html(_login_page("/ui/", "That form was too large."), 413)
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
        given = (fields.get("token") or [""])[0]
        next_path = safe_next((fields.get("next") or ["/ui/"])[0])
        if not token:
            return RedirectResponse(next_path, status_code=303)
        if not given or not token_matches(given, token):
            return _html(_login_page(next_path, "Wrong token: not signed in."), 401)
        answer = RedirectResponse(next_path, status_code=303, headers=SECURITY_HEADERS)
        secure = service.config.ui.secure_cookie
        answer.set_cookie(COOKIE, session_value(token), max_age=MAX_AGE_S, path="/", httponly=True, samesite="strict",
                          secure=served_over_https(request) if secure is None else secure)
        return answer

    @app.post("/ui/logout", include_in_schema=False)
    async def logout() -> Response:
        answer = RedirectResponse("/ui/login" if token else "/ui/", status_code=303, headers=SECURITY_HEADERS)
        answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return answer

    # -- the pages ----------------------------------------------------------------------------------

    def gpu_cells() -> dict[str, list[dict[str, Any]]]:
        by_instance: dict[str, list[dict[str, Any]]] = {}
        for gpu in gpus_json(service.gpus, time.time())["gpus"]:
            if gpu.get("instance"):
                by_instance.setdefault(gpu["instance"], []).append(gpu)
        return by_instance

    def gpu_text(gpus: list[dict[str, Any]]) -> str:
        if not gpus:
            return '<span class="muted">–</span>'
        parts = []
        for g in gpus:
            util = g.get("metrics", {}).get("utilization_pct")
            shown = f"{util:.0f}%" if isinstance(util, (int, float)) and math.isfinite(util) else "?"
            parts.append(esc(f"GPU {g.get('gpu')}: {shown}") + (" " + badge("lost") if g.get("lost") else ""))
        return "<br>".join(parts)

    def instances_now() -> list[dict[str, Any]]:
        views = service.fleet.views(service.figures_at())
        return [instance_json(v, service.decisions.verdict(v.pool, v.instance), *service.member_info(v.instance))
                for v in views]

    async def fleet(request: Request) -> HTMLResponse:
        items = instances_now()
        gpus = gpu_cells()
        parts = [('<section id="canaries" hidden aria-labelledby="canaries-h"><h2 id="canaries-h">Canaries</h2>'
                 '<div class="canaries"></div></section>')]
        for pool in service.config.pools:
            members = [i for i in items if i["pool"] == pool.name]
            verdicts = {v.instance: v for v in service.decisions.pool_verdicts(pool.name)}
            weights = {name: v.weight for name, v in verdicts.items() if v.serves_traffic}
            total_weight = sum(weights.values())
            states: dict[str, int] = {}
            for m in members:
                states[m["state"]] = states.get(m["state"], 0) + 1
            summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no instances"
            rec = service.decisions.recommendation(pool.name)
            scaling = (f" · replicas {rec.current_replicas} → {rec.desired_replicas}" if rec is not None else "")
            stale = service.fail_open.get(pool.name)
            rows = []
            for m in members:
                share = weights.get(m["instance"])
                metrics = m.get("metrics") or {}
                rows.append([
                    f'<a href="/ui/instances/{esc(url_part(m["instance"]))}">{esc(m["instance"])}</a>',
                    badge(m["state"]),
                    _reasons(m.get("reasons")),
                    percent(share / total_weight, 0) if share is not None and total_weight > 0 else
                    '<span class="muted">0%</span>',
                    seconds(metrics.get("ttft_p99_s")),
                    seconds(metrics.get("tpot_p99_s")),
                    percent(metrics.get("kv_cache_usage"), 0),
                    gpu_text(gpus.get(m["instance"], [])),
                    when_text(m.get("last_scrape")),
                ])
            parts.append(
                f'<section class="pool" aria-labelledby="pool-{esc(pool.name)}">'
                f'<h2 id="pool-{esc(pool.name)}">Pool {esc(pool.name)}</h2>'
                f'<p class="summary">{esc(summary + scaling)}</p>'
                + (f'<p class="warning">{esc(stale)}</p>' if stale else "")
                + table(f"Instances of {pool.name}", ("Instance", "State", "Reason", "Traffic share", "TTFT p99",
                                                      "TPOT p99", "KV cache", "GPU", "Last scrape"), rows,
                        "no instances", css="fleet")
                + "</section>")
        cycle = when(service.fleet.last_cycle_at)
        return console("Fleet", f'<p class="muted">Last cycle {cycle} · {service.cycles} cycles</p>' + "".join(parts),
                       "/ui/")

    async def instance_page(request: Request) -> HTMLResponse:
        name = request.path_params["instance"]
        found = [i for i in instances_now() if i["instance"] == name]
        if not found:
            return console("Unknown instance", f"<p>No instance named <code>{esc(name)}</code> in any pool.</p>"
                           '<p><a href="/ui/">Back to the fleet</a></p>', "", status=404)
        parts = []
        for item in found:
            scrape = item.get("scrape") or {}
            facts = [("Pool", esc(item["pool"])), ("State", badge(item["state"])),
                     ("Reasons", _reasons(item.get("reasons"))), ("Address", esc(item.get("url"))),
                     ("Models", esc(", ".join(item.get("models") or []) or "–")),
                     ("Joined", when_text(item.get("joined_at")) + esc(f" ({item.get('source')})")),
                     ("Decided", when_text(item.get("decided_at"))), ("Last scrape", when_text(item.get("last_scrape"))),
                     ("Scrape error", esc(scrape.get("error") or "none"))]
            if item.get("fail_open"):
                facts.append(("Failing open", esc(item["fail_open"])))
            metrics = item.get("metrics") or {}
            figure_rows = [[esc(k), number(v, digits=4)] for k, v in sorted(metrics.items())]
            parts.append('<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
                         + table("Figures now", ("Figure", "Value"), figure_rows, "none yet"))
        history = await _instance_history(name)
        if history is None or not history["t"]:
            parts.append('<h2>The last hour</h2><p class="muted">No stored minute yet (rollups are written each '
                         "minute once it has settled; none without storage).</p>")
        else:
            parts.append('<h2>The last hour</h2><div class="charts">'
                         '<div class="chart" data-series="ttft_p99_s" data-label="TTFT p99 (s)"></div>'
                         '<div class="chart" data-series="tpot_p99_s" data-label="TPOT p99 (s)"></div>'
                         '<div class="chart" data-series="kv_cache_usage" data-label="KV cache usage"></div></div>'
                         f'<script type="application/json" id="instance-history">{data_json(history)}</script>')
        entries = await _decisions(instance=name)
        parts.append("<h2>Verdict history</h2>" + _decision_table(entries, with_instance=False))
        return console(f"Instance {name}", "".join(parts), "", charts=True)

    async def _instance_history(name: str) -> dict[str, list[Any]] | None:
        store = service.store
        if store is None or store.last_error is not None:
            return None
        try:
            rows = await store.run(store.rollups, name, time.time() - 3600.0, timeout=DB_TIMEOUT_S)
        except (SQLAlchemyError, TimeoutError, StoreBusy):
            return None
        per_minute: dict[float, dict[str, float]] = {}
        for r in rows:
            at = r.minute.timestamp()
            slot = per_minute.setdefault(at, {})
            for key in ("ttft_p99_s", "tpot_p99_s", "kv_cache_usage"):
                value = getattr(r, key)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    slot[key] = max(slot.get(key, value), value)  # several models: the worst
        times = sorted(per_minute)
        return {"t": times, **{k: [per_minute[t].get(k) for t in times]
                               for k in ("ttft_p99_s", "tpot_p99_s", "kv_cache_usage")}}

    async def _decisions(pool: str | None = None, instance: str | None = None,
                         kind: str | None = None) -> list[dict[str, Any]]:
        """Newest first: the stored audit log where there is one, and what is not flushed yet."""
        stored: list[Any] = []
        store = service.store
        if store is not None and store.last_error is None:
            try:
                stored = await store.run(store.decisions, pool=pool, instance=instance, kind=kind,
                                         limit=DECISIONS_SHOWN, timeout=DB_TIMEOUT_S)
            except (SQLAlchemyError, TimeoutError, StoreBusy):
                stored = []
        newest = stored[0].at if stored else float("-inf")
        pending = [d for d in service.recent_decisions if d.at > newest + 1e-6
                   and (pool is None or d.pool == pool) and (instance is None or d.instance == instance)
                   and (kind is None or d.kind == kind)]
        rows = sorted(pending, key=lambda d: d.at, reverse=True) + list(stored)
        return [{**d.to_json(), "at": d.at} for d in rows[:DECISIONS_SHOWN]]

    def _decision_table(entries: list[dict[str, Any]], with_instance: bool = True) -> str:
        rows = []
        for d in entries:
            who = (f'<a href="/ui/instances/{esc(url_part(d["instance"]))}">{esc(d["instance"])}</a>'
                   if d.get("instance") else '<span class="muted">pool</span>')
            change = f'{esc(d.get("from") or "–")} → {badge(d.get("to")) if d["kind"] == "health" else esc(d.get("to"))}'
            row = [when(d["at"]), esc(d["kind"]), esc(d["pool"])] + ([who] if with_instance else []) + \
                [change, _reasons(d.get("reasons"))]
            rows.append(row)
        headers = ("Time", "Kind", "Pool") + (("Instance",) if with_instance else ()) + ("Change", "Why")
        return table("Decisions, newest first", headers, rows, "no decisions yet", css="decisions")

    async def decisions_page(request: Request) -> HTMLResponse:
        pool = request.query_params.get("pool") or None
        kind = request.query_params.get("kind") or None
        if kind not in (None, "health", "scaling"):
            kind = None
        entries = await _decisions(pool=pool, kind=kind)
        status = service.reload_status
        reload_line = ""
        if status is not None:
            ok = getattr(status, "successful", True)
            problems = getattr(status, "problems", ())
            reload_line = (f'<p>Config: last successful load {when(getattr(status, "success_at", None))}'
                           + ("" if ok else f' · <span class="error">last reload refused: {_reasons(problems)}</span>')
                           + "</p>")
        filters = " · ".join(f'<a href="/ui/decisions{q}">{esc(label)}</a>' for q, label in
                             (("", "all"), ("?kind=health", "health"), ("?kind=scaling", "scaling")))
        return console("Decisions", reload_line + f"<p>Show: {filters}</p>" + _decision_table(entries),
                       "/ui/decisions")

    async def slos_page(request: Request) -> HTMLResponse:
        items = slos_json(service.slo.statuses)
        if not items:
            return console("SLOs", "<p>No SLOs configured (<code>slos:</code> in the config), or no evaluation yet.</p>",
                           "/ui/slos")
        cards = []
        for s in items:
            burn = s.get("burn_rates") or {}
            factors = s.get("burn_factors") or {}
            burn_rows = [[esc(w), number(rate, "x")] for w, rate in burn.items()]
            facts = [("Objective", percent(s.get("objective"), 3)), ("SLI", percent(s.get("sli"), 3)),
                     ("Budget left", percent(s.get("error_budget_remaining"), 1)),
                     ("Window", esc(s.get("window"))), ("Alert", badge(s.get("alert") or "ok") +
                                                         esc(" " + ", ".join(s.get("fired") or [])))]
            if factors:
                facts.append(("Alert factors", esc(", ".join(f"{pair} at {factor:.3g}x" for pair, factor in factors.items()
                                                             if isinstance(factor, (int, float))))))
            if "coverage" in s:
                facts.append(("Coverage", percent(s.get("coverage"), 1)))
            if "valid_events" in s:
                facts.append(("Valid events", number(s.get("valid_events"), digits=6)))
            facts.append(("Source", esc(f"{s.get('source')}{' (exact)' if s.get('exact') else ''}")))
            if s.get("error_budget_exhausted"):
                facts.append(("Budget", '<span class="error">exhausted</span>'))
            for w in s.get("exclusions") or []:
                facts.append(("Maintenance", esc(w.get("reason")) + " until " + when_text(w.get("end"))))
            models = s.get("models") or {}
            model_rows = [[esc(m), percent(e.get("sli"), 3), percent(e.get("error_budget_remaining"), 1),
                           badge(e.get("alert") or "ok")] for m, e in models.items()]
            history = f"/api/v1/slos/{url_part(s['name'])}/history?pool={url_part(s['pool'])}"
            ident = f"slo-{s['name']}-{s['pool']}"
            cards.append(
                f'<section class="slo" aria-labelledby="{esc(ident)}"><h2 id="{esc(ident)}">{esc(s["name"])} '
                f'<span class="muted">· pool {esc(s["pool"])}</span></h2>'
                '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
                f'<div class="chart budget" data-history="{esc(history)}" role="img" '
                f'aria-label="{esc("Error budget left over the SLO window: " + s["name"] + ", pool " + s["pool"])}">'
                "</div>"
                + table("Burn rates per window", ("Window", "Burn rate"), burn_rows)
                + (table("Per model", ("Model", "SLI", "Budget left", "Alert"), model_rows) if model_rows else "")
                + "</section>")
        return console("SLOs", "".join(cards), "/ui/slos", charts=True)

    async def pools_page(request: Request) -> HTMLResponse:
        parts = []
        for pool in service.config.pools:
            rec = service.decisions.recommendation(pool.name)
            if rec is None:
                scaling = "<p class=\"muted\">No scaling evaluation yet.</p>"
            else:
                body = rec.to_json()
                signals = [[esc(k), esc(v)] for k, v in sorted((body.get("signals") or {}).items())]
                scaling = (f'<p>Replicas: <strong>{esc(body["current_replicas"])}</strong> now, '
                           f'<strong>{esc(body["desired_replicas"])}</strong> recommended '
                           f'(since {when(getattr(rec, "at", None))})</p><p>{esc(body["reason"])}</p>'
                           + table("Signals", ("Signal", "Value"), signals, "none"))
            cost = service_pool_cost(service, pool.name)
            if cost is None:
                money = '<p class="muted">No <code>cost</code> configured for this pool.</p>'
            else:
                money = table("Cost", ("Figure", "Value"),
                              [[esc(k), esc(v) if not isinstance(v, float) else number(v, digits=4)]
                               for k, v in cost.to_json().items() if not isinstance(v, (dict, list))])
            parts.append(f'<section class="pool"><h2>Pool {esc(pool.name)}</h2><h3>Scaling</h3>{scaling}'
                         f"<h3>Cost</h3>{money}</section>")
        return console("Scaling & cost", "".join(parts), "/ui/pools")

    def report_rows(since: float, until: float) -> list[figures.ReportRow]:
        out = []
        for status in service.slo.statuses:
            if status.model_name:
                continue
            slo = status.config
            windows = slo_windows(slo, status.key.pool, service.slo.adhoc_exclusions, since, until)
            pages = [p for p in slo_pairs(slo) if p.severity == "page"]
            page_pair = pages[0] if pages else None
            out.append(figures.report_row(
                slo.name, status.key.pool, slo.indicator.type, slo.objective,
                service.slo.minutes(slo.name, status.key.pool, since=since), since, until, minute_ranges(windows),
                page_pair.factor(slo.window) if page_pair else None,
                parse_duration(page_pair.long) if page_pair else None))
        return out

    async def reports_page(request: Request) -> Response:
        now = time.time()
        period = request.query_params.get("period") or figures.current_month(now)
        try:
            since, until = figures.month(period)
        except ValueError as exc:
            if request.query_params.get("format") == "csv":
                return Response(f"{exc}\n", status_code=400, media_type="text/plain; charset=utf-8",
                                headers=SECURITY_HEADERS)
            return console("SLO report", f'<p class="error" role="alert">{esc(exc)}</p>', "/ui/reports", status=400)
        period = period.strip()
        rows = report_rows(since, min(until, now + 60.0))
        if request.query_params.get("format") == "csv":
            return Response(figures.report_csv(period, rows), media_type="text/csv; charset=utf-8",
                            headers={**SECURITY_HEADERS,
                                     "Content-Disposition": f'attachment; filename="slo-report-{period}.csv"'})
        cells = [[esc(r.slo), esc(r.pool), esc(r.indicator), percent(r.objective, 3), percent(r.attainment, 3),
                  badge("met" if r.met else "missed") if r.met is not None else '<span class="muted">no data</span>',
                  percent(r.budget_spent, 1), esc(r.incidents), esc(r.incident_minutes), esc(r.excluded_minutes),
                  number(r.total, digits=8)] for r in rows]
        intro = (f'<p>{esc(period)} (UTC) · from the per-minute SLO events this service keeps '
                 f'(about {esc(format_duration(service.slo.horizon()))}) · '
                 f'<a href="/ui/reports?period={esc(url_part(period))}&amp;format=csv">CSV</a></p>'
                 '<form method="get" action="/ui/reports" class="noprint"><label for="period">Month</label> '
                 f'<input id="period" name="period" type="month" value="{esc(period)}"> '
                 '<button type="submit">Show</button></form>')
        note = ('<p class="muted">Incidents: spans in which the first page alert\'s long window burned at or above '
                "its factor, reconstructed from the stored minutes. Excluded: minutes of maintenance windows, which "
                "count neither good nor bad.</p>")
        return _html(page(f"SLO report {period}", intro + table(
            "Each SLO over the month", ("SLO", "Pool", "SLI", "Objective", "Attainment", "Met", "Budget spent",
                                        "Incidents", "Incident minutes", "Minutes excluded", "Valid events"),
            cells, "no SLOs configured") + note, path="/ui/reports", logout=bool(token)))

    for path, render in (("/ui/", fleet), ("/ui/instances/{instance:path}", instance_page),
                         ("/ui/slos", slos_page), ("/ui/decisions", decisions_page), ("/ui/pools", pools_page),
                         ("/ui/reports", reports_page)):
        app.add_api_route(path, guarded(render), methods=["GET"], include_in_schema=False)

    # -- the budget history the chart reads ---------------------------------------------------------

    @app.get("/api/v1/slos/{name}/history", dependencies=[Depends(require_token)])
    async def slo_history(name: str, pool: str, model_name: str = "") -> FiniteJSONResponse:
        """The error budget left over the current SLO window, from its start to now (the burn-down)."""
        status = next((s for s in service.slo.statuses if s.key.slo == name and s.key.pool == pool
                       and s.key.model_name == model_name), None)
        if status is None:
            raise HTTPException(status_code=404, detail=f"no SLO {name!r} evaluated for pool {pool!r}")
        slo = status.config
        now = time.time()
        since = now - slo.window
        windows = slo_windows(slo, pool, service.slo.adhoc_exclusions, since, now)
        points = figures.burn_down(service.slo.minutes(name, pool, model_name, since=since - 60.0), slo.objective,
                                   slo.window, now, minute_ranges(windows))
        return FiniteJSONResponse({"name": name, "pool": pool, "objective": slo.objective,
                                   "window_seconds": slo.window, "t": [round(t, 3) for t, _ in points],
                                   "error_budget_remaining": [round(r, 6) for _, r in points]})

    # -- the public status page ---------------------------------------------------------------------

    @app.get("/status", include_in_schema=False)
    async def status_page() -> HTMLResponse:
        if not service.config.ui.status_page:
            raise HTTPException(status_code=404, detail="the status page is off (ui.status_page: true turns it on)")
        now = time.time()
        sections = []
        incidents = []
        for pool in service.config.pools:
            rows = []
            for status in service.slo.statuses:
                slo = status.config
                if status.key.pool != pool.name or status.model_name or slo.indicator.type not in STATUS_KINDS:
                    continue
                cells = [esc(slo.name), esc(slo.indicator.type), percent(slo.objective, 2)]
                for _, span in STATUS_SPANS:
                    windows = slo_windows(slo, pool.name, service.slo.adhoc_exclusions, now - span, now)
                    good, total = figures.counts(service.slo.minutes(slo.name, pool.name, since=now - span),
                                                 now - span, now + 60.0, minute_ranges(windows))
                    cells.append(percent(figures.attainment(good, total), 2))
                rows.append(cells)
                if "page" in status.fired_severities():
                    incidents.append(f"<li>Pool {esc(pool.name)}: {esc(slo.name)} is below its objective "
                                     f"(as of {when(status.evaluated_at)})</li>")
            sections.append(f"<section><h2>{esc(pool.name)}</h2>" + table(
                f"{pool.name}: share of good events", ("SLO", "Kind", "Objective") +
                tuple(label for label, _ in STATUS_SPANS), rows, "no availability or latency SLO") + "</section>")
        current = ("<ul class=\"incidents\">" + "".join(incidents) + "</ul>") if incidents else \
            '<p class="ok">All systems operational.</p>'
        body = (f"<h2>Current incidents</h2>{current}" + "".join(sections)
                + f'<p class="muted">Updated {when(now)}.</p>')
        return _html(page("Service status", body, nav=False, refresh_s=60.0))
