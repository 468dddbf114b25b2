"""`generate` follows discovery: a pool found through file, http or DNS discovery is scraped by the
generated prometheus.yml with the same discovery and the same `job="vllm"` and `pool` labels the
rules select; what cannot be mirrored (another Prometheus's targets, credentials, custom headers,
globs Prometheus refuses, our own nameservers) is a printed warning, not silence."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest
import yaml

from monitor.cli import main
from monitor.config import Config, validate
from monitor.generate import Options, render_all
from monitor.generate.configs import prometheus_config
from monitor.generate.layout import OPERATOR, PLAIN
from monitor.generate.layout import warnings as generate_warnings
from monitor.generate.scrape_discovery import SECRETS_DIR, warnings
from tests.helpers.ci import require
from tests.helpers.prom_server import Prometheus
from tests.helpers.vllm_pages import PageServer
from tests.helpers.waiting import wait_until

SLOS = [{"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99.9%"}]
PAGE = b'# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name="m"} 1\n'


def config(*pools: dict[str, Any], **extra: Any) -> Config:
    return validate({"pools": list(pools), "slos": SLOS, **extra}).config


def scrape_jobs(cfg: Config, working_dir: str | None = None) -> dict[str, dict[str, Any]]:
    return {j["job_name"]: j for j in prometheus_config(cfg, ["*.rules.yml"], working_dir=working_dir)["scrape_configs"]}


def vllm_jobs(cfg: Config, working_dir: str | None = None) -> list[dict[str, Any]]:
    return [j for j in scrape_jobs(cfg, working_dir).values() if j["job_name"].startswith("vllm")]


def relabelled(job: dict[str, Any]) -> dict[str, str]:
    """The fixed labels a job's relabelling sets on every target."""
    return {r["target_label"]: r["replacement"] for r in job.get("relabel_configs", [])}


def promtool() -> str:
    path = shutil.which("promtool") or "/usr/bin/promtool"
    require(Path(path).exists(), "promtool is not installed (Debian package prometheus)")
    return path


def test_a_discovery_only_pool_gets_a_vllm_job_with_its_pool_label() -> None:
    cfg = config({"name": "chat", "discovery": [{"type": "file", "files": ["/etc/sd/*.json"], "refresh": "1m"}]})
    [job] = vllm_jobs(cfg)
    assert job["file_sd_configs"] == [{"files": ["/etc/sd/*.json"], "refresh_interval": "1m"}]
    # what every rule selects: job="vllm" and the pool, whatever labels the file's groups carry
    assert relabelled(job) == {"pool": "chat", "job": "vllm"}
    assert "static_configs" not in job
    assert warnings(cfg) == []


def test_a_mixed_pool_is_scraped_from_its_targets_and_its_discovery() -> None:
    cfg = config({"name": "chat", "targets": ["http://10.0.0.1:8000"],
                  "discovery": [{"type": "http", "url": "http://inventory:8080/sd"}]})
    jobs = scrape_jobs(cfg)
    assert jobs["vllm"]["static_configs"] == [{"targets": ["10.0.0.1:8000"], "labels": {"pool": "chat"}}]
    [discovered] = [j for j in jobs.values() if "http_sd_configs" in j]
    assert discovered["http_sd_configs"] == [{"url": "http://inventory:8080/sd", "refresh_interval": "1m"}]
    assert relabelled(discovered) == {"pool": "chat", "job": "vllm"}
    assert discovered["scrape_timeout"] == jobs["vllm"]["scrape_timeout"]


def test_each_pool_keeps_its_own_pool_label_and_job_names_never_clash() -> None:
    cfg = config({"name": "a", "discovery": [{"type": "file", "files": ["/sd/a.json"]},
                                             {"type": "http", "url": "https://inv/a", "scheme": "https"}]},
                 {"name": "a-https", "discovery": [{"type": "file", "files": ["/sd/b.json"]}]})
    jobs = vllm_jobs(cfg)
    assert len({j["job_name"] for j in jobs}) == len(jobs) == 3
    assert sorted(relabelled(j)["pool"] for j in jobs) == ["a", "a", "a-https"]


def test_dns_discovery_is_mirrored_with_its_record_type_port_and_scheme() -> None:
    cfg = config({"name": "chat", "discovery": [
        {"type": "dns", "names": ["vllm.llm.svc.cluster.local"], "record": "A", "port": 8000, "refresh": "10s"},
        {"type": "dns", "names": ["_http._tcp.vllm.llm.svc.cluster.local"], "scheme": "https"}]})
    jobs = {j.get("scheme", "http"): j for j in vllm_jobs(cfg)}
    assert jobs["http"]["dns_sd_configs"] == [
        {"names": ["vllm.llm.svc.cluster.local"], "type": "A", "port": 8000, "refresh_interval": "10s"}]
    assert jobs["https"]["dns_sd_configs"] == [
        {"names": ["_http._tcp.vllm.llm.svc.cluster.local"], "type": "SRV", "refresh_interval": "30s"}]
    assert all(relabelled(j)["pool"] == "chat" for j in jobs.values())


def test_the_metrics_path_of_the_config_is_the_jobs_default() -> None:
    """A group's `__metrics_path__` and `__scheme__` labels override it per target, in Prometheus as in
    slo-monitor; without them both use `scrape.metrics_path`."""
    cfg = config({"name": "chat", "discovery": [{"type": "file", "files": ["/sd/*.json"]}]},
                 scrape={"metrics_path": "/vllm/metrics"})
    [job] = vllm_jobs(cfg)
    assert job["metrics_path"] == "/vllm/metrics"


def test_http_credentials_are_read_from_files_and_never_written() -> None:
    cfg = config({"name": "chat", "discovery": [
        {"type": "http", "url": "http://inventory/sd", "bearer_token": "s3cret-token"},
        {"type": "http", "url": "http://sd-user:pa55word@inventory/other"}]})
    text = render_all(cfg)["alerts/prometheus.yml"]
    assert "s3cret-token" not in text and "pa55word" not in text
    [job] = vllm_jobs(cfg)
    token, basic = job["http_sd_configs"]
    assert token["authorization"] == {"type": "Bearer", "credentials_file": f"{SECRETS_DIR}/slo-monitor-chat-discovery-0.token"}
    assert basic["url"] == "http://inventory/other"
    assert basic["basic_auth"] == {"username": "sd-user",
                                   "password_file": f"{SECRETS_DIR}/slo-monitor-chat-discovery-1.password"}
    said = warnings(cfg)
    assert any("slo-monitor-chat-discovery-0.token" in w and "write the token there" in w for w in said)
    assert any("slo-monitor-chat-discovery-1.password" in w for w in said)
    assert not any("pa55word" in w or "s3cret" in w for w in said)


def test_custom_headers_and_nameservers_cannot_be_mirrored_and_are_said() -> None:
    cfg = config({"name": "chat", "discovery": [
        {"type": "http", "url": "http://inventory/sd", "headers": {"X-Scope-OrgID": "tenant-1"}},
        {"type": "dns", "names": ["vllm.llm.svc"], "record": "A", "port": 8000}]},
        discovery={"nameservers": ["10.96.0.10:53"]})
    said = warnings(cfg)
    assert any("X-Scope-OrgID" in w and "http_headers" in w for w in said)
    assert any("10.96.0.10:53" in w and "resolver" in w for w in said)
    assert "tenant-1" not in render_all(cfg)["alerts/prometheus.yml"]


def test_a_prometheus_source_is_a_warning_that_says_what_to_do() -> None:
    cfg = config({"name": "chat", "discovery": [
        {"type": "prometheus", "url": "http://admin:hunter2@prometheus:9090", "selector": 'job="vllm"'}]})
    assert vllm_jobs(cfg) == []
    [said] = warnings(cfg)
    assert "pool chat" in said and "http://***@prometheus:9090" in said and "hunter2" not in said
    assert 'job="vllm"' in said and 'pool="chat"' in said


def test_a_relative_file_glob_is_anchored_at_the_working_directory_and_said(tmp_path: Path) -> None:
    """slo-monitor reads a relative glob from its working directory, Prometheus from its config's."""
    cfg = config({"name": "chat", "discovery": [{"type": "file", "files": ["targets/*.json"]}]})
    [job] = vllm_jobs(cfg, str(tmp_path))
    assert job["file_sd_configs"][0]["files"] == [str(tmp_path / "targets" / "*.json")]
    assert any("'targets/*.json' is relative" in w for w in warnings(cfg, str(tmp_path)))
    # not knowing the working directory, it stays as written, and that is said too
    [job] = vllm_jobs(cfg)
    assert job["file_sd_configs"][0]["files"] == ["targets/*.json"]
    assert any("is relative" in w and "absolute path" in w for w in warnings(cfg))


def test_a_glob_prometheus_refuses_is_left_out_and_said() -> None:
    cfg = config({"name": "chat", "discovery": [{"type": "file", "files": ["/sd/*/targets.json", "/sd/ok/*.yml"]}]})
    [job] = vllm_jobs(cfg)
    assert job["file_sd_configs"][0]["files"] == ["/sd/ok/*.yml"]
    assert any("'/sd/*/targets.json'" in w and "wildcard outside the file name" in w for w in warnings(cfg))


def test_a_config_without_discovery_writes_no_discovery_job_and_no_warning() -> None:
    cfg = config({"name": "chat", "targets": ["http://10.0.0.1:8000"]})
    assert [j["job_name"] for j in vllm_jobs(cfg)] == ["vllm"]
    assert warnings(cfg) == []


def test_only_the_plain_format_warns_the_operator_pod_monitor_selects_discovered_pools_too() -> None:
    """The PodMonitor selects pods by their pool label, however slo-monitor finds them: a
    discovery-only pool is in its selector like any other."""
    cfg = config({"name": "static", "targets": ["http://10.0.0.1:8000"]},
                 {"name": "found", "discovery": [{"type": "prometheus", "url": "http://prom:9090",
                                                  "selector": 'job="vllm"'}]})
    operator = Options(formats=(OPERATOR,))
    pod_monitor = yaml.safe_load(render_all(cfg, operator)["prometheus-operator/podmonitor.yaml"])
    assert pod_monitor["spec"]["selector"]["matchExpressions"][0]["values"] == ["found", "static"]
    assert generate_warnings(cfg, operator) == []
    assert len(generate_warnings(cfg, Options(formats=(PLAIN,)))) == 1


def test_generate_prints_what_it_cannot_mirror_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"pools": [{"name": "chat", "discovery": [
        {"type": "prometheus", "url": "http://prom:9090", "selector": 'job="vllm"'}]}], "slos": SLOS}))
    assert main(["generate", "--config", str(path), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning: pool chat: discovery[0] reads the active targets of the Prometheus at http://prom:9090" in err


@pytest.mark.e2e
def test_promtool_accepts_the_mirrored_discovery(tmp_path: Path) -> None:
    cfg = config(
        {"name": "files", "discovery": [{"type": "file", "files": ["targets/*.json", "/sd/x.yml"], "refresh": "1m"}]},
        {"name": "mixed", "targets": ["http://10.0.0.1:8000"], "discovery": [
            {"type": "http", "url": "https://u:p@inventory:8443/sd", "scheme": "https"},
            {"type": "http", "url": "http://inventory/sd", "bearer_token": "t"},
            {"type": "dns", "names": ["vllm.llm.svc"], "record": "AAAA", "port": 8000},
            {"type": "dns", "names": ["_http._tcp.vllm.llm.svc"]}]},
        scrape={"metrics_path": "/m"})
    folder = tmp_path / "alerts"
    folder.mkdir()
    (folder / "prometheus.yml").write_text(
        render_all(cfg, Options(working_dir=str(tmp_path)))["alerts/prometheus.yml"])
    result = subprocess.run([promtool(), "check", "config", "prometheus.yml"], cwd=folder, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


class SdServer:
    """A loopback http_sd endpoint answering `groups` as Prometheus expects (200, application/json)."""

    def __init__(self, groups: list[dict[str, Any]]) -> None:
        body = json.dumps(groups).encode()

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/sd"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pages() -> Iterator[list[PageServer]]:
    """Four fake vLLM servers; the third answers only on /custom/metrics (a group's __metrics_path__)."""
    def page(path: str) -> tuple[int, bytes]:
        return (200, PAGE) if path == "/metrics" else (404, b"not here")

    def custom(path: str) -> tuple[int, bytes]:
        return (200, PAGE) if path == "/custom/metrics" else (404, b"not here")

    servers = [PageServer(page), PageServer(page), PageServer(custom), PageServer(page)]
    for s in servers:
        s.__enter__()
    try:
        yield servers
    finally:
        for s in servers:
            s.__exit__(None, None, None)


@pytest.mark.e2e
def test_real_prometheus_scrapes_discovered_pools_with_their_pool_label(tmp_path: Path,
                                                                        pages: list[PageServer]) -> None:
    """The generated prometheus.yml in Debian's Prometheus: a file_sd pool (relative glob, one group
    with its own __metrics_path__, a group claiming another pool) and a pool with a static target and
    an http_sd source; every target is up under job="vllm" and its own pool."""
    static, in_file, custom_path, over_http = (p.url.removeprefix("http://") for p in pages)
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "fleet.json").write_text(json.dumps([
        {"targets": [in_file], "labels": {"pool": "not-this-one", "job": "nor-this"}},
        {"targets": [custom_path], "labels": {"__metrics_path__": "/custom/metrics"}}]))
    with SdServer([{"targets": [over_http]}]) as sd:
        cfg = config({"name": "files", "discovery": [{"type": "file", "files": ["targets/*.json"]}]},
                     {"name": "mixed", "targets": [f"http://{static}"], "discovery": [{"type": "http", "url": sd.url}]})
        text = render_all(cfg, Options(scrape_interval="1s", working_dir=str(tmp_path)))["alerts/prometheus.yml"]
        with Prometheus(tmp_path, config=text) as prom:
            expected = {("files", in_file), ("files", custom_path), ("mixed", static), ("mixed", over_http)}

            def all_up() -> set[tuple[str, str]] | None:
                up = {(s["metric"]["pool"], s["metric"]["instance"]) for s in prom.query('up{job="vllm"} == 1')}
                return up if up == expected else None

            wait_until(all_up, 30, poll_s=0.25, what=f"up == 1 for {sorted(expected)}")
            # nothing is scraped under another job or pool than the rules select (the slo-monitor job's
            # first scrape, of a service not running here, may come a little after the vLLM targets')
            jobs = {("vllm", "files"), ("vllm", "mixed"), ("slo-monitor", None)}
            seen = wait_until(lambda: (got := {(s["metric"]["job"], s["metric"].get("pool"))
                                               for s in prom.query("up")}) >= jobs and got, 30, poll_s=0.25,
                              what="every job's first scrape")
            assert seen == jobs, seen
