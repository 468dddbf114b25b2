"""The supervised cycle: a failure in one stage, pool or target is contained there (counted in
`slo_monitor_stage_errors_total`, logged once per cause, listed on /healthz) and never stops the rest;
verdicts carry the time of the cycle that made them and every output fails open once they are older
than `stale_after`; a reload and the shutdown wait for the running cycle.

In-process: the service runs its real cycle over a hand-built scrape source (tests/helpers/hand_scraper.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import httpx
import yaml
from fastapi import FastAPI

from monitor.act.haproxy import agent_reply
from monitor.config import load, validate
from monitor.publish.api import install_routes
from monitor.service import Service
from monitor.service.reload import Reloader
from tests.helpers.hand_scraper import HandScraper

SLOW = "10.0.0.2:8000"
POOLS = {"a": ["10.0.0.1:8000", SLOW], "b": ["10.0.0.3:8000", "10.0.0.4:8000"]}


def config_dict(pools: dict[str, list[str]] = POOLS) -> dict:
    return {
        "scrape": {"interval": "200ms", "timeout": "100ms"},
        "pools": [{"name": name, "targets": [f"http://{t}" for t in targets],
                   "health": {"min_requests": 1, "stale_after": "1s", "base_ejection_time": "60s"}}
                  for name, targets in pools.items()],
    }


def make_service() -> tuple[Service, HandScraper]:
    service = Service(validate(config_dict()).config)
    scraper = HandScraper()
    service.scraper = scraper
    return service, scraper


async def get(service: Service, path: str) -> httpx.Response:
    app = FastAPI()
    install_routes(app, service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.get(path)


async def cycles_until(service: Service, done, what: str, limit: int = 200) -> None:
    """Run cycles (a real one every 20 ms) until `done()`; fail naming `what` after `limit` of them."""
    for _ in range(limit):
        await service.scrape_cycle()
        if done():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def test_a_bug_deciding_one_pool_is_that_pools_alone_counted_named_and_said_once(caplog):
    service, _ = make_service()
    caplog.set_level(logging.INFO, logger="monitor.service")

    def boom(*_args, **_kwargs):
        raise ZeroDivisionError("float division by zero")

    service.decisions.health["a"].evaluate = boom
    for _ in range(3):
        await service.scrape_cycle()
    assert {v.state for v in service.decisions.pool_verdicts("b")} == {"healthy"}  # pool b decided as usual
    assert all(v.decided_at is not None for v in service.decisions.pool_verdicts("b"))
    assert all(v.decided_at is None for v in service.decisions.pool_verdicts("a"))
    assert service.stages.errors["decide"] == 3 and service.cycles == 3
    assert service.stages.failing == {"decide/a": "ZeroDivisionError: float division by zero"}
    assert sum("decide/a failed" in r.getMessage() for r in caplog.records) == 1  # once per cause, not per cycle

    health = await get(service, "/healthz")
    assert health.status_code == 200  # liveness: the loop runs
    assert health.json()["failing"] == {"decide/a": "ZeroDivisionError: float division by zero"}
    exposition = (await get(service, "/metrics")).text
    assert 'slo_monitor_stage_errors_total{stage="decide"} 3.0' in exposition
    assert 'slo_monitor_stage_errors_total{stage="scrape"} 0.0' in exposition
    assert service.last_cycle_success_at is not None
    beat = re.search(r"^slo_monitor_last_cycle_success_timestamp_seconds (\S+)$", exposition, re.MULTILINE)
    assert beat and float(beat.group(1)) == service.last_cycle_success_at

    del service.decisions.health["a"].evaluate  # the bug fixed: the pool is decided again, and that is said
    await service.scrape_cycle()
    assert service.stages.failing == {}
    assert any("decide/a: working again" in r.getMessage() for r in caplog.records)
    assert {v.state for v in service.decisions.pool_verdicts("a")} <= {"healthy", "ejected", "degraded"}


async def test_a_result_no_stage_expected_is_that_targets_alone():
    service, _ = make_service()
    ingest = service.fleet.ingest

    def picky(results):
        results = list(results)
        if any(r.instance == "10.0.0.1:8000" for r in results):
            raise ValueError("a sample nobody expected")
        ingest(results)

    service.fleet.ingest = picky
    await cycles_until(service, lambda: service.decisions.verdict("b", "10.0.0.3:8000").state == "healthy",
                       "pool b healthy beside the bad target")
    assert service.stages.failing == {"ingest/10.0.0.1:8000": "ValueError: a sample nobody expected"}
    assert service.decisions.verdict("a", SLOW).state in ("healthy", "ejected", "degraded")  # its neighbour judged
    assert service.decisions.verdict("a", "10.0.0.1:8000").state == "unknown"  # never ingested: never judged


async def test_a_scraper_that_raises_never_stops_the_loop_and_every_output_fails_open_past_stale_after():
    service, scraper = make_service()
    scraper.slow.add(SLOW)
    await cycles_until(service, lambda: service.decisions.verdict("a", SLOW).state == "ejected", "the slow one ejected")
    check = await get(service, f"/upstreams/a/{SLOW}")
    assert check.status_code == 503 and "X-Decided-At" in check.headers
    assert agent_reply(service.decisions.find(f"a/{SLOW}")) == "up drain\n"
    assert f"server {SLOW} down;" in service.upstreams_file()
    succeeded = service.last_cycle_success_at

    scraper.broken = "scraper bug: one target took the gather down"
    await cycles_until(service, lambda: service.decisions.verdict("a", SLOW).fail_open is not None,
                       "verdicts older than stale_after fail open")
    check = await get(service, f"/upstreams/a/{SLOW}")
    assert check.status_code == 200 and "failing open: the verdicts are stale" in check.text, check.text
    assert check.text.startswith("ejected: ")  # what it was, and why it serves anyway
    assert agent_reply(service.decisions.find(f"a/{SLOW}")).startswith("up ready 100% #failing open")
    upstreams = service.upstreams_file()
    assert " down;" not in upstreams and f"server {SLOW};" in upstreams
    instances = (await get(service, "/api/v1/instances")).json()
    slow = next(i for i in instances if i["instance"] == SLOW)
    assert slow["state"] == "ejected" and "stale" in slow["fail_open"] and slow["decided_at"]
    scaling = (await get(service, "/api/v1/pools/a/scaling")).json()
    assert scaling["desired_replicas"] == scaling["current_replicas"] == 2 and scaling["stale"] is True
    health = await get(service, "/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["failing"]["scrape"] == "RuntimeError: scraper bug: one target took the gather down"
    assert set(body["stale_pools"]) == {"a", "b"}
    assert service.last_cycle_success_at == succeeded  # no cycle succeeded since
    exposition = (await get(service, "/metrics")).text
    assert 'slo_monitor_pool_fail_open{pool="a"} 1.0' in exposition

    scraper.broken = None  # scraping works again: fresh verdicts, and the ejection (60 s) still holds
    await cycles_until(service, lambda: service.decisions.verdict("a", SLOW).fail_open is None, "fresh again")
    assert (await get(service, f"/upstreams/a/{SLOW}")).status_code == 503
    assert service.stages.failing == {}


async def test_healthz_says_so_when_no_cycle_completed_for_long():
    service, _ = make_service()
    await service.scrape_cycle()
    assert (await get(service, "/healthz")).status_code == 200
    service.last_cycle_end_at = time.time() - 3600  # the loop died an hour ago
    health = await get(service, "/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "stalled" and "no scrape cycle completed" in health.json()["stalled"]


async def test_a_reload_waits_for_the_running_cycle_and_the_cycle_never_sees_half_a_config(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_dict()))
    service = Service(load(path).config)
    scraper = HandScraper()
    service.scraper = scraper
    reloader = Reloader(service, path)
    scraper.hold = asyncio.Event()
    cycle = asyncio.create_task(service.scrape_cycle())
    while not scraper.started:
        await asyncio.sleep(0.01)
    path.write_text(yaml.safe_dump(config_dict({**POOLS, "c": ["10.0.0.5:8000"]})))
    reload = asyncio.create_task(reloader.reload())
    await asyncio.sleep(0.3)  # whatever the wait, the reload cannot apply while the cycle holds the lock
    assert not reload.done() and [p.name for p in service.config.pools] == ["a", "b"]
    scraper.hold.set()
    await cycle
    applied, problems = await reload
    assert applied, problems
    assert [p.name for p in service.config.pools] == ["a", "b", "c"] and service.cycles == 1


async def test_stop_waits_for_the_running_cycle_before_closing_the_scraper():
    service, scraper = make_service()
    scraper.hold = asyncio.Event()
    cycle = asyncio.create_task(service.scrape_cycle())
    while not scraper.started:
        await asyncio.sleep(0.01)
    stop = asyncio.create_task(service.stop())
    await asyncio.sleep(0.3)  # whatever the wait: nothing is closed under a running cycle
    assert not stop.done() and not scraper.closed
    scraper.hold.set()
    await cycle
    await stop
    assert scraper.closed and service.cycles == 1
    await service.scrape_cycle()  # a job firing after the stop does nothing
    assert service.cycles == 1
