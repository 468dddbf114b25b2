"""Canaries in the running service: evidence gathered each cycle from the fleet by discovery label,
judged, and served at /api/v1/canaries, on /metrics and in the audit log.

In-process: the service's real cycle over real vLLM-shaped pages (tests/helpers/page_scraper.py),
its instances found by a real file_sd file carrying `version` labels."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from fastapi import FastAPI

from monitor.config import validate
from monitor.publish.api import install_routes
from monitor.service.core import Service
from tests.helpers.asgi_client import AUTH
from tests.helpers.page_scraper import PageScraper
from tests.helpers.vllm_pages import FakeVllmV1

V1 = ["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"]
V2 = ["127.0.0.1:9104"]


def make_service(tmp_path, itl_v2: tuple[float, float], prompt_v2: int = 100) -> Service:
    sd = tmp_path / "targets.json"
    sd.write_text(json.dumps([{"targets": V1, "labels": {"version": "v1"}},
                              {"targets": V2, "labels": {"version": "v2"}}]))
    config = validate({
        "api": {"token": "s3cret"},
        "pools": [{"name": "chat", "discovery": [{"type": "file", "files": [str(sd)]}]}],
        "canaries": [{"name": "llama-v2", "pool": "chat", "baseline": {"labels": {"version": "v1"}},
                      "candidate": {"labels": {"version": "v2"}}, "min_requests": 200, "min_duration": "1s",
                      "tolerance": {"itl": "10%"}}],
    }, environ={}).config
    service = Service(config)

    def advance(instance: str, page: FakeVllmV1) -> None:
        if instance in V2:
            page.finish(25, itl=itl_v2, prompt_tokens=prompt_v2)
        else:
            page.finish(25)

    service.scraper = PageScraper(advance)
    return service


async def start(service: Service) -> None:
    await service.discovery.refresh()
    service.apply_membership(service.discovery.membership, time.time())


async def get(service: Service, path: str, headers: dict[str, str] | None = AUTH) -> httpx.Response:
    app = FastAPI()
    install_routes(app, service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.get(path, headers=headers)


async def cycles_until_verdict(service: Service, limit: int = 100) -> dict:
    for _ in range(limit):
        await service.scrape_cycle()
        body = (await get(service, "/api/v1/canaries/llama-v2")).json()
        if body["verdict"] != "inconclusive":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"no verdict after {limit} cycles: {body['reason']}")


async def test_a_candidate_whose_tokens_come_half_again_as_slow_fails_with_its_sentence(tmp_path):
    service = make_service(tmp_path, itl_v2=(0.03, 0.075))
    await start(service)
    body = await cycles_until_verdict(service)
    assert body["verdict"] == "fail"
    assert body["name"] == "llama-v2"
    assert body["metrics"]["itl"]["verdict"] == "fail"
    assert body["metrics"]["itl"]["change"] > 0.1
    assert body["metrics"]["ttft"]["verdict"] == "pass"
    assert " v2 requests against " in body["reason"] and body["reason"].endswith(": fail")
    assert body["requests"]["baseline"] > body["requests"]["candidate"] >= 200
    assert body["since"] is not None
    assert body["candidate"]["instances"] == V2
    metrics = (await get(service, "/metrics")).text
    assert 'slo_monitor_canary_verdict{canary="llama-v2",verdict="fail"} 1.0' in metrics
    assert 'slo_monitor_canary_verdict{canary="llama-v2",verdict="pass"} 0.0' in metrics
    assert 'slo_monitor_canary_regression{canary="llama-v2",metric="itl"}' in metrics
    audit = (await get(service, "/api/v1/decisions?kind=canary")).json()
    assert audit[0]["to"] == "fail" and audit[0]["from"] == "inconclusive"
    assert audit[0]["reasons"] == [body["reason"]]


async def test_a_good_candidate_with_longer_prompts_passes(tmp_path):
    service = make_service(tmp_path, itl_v2=(0.02, 0.05), prompt_v2=400)
    await start(service)
    body = await cycles_until_verdict(service)
    assert body["verdict"] == "pass", body["reason"]
    listed = (await get(service, "/api/v1/canaries")).json()
    assert [c["name"] for c in listed] == ["llama-v2"] and listed[0]["verdict"] == "pass"


async def test_before_the_evidence_is_in_the_canary_is_inconclusive_and_says_what_is_missing(tmp_path):
    service = make_service(tmp_path, itl_v2=(0.03, 0.075))
    await start(service)
    await service.scrape_cycle()
    body = (await get(service, "/api/v1/canaries/llama-v2")).json()
    assert body["verdict"] == "inconclusive"
    assert "requests of 200 needed" in body["reason"]


async def test_an_unknown_canary_is_404_and_the_routes_need_the_token(tmp_path):
    service = make_service(tmp_path, itl_v2=(0.02, 0.05))
    missing = await get(service, "/api/v1/canaries/nope")
    assert missing.status_code == 404 and "llama-v2" in missing.json()["detail"]
    assert (await get(service, "/api/v1/canaries", headers=None)).status_code == 401
