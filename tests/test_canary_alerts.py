"""`CanaryFailed`, the optional Alertmanager notification of a failing canary (`canaries[].notify`):
fires while the verdict is `fail`, resolves when it leaves it, off by default."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from monitor.config import validate
from monitor.publish.alertmanager import AlertmanagerNotifier
from monitor.publish.canary_alerts import canary_alerts
from monitor.service.core import Service
from tests.helpers.am_server import Alertmanager
from tests.helpers.page_scraper import PageScraper
from tests.helpers.vllm_pages import FakeVllmV1

V1 = ["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"]
V2 = ["127.0.0.1:9104"]


def write_targets(sd, v2: list[str]) -> None:
    groups = [{"targets": V1, "labels": {"version": "v1"}}]
    if v2:
        groups.append({"targets": v2, "labels": {"version": "v2"}})
    sd.write_text(json.dumps(groups))


def make_service(tmp_path, notify: bool | None, alertmanager_url: str = "http://127.0.0.1:9") -> Service:
    sd = tmp_path / "targets.json"
    write_targets(sd, V2)
    canary = {"name": "llama-v2", "pool": "chat", "baseline": {"labels": {"version": "v1"}},
              "candidate": {"labels": {"version": "v2"}}, "min_requests": 200, "min_duration": "1s"}
    if notify is not None:
        canary["notify"] = notify
    config = validate({
        "pools": [{"name": "chat", "discovery": [{"type": "file", "files": [str(sd)], "refresh": "1s"}]}],
        "canaries": [canary],
        "alertmanager": {"url": alertmanager_url},
    }, environ={}).config
    service = Service(config)

    def advance(instance: str, page: FakeVllmV1) -> None:
        page.finish(25, itl=(0.03, 0.075) if instance in V2 else (0.02, 0.05))

    service.scraper = PageScraper(advance)
    return service


async def cycles_until(service: Service, verdict: str, limit: int = 100) -> None:
    state = service.canaries.states["llama-v2"]
    for _ in range(limit):
        await service.scrape_cycle()
        if state.verdict is not None and state.verdict.verdict == verdict:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {verdict} after {limit} cycles: {state.verdict}")


async def start(service: Service) -> None:
    await service.discovery.refresh()
    service.apply_membership(service.discovery.membership, time.time())


async def test_a_failing_canary_with_notify_fires_canary_failed_as_a_ticket_naming_the_canary(tmp_path):
    service = make_service(tmp_path, notify=True)
    await start(service)
    await cycles_until(service, "fail")
    await service.scrape_cycle()  # alerts follow the verdicts at the next evaluation
    firing = [a for a in service.alerts.notifier.firing if a["alertname"] == "CanaryFailed"]
    assert firing == [{"alertname": "CanaryFailed", "canary": "llama-v2", "pool": "chat", "severity": "ticket"}]
    ((_, annotations),) = canary_alerts(service.canaries.states.values())
    assert re.match(r"Canary llama-v2 \(pool chat\) failed: (TPOT|ITL) p99 \+\d+% .* v2 requests against .* v1: fail$",
                    annotations["summary"]), annotations["summary"]
    assert "127.0.0.1:9104" in annotations["description"]


async def test_a_failing_canary_is_not_notified_by_default(tmp_path):
    service = make_service(tmp_path, notify=None)
    await start(service)
    await cycles_until(service, "fail")
    await service.scrape_cycle()
    assert not [a for a in service.alerts.notifier.firing if a["alertname"] == "CanaryFailed"]
    assert canary_alerts(service.canaries.states.values()) == []


async def test_turning_notify_on_by_a_reload_keeps_the_evidence_and_the_verdict(tmp_path):
    service = make_service(tmp_path, notify=False)
    await start(service)
    await cycles_until(service, "fail")
    state = service.canaries.states["llama-v2"]
    config = service.config.canaries[0].model_copy(update={"notify": True})
    service.canaries.configure([config], service.config.slos)
    assert service.canaries.states["llama-v2"] is state and state.verdict.verdict == "fail"
    assert len(canary_alerts(service.canaries.states.values())) == 1


def test_the_notifier_resolves_canary_failed_when_it_is_no_longer_wanted():
    notifier = AlertmanagerNotifier("http://127.0.0.1:9")
    labels = {"alertname": "CanaryFailed", "canary": "c", "pool": "p", "severity": "ticket"}
    notifier.update([], 100.0, extra=[(labels, {"summary": "Canary c (pool p) failed: x: fail"})])
    assert notifier.firing == [labels]
    notifier.update([], 160.0)
    assert notifier.firing == []
    (sent,) = notifier.payload(170.0)
    assert sent["labels"] == labels and sent["endsAt"].startswith("1970-01-01T00:02:40")
    asyncio.run(notifier.aclose())


@pytest.mark.e2e
async def test_alertmanager_holds_canary_failed_while_the_canary_fails_and_loses_it_after_the_rollback(tmp_path):
    with Alertmanager(tmp_path) as am:
        service = make_service(tmp_path, notify=True, alertmanager_url=am.url)
        await start(service)
        await cycles_until(service, "fail")
        await service.scrape_cycle()
        assert await service.alerts.notifier.send(time.time())
        held = am.alerts(alertname="CanaryFailed")
        assert [a["labels"]["canary"] for a in held] == ["llama-v2"]
        assert held[0]["labels"]["severity"] == "ticket"
        # the rollback: the candidate leaves discovery, the group empties, the verdict leaves fail
        write_targets(tmp_path / "targets.json", [])
        await service.discovery.refresh()
        service.apply_membership(service.discovery.membership, time.time())
        await cycles_until(service, "inconclusive")
        await service.scrape_cycle()
        assert await service.alerts.notifier.send(time.time())
        for _ in range(50):
            if not am.alerts(alertname="CanaryFailed"):
                break
            await asyncio.sleep(0.1)
        assert am.alerts(alertname="CanaryFailed") == []
        await service.alerts.notifier.aclose()
