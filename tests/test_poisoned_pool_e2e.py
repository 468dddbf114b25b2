"""One pool with every poisoned member of issue 19 beside healthy ones, against the same healthy
servers without them: the healthy members are judged, paged on and routed exactly as without them.

Two `slo-monitor serve` processes scrape the same three healthy vLLM-shaped servers. The control
knows only those three. The poisoned one also has, in the same pool:

* a page whose success counter, TTFT histogram (count, sum and a bucket) are NaN and whose KV-cache
  gauge is +Inf;
* a page in OpenMetrics 1.0 (counters declared without `_total`, `_created`, an exemplar, `# EOF`);
* a page with a series written twice;
* from a file_sd file: a target whose `__metrics_path__` is not ASCII (`/metrics€`), and a "host"
  that would write a server block into NGINX's config;
* from a Prometheus API answer (`type: prometheus`): a `scrapeUrl` that would do the same.

The poisoned members serve frozen pages (no requests finish on them), so the pool's error-ratio
SLO has the same events with and without them. One healthy server then fails every request: both
services must page the same SLO, judge the three healthy members alike and route NGINX the same
way for them, while the poisoned ones are named, counted and never reach JSON or the upstream file.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.exposition import ALLOWUTF8
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from tests.helpers.ports import free_port
from tests.helpers.serve_proc import serve, stop
from tests.helpers.vllm_pages import FakeVllmV1, FaultableVllm, PageServer
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.e2e

HOSTILE = "a;}server{listen 127.0.0.1:1;root /;}x"


def nan_page() -> bytes:
    """A V1 page whose judged series are not finite (the shapes issue 19 names)."""
    fake = FakeVllmV1(seed=21)
    fake.finish(20)
    text = fake.render()
    text = re.sub(r'^(vllm:request_success_total\{[^}]*finished_reason="stop"[^}]*\}) \S+$', r"\1 NaN", text,
                  flags=re.M)
    text = re.sub(r"^(vllm:time_to_first_token_seconds_(?:count|sum)\{[^}]*\}) \S+$", r"\1 NaN", text, flags=re.M)
    text = re.sub(r'^(vllm:time_to_first_token_seconds_bucket\{[^}]*le="0.25"[^}]*\}) \S+$', r"\1 NaN", text,
                  flags=re.M)
    text = re.sub(r"^(vllm:kv_cache_usage_perc\{[^}]*\}) \S+$", r"\1 +Inf", text, flags=re.M)
    assert text.count("NaN") >= 4 and "+Inf\n" in text
    return text.encode()


def openmetrics_page() -> bytes:
    """The same kind of page as vLLM's newer frontend answers it: OpenMetrics 1.0, with an exemplar."""
    fake = FakeVllmV1(seed=22)
    fake.finish(20)
    # allow-utf-8 keeps `vllm:` in sample names, as vLLM's frontend writes them (prometheus_client's
    # default escaping would print `vllm_...` samples under `vllm:` TYPE lines)
    text = openmetrics_latest(fake.registry, escaping=ALLOWUTF8).decode()
    assert text.endswith("# EOF\n") and "# TYPE vllm:prompt_tokens counter" in text
    bucket = re.search(r'^vllm:time_to_first_token_seconds_bucket\{[^}]*le="0.25"[^}]*\} \S+$', text, re.M)
    assert bucket is not None
    exemplar = bucket.group(0) + ' # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.087 1795342661.5'
    return text.replace(bucket.group(0), exemplar).encode()


def duplicated_page() -> bytes:
    fake = FakeVllmV1(seed=23)
    fake.finish(20)
    text = fake.render()
    line = re.search(r"^vllm:num_requests_running\{[^}]*\} \S+$", text, re.M)
    assert line is not None
    return text.replace(line.group(0), line.group(0) + "\n" + line.group(0)).encode()


def frozen(body: bytes):
    def answer(path: str) -> tuple[int, bytes]:
        return (200, b"") if path == "/health" else (200, body)
    return answer


def prometheus_answer(targets: list[tuple[str, str]]) -> bytes:
    """A Prometheus /api/v1/targets answer listing `(scrapeUrl, job)` pairs."""
    active = [{"discoveredLabels": {"__address__": url}, "labels": {"job": job, "instance": url},
               "scrapePool": job, "scrapeUrl": url, "health": "up"} for url, job in targets]
    return json.dumps({"status": "success", "data": {"activeTargets": active, "droppedTargets": []}}).encode()


def strict_json(response: httpx.Response) -> Any:
    """The body as JSON, failing on NaN or Infinity (which Python's json would otherwise accept)."""
    assert response.status_code == 200, (response.status_code, response.text[:500])

    def refuse(constant: str) -> None:
        raise AssertionError(f"{response.request.url}: non-finite {constant} in JSON")

    return json.loads(response.text, parse_constant=refuse)


def config_text(root: Path, port: int, targets: list[str], discovery: str = "") -> str:
    return f"""
storage: {{url: "sqlite:///{root}/monitor.db"}}
scrape: {{interval: 1s, timeout: 800ms}}
evaluation: {{window: 10s}}
pools:
  - name: chat
    targets: [{", ".join(targets)}]
{discovery}
slos:
  - {{name: errors, indicator: {{type: error_ratio}}, objective: 99.99%, pools: [chat]}}
  - {{name: ttft, indicator: {{type: latency, metric: ttft, threshold: 2s}}, objective: 99%, pools: [chat]}}
  - {{name: kv, indicator: {{type: saturation, metric: kv_cache_usage, threshold: 0.9}}, objective: 99%, pools: [chat]}}
api: {{listen: "127.0.0.1:{port}"}}
nginx: {{upstream_file: {root}/upstreams.conf}}
"""


def instances(base: str) -> dict[str, dict[str, Any]]:
    return {i["instance"]: i for i in strict_json(httpx.get(f"{base}/api/v1/instances", timeout=5))}


def errors_slo(base: str) -> dict[str, Any]:
    return next(s for s in strict_json(httpx.get(f"{base}/api/v1/slos", timeout=5))
                if s["name"] == "errors" and s.get("pool", "chat") == "chat")


def server_lines(conf: str, addresses: list[str]) -> list[str]:
    return sorted(line.strip() for line in conf.splitlines()
                  if line.strip().startswith("server ") and any(a in line for a in addresses))


def test_poisoned_members_leave_the_healthy_ones_judged_paged_and_routed_as_without_them(tmp_path: Path) -> None:
    healthy = [FaultableVllm(seed=s) for s in (31, 32, 33)]
    prometheus_api: dict[str, bytes] = {}
    with PageServer(healthy[0]) as h1, PageServer(healthy[1]) as h2, PageServer(healthy[2]) as h3, \
            PageServer(frozen(nan_page())) as nan, PageServer(frozen(openmetrics_page())) as om, \
            PageServer(frozen(duplicated_page())) as dup, PageServer(frozen(nan_page())) as odd_path, \
            PageServer(lambda path: (200, prometheus_api["answer"])) as prom:
        good = [h1.url, h2.url, h3.url]
        good_addresses = [u.removeprefix("http://") for u in good]
        prometheus_api["answer"] = prometheus_answer([(f"http://{HOSTILE}:80/metrics", "vllm"),
                                                      (f"http://{HOSTILE}:{om.port}/metrics", "vllm")])
        control_root, poisoned_root = tmp_path / "control", tmp_path / "poisoned"
        control_root.mkdir(), poisoned_root.mkdir()
        (poisoned_root / "sd.json").write_text(json.dumps([
            {"targets": [f"127.0.0.1:{odd_path.port}"], "labels": {"__metrics_path__": "/metrics€"}},
            {"targets": [f"{HOSTILE}:80", "exa mple.com:80", "127.0.0.1:99999"]},
        ], ensure_ascii=False))
        discovery = f"""    discovery:
      - {{type: file, files: ["{poisoned_root}/sd.json"]}}
      - {{type: prometheus, url: "{prom.url}", selector: 'job="vllm"', refresh: 1s}}"""
        control_port, poisoned_port = free_port(), free_port()
        control_cfg, poisoned_cfg = control_root / "c.yaml", poisoned_root / "c.yaml"
        control_cfg.write_text(config_text(control_root, control_port, good))
        poisoned_cfg.write_text(config_text(poisoned_root, poisoned_port, good + [nan.url, om.url, dup.url],
                                            discovery))
        control, poisoned = f"http://127.0.0.1:{control_port}", f"http://127.0.0.1:{poisoned_port}"
        procs = [serve(control_cfg, control_port), serve(poisoned_cfg, poisoned_port)]
        try:
            for base in (control, poisoned):
                wait_until(lambda b=base: all(instances(b)[a]["state"] == "healthy" for a in good_addresses), 60,
                           what=f"{base}: the three healthy members judged healthy", procs=())
            before = {base: errors_slo(base) for base in (control, poisoned)}
            assert before[control]["alert"] == before[poisoned]["alert"] == "none", before

            # the poisoned members: named, contained, never in JSON or the upstream file
            seen = instances(poisoned)
            nan_address, om_address = nan.url.removeprefix("http://"), om.url.removeprefix("http://")
            assert seen[om_address]["state"] != "unknown", seen[om_address]  # OpenMetrics is read
            assert not (seen[om_address].get("scrape") or {}).get("error"), seen[om_address]
            nan_words = json.dumps(seen[nan_address]).lower()
            assert "nan" in nan_words or "inf" in nan_words, seen[nan_address]
            assert not any(HOSTILE in a or "exa mple" in a for a in seen)
            conf = httpx.get(f"{poisoned}/upstreams/chat/nginx.conf", timeout=5).text
            on_disk = (poisoned_root / "upstreams.conf").read_text()
            for text in (conf, on_disk):
                assert "listen" not in text and "root /" not in text and ";}" not in text, text
            metrics = httpx.get(f"{poisoned}/metrics", timeout=5).text
            bad = [float(v) for v in re.findall(r"^slo_monitor_bad_samples_total(?:\{[^}]*\})? (\S+)$", metrics, re.M)]
            assert bad and sum(bad) > 0, "slo_monitor_bad_samples_total counts the NaN and +Inf samples"
            rejected = re.findall(r"^slo_monitor_discovery_rejected_targets_total\{([^}]*)\} (\S+)$", metrics, re.M)
            assert rejected and {labels.count('pool="chat"') for labels, _ in rejected} == {1}, rejected
            for path in ("/api/v1/slos", "/api/v1/pools/chat/scaling", "/api/v1/decisions?limit=50"):
                strict_json(httpx.get(poisoned + path, timeout=5))

            # one healthy server fails every request: both page, judge and route alike
            healthy[2].set(error_ratio=1.0)
            for base in (control, poisoned):
                wait_until(lambda b=base: errors_slo(b)["alert"] == "page", 60,
                           what=f"{base}: the errors SLO paging", procs=())

            def judged_alike() -> bool:
                a, b = instances(control), instances(poisoned)
                return all(a[x]["state"] == b[x]["state"] for x in good_addresses)

            wait_until(judged_alike, 30, what="the healthy members judged alike by both services")
            a_conf = httpx.get(f"{control}/upstreams/chat/nginx.conf", timeout=5).text
            b_conf = httpx.get(f"{poisoned}/upstreams/chat/nginx.conf", timeout=5).text
            wait_until(lambda: server_lines(httpx.get(f"{control}/upstreams/chat/nginx.conf", timeout=5).text,
                                            good_addresses)
                       == server_lines(httpx.get(f"{poisoned}/upstreams/chat/nginx.conf", timeout=5).text,
                                       good_addresses),
                       30, what=f"the same NGINX servers for the healthy members:\n{a_conf}\n---\n{b_conf}")
            after = {base: errors_slo(base) for base in (control, poisoned)}
            for figures in after.values():
                assert all(math.isfinite(v) for v in figures["burn_rates"].values()), figures
            assert after[control]["fired"][:1] == after[poisoned]["fired"][:1], after
            for address in good_addresses:
                check = httpx.get(f"{poisoned}/upstreams/chat/{address}", timeout=5)
                assert check.status_code in (200, 503), check.text
        finally:
            outputs = [stop(p) for p in procs]
    assert "Traceback" not in outputs[1], outputs[1][-3000:]
