"""Alertmanager and NGINX failures are retried and reported, and never hold up evaluation.

* `serve` with an Alertmanager URL (with basic-auth credentials in it) where nothing listens yet: the
  page fires, every POST fails, /metrics says so (`slo_monitor_alertmanager_up 0`, errors and
  consecutive failures counting), the log names each failure with its backoff (1 s, 2 s, 4 s, ...)
  and never the password; a real Alertmanager started on that port then receives the page, and
  the series recover.
* An Alertmanager that answers a byte at a time is given up on after `alertmanager.timeout` (httpx's
  timeout bounds each read, not the exchange).
* The service's NGINX step with a real `nginx -t` / `nginx -s reload` while NGINX is not running: the
  reload fails, `slo_monitor_nginx_last_apply_ok` is 0 and the log says why, once per attempt (not
  every scrape cycle); the same render is retried after the writer's retry interval, and once NGINX
  runs the retry succeeds and NGINX routes through the file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import threading
import time
import urllib.request

import httpx
import pytest
from prometheus_client import generate_latest

from monitor.config import validate
from monitor.publish.alertmanager import AlertmanagerNotifier, _Alert
from monitor.publish.metrics import make_registry
from monitor.service import Service

from tests.helpers.am_server import Alertmanager, require_alertmanager
from tests.helpers.ci import require
from tests.helpers.nginx_server import NGINX, RoutingNginx
from tests.helpers.ports import free_port
from tests.helpers.serve_proc import serve, stop
from tests.helpers.vllm_pages import ClockedVllm, FaultableVllm, PageServer
from tests.helpers.waiting import wait_until

AM_PASSWORD = "am-s3cret-Pa55"


def metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


@pytest.mark.e2e
def test_alertmanager_down_is_retried_with_backoff_reported_and_delivered_once_up(tmp_path):
    require_alertmanager()
    vllm = FaultableVllm(seed=7)
    vllm.set(error_ratio=1.0)  # every request an error: the 95% SLO pages within seconds
    am_port = free_port()
    with PageServer(vllm) as server:
        config = tmp_path / "c.yaml"
        config.write_text(f"""
storage: {{url: "sqlite:///{tmp_path}/m.db"}}
scrape: {{interval: 500ms, timeout: 400ms}}
pools: [{{name: chat, targets: [{server.url}]}}]
slos: [{{name: errors, indicator: {{type: error_ratio}}, objective: 95%}}]
alertmanager: {{url: "http://alert-user:{AM_PASSWORD}@127.0.0.1:{am_port}", resend_interval: 8s, timeout: 1s}}
""")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = serve(config, port)
        try:
            def metrics() -> str:
                return httpx.get(f"{base}/metrics", timeout=5).text

            failing = wait_until(lambda: (m := metrics()) and (metric(m, "slo_monitor_alertmanager_errors_total") or 0) >= 3
                                 and m, 20, what="three failed POSTs")
            assert metric(failing, "slo_monitor_alertmanager_up") == 0
            assert metric(failing, "slo_monitor_alertmanager_consecutive_failures") >= 3
            assert metric(failing, "slo_monitor_alertmanager_alerts_firing") >= 1
            assert metric(failing, "slo_monitor_alertmanager_posts_total") == 0
            # backoff, not a POST per cycle: 1 + 2 + 4 s to the fourth attempt while cycles run every 0.5 s
            started = time.monotonic()
            errors_then = metric(failing, "slo_monitor_alertmanager_errors_total")
            time.sleep(3.0)
            assert metric(metrics(), "slo_monitor_alertmanager_errors_total") - errors_then <= 2
            assert httpx.get(f"{base}/healthz", timeout=5).json()["cycles"] > 0  # evaluation went on

            with Alertmanager(tmp_path, port=am_port) as am:
                page = wait_until(lambda: am.alerts(slo="errors", severity="page"), 20,
                                  what="the page delivered once Alertmanager is up")
                delivered_s = time.monotonic() - started
                assert page[0]["labels"]["pool"] == "chat"
                recovered = wait_until(lambda: (m := metrics()) and metric(m, "slo_monitor_alertmanager_up") == 1 and m,
                                       10, what="alertmanager_up back to 1")
                assert metric(recovered, "slo_monitor_alertmanager_consecutive_failures") == 0
                assert metric(recovered, "slo_monitor_alertmanager_posts_total") >= 1
                assert metric(recovered, "slo_monitor_alertmanager_last_success_timestamp_seconds") > 0
        finally:
            output = stop(proc)
    print(f"\nAlertmanager down: {int(errors_then)} failed POSTs reported; delivered {delivered_s:.1f} s after "
          "the backoff check began (retry interval capped at resend_interval 8 s)")
    failures = re.findall(r"alertmanager (\S+): POST of \d+ alerts failed \((\d+) in a row\), retrying in (\S+)s", output)
    assert [(n, wait) for _, n, wait in failures[:3]] == [("1", "1"), ("2", "2"), ("3", "4")], output[-3000:]
    assert {url for url, _, _ in failures} == {f"http://***@127.0.0.1:{am_port}/api/v2/alerts"}
    assert AM_PASSWORD not in output and "alert-user" not in output
    assert "alert firing: SLO errors (pool chat)" in output


async def test_a_trickling_alertmanager_costs_at_most_the_timeout():
    """Answers at once, then one byte of body every 100 ms, for ever: each read is quick, so only a
    deadline on the whole exchange stops it. Before that deadline existed, the delivery task (and
    with it every later alert) hung here for good."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop_event = threading.Event()

    def serve_forever() -> None:
        while not stop_event.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    def trickle(conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n")
            while not stop_event.is_set():
                conn.sendall(b"1\r\nx\r\n")
                time.sleep(0.1)
        except OSError:
            pass
        finally:
            conn.close()

    threading.Thread(target=serve_forever, daemon=True).start()
    notifier = AlertmanagerNotifier(f"http://127.0.0.1:{listener.getsockname()[1]}", resend_interval=5, timeout=0.5)
    try:
        now = time.time()
        notifier._alerts[(("alertname", "x"),)] = _Alert({"alertname": "x"}, {}, now)
        started = time.perf_counter()
        assert await asyncio.wait_for(notifier.send(now), timeout=5) is False
        took = time.perf_counter() - started
        assert took < 1.5, took
        assert "Timeout" in notifier.stats.last_error and notifier.stats.consecutive_failures == 1
        assert notifier._next_attempt_at == now + 1  # and it is retried with backoff
    finally:
        stop_event.set()
        listener.close()
        await notifier.aclose()


@pytest.mark.e2e
async def test_nginx_reload_failure_is_reported_retried_and_recovers(tmp_path, caplog):
    require(os.path.exists(NGINX), f"nginx binary not found at {NGINX} (apt-get install nginx-light)")
    vllm = [ClockedVllm(rps=10, ttft=(0.05, 0.2), kv=0.3, waiting=0, seed=i) for i in range(2)]
    upstream_file = tmp_path / "conf.d" / "llm-upstreams.conf"
    nginx = RoutingNginx(tmp_path, upstream_file)
    attempts = tmp_path / "reloads"
    with PageServer(vllm[0]) as a, PageServer(vllm[1]) as b:
        config = validate({
            "pools": [{"name": "p", "targets": [a.url, b.url]}],
            "scrape": {"interval": "1s", "timeout": "500ms"},
            # the real commands; each reload attempt also leaves a line in `attempts`
            "nginx": {"upstream_file": str(upstream_file), "check": nginx.command("-t", "-q"),
                      "reload": f"echo x >> {attempts} && " + nginx.command("-s", "reload")},
        }).config
        service = Service(config)
        assert service.nginx is not None
        service.nginx.retry_after_s = 1.0  # the default is 60 s; the behaviour is the same
        registry = make_registry(service)
        caplog.set_level(logging.INFO, logger="monitor.service")
        await service.start()
        try:
            async def cycles(n: int, pause: float = 0.2) -> None:
                for _ in range(n):
                    await service.scrape_cycle()
                    if service.upstreams.task is not None:
                        await service.upstreams.task
                    await asyncio.sleep(pause)

            # NGINX is not running: `nginx -t` passes, `nginx -s reload` fails (no master to signal)
            await cycles(8)  # about 1.6 s of cycles
            result = service.nginx.last_result  # an attempt, or a cycle waiting for the retry
            assert result is not None and not result.ok
            assert upstream_file.exists() and "upstream p {" in upstream_file.read_text()  # checked, in place
            assert "slo_monitor_nginx_last_apply_ok 0.0" in generate_latest(registry).decode()
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                        and r.getMessage().startswith("nginx upstreams:")]
            tries = attempts.read_text().count("x")
            assert 2 <= tries <= 3, tries  # first try + one retry per second, not one per cycle
            assert len(warnings) == tries, warnings  # one warning per attempt, naming the error
            assert "reload failed" in warnings[0] and "nginx.pid" in warnings[0]
            assert warnings[0].startswith("nginx upstreams: wrote 1 pool, 0 servers down, validated, but failed after ")

            nginx.start()
            try:
                await cycles(8)
                result = service.nginx.last_result
                assert result.ok and "slo_monitor_nginx_last_apply_ok 1.0" in generate_latest(registry).decode()
                assert service.nginx.last_applied == upstream_file.read_text()
                assert any(r.levelno == logging.INFO and "validated, reloaded in" in r.getMessage() for r in caplog.records)
                with urllib.request.urlopen(f"http://127.0.0.1:{nginx.port}/metrics", timeout=5) as response:
                    assert response.status == 200 and b"vllm:" in response.read()  # routed by the file
            finally:
                nginx.stop()
        finally:
            await service.stop()
    print(f"\nNGINX reload failing: {tries} attempts in 8 cycles (retry every 1 s), {len(warnings)} warnings")
