"""Three `slo-monitor serve` replicas on one PostgreSQL schema with `ha` on, a real Alertmanager
delivering to a webhook the test records, and two vLLM-shaped servers (one failing every request).

Exactly one replica leads: only it writes its NGINX file and POSTs to Alertmanager; the others
evaluate the same data and answer the API. The leader is then SIGKILLed (a crash, nothing
released): another replica must take over once the lease has run out and no sooner, re-send the
page so that Alertmanager keeps one alert and the pager gets one notification in all, and write
the NGINX file. Finally the new leader stops cleanly (SIGTERM releases the lease) and the last
replica takes over within about one renew interval.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.helpers.am_server import Alertmanager
from tests.helpers.ports import free_port
from tests.helpers.vllm_pages import ClockedVllm, PageServer
from tests.helpers.waiting import wait_until

LEASE_S = 3.0
RENEW_S = 0.5  # = scrape.interval (the default renew interval is min(scrape.interval, lease / 3))


class FailingVllm(ClockedVllm):
    """Every request it finishes is an error (a broken deployment), from the start."""

    def __call__(self, path: str) -> tuple[int, bytes]:
        if path == "/health":
            return 200, b""
        with self.lock:
            due = int((time.monotonic() - self.started) * self.rps)
            if due > self.done:
                self.fake.finish(due - self.done, ttft=self.ttft, output_tokens=2, reason="error")
                self.done = due
            return 200, self.fake.render().encode()


class Webhook:
    """Alertmanager's webhook receiver: every notification body, in arrival order (the pager)."""

    def __init__(self) -> None:
        self.notifications: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.notifications.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def pages(self) -> list[dict]:
        return [n for n in self.notifications if n.get("groupLabels", {}).get("severity") == "page"]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def am_config(hook_url: str) -> str:
    return f"""
route:
  receiver: pager
  group_by: [alertname, slo, pool, severity]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: pager
    webhook_configs: [{{url: "{hook_url}", send_resolved: true}}]
inhibit_rules:
  - source_matchers: ['burnrate_tier="fast"']
    target_matchers: ['burnrate_tier="slow"']
    equal: [slo, pool, model_name]
"""


class Replica:
    def __init__(self, name: str, workdir: Path, pg_url: str, targets: list[str], am_url: str) -> None:
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.upstreams = self.dir / "upstreams.conf"
        self.config = self.dir / "config.yaml"
        self.config.write_text(f"""
storage: {{url: "{pg_url}"}}
scrape: {{interval: {RENEW_S}s, timeout: 400ms}}
evaluation: {{window: 5s}}
pools:
  - name: chat
    targets: [{", ".join(targets)}]
    health: {{min_requests: 1}}
slos:
  - name: errors
    indicator: {{type: error_ratio}}
    objective: 99%
alertmanager: {{url: "{am_url}", resend_interval: 2s, timeout: 1s}}
nginx: {{upstream_file: "{self.upstreams}"}}
ha: {{enabled: true, lease: {LEASE_S}s, replica_id: {name}}}
""")
        self.log = open(self.dir / "serve.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([sys.executable, "-m", "monitor", "serve", "--config", str(self.config),
                                      "--listen", f"127.0.0.1:{self.port}"], stdout=self.log,
                                     stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def healthz(self) -> dict | None:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=1).json()
        except httpx.TransportError:
            return None

    def metric(self, name: str) -> float | None:
        for line in httpx.get(f"{self.base}/metrics", timeout=2).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def output(self) -> str:
        self.log.flush()
        return (self.dir / "serve.log").read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def leaders(replicas: list[Replica]) -> list[Replica]:
    return [r for r in replicas if (h := r.healthz()) is not None and h["leader"]]


@pytest.mark.e2e
def test_one_leader_acts_a_killed_leader_is_replaced_within_the_lease_and_nothing_pages_twice(tmp_path, pg_url):
    hook = Webhook()
    good, bad = ClockedVllm(rps=20, ttft=(0.05, 0.2), kv=0.3, waiting=0, seed=1), FailingVllm(
        rps=20, ttft=(0.05, 0.2), kv=0.3, waiting=0, seed=2)
    replicas: list[Replica] = []
    try:
        with Alertmanager(tmp_path, config=am_config(hook.url)) as am, PageServer(good) as a, PageServer(bad) as b:
            bad_instance = f"127.0.0.1:{b.port}"
            # started together: migrations and the first pool insert are serialised in the database
            replicas = [Replica(f"r{i}", tmp_path, pg_url, [a.url, b.url], am.url) for i in (1, 2, 3)]
            wait_until(lambda: all(r.healthz() for r in replicas), 30, what="three replicas answering")
            first = wait_until(lambda: len(found := leaders(replicas)) == 1 and found[0], 10, what="one leader")
            followers = [r for r in replicas if r is not first]
            assert all(r.healthz()["leader_id"] == first.name for r in replicas)

            wait_until(lambda: am.alerts(slo="errors", severity="page"), 20, what="the page in Alertmanager")
            wait_until(lambda: hook.pages(), 10, what="the page notification")
            wait_until(lambda: first.upstreams.exists()
                       and f"server {bad_instance} down;" in first.upstreams.read_text(),
                       10, what="the leader's NGINX file ejecting the failing instance")
            assert first.metric("slo_monitor_leader") == 1.0
            assert first.metric("slo_monitor_alertmanager_posts_total") > 0
            for r in followers:
                assert r.metric("slo_monitor_leader") == 0.0
                assert r.metric("slo_monitor_alertmanager_posts_total") == 0.0  # evaluates, never pages
                # ... though it knows the alert: from its own evaluation, which may run a cycle after the leader's
                wait_until(lambda r=r: r.metric("slo_monitor_alertmanager_alerts_firing") >= 1.0, 10,
                           what=f"{r.name} knowing the alert")
                assert not r.upstreams.exists()
                # followers still decide and answer: the failing instance is ejected in their API too
                check = httpx.get(f"{r.base}/upstreams/chat/{bad_instance}", timeout=2)
                assert check.status_code == 503, check.text

            # a crash: SIGKILL, nothing released; the lease has to run out
            first.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            first.proc.wait()
            second = wait_until(lambda: len(found := leaders(followers)) == 1 and found[0], LEASE_S + 5, poll_s=0.05,
                                what="a follower taking over")
            takeover_s = time.monotonic() - killed_at
            print(f"\ntakeover after SIGKILL of the leader: {takeover_s:.2f}s (lease {LEASE_S:g}s, renew {RENEW_S:g}s)")
            # not before the lease could have run out (the last renewal was at most one interval
            # before the kill), and within the lease plus one renew interval (plus polling slack)
            assert LEASE_S - RENEW_S - 0.3 <= takeover_s <= LEASE_S + RENEW_S + 1.0, takeover_s
            third = next(r for r in followers if r is not second)
            wait_until(lambda: second.metric("slo_monitor_alertmanager_posts_total") > 0, 5,
                       what="the new leader re-sending the alerts")
            wait_until(lambda: second.upstreams.exists() and f"server {bad_instance} down;" in
                       second.upstreams.read_text(), 5, what="the new leader's NGINX file")
            assert second.metric("slo_monitor_leader") == 1.0 and second.metric("slo_monitor_leader_term") == 2.0
            assert third.metric("slo_monitor_leader") == 0.0
            assert third.metric("slo_monitor_alertmanager_posts_total") == 0.0
            assert "leader: replica r" in second.output() and "leader: replica" not in third.output()

            time.sleep(2.0)  # two group_intervals: a second page, or a resolve, would have arrived
            page = am.alerts(slo="errors", severity="page")
            assert len(page) == 1, page  # one alert, its startsAt the earliest of the two leaders'
            pages = hook.pages()
            assert [n["status"] for n in pages] == ["firing"], pages  # paged once, never resolved in between
            assert len(pages[0]["alerts"]) == 1

            # a clean stop hands over at once: SIGTERM releases the lease
            second.proc.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            assert second.proc.wait(timeout=20) == 0
            wait_until(lambda: third.healthz()["leader"], 5, poll_s=0.05, what="the last replica taking over")
            handover_s = time.monotonic() - stopped_at
            print(f"hand-over after SIGTERM of the leader: {handover_s:.2f}s")
            assert handover_s < LEASE_S, handover_s
            assert "leader lease released by r" in second.output()
            assert len(hook.pages()) == 1
    finally:
        for r in replicas:
            r.close()
        hook.close()


@pytest.mark.parametrize("ha, ok", [({"lease": "15s"}, True), ({"lease": "3s", "renew_interval": "2s"}, False)])
def test_lease_must_outlast_two_renewals(ha, ok):
    from monitor.config import ConfigError, validate

    data = {"scrape": {"interval": "5s", "timeout": "1s"}, "ha": {"enabled": True, **ha},
            "pools": [{"name": "p", "targets": ["http://127.0.0.1:8000"]}]}
    if ok:
        assert validate(data).config.ha.renew_every(5.0) == 5.0
    else:
        with pytest.raises(ConfigError, match="ha.lease: must be at least two renew intervals"):
            validate(data)
