"""Reloads under load lose nothing: `slo-monitor serve` scrapes six vLLM-shaped servers every second
(each page takes 300 ms, so a reload often lands while a cycle is in flight) while its config is reloaded about twice a second for 20 s, by `POST /-/reload` and SIGHUP in turn,
each reload changing an SLO threshold, a health setting and the scrape timeout (which replaces the
scraper while a cycle may be in flight).

Then the servers stop finishing requests, the service stops (final flush), and the database is
counted against what the servers served, as tests/test_fault_postgres.py does: per instance, one
scrape in `scrape_outcomes` per /metrics page served and none failed, every minute present, the
requests in `instance_rollups` equal to the counter's increase from the first page the monitor saw
to the last, and the error-ratio SLO's events equal to the same total.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.helpers.fleet import Backend, ServeProcess
from tests.helpers.ports import free_port

pytestmark = pytest.mark.e2e

RELOADING_S = 20.0  # at least this long, and at least RELOADS reloads
RELOADS = 30


def write_config(path: Path, db: str, urls: list[str], k: int) -> None:
    """Variant k of the config: thresholds and the scrape timeout alternate."""
    path.write_text(f"""
storage: {{url: "{db}"}}
scrape: {{interval: 1s, timeout: {500 + 100 * (k % 2)}ms}}
evaluation: {{window: 5s}}
pools:
  - name: chat
    targets: [{", ".join(urls)}]
    health: {{min_requests: {1 + k % 2}, ttft_p99_degraded: {400 + 10 * (k % 3)}ms}}
slos:
  - {{name: ttft, indicator: {{type: latency, metric: ttft, threshold: {("500ms", "250ms")[k % 2]}}}, objective: 99%}}
  - {{name: errors, indicator: {{type: error_ratio}}, objective: 99%}}
  - {{name: up, indicator: {{type: availability}}, objective: 99.9%}}
""")


def test_reloads_under_load_lose_no_scrape_and_no_stored_row(tmp_path):
    backends = [Backend(f"b{i}", seed=i, rps=20, delay_s=0.3).start() for i in range(6)]
    urls = [b.url for b in backends]
    db = f"sqlite:///{tmp_path}/monitor.db"
    config = tmp_path / "monitor.yaml"
    write_config(config, db, urls, 0)
    serve = ServeProcess(config, free_port(), tmp_path / "serve.log")
    reloads = {"post": 0, "sighup": 0}
    try:
        serve.wait_ready()
        serve.wait(lambda: serve.slos()["errors"]["total"] >= 100, 30, "SLO events")
        k = 0
        end = time.monotonic() + RELOADING_S
        # a reload waits for the running cycle (reloads apply between cycles): on a busy machine 20 s
        # may hold fewer than RELOADS of them, so the loop goes on until both are reached
        while time.monotonic() < end or sum(reloads.values()) < RELOADS:
            k += 1
            write_config(config, db, urls, k)
            if k % 2:
                answer = serve.post("/-/reload")
                assert answer.status_code == 200, answer.text
                reloads["post"] += 1
            else:
                serve.sighup()
                reloads["sighup"] += 1
                serve.wait(lambda: serve.log_count("config reloaded from") >= k, 10, f"reload {k} applied")
            time.sleep(0.5)
        for b in backends:
            b.freeze()
        serve.wait_cycles(3)  # the last pages, with the final counters, are scraped
        final = serve.slos()
    finally:
        output = serve.stop()
        for b in backends:
            b.stop()

    engine = create_engine(db)
    with engine.connect() as conn:
        rollups = dict(conn.execute(text(
            "select i.address, sum(r.requests) from instance_rollups r join instances i on i.id = r.instance_id "
            "group by i.address")).all())
        scrapes = {address: (total, failed) for address, total, failed in conn.execute(text(
            "select i.address, sum(o.scrapes), sum(o.failures) from scrape_outcomes o "
            "join instances i on i.id = o.instance_id group by i.address")).all()}
        minutes = {b.address: [m for (m,) in conn.execute(text(
            "select o.minute from scrape_outcomes o join instances i on i.id = o.instance_id "
            "where i.address = :a order by o.minute"), {"a": b.address})] for b in backends}
        errors = conn.execute(text(
            "select sum(good), sum(total) from slo_events where slo = 'errors' and model_name = ''")).one()
    engine.dispose()

    assert output.count("config reloaded from") == sum(reloads.values()) >= RELOADS, reloads
    assert "refused" not in output and "Traceback" not in output
    requests = 0
    for b in backends:
        served = b.counts[-1] - b.counts[0]  # the first page is the baseline
        requests += served
        assert rollups[b.address] == served, (b.address, rollups[b.address], served)
        total, failed = scrapes[b.address]
        assert failed == 0, (b.address, failed)
        assert 0 <= len(b.counts) - total <= 1, (b.address, len(b.counts), total)  # one page may be served after the last flush
        stamps = [datetime.fromisoformat(str(m)).timestamp() for m in minutes[b.address]]
        assert stamps and stamps == [stamps[0] + 60 * n for n in range(len(stamps))], stamps  # every minute
    assert tuple(errors) == (requests, requests), (errors, requests)
    assert final["errors"]["total"] == requests
