"""The generated rules and dashboards on a real Prometheus, scraping a simulated vLLM fleet and slo-monitor.

One stack for the module (it is the slow part): `slo-monitor simulate` (2 instances, V1 metrics, one
failing every request), `slo-monitor load` against it, `slo-monitor serve` watching it, a static
dcgm-exporter page, and Debian's Prometheus with 1 s scrapes and 1 s rule evaluation loading the
generated rule files and the generated scrape config. Every recording and alerting rule must
evaluate without error and record data, every dashboard query must run, and every panel that
should have data on a live fleet must return at least one series.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest


from monitor.config import load
from monitor.generate import Options, dashboards, generate, rules
from monitor.generate import configs as gen_configs

from tests.helpers.ci import require
from tests.helpers.ports import free_port
from tests.helpers.vllm_pages import PageServer

pytestmark = pytest.mark.e2e  # every test here runs a real Prometheus stack

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
DEADLINE_S = 45.0

DCGM_PAGE = """\
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-1",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-1",DCGM_FI_DRIVER_VERSION="550.54.15"} 87
# HELP DCGM_FI_DEV_FB_FREE Framebuffer memory free (in MiB).
# TYPE DCGM_FI_DEV_FB_FREE gauge
DCGM_FI_DEV_FB_FREE{gpu="0",UUID="GPU-1",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-1",DCGM_FI_DRIVER_VERSION="550.54.15"} 4096
# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-1",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-1",DCGM_FI_DRIVER_VERSION="550.54.15"} 77000
# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).
# TYPE DCGM_FI_DEV_GPU_TEMP gauge
DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-1",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-1",DCGM_FI_DRIVER_VERSION="550.54.15"} 64
# HELP DCGM_FI_DEV_MEMORY_TEMP Memory temperature (in C).
# TYPE DCGM_FI_DEV_MEMORY_TEMP gauge
DCGM_FI_DEV_MEMORY_TEMP{gpu="0",UUID="GPU-1",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-1",DCGM_FI_DRIVER_VERSION="550.54.15"} 71
# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).
# TYPE DCGM_FI_DEV_POWER_USAGE gauge
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-1",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-1",DCGM_FI_DRIVER_VERSION="550.54.15"} 512.250000
# HELP DCGM_FI_DEV_XID_ERRORS Value of the last XID error encountered.
# TYPE DCGM_FI_DEV_XID_ERRORS gauge
DCGM_FI_DEV_XID_ERRORS{gpu="0",UUID="GPU-1",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-1",DCGM_FI_DRIVER_VERSION="550.54.15",err_code="0",err_msg="No Error"} 0
# HELP DCGM_FI_PROF_PIPE_TENSOR_ACTIVE Ratio of cycles the tensor (HMMA) pipe is active.
# TYPE DCGM_FI_PROF_PIPE_TENSOR_ACTIVE gauge
DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{gpu="0",UUID="GPU-1",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-1",DCGM_FI_DRIVER_VERSION="550.54.15"} 0.42
"""

# Grafana's variables as a dashboard opened on `All` sends them
SUBSTITUTIONS = {"$__rate_interval": "15s", "$pool": ".*", "$model_name": ".*", "$instance": ".*", "$slo": ".*"}


def substitute(expr: str) -> str:
    for name, value in SUBSTITUTIONS.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


class Proc:
    """A child process whose output is kept (for the failure message) and which is stopped by its pid."""

    def __init__(self, args: list[str], **kwargs: Any) -> None:
        self.args = args
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kwargs)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines[-40:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", "monitor", *args]


def _wait(what: str, check, timeout: float, procs: list[Proc] = ()) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for p in procs:
            if p.proc.poll() is not None:
                raise AssertionError(f"{' '.join(p.args[:4])} exited with {p.proc.returncode}:\n{p.output()}")
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Stack:
    def __init__(self, root: Path, prom_url: str, service_url: str, generated: Path, config_path: Path) -> None:
        self.root, self.prom_url, self.service_url = root, prom_url, service_url
        self.generated, self.config_path = generated, config_path
        self.client = httpx.Client(timeout=10)

    def query(self, expr: str) -> dict[str, Any]:
        return self.client.get(f"{self.prom_url}/api/v1/query", params={"query": expr}).json()

    def series(self, expr: str) -> list[dict[str, Any]]:
        body = self.query(expr)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def rules(self) -> list[dict[str, Any]]:
        body = self.client.get(f"{self.prom_url}/api/v1/rules").json()
        return [r for g in body["data"]["groups"] for r in g["rules"]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require(Path(PROMETHEUS).exists() and Path(PROMTOOL).exists(),
            "Debian's prometheus package (/usr/bin/prometheus, /usr/bin/promtool) is not installed")
    root = tmp_path_factory.mktemp("live")
    procs: list[Proc] = []
    try:
        sim = Proc(_python("simulate", "--instances", "2", "--base-port", "0", "--status-every", "0"))
        procs.append(sim)
        urls = _wait("the simulator's URLs",
                     lambda: (lambda found: found if len(found) == 2 else None)(
                         [m.group(0) for line in list(sim.lines) for m in [re.search(r"http://[\d.]+:\d+", line)] if m]),
                     20, [sim])
        # one instance fails every request from the start: the errors SLO burns at ~500x
        httpx.post(urls[0] + "/sim/faults", json={"error_rate": 1.0}, timeout=5).raise_for_status()
        with PageServer(lambda path: (200, DCGM_PAGE.encode())) as dcgm:
            service_port, prom_port = free_port(), free_port()
            config_path = root / "config.yaml"
            config_path.write_text(f"""
storage: {{url: "sqlite:///{root}/monitor.db"}}
scrape: {{interval: 1s, timeout: 800ms}}
evaluation: {{window: 10s}}
pools:
  - name: llama
    targets: [{urls[0]}, {urls[1]}]
slos:
  - {{name: ttft-500ms, indicator: {{type: latency, metric: ttft, threshold: 500ms}}, objective: 99%}}
  - {{name: tpot-60ms, indicator: {{type: latency, metric: tpot, threshold: 60ms}}, objective: 99%}}
  - {{name: queue-1s, indicator: {{type: latency, metric: queue, threshold: 1s}}, objective: 99%}}
  - {{name: errors, indicator: {{type: error_ratio}}, objective: 99.9%, min_bad_events: 1}}
  - {{name: kv-cache, indicator: {{type: saturation, metric: kv_cache_usage, threshold: 0.9}}, objective: 99%}}
  - {{name: availability, indicator: {{type: availability}}, objective: 99.5%}}
api: {{listen: "127.0.0.1:{service_port}"}}
gpu: {{exporters: [{dcgm.url}]}}
""")
            config = load(config_path).config
            generated = root / "out"
            generate(config, generated, Options(rule_interval_s=1.0, scrape_interval="1s"))
            rule_files = sorted(str(p) for p in (generated / "alerts").glob("*.rules.yml"))
            prom_config = root / "prometheus.yml"
            from monitor.generate import to_yaml

            prom_config.write_text(to_yaml(gen_configs.prometheus_config(
                config, rule_files, scrape_interval="1s", evaluation_interval="1s")))
            checked = subprocess.run([PROMTOOL, "check", "config", str(prom_config)], capture_output=True, text=True)
            assert checked.returncode == 0, checked.stdout + checked.stderr

            service = Proc(_python("serve", "--config", str(config_path)), cwd=root)
            procs.append(service)
            load_gen = Proc(_python("load", "--targets", *urls, "--rate", "20", "--duration", "120",
                                    "--output-tokens", "8", "--prompt-tokens", "64", "--quiet"))
            procs.append(load_gen)
            prom = Proc([PROMETHEUS, f"--config.file={prom_config}", f"--storage.tsdb.path={root / 'tsdb'}",
                         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"])
            procs.append(prom)
            prom_url = f"http://127.0.0.1:{prom_port}"
            service_url = f"http://127.0.0.1:{service_port}"
            _wait("slo-monitor /healthz", lambda: httpx.get(service_url + "/healthz", timeout=1).status_code == 200,
                  20, [service])
            _wait("Prometheus ready", lambda: httpx.get(prom_url + "/-/ready", timeout=1).status_code == 200,
                  20, [prom])
            yield Stack(root, prom_url, service_url, generated, config_path)
    finally:
        for p in reversed(procs):
            p.stop()


def _recorded(stack: Stack) -> dict[str, set[str]]:
    """record name -> SLOs that have at least one series of it."""
    out: dict[str, set[str]] = {}
    for series in stack.series('{__name__=~"slo:.+"}'):
        out.setdefault(series["metric"]["__name__"], set()).add(series["metric"].get("slo", ""))
    return out


def test_every_rule_evaluates_and_records_data(stack: Stack) -> None:
    expected: dict[str, set[str]] = {}
    config = load(stack.config_path).config
    for slo in config.slos:
        built = rules.slo_rules([p.name for p in config.pools], slo, 1.0)
        for rule in built.groups[0]["rules"]:
            if "record" in rule:
                expected.setdefault(rule["record"], set()).add(slo.name)

    def all_recorded() -> bool:
        got = _recorded(stack)
        return all(slos <= got.get(name, set()) for name, slos in expected.items())

    def all_evaluated() -> bool:
        return all(r["health"] != "unknown" for r in stack.rules())

    _wait("every rule evaluated once", all_evaluated, DEADLINE_S)
    try:
        _wait("every recording rule to record data for every SLO", all_recorded, DEADLINE_S)
    except AssertionError:
        got = _recorded(stack)
        missing = {name: sorted(slos - got.get(name, set())) for name, slos in expected.items()
                   if slos - got.get(name, set())}
        raise AssertionError(f"recording rules without data: {missing}") from None
    broken = [(r["name"], r.get("lastError")) for r in stack.rules() if r["health"] != "ok"]
    assert not broken, broken
    assert len(stack.rules()) >= len(expected)
    # the `le` matchers select real buckets: a matcher that selected nothing would count every
    # request bad (Sloth's and Pyrra's silent failure); the simulator's queue times are milliseconds
    ratio = {s["metric"]["slo"]: float(s["value"][1]) for s in stack.series("slo:sli_error:ratio_rate5m")}
    assert ratio["queue-1s"] < 0.5, ratio
    assert ratio["tpot-60ms"] < 1.0 and ratio["ttft-500ms"] < 1.0, ratio
    assert ratio["kv-cache"] == 0.0 and ratio["availability"] == 0.0, ratio


def test_generated_page_fires_on_prometheus_and_agrees_with_the_service(stack: Stack) -> None:
    """Instance 0 fails every request: the errors SLO's page alert fires in Prometheus, the
    service pages too, and both measure about the same 5-minute error ratio (~50%)."""
    alerts = _wait("the generated page alert", lambda: stack.series(
        'ALERTS{alertname="SloErrorBudgetBurn", slo="errors", severity="page", alertstate="firing"}'), DEADLINE_S)
    assert alerts[0]["metric"]["burnrate_tier"] == "fast" and alerts[0]["metric"]["pool"] == "llama"
    service = _wait("the service's page", lambda: [s for s in stack.series(
        'slo_monitor_slo_alert{slo="errors", severity="page"} == 1')], DEADLINE_S)
    assert service[0]["metric"]["pool"] == "llama"
    ratio = float(stack.series('slo:sli_error:ratio_rate5m{slo="errors"}')[0]["value"][1])
    service_burn = float(stack.series('slo_monitor_slo_burn_rate{slo="errors", window="5m"}')[0]["value"][1])
    assert 0.3 < ratio < 0.7, ratio
    assert 0.3 < service_burn * 0.001 < 0.7, service_burn
    # the other SLOs are healthy: no page for them from the rules
    assert not stack.series('ALERTS{alertname="SloErrorBudgetBurn", slo="kv-cache"}')


def _dashboard_files(stack: Stack) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((stack.generated / "dashboards").glob("*.json"))]


def test_every_dashboard_query_runs_and_panels_have_data(stack: Stack) -> None:
    config = load(stack.config_path).config
    specs = {s.uid: s for s in dashboards.dashboard_specs()}
    # wait for what the slowest panels need: the service's SLO evaluation and quantiles, rule output
    _wait("the service's SLO series", lambda: stack.series("slo_monitor_slo_burn_rate"), DEADLINE_S)
    _wait("the recorded SLO window", lambda: stack.series("slo:period_sli:ratio"), DEADLINE_S)
    _wait("TTFT quantiles on the service", lambda: stack.series(
        'slo_monitor_instance_ttft_seconds{quantile="0.99"}'), DEADLINE_S)
    _wait("GPU series", lambda: stack.series("DCGM_FI_DEV_GPU_UTIL"), DEADLINE_S)
    # the GPU-by-instance panels read slo-monitor's own GPU series: held to data once it serves them
    service_gpus = bool(stack.series('{__name__=~"slo_monitor_gpu_.+"}'))
    errors: list[str] = []
    empty: list[str] = []
    checked = 0
    for board in _dashboard_files(stack):
        expect = {p.title: p.expect_data or (service_gpus and p.title.endswith("by instance"))
                  for p in specs[board["uid"]].panels()}
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            got_data = False
            for target in panel["targets"]:
                body = stack.query(substitute(target["expr"]))
                checked += 1
                if body.get("status") != "success":
                    errors.append(f"{board['title']} / {panel['title']} [{target['refId']}]: {body.get('error')}")
                elif body["data"]["result"]:
                    got_data = True
            if expect[panel["title"]] and not got_data:
                empty.append(f"{board['title']} / {panel['title']}")
        for var in board["templating"]["list"]:
            if var["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"])
            assert match, var["query"]
            values = stack.client.get(f"{stack.prom_url}/api/v1/label/{match.group(2)}/values",
                                      params={"match[]": substitute(match.group(1))}).json()
            if values.get("status") != "success":
                errors.append(f"{board['title']} variable {var['name']}: {values.get('error')}")
            elif not values["data"]:
                empty.append(f"{board['title']} variable {var['name']} ({var['query']})")
    assert not errors, "\n".join(errors)
    assert not empty, "panels or variables without data:\n" + "\n".join(empty)
    assert checked >= 40
    # the panel that may be empty in normal times has data now: the errors page fires
    burn_alerts = [t["expr"] for b in _dashboard_files(stack) for p in b["panels"] if p["title"] == "Burn-rate alerts firing"
                   for t in p["targets"]]
    assert stack.series(substitute(burn_alerts[0]))
