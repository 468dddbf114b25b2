"""Hostile-review findings on `/api/v1/pools/{pool}/scaling` (issue 20): `desired_replicas` is never
above `max_replicas`, also before the first evaluation and while the figure is held stale, for a pool
that has more members than its bound (discovery found more instances than max_replicas)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from monitor.config import validate
from monitor.publish.api import install_routes
from monitor.service import Service
from tests.helpers.hand_scraper import HandScraper

TARGETS = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]


def service_bounded_at_two() -> tuple[Service, HandScraper]:
    config = validate({
        "scrape": {"interval": "200ms", "timeout": "100ms"},
        "pools": [{"name": "a", "targets": [f"http://{t}" for t in TARGETS],
                   "health": {"min_requests": 1, "stale_after": "1s"},
                   "scaling": {"max_replicas": 2}}],
    }).config
    service = Service(config)
    scraper = HandScraper()
    service.scraper = scraper
    return service, scraper


async def scaling(service: Service) -> dict:
    app = FastAPI()
    install_routes(app, service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return (await client.get("/api/v1/pools/a/scaling")).json()


async def test_before_the_first_evaluation_desired_replicas_is_not_above_max_replicas():
    service, _ = service_bounded_at_two()
    answer = await scaling(service)
    assert answer["reason"] == "no evaluation yet"
    assert answer["current_replicas"] == 3
    assert answer["desired_replicas"] == 2 and answer["max_replicas"] == 2


async def test_a_stale_figure_holds_the_replicas_but_never_above_max_replicas():
    service, scraper = service_bounded_at_two()
    for _ in range(200):
        await service.scrape_cycle()
        if service.decisions.recommendation("a") is not None:
            break
    fresh = await scaling(service)
    assert fresh["desired_replicas"] <= 2 and fresh.get("stale") is False
    scraper.broken = "scraper bug"
    for _ in range(400):
        await service.scrape_cycle()
        held = await scaling(service)
        if held.get("stale"):
            break
    assert held["stale"] is True and held["reason"].startswith("holding the current replicas: failing open"), held
    assert held["current_replicas"] == 3
    assert held["desired_replicas"] == 2, held
