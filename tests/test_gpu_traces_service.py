"""GPU telemetry and OTLP traces through `slo-monitor serve`: a dcgm-exporter page scraped with the
fleet, mapped to an instance whose health it degrades; vLLM-shaped spans exported by the real
OpenTelemetry SDK to /v1/traces, and goodput per pool from them."""

from __future__ import annotations

import time

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.helpers.dcgm_pages import dcgm_page
from tests.helpers.otlp_spans import vllm_spans
from tests.helpers.ports import free_port
from tests.helpers.serve_proc import serve, stop
from tests.helpers.vllm_pages import ClockedVllm, PageServer
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.e2e  # every test here starts a process or a server on a real port


def test_gpus_and_traces_in_the_service(tmp_path):
    vllm_a = ClockedVllm(rps=10, ttft=(0.05, 0.2), kv=0.3, waiting=0, seed=1)
    vllm_b = ClockedVllm(rps=10, ttft=(0.05, 0.2), kv=0.3, waiting=0, seed=2)
    page = dcgm_page("Hostname", "gpu-node-a", fb_used=80000).encode()  # 80000 of 81559 MiB used
    with PageServer(vllm_a) as a, PageServer(vllm_b) as b, PageServer(lambda path: (200, page)) as dcgm:
        config = tmp_path / "c.yaml"
        config.write_text(f"""
storage: {{url: "sqlite:///{tmp_path}/m.db"}}
scrape: {{interval: 300ms, timeout: 250ms}}
pools:
  - name: llama
    targets: [{a.url}, {b.url}]
slos:
  - name: ttft-500ms
    indicator: {{type: latency, metric: ttft, threshold: 500ms}}
    objective: 99%
  - name: tpot-100ms
    indicator: {{type: latency, metric: tpot, threshold: 100ms}}
    objective: 99%
gpu:
  exporters: [{dcgm.url}]
  mappings:
    - {{instance: "127.0.0.1:{a.port}", host: gpu-node-a, gpus: [0]}}
""")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = serve(config, port)
        try:
            gpus = wait_until(lambda: httpx.get(f"{base}/api/v1/gpus").json()["gpus"], 15, what="GPU readings")
            gpu0 = next(g for g in gpus if g.get("index", g.get("gpu")) in (0, "0"))
            assert gpu0["instance"] == f"127.0.0.1:{a.port}" and gpu0["pool"] == "llama"

            def instance_a():
                rows = httpx.get(f"{base}/api/v1/instances").json()
                return next(r for r in rows if r["instance"] == f"127.0.0.1:{a.port}")

            row = wait_until(lambda: (r := instance_a())["state"] == "degraded" and r, 15, what="GPU reason")
            assert any("memory" in reason.lower() for reason in row["reasons"]), row["reasons"]
            assert "DCGM_FI_DEV_FB_USED" not in httpx.get(f"{base}/metrics").text  # re-exposed as slo_monitor_gpu_*

            now = time.time()
            requests = [  # 3 good; one slow first token; one slow decode (50 tokens in 10 s)
                {"id": "g1", "arrival": now - 3, "ttft": 0.2, "e2e": 1.2, "out": 21},
                {"id": "g2", "arrival": now - 3, "ttft": 0.3, "e2e": 2.3, "out": 41},
                {"id": "g3", "arrival": now - 2, "ttft": 0.1, "e2e": 0.6, "out": 11},
                {"id": "slow-ttft", "arrival": now - 2, "ttft": 0.9, "e2e": 1.9, "out": 11},
                {"id": "slow-tpot", "arrival": now - 12, "ttft": 0.2, "e2e": 10.2, "out": 51},
            ]
            spans = vllm_spans({"service.name": "vllm", "service.instance.id": f"127.0.0.1:{a.port}"}, requests)
            exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=5)
            assert exporter.export(spans) == SpanExportResult.SUCCESS
            exporter.shutdown()
            goodput = httpx.get(f"{base}/api/v1/pools/llama/goodput", params={"window": "1m"}).json()
            assert goodput["pool"] == "llama"
            assert (goodput["requests"], goodput["good_requests"]) == (5, 3)
            assert goodput["goodput_rps"] > 0
            assert httpx.get(f"{base}/api/v1/pools/nope/goodput").status_code == 404
            bad = httpx.post(f"{base}/v1/traces", content=b"\x00garbage", headers={"Content-Type": "application/x-protobuf"})
            assert bad.status_code == 400
            assert httpx.get(f"{base}/api/v1/pools/llama/goodput").json()["requests"] == 5  # nothing lost
        finally:
            stop(proc)
