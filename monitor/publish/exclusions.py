"""Ad-hoc maintenance windows over the API (docs/api.md), token-protected like the rest of it:

* `POST /api/v1/exclusions` with a JSON body `{"slo": "errors", "pool": "chat", "start": "...", "end": "...",
  "reason": "..."}` (`slo` and `pool` optional: every SLO / pool; `start` optional: now; `duration: "2h"`
  instead of `end`; `id` optional: the client's own id for the window, any string) -> 201 and the window with
  its `id`. Idempotent: the same client `id` posted again, or (without one) the same SLO, pool, start, end and
  reason, answers 200 with the window already stored, never a second one, so a POST that timed out (503:
  the database may still commit it) is safe to retry;
* `GET /api/v1/exclusions` (`?all=true` adds windows that are over or removed) -> the ad-hoc windows and the
  configured ones (`slos[].exclusions`) in force or starting within a week;
* `DELETE /api/v1/exclusions/{id}` -> a window not started yet is removed, a running one ends now; one
  that is over stays (409): its minutes were excused, and the generated rules cannot excuse them again.

Every change is kept in the `exclusions` table (who posted it from where, why, when it was ended or
removed) and logged. A window cannot start in the past: the Prometheus path only honours it from the
moment the service exports it (`slo_monitor_exclusion_active`), and the two paths must agree.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from monitor.evaluate.slo import Exclusion, Window, slo_windows
from monitor.publish.state import MonitorState
from monitor.store import StoreBusy
from monitor.units import parse_duration, rfc3339

log = logging.getLogger("monitor.exclusions")

MAX_BODY = 4096  # bytes: a window is a handful of short fields
MAX_REASON = 500
MAX_LENGTH_S = 31 * 86400.0
PAST_TOLERANCE_S = 60.0  # clocks differ a little; an hour ago is history
DB_TIMEOUT_S = 5.0
LISTED_AHEAD_S = 7 * 86400.0
FIELDS = {"id", "slo", "pool", "start", "end", "duration", "reason"}
MAX_REQUEST_ID = 200


def _time(value: Any, key: str) -> float:
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected an RFC 3339 time such as 2026-05-01T02:00:00Z")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{key}: not an RFC 3339 time: {value!r} (e.g. 2026-05-01T02:00:00Z)") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{key}: {value!r} has no time zone (append Z for UTC, or +02:00)")
    return parsed.astimezone(UTC).timestamp()


def parse_request(body: Any, slos: dict[str, list[str]], pools: list[str], now: float) -> dict[str, Any]:
    """The fields of a POST body, checked; `slos` maps each SLO to the pools it covers. Raises
    ValueError naming the key."""
    if not isinstance(body, dict):
        raise ValueError('expected a JSON object such as {"slo": "errors", "duration": "2h", "reason": "upgrade"}')
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}")
    slo, pool = body.get("slo"), body.get("pool")
    for key, value in (("slo", slo), ("pool", pool)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key}: expected a name (a string), or leave it out for every {key}")
    if slo is not None and slo not in slos:
        raise ValueError(f"slo: no SLO named {slo!r} (SLOs: {', '.join(slos) or 'none'}; leave it out for every SLO)")
    if pool is not None and pool not in pools:
        raise ValueError(f"pool: no pool named {pool!r} (pools: {', '.join(pools)}; leave it out for every pool)")
    if slo is not None and pool is not None and pool not in slos[slo]:
        raise ValueError(f"pool: SLO {slo!r} does not cover pool {pool!r}")
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("reason: required (what the maintenance is, for whoever reads the budget later)")
    if len(reason) > MAX_REASON:
        raise ValueError(f"reason: at most {MAX_REASON} characters")
    start = now if body.get("start") is None else _time(body["start"], "start")
    if start < now - PAST_TOLERANCE_S:
        raise ValueError("start: in the past; a maintenance window applies from now on (the generated "
                         "Prometheus rules cannot excuse minutes already evaluated)")
    start = math.floor(max(start, now) * 1000) / 1000  # milliseconds, as the API prints it
    if ("end" in body) == ("duration" in body):
        raise ValueError("give `end` (RFC 3339) or `duration` (e.g. 2h), one of them")
    if "end" in body:
        end = _time(body["end"], "end")
    else:
        try:
            end = start + parse_duration(body["duration"])
        except ValueError as exc:
            raise ValueError(f"duration: {exc}") from None
    if end <= start:
        raise ValueError("end: must be after start")
    if end - start > MAX_LENGTH_S:
        raise ValueError("end: a maintenance window lasts at most 31d")
    return {"slo": slo, "pool": pool, "start": start, "end": end, "reason": reason.strip()}


def parse_request_id(body: dict[str, Any]) -> str | None:
    """The client's own id of a POST body (`id`): a non-empty string (or an integer) of at most
    MAX_REQUEST_ID characters, or None when not given. Raises ValueError naming the key."""
    value = body.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError("id: expected a string, your own id for the window "  # a 400 like any key
                         "(a retry with the same id is one window)")
    text = str(value).strip()
    if not text or len(text) > MAX_REQUEST_ID or not text.isprintable():
        raise ValueError(f"id: 1 to {MAX_REQUEST_ID} printable characters")
    return text


def same_window(a: Exclusion, b: Exclusion) -> bool:
    """The same window posted twice (a retry): SLO, pool, start, end and reason, and not removed."""
    return (a.slo, a.pool, a.start, a.end, a.reason) == (b.slo, b.pool, b.start, b.end, b.reason) and \
        a.removed_at is None and b.removed_at is None


def state_of(e: Exclusion, now: float) -> str:
    if e.removed_at is not None:
        return "removed"
    if now < e.start:
        return "scheduled"
    return "active" if now < e.effective_end else ("ended" if e.ended_at is not None else "over")


def exclusion_json(e: Exclusion, now: float) -> dict[str, Any]:
    return {"id": e.id, "source": "api", "slo": e.slo, "pool": e.pool, "start": rfc3339(e.start),
            "end": rfc3339(e.effective_end), "planned_end": rfc3339(e.end), "reason": e.reason,
            "state": state_of(e, now), "created_at": rfc3339(e.created_at), "created_by": e.created_by,
            "ended_at": rfc3339(e.ended_at), "removed_at": rfc3339(e.removed_at)}


def window_json(slo: str, pool: str, w: Window, now: float) -> dict[str, Any]:
    return {"id": None, "source": "config", "slo": slo, "pool": pool, "start": rfc3339(w.start),
            "end": rfc3339(w.end), "reason": w.reason, "state": "active" if w.active(now) else "scheduled"}


async def refresh_exclusions(service: MonitorState) -> None:
    """Hand the stored ad-hoc windows to the SLO engine: at start, and on every persist tick (another
    replica may have taken a POST). A database that does not answer keeps the ones known."""
    store = service.store
    if store is None:
        return
    try:
        found = await store.run(store.exclusions, since=time.time() - service.slo.horizon(), timeout=DB_TIMEOUT_S)
    except (SQLAlchemyError, TimeoutError, StoreBusy) as exc:
        log.warning("maintenance windows not read from the database (keeping %d known): %s",
                    len(service.slo.adhoc_exclusions), str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return
    if tuple(found) != tuple(service.slo.adhoc_exclusions):
        service.slo.set_exclusions(found)


async def _read_capped(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(status_code=413, detail=f"body over the {MAX_BODY}-byte limit")
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise HTTPException(status_code=413, detail=f"body over the {MAX_BODY}-byte limit")
    return data


def install_exclusion_routes(app: FastAPI, service: MonitorState, require_token: Callable[..., None]) -> None:
    """The three routes, under the API's bearer token."""
    lock = asyncio.Lock()  # one change at a time: the engine gets the whole list each time
    request_ids: dict[str, int] = {}  # the client's id -> the stored window's id (this process's memory)

    async def _store(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        assert service.store is not None
        try:
            return await service.store.run(call, *args, timeout=DB_TIMEOUT_S, **kwargs)
        except (SQLAlchemyError, StoreBusy) as exc:
            raise HTTPException(status_code=503, detail="the database did not take the change; nothing was "
                                                        f"changed ({type(exc).__name__})") from None
        except TimeoutError:
            raise HTTPException(status_code=503, detail=(
                f"the database did not answer within {DB_TIMEOUT_S:g}s; the change may still be applied: retry "
                "the same request (a POST with the same `id`, or the same window, is never stored twice)")) from None

    @app.post("/api/v1/exclusions", dependencies=[Depends(require_token)])
    async def post_exclusion(request: Request) -> JSONResponse:
        raw = await _read_capped(request)
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            raise HTTPException(status_code=400, detail="body is not JSON") from None
        config = service.config
        slos = {s.name: list(s.pools or [p.name for p in config.pools]) for s in config.slos}
        now = time.time()
        try:
            fields = parse_request(body, slos, [p.name for p in config.pools], now)
            request_id = parse_request_id(body)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        who = request.client.host if request.client else ""
        async with lock:
            known = list(service.slo.adhoc_exclusions)
            new = Exclusion(id=max((e.id for e in known), default=0) + 1, created_at=now, created_by=who, **fields)
            if request_id is not None and request_id in request_ids:
                earlier = next((e for e in known if e.id == request_ids[request_id]), None)
            else:
                earlier = None if request_id is not None else next((e for e in known if same_window(e, new)), None)
            if earlier is None and service.store is not None:
                stored = await _store(service.store.add_exclusion, new, request_id)
                earlier = next((e for e in known if e.id == stored.id), None)
                new = stored
            if request_id is not None:
                request_ids[request_id] = (earlier or new).id
            if earlier is not None:  # posted before (a retry): the stored window, once
                return JSONResponse({**exclusion_json(earlier, time.time()), "request_id": request_id},
                                    status_code=200)
            service.slo.set_exclusions([*known, new])
        log.warning("maintenance window %d posted from %s: SLO %s, pool %s, %s to %s: %s", new.id, who or "?",
                    new.slo or "(every)", new.pool or "(every)", rfc3339(new.start), rfc3339(new.end), new.reason)
        return JSONResponse({**exclusion_json(new, time.time()), "request_id": request_id}, status_code=201)

    @app.get("/api/v1/exclusions", dependencies=[Depends(require_token)])
    async def list_exclusions(all: bool = False) -> JSONResponse:  # the query parameter's name
        now = time.time()
        adhoc = [exclusion_json(e, now) for e in service.slo.adhoc_exclusions
                 if all or state_of(e, now) in ("scheduled", "active")]
        configured = []
        for slo in service.config.slos:
            if not slo.exclusions:
                continue
            for pool in slo.pools or [p.name for p in service.config.pools]:
                for w in slo_windows(slo, pool, (), now, now + LISTED_AHEAD_S):
                    configured.append(window_json(slo.name, pool, w, now))
        return JSONResponse(adhoc + configured)

    @app.delete("/api/v1/exclusions/{exclusion_id}", dependencies=[Depends(require_token)])
    async def delete_exclusion(exclusion_id: int, request: Request) -> JSONResponse:
        now = math.floor(time.time() * 1000) / 1000  # stored to the microsecond, read back no later
        async with lock:
            known = {e.id: e for e in service.slo.adhoc_exclusions}
            found = known.get(exclusion_id)
            if found is None or found.removed_at is not None:
                raise HTTPException(status_code=404, detail=f"no maintenance window {exclusion_id}")
            state = state_of(found, now)
            if state in ("over", "ended"):
                raise HTTPException(status_code=409, detail=f"maintenance window {exclusion_id} is over; it stays "
                                                            "on record (its minutes were already excused)")
            change = {"removed_at": now} if state == "scheduled" else {"ended_at": now}
            if service.store is not None:
                updated = await _store(service.store.close_exclusion, exclusion_id, **change)
                if updated is None:
                    raise HTTPException(status_code=404, detail=f"no maintenance window {exclusion_id}")
            else:
                updated = Exclusion(**{**_fields(found), **change})
            known[exclusion_id] = updated
            service.slo.set_exclusions(sorted(known.values(), key=lambda e: e.id))
        who = request.client.host if request.client else "?"
        log.warning("maintenance window %d %s from %s", exclusion_id,
                    "removed" if state == "scheduled" else "ended early", who)
        return JSONResponse(exclusion_json(updated, max(time.time(), now + 0.001)))


def _fields(e: Exclusion) -> dict[str, Any]:
    return {name: getattr(e, name) for name in Exclusion.__slots__}
