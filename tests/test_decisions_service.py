"""Health and scaling decisions through `slo-monitor serve`: check URLs, the upstream block and file,
the scaling endpoint, the audit log, and an ejection that survives a restart."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers.ports import free_port
from tests.helpers.serve_proc import serve, stop
from tests.helpers.vllm_pages import ClockedVllm, PageServer
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.e2e  # every test here starts a process or a server on a real port


def test_latency_fault_ejects_then_survives_a_restart(tmp_path):
    servers = [ClockedVllm(rps=20, ttft=(0.05, 0.2), kv=0.3, waiting=0, seed=i) for i in range(3)]
    upstream_file = tmp_path / "upstreams.conf"
    db = tmp_path / "m.db"
    with PageServer(servers[0]) as a, PageServer(servers[1]) as b, PageServer(servers[2]) as c:
        config = tmp_path / "c.yaml"
        config.write_text(f"""
storage: {{url: "sqlite:///{db}"}}
scrape: {{interval: 300ms, timeout: 250ms}}
evaluation: {{window: 2s}}
pools:
  - name: llama
    targets: [{a.url}, {b.url}, {c.url}]
    health: {{min_requests: 1, base_ejection_time: 60s, recovery_intervals: 2}}
    scaling: {{scale_up_stabilization: 0s}}
nginx: {{upstream_file: "{upstream_file}"}}
""")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        bad = f"127.0.0.1:{b.port}"
        proc = serve(config, port)
        try:
            wait_until(lambda: all(i["state"] == "healthy" for i in httpx.get(f"{base}/api/v1/instances").json()),
                       20, what="all healthy")
            assert httpx.get(f"{base}/upstreams/llama/{bad}").status_code == 200
            assert httpx.get(f"{base}/upstreams/llama/10.9.9.9:1").status_code == 404

            servers[1].ttft = (2.0, 3.0)  # p99 far above the 1 s eject threshold
            check = wait_until(lambda: (r := httpx.get(f"{base}/upstreams/llama/{bad}")).status_code == 503 and r,
                               10, what="503 for the slow instance")
            assert check.text.startswith("ejected:") and "TTFT" in check.text
            block = httpx.get(f"{base}/upstreams/llama/nginx.conf").text
            assert f"server {bad} down;" in block and f"server 127.0.0.1:{a.port};" in block
            wait_until(lambda: f"server {bad} down;" in upstream_file.read_text(), 5, what="upstream file")
            audit = httpx.get(f"{base}/api/v1/decisions", params={"kind": "health", "instance": bad}).json()
            assert audit[0]["to"] == "ejected" and audit[0]["reasons"] and audit[0]["signals"]
            scaling = httpx.get(f"{base}/api/v1/pools/llama/scaling").json()
            assert {"pool", "current_replicas", "desired_replicas", "reason", "signals"} <= set(scaling)
            exposition = httpx.get(f"{base}/metrics").text
            assert f'slo_monitor_instance_state{{instance="{bad}",pool="llama",state="ejected"}} 1.0' in exposition
            assert 'slo_monitor_pool_desired_replicas{pool="llama"}' in exposition
        finally:
            stop(proc)

        # a restart restores the ejection at once instead of sending traffic back (the fault is cleared,
        # so only the saved state can explain a 503 on the first answers)
        servers[1].ttft = (0.05, 0.2)
        proc = serve(config, port)
        try:
            first = wait_until(lambda: httpx.get(f"{base}/upstreams/llama/{bad}"), 15, what="service back")
            assert first.status_code == 503, first.text
            audit = httpx.get(f"{base}/api/v1/decisions", params={"instance": bad}).json()
            assert any(d["to"] == "ejected" for d in audit)  # the audit log came back from the database
        finally:
            stop(proc)
