"""Discovery against real servers on loopback: Debian's dnsmasq (records changed while the source
runs) and a real Prometheus whose own file_sd lists the instances."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.collect.discovery import Discovery, PoolSpec
from monitor.settings.discovery import DiscoverySettings, DnsDiscovery, PrometheusDiscovery
from tests.helpers.dnsmasq import Dnsmasq
from tests.helpers.ports import free_port
from tests.helpers.prom_server import Prometheus

pytestmark = pytest.mark.e2e


@pytest.fixture
def dnsmasq(tmp_path) -> Iterator[Dnsmasq]:
    with Dnsmasq(tmp_path) as server:
        yield server


def dns_pool(server: Dnsmasq, *items: DnsDiscovery) -> Discovery:
    settings = DiscoverySettings(nameservers=[f"127.0.0.1:{server.port}"])
    return Discovery([PoolSpec("chat", [], list(items))], settings)


async def test_dns_a_records_follow_the_zone_while_the_source_runs_and_a_vanished_name_keeps_the_list(dnsmasq):
    dnsmasq.write_hosts(["127.0.0.11 vllm.example.test", "127.0.0.12 vllm.example.test"])
    dnsmasq.reload()
    discovery = dns_pool(dnsmasq, DnsDiscovery(type="dns", names=["vllm.example.test"], record="A", port=8000,
                                               refresh="1s", timeout="1s"))
    members = await discovery.refresh(now=0.0)
    assert sorted(members["chat"]) == ["127.0.0.11:8000", "127.0.0.12:8000"]
    assert members["chat"]["127.0.0.11:8000"].url == "http://127.0.0.11:8000"
    assert members["chat"]["127.0.0.11:8000"].source == "dns"

    # a pod replaced: one address goes, another comes
    dnsmasq.write_hosts(["127.0.0.12 vllm.example.test", "127.0.0.13 vllm.example.test"])
    dnsmasq.reload()
    members = await discovery.refresh(now=1.0)
    assert sorted(members["chat"]) == ["127.0.0.12:8000", "127.0.0.13:8000"]

    # the name gone (NXDOMAIN): the last good list stays, with the reason
    dnsmasq.write_hosts(["127.0.0.20 other.example.test"])
    dnsmasq.reload()
    members = await discovery.refresh(now=2.0)
    assert sorted(members["chat"]) == ["127.0.0.12:8000", "127.0.0.13:8000"]
    status = discovery.statuses()[0]
    assert status.last_error == "dns A vllm.example.test: name does not exist (NXDOMAIN)"
    assert status.failures == 1 and status.targets == 2

    dnsmasq.write_hosts(["127.0.0.14 vllm.example.test"])
    dnsmasq.reload()
    assert list((await discovery.refresh(now=3.0))["chat"]) == ["127.0.0.14:8000"]
    assert discovery.statuses()[0].last_error is None
    await discovery.aclose()


async def test_dns_srv_records_carry_their_own_ports_and_aaaa_records_their_v6_addresses(dnsmasq):
    dnsmasq.write_hosts(["::1 v6.example.test", "127.0.0.11 v6.example.test"])
    dnsmasq.reload()
    discovery = dns_pool(
        dnsmasq,
        DnsDiscovery(type="dns", names=["_vllm._tcp.example.test"], refresh="1s"),
        DnsDiscovery(type="dns", names=["v6.example.test"], record="AAAA", port=8000, refresh="1s"),
    )
    members = await discovery.refresh(now=0.0)
    assert sorted(members["chat"]) == ["[::1]:8000", "gpu-1.example.test:8001", "gpu-2.example.test:8002"]
    assert members["chat"]["[::1]:8000"].url == "http://[::1]:8000"
    assert [s.last_error for s in discovery.statuses()] == [None, None]


async def test_one_name_failing_keeps_its_own_list_while_another_name_of_the_item_updates(dnsmasq):
    dnsmasq.write_hosts(["127.0.0.11 a.example.test", "127.0.0.21 b.example.test"])
    dnsmasq.reload()
    discovery = dns_pool(dnsmasq, DnsDiscovery(type="dns", names=["a.example.test", "b.example.test"], record="A",
                                               port=8000, refresh="1s"))
    await discovery.refresh(now=0.0)
    dnsmasq.write_hosts(["127.0.0.22 b.example.test"])
    dnsmasq.reload()
    members = await discovery.refresh(now=1.0)
    assert sorted(members["chat"]) == ["127.0.0.11:8000", "127.0.0.22:8000"]
    assert "a.example.test: name does not exist" in discovery.statuses()[0].last_error


# --- Prometheus as the source of targets ---------------------------------------------------------


def write_file_sd(path: Path, groups: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    os.replace(tmp, path)


async def wait_for(discovery: Discovery, pool: str, expected: list[str], timeout_s: float = 30.0) -> dict:
    """Refresh until the pool is `expected`: Prometheus applies discovered targets every 5 s."""
    deadline = time.monotonic() + timeout_s
    while True:
        members = await discovery.refresh()
        if sorted(members[pool]) == expected:
            return members
        assert time.monotonic() < deadline, (sorted(members[pool]), discovery.statuses())
        await asyncio.sleep(0.3)


async def test_prometheus_discovery_follows_prometheus_own_file_sd_through_the_selector(tmp_path):
    sd_dir = tmp_path / "sd"
    sd_dir.mkdir()
    # instances that do not listen: Prometheus lists active targets whatever their health
    first, second, third = (f"127.0.0.1:{free_port()}" for _ in range(3))
    write_file_sd(sd_dir / "vllm.json", [
        {"targets": [first, second], "labels": {"pool": "chat"}},
        {"targets": [third], "labels": {"pool": "batch", "__metrics_path__": "/custom/metrics"}},
    ])
    prom = Prometheus(tmp_path, config=f"""
global: {{scrape_interval: 1s, scrape_timeout: 400ms, evaluation_interval: 1s}}
scrape_configs:
  - job_name: vllm
    file_sd_configs: [{{files: ["{sd_dir}/*.json"], refresh_interval: 1s}}]
  - job_name: node
    static_configs: [{{targets: ["127.0.0.1:{free_port()}"], labels: {{pool: chat}}}}]
""")
    with prom:
        chat = PrometheusDiscovery(type="prometheus", url=prom.url, selector='job="vllm", pool="chat"', refresh="1s")
        batch = PrometheusDiscovery(type="prometheus", url=prom.url, selector='job="vllm", pool!="chat"',
                                    refresh="1s")
        discovery = Discovery([PoolSpec("chat", [], [chat]), PoolSpec("batch", [], [batch])])
        members = await wait_for(discovery, "chat", sorted([first, second]))
        members = await wait_for(discovery, "batch", [third])
        assert members["chat"][first].url == f"http://{first}"
        assert members["chat"][first].metrics_path == "/metrics"
        assert members["chat"][first].labels == {"instance": first, "job": "vllm", "pool": "chat"}
        assert members["chat"][first].source == "prometheus"
        assert members["batch"][third].metrics_path == "/custom/metrics"

        # the fleet changes in Prometheus's file_sd: one instance leaves, one joins
        fourth = f"127.0.0.1:{free_port()}"
        write_file_sd(sd_dir / "vllm.json", [{"targets": [second, fourth], "labels": {"pool": "chat"}}])
        await wait_for(discovery, "chat", sorted([second, fourth]))
        await wait_for(discovery, "batch", [])  # a real empty answer empties the source
        assert all(s.last_error is None for s in discovery.statuses())

        prom.stop()  # Prometheus gone: the last good list stays, with the reason
        members = await discovery.refresh(now=time.time() + 60)
        assert sorted(members["chat"]) == sorted([second, fourth])
        assert discovery.statuses()[0].last_error.startswith(f"prometheus {prom.url}: ConnectError")
        await discovery.aclose()
