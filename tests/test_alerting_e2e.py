"""Complete alerting end to end, on both evaluation paths at once: `slo-monitor serve` pushing to one
real Alertmanager, and a real Prometheus running the generated rules (`slo-monitor generate`,
1 s rule interval) pushing to another, over the same fleet:

* pool `kv`: one simulator instance (`slo-monitor simulate`) behind a proxy that can rename a metric;
  SLO `kv-cache` (saturation, absent_for 10s). The simulator switching to V0's names live is no
  absence (both paths read every spelling); a metric renamed to a name no vLLM release used fires
  SLOMetricAbsent on both paths within absent_for + one evaluation (+ one scrape for the last sample);
* pool `chat`: SLO `errors-10m` (99% over a 10-minute window): a 100% outage spends the budget and
  ErrorBudgetExhausted fires on both paths;
* pool `batch`: SLOs `errors-maint` and `errors-control` (99.99%) over the same server; a maintenance
  window posted for `errors-maint` covers an outage that pages `errors-control` on both paths and
  no one for `errors-maint`, whose budget stays untouched (service and recording rules alike);
* pool `cost`: two servers at 3600 per GPU-hour with a daily budget of 20: 80% is spent after about
  8 s and 100% after 10 s; CostBudgetWarning and CostBudgetExceeded arrive in both Alertmanagers.

The measured detection times are printed (`pytest -s`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from monitor.config import load
from monitor.generate import Options, generate, to_yaml
from monitor.generate import configs as gen_configs

from tests.helpers.am_server import Alertmanager, require_alertmanager
from tests.helpers.ports import free_port
from tests.helpers.prom_server import Prometheus, require_prometheus
from tests.helpers.times import parse_rfc3339
from tests.helpers.vllm_pages import FaultableVllm, PageServer
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.e2e

ABSENT_FOR = 10.0
SCRAPE_S = 1.0  # the service's and Prometheus's scrape interval, and the rule interval
RENAMED = b"vllm:kv_cache_utilization"  # a name no vLLM release used


class RenamingProxy:
    """Passes the simulator's pages through; once `renamed`, its KV-cache gauge (either spelling)
    goes under a name the readers do not know, as an upgrade that renames a metric would do."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.renamed = False

    def __call__(self, path: str) -> tuple[int, bytes]:
        answer = httpx.get(self.upstream + path, timeout=2)
        body = answer.content
        if self.renamed:
            body = body.replace(b"vllm:kv_cache_usage_perc", RENAMED).replace(b"vllm:gpu_cache_usage_perc", RENAMED)
        return answer.status_code, body


@dataclass
class Stack:
    service: str
    prom: Prometheus
    am_service: Alertmanager
    am_rules: Alertmanager
    sim: str
    proxy: RenamingProxy
    chat: FaultableVllm
    batch: FaultableVllm
    procs: list[subprocess.Popen]

    def check(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        self.prom.check()
        self.am_service.check()
        self.am_rules.check()

    def slo(self, name: str) -> dict[str, Any]:
        return next(s for s in httpx.get(f"{self.service}/api/v1/slos", timeout=2).json() if s["name"] == name)

    def both(self, what: str, deadline_s: float, **labels: str) -> dict[str, dict[str, Any]]:
        """The first alert matching `labels` in each Alertmanager: {"service": ..., "rules": ...}."""
        found: dict[str, dict[str, Any]] = {}

        def ready() -> bool:
            for name, am in (("service", self.am_service), ("rules", self.am_rules)):
                if name not in found:
                    alerts = am.alerts(**labels)
                    if alerts:
                        found[name] = alerts[0]
            return len(found) == 2

        wait_until(ready, deadline_s, what=f"{what} in both Alertmanagers (have {sorted(found)})", procs=[self])
        return found


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as sink:  # a file, never a pipe nobody reads
        return subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_prometheus()
    require_alertmanager()
    root = tmp_path_factory.mktemp("alerting")
    procs: list[subprocess.Popen] = []
    sim_log = root / "simulate.log"
    sim = _start([sys.executable, "-m", "monitor", "simulate", "--instances", "1", "--base-port", "0",
                  "--status-every", "0"], sim_log)
    procs.append(sim)
    try:
        sim_url = wait_until(lambda: (m := re.search(r"(http://127\.0\.0\.1:\d+)", sim_log.read_text())) and m.group(1),
                             30, what="the simulator's URL")
        wait_until(lambda: httpx.get(sim_url + "/health", timeout=1).status_code == 200, 30, what="simulator health")
        proxy = RenamingProxy(sim_url)
        chat, batch = FaultableVllm(seed=11), FaultableVllm(seed=12)
        cost_a, cost_b = FaultableVllm(seed=13), FaultableVllm(seed=14)
        with Alertmanager(root) as am_service, Alertmanager(root) as am_rules, PageServer(proxy) as kv, \
                PageServer(chat) as chat_server, PageServer(batch) as batch_server, PageServer(cost_a) as ca, \
                PageServer(cost_b) as cb:
            port = free_port()
            config_path = root / "config.yaml"
            config_path.write_text(f"""
storage: {{url: "sqlite:///{root}/monitor.db"}}
scrape: {{interval: 1s, timeout: 500ms}}
pools:
  - {{name: kv, targets: [{kv.url}]}}
  - {{name: chat, targets: [{chat_server.url}]}}
  - {{name: batch, targets: [{batch_server.url}]}}
  - {{name: cost, targets: [{ca.url}, {cb.url}], cost: {{gpu_hour: 3600, daily_budget: 20, currency: EUR}}}}
slos:
  - {{name: kv-cache, indicator: {{type: saturation, threshold: 0.9}}, objective: 99%, pools: [kv],
     absent_for: {ABSENT_FOR:g}s, labels: {{team: llm}}, annotations: {{runbook_url: "https://runbooks.example/kv"}}}}
  - {{name: errors-10m, indicator: {{type: error_ratio}}, objective: 99%, window: 10m, pools: [chat]}}
  - {{name: errors-maint, indicator: {{type: error_ratio}}, objective: 99.99%, pools: [batch]}}
  - {{name: errors-control, indicator: {{type: error_ratio}}, objective: 99.99%, pools: [batch]}}
api: {{listen: "127.0.0.1:{port}"}}
alertmanager: {{url: "{am_service.url}", resend_interval: 2s, timeout: 1s}}
""")
            config = load(config_path).config
            generate(config, root / "out", Options(rule_interval_s=SCRAPE_S, scrape_interval="1s"))
            rule_files = sorted(str(p) for p in (root / "out" / "alerts").glob("*.rules.yml"))
            prom_config = gen_configs.prometheus_config(config, rule_files, scrape_interval="1s",
                                                        evaluation_interval="1s")
            prom_config["alerting"] = {"alertmanagers": [{"static_configs": [
                {"targets": [am_rules.url.removeprefix("http://")]}]}]}
            service = _start([sys.executable, "-m", "monitor", "serve", "--config", str(config_path)],
                             root / "serve.log")
            procs.append(service)
            with Prometheus(root, config=to_yaml(prom_config)) as prom:
                built = Stack(f"http://127.0.0.1:{port}", prom, am_service, am_rules, sim_url, proxy, chat, batch,
                              procs)
                wait_until(lambda: len([r for r in prom.query("up == 1")]) == 6, 30,
                           what="Prometheus scraping the five vLLM targets and slo-monitor", procs=[built])
                wait_until(lambda: all(built.slo(n)["total"] > 0 for n in ("kv-cache", "errors-10m", "errors-maint")),
                           30, what="the service counting events", procs=[built])
                wait_until(lambda: prom.query('slo:valid_events:rate5m{slo="errors-maint"}'), 30,
                           what="the recording rules", procs=[built])
                yield built
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _delay(alert: dict[str, Any], since: float) -> float:
    return parse_rfc3339(alert["startsAt"]) - since


def test_cost_budget_warning_and_exceeded_arrive_from_both_paths(stack: Stack) -> None:
    warning = stack.both("CostBudgetWarning", 60, alertname="CostBudgetWarning", pool="cost")
    exceeded = stack.both("CostBudgetExceeded", 60, alertname="CostBudgetExceeded", pool="cost")
    for path in ("service", "rules"):
        assert warning[path]["labels"]["severity"] == "ticket" and exceeded[path]["labels"]["severity"] == "page"
        assert parse_rfc3339(warning[path]["startsAt"]) <= parse_rfc3339(exceeded[path]["startsAt"])
    # the same labels on both paths: one alert in an Alertmanager that both feed
    assert warning["service"]["labels"] == warning["rules"]["labels"] == \
        {"alertname": "CostBudgetWarning", "pool": "cost", "severity": "ticket"}
    metrics = httpx.get(f"{stack.service}/metrics", timeout=5).text
    spent = float(re.search(r'slo_monitor_pool_cost_today\{currency="EUR",pool="cost"\} (\S+)', metrics).group(1))
    assert spent >= 20.0 and 'slo_monitor_pool_cost_daily_budget{currency="EUR",pool="cost"} 20.0' in metrics
    for path in ("service", "rules"):
        gap = parse_rfc3339(exceeded[path]["startsAt"]) - parse_rfc3339(warning[path]["startsAt"])
        print(f"\ncost ({path}): exceeded {gap:.1f} s after the warning (2 s of spend at 2 per second expected)")


def test_a_renamed_metric_fires_slo_metric_absent_on_both_paths_and_a_v0_switch_does_not(stack: Stack) -> None:
    httpx.post(f"{stack.sim}/sim/control", json={"metrics_version": "v0"}, timeout=5).raise_for_status()
    switched = time.time()
    wait_until(lambda: stack.prom.query('vllm:gpu_cache_usage_perc{pool="kv"}'), 20,
               what="Prometheus reading V0's spelling", procs=[stack])
    while time.time() < switched + ABSENT_FOR + 4 * SCRAPE_S:
        assert not stack.am_service.alerts(alertname="SLOMetricAbsent")
        assert not stack.am_rules.alerts(alertname="SLOMetricAbsent")
        time.sleep(0.5)
    assert stack.slo("kv-cache")["metric_absent"] is False

    stack.proxy.renamed = True
    renamed = time.time()
    found = stack.both("SLOMetricAbsent", ABSENT_FOR + 30, alertname="SLOMetricAbsent", slo="kv-cache")
    stack.proxy.renamed = False
    for path, alert in found.items():
        assert alert["labels"] == {"alertname": "SLOMetricAbsent", "slo": "kv-cache", "pool": "kv",
                                   "severity": "page", "team": "llm"}, path
        assert alert["annotations"]["runbook_url"] == "https://runbooks.example/kv"
        # not before absent_for after the last sample under the old name (at most one scrape before
        # the rename), and within absent_for + one evaluation + that scrape (+1 s of process slack)
        delay = _delay(alert, renamed)
        assert ABSENT_FOR - SCRAPE_S - 0.5 <= delay <= ABSENT_FOR + 2 * SCRAPE_S + 1.0, (path, delay)
        print(f"\nSLOMetricAbsent ({path}): {delay:.1f} s after the rename (absent_for {ABSENT_FOR:g} s)")
    assert stack.slo("kv-cache")["metric_absent"] is True


def test_a_full_outage_exhausts_a_ten_minute_budget_on_both_paths(stack: Stack) -> None:
    assert stack.slo("errors-10m")["error_budget_exhausted"] is False
    stack.chat.set(error_ratio=1.0)
    onset = time.time()
    try:
        found = stack.both("ErrorBudgetExhausted", 90, alertname="ErrorBudgetExhausted", slo="errors-10m")
    finally:
        stack.chat.set(error_ratio=0.0)
    for path, alert in found.items():
        assert alert["labels"]["severity"] == "ticket" and alert["labels"]["pool"] == "chat"
        print(f"\nErrorBudgetExhausted ({path}): {_delay(alert, onset):.1f} s after the outage began")
    assert stack.slo("errors-10m")["error_budget_remaining"] <= 0
    [remaining] = stack.prom.query('slo:period_error_budget_remaining:ratio{slo="errors-10m"}')
    assert float(remaining["value"][1]) <= 0


def test_an_outage_inside_a_maintenance_window_pages_no_one_and_leaves_the_budget_untouched(stack: Stack) -> None:
    posted = httpx.post(f"{stack.service}/api/v1/exclusions", timeout=5,
                        json={"slo": "errors-maint", "pool": "batch", "duration": "10m", "reason": "e2e upgrade"})
    assert posted.status_code == 201, posted.text
    wait_until(lambda: stack.prom.query('slo:exclusion_active:max5m{slo="errors-maint"} == 1'), 20,
               what="Prometheus seeing the maintenance window", procs=[stack])
    assert stack.slo("errors-maint")["excluded"] is True

    seen: list[dict[str, Any]] = []

    def control_paged() -> bool:
        for am in (stack.am_service, stack.am_rules):
            seen.extend(am.alerts(slo="errors-maint"))
        return bool(stack.am_service.alerts(slo="errors-control", severity="page")
                    and stack.am_rules.alerts(slo="errors-control", severity="page"))

    stack.batch.set(error_ratio=1.0)
    try:
        wait_until(control_paged, 60, what="the control SLO's page on both paths", procs=[stack])
    finally:
        stack.batch.set(error_ratio=0.0)
    assert httpx.delete(f"{stack.service}/api/v1/exclusions/{posted.json()['id']}", timeout=5).json()["state"] == "ended"
    until = time.time() + 5
    while time.time() < until:
        control_paged()
        time.sleep(0.5)
    assert seen == [], [a["labels"] for a in seen]  # the excused SLO paged no one, on either path
    maint = stack.slo("errors-maint")
    assert maint["error_budget_remaining"] == 1.0 and maint["error_budget_exhausted"] is False
    assert maint["error_budget_remaining_without_exclusions"] < 0  # the outage, had it counted
    assert stack.slo("errors-control")["error_budget_remaining"] < 0
    [rules_budget] = stack.prom.query('slo:period_error_budget_remaining:ratio{slo="errors-maint"}')
    assert float(rules_budget["value"][1]) == 1.0
    [control_budget] = stack.prom.query('slo:period_error_budget_remaining:ratio{slo="errors-control"}')
    assert float(control_budget["value"][1]) < 0
