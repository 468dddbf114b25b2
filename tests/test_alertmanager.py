"""Alert delivery against a real Alertmanager (Debian's prometheus-alertmanager on loopback).

Labels and annotations as Alertmanager stores them, the README's inhibit rule (a page suppresses the
ticket of the same SLO and pool), resolution by endsAt, re-sending, and what happens when
Alertmanager is down or hangs: failures are counted and retried with backoff, nothing raises, and
every POST is bounded by the timeout.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from monitor.config import validate
from monitor.evaluate.slo import WINDOWS, evaluate_counts
from monitor.evaluate.slo.engine import SloStatus
from monitor.evaluate.slo.track import SloKey
from monitor.publish.alertmanager import AlertmanagerNotifier

from tests.helpers.am_server import Alertmanager, require_alertmanager
from tests.helpers.ports import free_port
from tests.helpers.times import parse_rfc3339

CONFIG = validate({
    "pools": [{"name": "llama", "targets": ["http://10.0.0.1:8000"]}],
    "slos": [{"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99.9%",
              "runbook_url": "https://runbooks.example/llm/errors"},
             {"name": "ttft-300", "indicator": {"type": "latency", "metric": "ttft", "threshold": "300ms"},
              "objective": "99%"}],
}).config


def status(slo_index: int, error_ratio: float, model: str = "", total: float = 10_000.0,
           now: float | None = None) -> SloStatus:
    """An evaluation where every window saw `total` events, a share `error_ratio` of them bad."""
    slo = CONFIG.slos[slo_index]
    good = total * (1 - error_ratio)
    ev = evaluate_counts({w: (good, total) for w in WINDOWS}, (good, total), slo.objective, slo.window,
                         exact=slo_index == 0)
    return SloStatus(SloKey(slo.name, "llama", model), slo, ev, now or time.time())


@pytest.mark.e2e
async def test_page_and_ticket_reach_alertmanager_the_page_inhibits_the_ticket_and_both_resolve(tmp_path):
    with Alertmanager(tmp_path) as am:
        notifier = AlertmanagerNotifier(am.url, resend_interval=30, timeout=2)
        try:
            now = time.time()
            firing = [status(0, 1.0, now=now), status(1, 0.5, model="small", now=now), status(1, 0.0, now=now)]
            notifier.update(firing, now)
            assert await notifier.tick(now) is True
            assert await notifier.tick(now + 1) is None  # nothing changed, no resend due yet

            page = am.alerts(slo="errors", severity="page")
            assert len(page) == 1
            assert page[0]["labels"] == {"alertname": "SloErrorBudgetBurn", "slo": "errors", "pool": "llama",
                                         "severity": "page", "burnrate_tier": "fast"}
            assert page[0]["status"]["state"] == "active"
            notes = page[0]["annotations"]
            assert notes["runbook_url"] == "https://runbooks.example/llm/errors"
            assert notes["summary"] == ("SLO errors (pool llama) is burning its error budget at 1000x "
                                        "(page: 1h/5m above 14.4x)")
            assert "Objective 99.900% over 30d; SLI 0.0000% (0 good of 10000 events)" in notes["description"]
            assert "error budget remaining -99900.0%" in notes["description"]
            assert "Firing: 1h/5m (burn 1000/1000 > 14.4), 6h/30m (burn 1000/1000 > 6)" in notes["description"]
            assert "5m=1000, 30m=1000, 1h=1000" in notes["description"]
            # firing alerts carry endsAt four resend intervals ahead, so they expire if we die
            assert parse_rfc3339(page[0]["endsAt"]) == pytest.approx(now + 120, abs=1)
            assert parse_rfc3339(page[0]["startsAt"]) == pytest.approx(now, abs=0.01)

            ticket = am.alerts(slo="errors", severity="ticket")
            assert ticket[0]["labels"]["burnrate_tier"] == "slow"
            assert ticket[0]["status"]["state"] == "suppressed"
            assert ticket[0]["status"]["inhibitedBy"] == [page[0]["fingerprint"]]

            per_model = am.alerts(slo="ttft-300", severity="page")
            assert per_model[0]["labels"]["model_name"] == "small"
            assert "runbook_url" not in per_model[0]["annotations"]
            assert "interpolated inside a histogram bucket (exact: false)" in per_model[0]["annotations"]["description"]
            burns = [a for a in notifier.firing if a["alertname"] == "SloErrorBudgetBurn"]
            assert len(burns) == 4  # errors page+ticket, ttft-300/small page+ticket
            # 100% (and 50%) errors over the whole SLO window: both budgets are exhausted too (ticket)
            assert sorted((a["slo"], a["severity"]) for a in notifier.firing
                          if a["alertname"] == "ErrorBudgetExhausted") == [("errors", "ticket"), ("ttft-300", "ticket")]

            # the error SLO recovers: its two alerts go out once more with endsAt = now, and vanish
            later = time.time()  # real time: Alertmanager hides an alert once its endsAt has passed
            notifier.update([status(0, 0.0, now=later), firing[1]], later)
            assert await notifier.tick(later) is True
            assert am.alerts(slo="errors") == []
            assert len(am.alerts(slo="ttft-300", alertname="SloErrorBudgetBurn")) == 2
            assert notifier.stats.posts == 2 and notifier.stats.errors == 0

            # re-sent while firing, once per resend interval
            assert notifier.due(later + 29) is False and notifier.due(later + 30) is True
        finally:
            await notifier.aclose()


@pytest.mark.e2e
async def test_unreachable_alertmanager_is_retried_with_backoff_then_delivered(tmp_path):
    require_alertmanager()
    port = free_port()
    notifier = AlertmanagerNotifier(f"http://127.0.0.1:{port}", resend_interval=10, timeout=1)
    try:
        now = time.time()
        notifier.update([status(0, 1.0, now=now)], now)
        waits = []
        t = now
        for _ in range(6):
            assert await notifier.tick(t) is False  # never raises
            waits.append(notifier._next_attempt_at - t)
            assert notifier.due(t + waits[-1] - 0.01) is False
            t += waits[-1]
        assert waits == [1, 2, 4, 8, 10, 10]  # doubling, capped at the resend interval
        assert notifier.stats.errors == 6 and notifier.stats.consecutive_failures == 6
        assert "ConnectError" in notifier.stats.last_error
        with Alertmanager(tmp_path, port=port) as am:
            assert await notifier.tick(t) is True
            assert notifier.stats.consecutive_failures == 0
            assert [a["labels"]["severity"] for a in am.alerts(slo="errors", alertname="SloErrorBudgetBurn")] in (
                ["page", "ticket"], ["ticket", "page"])
    finally:
        await notifier.aclose()


async def test_a_hung_alertmanager_costs_at_most_the_timeout():
    """An Alertmanager that accepts the connection and never answers: the POST gives up on time."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accepted: the kernel completes the handshake, nobody answers
        notifier = AlertmanagerNotifier(f"http://127.0.0.1:{listener.getsockname()[1]}", resend_interval=5,
                                        timeout=0.3)
        try:
            now = time.time()
            notifier.update([status(0, 1.0, now=now)], now)
            started = time.perf_counter()
            assert await asyncio.wait_for(notifier.tick(now), timeout=5) is False
            assert time.perf_counter() - started < 1.0
            assert "Timeout" in notifier.stats.last_error
        finally:
            await notifier.aclose()
