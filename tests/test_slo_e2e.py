"""End to end: `slo-monitor serve` over loopback vLLM-shaped servers, paging a real Alertmanager.

Two pools, each one instance finishing 20 requests a second, scraped every second:

* `chat` carries SLO `errors` at 99.99% over 30 days with three days of healthy history already in
  the database (the service reloads it on start). A 100% error fault must page when the 1h window
  has burnt 2% of the budget: b x 1h x 14.4 / e = 0.0001 x 3600 x 14.4 = 5.18 s after onset (the
  Workbook's 51.8 s at 99.9%, ten times faster because the budget is ten times smaller). The test
  measures fault -> page in Alertmanager's /api/v2/alerts and holds it to that figure.
* `batch` carries SLO `errors-fresh` at 95% with no history, so every window holds the same few
  seconds: a short fault pages, and once it clears the page resolves within seconds (endsAt sent,
  gone from Alertmanager) while the ticket it inhibited becomes active.

The restart test stops the service and starts it again on the same database: budget and windows
come back as they were, from the per-minute rows.
"""

from __future__ import annotations

import math
import os
import time

import httpx
import pytest

from monitor.config import parse_ratio
from monitor.evaluate.slo.engine import SloEventRow
from monitor.store import Store, upgrade

from tests.helpers.am_server import Alertmanager
from tests.helpers.ports import free_port
from tests.helpers.serve_proc import serve, stop
from tests.helpers.vllm_pages import FakeVllmV1, FaultableVllm, PageServer
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.e2e  # every test here starts a process or a server on a real port


RPS = 20.0
# The Workbook's own case is 99.9% (page after 51.8 s); the default keeps the suite fast. Run
# `SLO_E2E_OBJECTIVE=99.9% pytest tests/test_slo_e2e.py -s` to measure that one (about 70 s).
OBJECTIVE = os.environ.get("SLO_E2E_OBJECTIVE", "99.99%")


def slos(base: str) -> dict[str, dict]:
    return {row["name"]: row for row in httpx.get(f"{base}/api/v1/slos", timeout=2).json()}


def seed_history(url: str, slo: str, pool: str, days: float, now: float) -> int:
    """Healthy history at RPS up to `now`, as the service itself would have written it."""
    upgrade(url)
    current = math.floor(now / 60) * 60
    rows = [SloEventRow(slo, pool, "", current - 60 * k, RPS * 60, RPS * 60) for k in range(1, int(days * 1440))]
    rows.append(SloEventRow(slo, pool, "", current, RPS * (now - current), RPS * (now - current)))
    store = Store.open(url)
    try:
        store.queue_slo_events(rows)
        assert store.flush() == len(rows)
    finally:
        store.close()
    return len(rows)


def test_fault_pages_alertmanager_within_the_workbook_time_then_resolves(tmp_path):
    chat_vllm, batch_vllm = FaultableVllm(seed=1), FaultableVllm(seed=2)
    with Alertmanager(tmp_path) as am, PageServer(chat_vllm) as chat, PageServer(batch_vllm) as batch:
        db = f"sqlite:///{tmp_path}/monitor.db"
        seed_history(db, "errors", "chat", days=3.1, now=time.time())
        port = free_port()
        config = tmp_path / "config.yaml"
        config.write_text(f"""
storage: {{url: "{db}"}}
scrape: {{interval: 1s, timeout: 500ms}}
pools:
  - {{name: chat, targets: [{chat.url}]}}
  - {{name: batch, targets: [{batch.url}]}}
slos:
  - name: errors
    indicator: {{type: error_ratio}}
    objective: {OBJECTIVE}
    pools: [chat]
    runbook_url: https://runbooks.example/llm/errors
  - name: errors-fresh
    indicator: {{type: error_ratio}}
    objective: 95%
    pools: [batch]
alertmanager: {{url: "{am.url}", resend_interval: 2s, timeout: 1s}}
""")
        proc = serve(config, port)
        base = f"http://127.0.0.1:{port}"
        try:
            # healthy: the reloaded history is in the budget, a few seconds of live traffic counted
            ready = wait_until(lambda: (s := slos(base)) and s["errors-fresh"]["total"] >= 3 * RPS and s,
                               20, what="live SLO events")
            assert ready["errors"]["alert"] == "none" and ready["errors-fresh"]["alert"] == "none"
            assert ready["errors"]["burn_rate_events"]["1h"]["total"] == pytest.approx(3600 * RPS, rel=0.01)
            assert am.alerts() == []

            onset = time.time()
            chat_vllm.set(error_ratio=1.0)
            batch_vllm.set(error_ratio=1.0)
            fresh_page = wait_until(lambda: am.alerts(slo="errors-fresh", severity="page"), 15,
                                    what="errors-fresh page")
            batch_vllm.set(error_ratio=0.0)  # a short fault on `batch`; `chat` stays down
            fresh_page_s = time.time() - onset
            # `batch`: the ticket fired with the page and the page inhibits it
            assert fresh_page[0]["labels"]["pool"] == "batch"
            wait_until(lambda: [a for a in am.alerts(slo="errors-fresh", severity="ticket")
                                if a["status"]["state"] == "suppressed"], 3, what="ticket suppressed")
            budget = 1 - parse_ratio(OBJECTIVE)
            expected_s = budget * 3600 * 14.4 / 1.0  # b x W x factor / e
            page = wait_until(lambda: am.alerts(slo="errors", severity="page"), expected_s + 15, what="errors page")
            page_s = time.time() - onset
            chat_vllm.set(error_ratio=0.0)

            # 5.18 s of 100% errors burn 2% of a 99.99% budget in the 1h window; the page cannot come
            # earlier than one scrape before that, and arrives within a couple of scrapes after
            assert expected_s - 1.1 <= page_s <= expected_s + 3.0, (page_s, expected_s)
            assert page[0]["labels"] == {"alertname": "SloErrorBudgetBurn", "slo": "errors", "pool": "chat",
                                         "severity": "page", "burnrate_tier": "fast"}
            assert page[0]["annotations"]["runbook_url"] == "https://runbooks.example/llm/errors"
            assert "Firing: 1h/5m" in page[0]["annotations"]["description"]
            assert page[0]["status"]["state"] == "active"
            api = slos(base)["errors"]
            assert api["alert"] == "page" and api["fired"][0] == "1h/5m"
            assert api["burn_rates"]["1h"] > 14.4 and api["burn_rates"]["5m"] > 14.4
            exposition = httpx.get(f"{base}/metrics", timeout=5).text
            assert 'slo_monitor_slo_alert{model_name="",pool="chat",severity="page",slo="errors"} 1.0' in exposition
            assert 'slo_monitor_slo_burn_rate{model_name="",pool="chat",slo="errors",window="1h"}' in exposition
            assert "slo_monitor_alertmanager_up 1.0" in exposition

            # `batch`: the fault is over: the page resolves (endsAt sent, Alertmanager drops it) ...
            wait_until(lambda: am.alerts(slo="errors-fresh", severity="page") == [], 30, what="page resolved")
            resolved_s = time.time() - onset
            assert slos(base)["errors-fresh"]["alert"] == "ticket"
            # ... and the ticket, still burning on the slow pairs, is no longer suppressed
            ticket = wait_until(lambda: [a for a in am.alerts(slo="errors-fresh", severity="ticket",
                                                              alertname="SloErrorBudgetBurn")
                                         if a["status"]["state"] == "active"], 5, what="ticket active")
            assert ticket[0]["labels"]["burnrate_tier"] == "slow"
            print(f"\nfault -> page in Alertmanager: errors ({OBJECTIVE}, 3d history) {page_s:.2f} s "
                  f"(expected {expected_s:.2f} s + pipeline); errors-fresh (95%, no history) {fresh_page_s:.2f} s; "
                  f"errors-fresh page resolved {resolved_s:.2f} s after onset")
        finally:
            output = stop(proc)
    assert "SLO history: reloaded" in output
    assert "alert firing: SLO errors (pool chat)" in output


def test_budget_and_windows_survive_a_restart(tmp_path):
    vllm = FaultableVllm(seed=3)
    vllm.set(error_ratio=0.05)
    with PageServer(vllm) as server:
        db = tmp_path / "monitor.db"
        config = tmp_path / "config.yaml"
        config.write_text(f"""
storage: {{url: "sqlite:///{db}"}}
scrape: {{interval: 500ms, timeout: 400ms}}
pools: [{{name: llama, targets: [{server.url}]}}]
slos:
  - {{name: errors, indicator: {{type: error_ratio}}, objective: 99%}}
  - {{name: up, indicator: {{type: availability}}, objective: 99.9%}}
""")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = serve(config, port)
        try:
            wait_until(lambda: slos(base)["errors"]["total"] >= 2 * RPS, 20, what="events")
            vllm.set(paused=True)  # from here on nothing changes, so before and after must be equal
            time.sleep(1.2)
            before = slos(base)
        finally:
            stop(proc)
        proc = serve(config, port)
        try:
            after = wait_until(lambda: slos(base), 20, what="the restarted service")
            time.sleep(1.2)  # a couple of cycles more: the first scrape after a start is a baseline only
            later = slos(base)
        finally:
            output = stop(proc)
    errors_before, errors_after = before["errors"], after["errors"]
    assert errors_before["total"] >= 2 * RPS and errors_before["error_budget_remaining"] < 1.0
    for field in ("good", "total", "sli", "error_budget_remaining"):
        assert errors_after[field] == pytest.approx(errors_before[field], rel=1e-9), field
        assert later["errors"][field] == pytest.approx(errors_before[field], rel=1e-9), field
    assert errors_after["burn_rate_events"]["1h"] == pytest.approx(errors_before["burn_rate_events"]["1h"], rel=1e-9)
    assert errors_after["burn_rates"]["1h"] == pytest.approx(errors_before["burn_rates"]["1h"], rel=1e-9)
    # availability kept its scrape intervals and goes on counting after the restart
    assert after["up"]["total"] >= before["up"]["total"] > 0
    assert later["up"]["total"] > after["up"]["total"]
    assert "SLO history: reloaded" in output
