"""HTTP routes (interfaces.md): /healthz, /metrics and the JSON API."""

from __future__ import annotations

import hmac
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitor.publish.metrics import make_registry

if TYPE_CHECKING:
    from monitor.evaluate.fleet import InstanceView
    from monitor.service import Service

# the fields interfaces.md promises in `metrics`; more may be added, none removed
METRIC_FIELDS = ("ttft_p99_s", "tpot_p99_s", "e2e_p99_s", "error_ratio", "kv_cache_usage",
                 "requests_running", "requests_waiting", "generation_tokens_per_s")


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def instance_json(view: InstanceView) -> dict[str, Any]:
    return {
        "pool": view.pool,
        "instance": view.instance,
        "url": view.url,
        "state": view.state,
        "reasons": list(view.reasons),
        "last_scrape": rfc3339(view.last_scrape),
        "metrics": view.figures,
        "models": view.models,
        "scrape": {
            "error": view.scrape_error,
            "duration_s": view.scrape_duration_s,
            "health_status": view.health_status,
        },
    }


def install_routes(app: FastAPI, service: Service) -> None:
    registry = make_registry(service)
    token = service.config.api.token

    def require_token(request: Request) -> None:
        """Bearer token on the JSON API when `api.token` is set; compared in constant time."""
        if not token:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        fleet = service.fleet
        return {"status": "ok", "cycles": service.cycles, "last_cycle": rfc3339(fleet.last_cycle_at)}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/instances", dependencies=[Depends(require_token)])
    async def instances(pool: str | None = None) -> JSONResponse:
        views = service.fleet.views(time.time())
        if pool is not None:
            if service.config.pool(pool) is None:
                raise HTTPException(status_code=404, detail=f"no pool named {pool!r}")
            views = [v for v in views if v.pool == pool]
        return JSONResponse([instance_json(v) for v in views])
