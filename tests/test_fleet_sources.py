"""`slo-monitor serve` following a fleet through real discovery servers on loopback: Debian's dnsmasq
(A records changed while the service runs) and a real Prometheus whose own file_sd lists the
instances (the `prometheus` source reads its active targets). Instances join `starting` and turn
healthy, leave `leaving` and are dropped after `drain_time`; a source that fails keeps the pool as it
was, and says so in /metrics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.dnsmasq import Dnsmasq
from tests.helpers.fleet import Backend, ServeProcess, metric
from tests.helpers.ports import free_port
from tests.helpers.prom_server import Prometheus

pytestmark = pytest.mark.e2e

DRAIN = 3.0  # drain_time, s


@pytest.fixture
def dnsmasq(tmp_path) -> Iterator[Dnsmasq]:
    with Dnsmasq(tmp_path) as server:
        yield server


def states(serve: ServeProcess) -> dict[str, tuple[str, str, bool]]:
    """instance -> (state, source, whether it has a joined_at)."""
    return {i: (row["state"], row["source"], row["joined_at"] is not None) for i, row in serve.instances().items()}


def config_text(tmp_path: Path, discovery: str, top: str = "") -> str:
    return f"""
storage: {{url: "sqlite:///{tmp_path}/monitor.db"}}
scrape: {{interval: 1s, timeout: 500ms}}
evaluation: {{window: 5s}}
{top}
pools:
  - name: chat
    discovery:
      - {discovery}
    health: {{min_requests: 1, drain_time: {DRAIN:g}s}}
slos:
  - {{name: up, indicator: {{type: availability}}, objective: 99.9%}}
"""


def test_dns_a_records_changed_while_the_service_runs_move_instances_in_and_out_of_the_pool(tmp_path, dnsmasq):
    port = free_port()
    one, two, three = (Backend(f"gpu-{n}", seed=n, host=f"127.0.0.{10 + n}", port=port).start() for n in (1, 2, 3))
    dnsmasq.write_hosts([f"{one.address.split(':')[0]} vllm.example.test", "127.0.0.12 vllm.example.test"])
    dnsmasq.reload()
    config = tmp_path / "monitor.yaml"
    config.write_text(config_text(
        tmp_path, f"{{type: dns, names: [vllm.example.test], record: A, port: {port}, refresh: 1s}}",
        f'discovery: {{nameservers: ["127.0.0.1:{dnsmasq.port}"]}}'))
    serve = ServeProcess(config, free_port(), tmp_path / "serve.log")
    try:
        serve.wait_ready()
        serve.wait(lambda: states(serve) == {one.address: ("healthy", "dns", False),
                                             two.address: ("healthy", "dns", False)}, 30, "the two A records healthy")

        # a pod replaced: .11 goes, .13 comes
        dnsmasq.write_hosts(["127.0.0.12 vllm.example.test", "127.0.0.13 vllm.example.test"])
        dnsmasq.reload()
        serve.wait(lambda: states(serve).get(three.address) == ("healthy", "dns", True), 20, ".13 joined, healthy")
        serve.wait(lambda: one.address not in states(serve), DRAIN + 15, ".11 dropped after drain_time")
        decisions = [(d["instance"], d["from"], d["to"]) for d in serve.health_decisions()]
        assert (one.address, "healthy", "leaving") in decisions and (one.address, "leaving", "removed") in decisions
        assert (three.address, "", "starting") in decisions and (three.address, "starting", "healthy") in decisions
        page = serve.metrics()
        assert metric(page, "slo_monitor_discovery_targets", pool="chat", source="dns") == 2
        assert metric(page, "slo_monitor_discovery_up", pool="chat", source="dns") == 1

        # the name gone from DNS (NXDOMAIN): the pool keeps its last good list, and /metrics says why
        dnsmasq.write_hosts(["127.0.0.20 other.example.test"])
        dnsmasq.reload()
        serve.wait(lambda: metric(serve.metrics(), "slo_monitor_discovery_up", pool="chat", source="dns") == 0,
                   10, "the DNS source down")
        serve.wait_cycles(3)
        assert states(serve) == {two.address: ("healthy", "dns", False), three.address: ("healthy", "dns", True)}
        page = serve.metrics()
        assert metric(page, "slo_monitor_discovery_targets", pool="chat", source="dns") == 2
        assert metric(page, "slo_monitor_discovery_failures_total", pool="chat", source="dns") >= 1
        slo = serve.slos()["up"]
        assert slo["good"] == slo["total"] > 0  # neither the join, the leave nor the DNS failure burned it
    finally:
        output = serve.stop()
        for backend in (one, two, three):
            backend.stop()
    assert output.count("name does not exist") == 1, output  # logged once, not every refresh
    assert "Traceback" not in output


def write_file_sd(path: Path, groups: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    os.replace(tmp, path)


def test_the_service_follows_a_real_prometheus_whose_own_file_sd_lists_the_instances(tmp_path):
    a, b, c = (Backend(name, seed=n).start() for n, name in enumerate("abc"))
    sd = tmp_path / "sd"
    sd.mkdir()
    write_file_sd(sd / "vllm.json", [{"targets": [a.address, b.address], "labels": {"pool": "chat"}},
                                     {"targets": [f"127.0.0.1:{free_port()}"], "labels": {"pool": "other"}}])
    prom = Prometheus(tmp_path, config=f"""
global: {{scrape_interval: 1s, scrape_timeout: 400ms, evaluation_interval: 1s}}
scrape_configs:
  - job_name: vllm
    file_sd_configs: [{{files: ["{sd}/*.json"], refresh_interval: 1s}}]
""")
    config = tmp_path / "monitor.yaml"
    with prom:
        config.write_text(config_text(
            tmp_path, f"""{{type: prometheus, url: "{prom.url}", selector: 'job="vllm", pool="chat"', refresh: 1s}}"""))
        serve = ServeProcess(config, free_port(), tmp_path / "serve.log")
        try:
            serve.wait_ready()
            # Prometheus applies discovered targets every 5 s
            serve.wait(lambda: states(serve) == {a.address: ("healthy", "prometheus", False),
                                                 b.address: ("healthy", "prometheus", False)}
                       or states(serve) == {a.address: ("healthy", "prometheus", True),
                                            b.address: ("healthy", "prometheus", True)},
                       40, "a and b healthy")

            # the fleet changes in Prometheus's file_sd: a leaves, c joins
            write_file_sd(sd / "vllm.json", [{"targets": [b.address, c.address], "labels": {"pool": "chat"}}])
            serve.wait(lambda: states(serve).get(c.address) == ("healthy", "prometheus", True), 40, "c joined, healthy")
            serve.wait(lambda: a.address not in states(serve), DRAIN + 15, "a dropped after drain_time")
            decisions = [(d["instance"], d["from"], d["to"]) for d in serve.health_decisions()]
            assert (a.address, "healthy", "leaving") in decisions and (a.address, "leaving", "removed") in decisions
            assert states(serve)[b.address][0] == "healthy"

            # Prometheus gone: the pool keeps its last good list
            prom.stop()
            serve.wait(lambda: metric(serve.metrics(), "slo_monitor_discovery_up", pool="chat") == 0, 10,
                       "the prometheus source down")
            serve.wait_cycles(3)
            assert set(states(serve)) == {b.address, c.address}
            slo = serve.slos()["up"]
            assert slo["good"] == slo["total"] > 0
        finally:
            output = serve.stop()
            for backend in (a, b, c):
                backend.stop()
    assert "Traceback" not in output
