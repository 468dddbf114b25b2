"""The service side of GPU telemetry: dcgm-exporter pages in both label spellings and our exporter's
page, scraped over HTTP, parsed, mapped to pools/instances by config, and turned into health reasons."""

from __future__ import annotations

import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from monitor.config import PoolConfig
from monitor.gpu.collect import GpuScraper, metrics_url
from monitor.settings import GpuConfig, GpuMappingConfig, check_gpu_config
from monitor.gpu.exporter import ExporterServer, GpuPageSource
from monitor.gpu.health import ExporterScrape, GpuTracker, XidEvent, gpu_reasons, new_xid_events
from monitor.gpu.mapping import GpuMapper
from monitor.gpu.nvml import NvmlReader
from monitor.gpu.parse import GpuPageError, parse_gpu_page
from monitor.gpu.publish import GpuMetricsCollector, gpus_json
from monitor.gpu.readings import GpuReading

from tests.helpers.dcgm_pages import H100, U, dcgm_page
from tests.helpers.fake_pynvml import GIB, FakeGpu, make_pynvml
from tests.helpers.vllm_pages import PageServer


# -- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("host_label", ["Hostname", "hostname"])
def test_dcgm_page_parses_in_both_label_spellings(host_label):
    page = parse_gpu_page(dcgm_page(host_label, "node-b"), source="http://10.0.0.12:9400")
    assert page.nvml_up is None  # not our exporter
    first, second = page.readings
    assert (first.host, first.index, first.uuid, first.model_name, first.pci_bus_id, first.driver_version) == (
        "node-b", 0, U[4], H100, "00000000:18:00.0", "550.54.15")
    assert first.util_pct == 93.0 and first.power_w == 512.345 and first.sm_clock_mhz == 1980.0
    assert first.memory_temp_c is None  # blank sentinel = no value
    assert first.fb_used_mib == 40000 and first.memory_total_mib == 81559
    assert first.xid_last == 0 and first.xid_recent is None
    assert second.util_pct == 0.0 and second.memory_used_ratio == pytest.approx(559 / 81559)
    assert first.source == "http://10.0.0.12:9400"


def test_page_without_host_label_uses_the_exporter_host():
    text = dcgm_page("Hostname", "x").replace(',Hostname="x"', "")
    readings = parse_gpu_page(text, source="http://10.0.0.12:9400").readings
    assert {r.host for r in readings} == {"10.0.0.12"}


def test_mig_instances_are_separate_readings():
    base = f'gpu="0",UUID="{U[0]}",device="nvidia0",modelName="{H100}",Hostname="n"'
    text = "\n".join([f'DCGM_FI_DEV_FB_USED{{{base},GPU_I_PROFILE="1g.10gb",GPU_I_ID="7"}} 100',
                      f'DCGM_FI_DEV_FB_USED{{{base},GPU_I_PROFILE="1g.10gb",GPU_I_ID="8"}} 200']) + "\n"
    readings = parse_gpu_page(text).readings
    assert [(r.mig_instance, r.mig_profile, r.fb_used_mib) for r in readings] == [("7", "1g.10gb", 100.0),
                                                                                ("8", "1g.10gb", 200.0)]


def test_malformed_page_is_an_error():
    with pytest.raises(GpuPageError):
        parse_gpu_page('DCGM_FI_DEV_GPU_UTIL{gpu="0" 3\n')


# -- mapping --------------------------------------------------------------------------------------


POOLS = {"llama": ["10.0.0.11:8000", "10.0.0.11:8001", "10.0.0.12:8000"], "mistral": ["10.0.0.13:8000"]}


def reading(index: int, uuid: str, host: str = "", source: str | None = None, **kw) -> GpuReading:
    return GpuReading(uuid=uuid, index=index, host=host, source=source, **kw)


def test_mapping_rules_in_order():
    mapper = GpuMapper([
        GpuMappingConfig(instance="10.0.0.11:8000", gpus=[0, 1]),
        GpuMappingConfig(instance="http://10.0.0.11:8001", host="node-a", gpus=["2", 3]),
        GpuMappingConfig(pool="mistral", gpus=[U[7]]),
    ], POOLS)
    src = "http://10.0.0.11:9400"
    # by index on the instance's host (matched through the exporter URL's host)
    assert mapper.place(reading(1, U[1], "node-a", src)).instance == "10.0.0.11:8000"
    # by index on an explicit host (matched through the Hostname label)
    p = mapper.place(reading(2, U[2], "node-a", src))
    assert (p.pool, p.instance, p.rule) == ("llama", "10.0.0.11:8001", "gpu.mappings[1]")
    # by UUID, on any node
    p = mapper.place(reading(0, U[7], "elsewhere", "http://10.9.9.9:9400"))
    assert (p.pool, p.instance) == ("mistral", None)
    # index 5 on node-a: no entry; two instances on 10.0.0.11 of one pool → the pool only
    p = mapper.place(reading(5, U[5], "node-a", src))
    assert (p.pool, p.instance) == ("llama", None) and p.rule.startswith("auto")
    # auto: the only instance on 10.0.0.12
    p = mapper.place(reading(0, U[4], "node-b", "http://10.0.0.12:9400"))
    assert (p.pool, p.instance) == ("llama", "10.0.0.12:8000")
    # nothing on that host
    assert mapper.place(reading(0, U[6], "node-z", "http://10.0.0.99:9400")).pool is None
    no_auto = GpuMapper([], POOLS, auto_map=False)
    assert no_auto.place(reading(0, U[4], "node-b", "http://10.0.0.12:9400")).rule == "unmapped"


def test_gpu_config_validation():
    cfg = GpuConfig.model_validate({"exporters": ["http://10.0.0.11:9400/"], "memory_threshold": "95%",
                                    "xid_hold": "10m", "mappings": [{"instance": "10.0.0.11:8000"}]})
    assert cfg.exporters == ["http://10.0.0.11:9400"] and cfg.memory_threshold == 0.95 and cfg.xid_hold == 600
    for bad, needle in [({"mappings": [{"gpus": [0]}]}, "name an `instance`"),
                        ({"mappings": [{"pool": "llama", "gpus": [0]}]}, "`host` is needed"),
                        ({"mappings": [{"instance": "10.0.0.11:8000", "gpus": ["nvidia0"]}]}, "not a GPU index"),
                        ({"mappings": [{"instance": "10.0.0.11:8000", "gpu": [0]}]}, "Extra inputs"),
                        ({"exporter": []}, "Extra inputs")]:
        with pytest.raises(ValidationError, match=needle):
            GpuConfig.model_validate(bad)
    pools = [PoolConfig(name="llama", targets=["http://10.0.0.11:8000", "http://10.0.0.11:8001"])]
    cfg = GpuConfig.model_validate({"mappings": [
        {"instance": "10.0.0.11:8000", "gpus": [0]},
        {"instance": "10.0.0.11:8001", "gpus": [0]},
        {"instance": "10.0.0.99:8000"},
        {"pool": "nope", "gpus": [U[0]]},
        {"instance": "10.0.0.11:8000", "pool": "other", "gpus": [U[1]]},
    ]})
    problems = check_gpu_config(cfg, pools)
    assert problems == [
        "gpu.mappings[1].gpus[0]: GPU 0 is already mapped by gpu.mappings[0]",
        "gpu.mappings[2].instance: 10.0.0.99:8000 is not a target of any pool",
        "gpu.mappings[3].pool: no pool named 'nope'",
        "gpu.mappings[4].pool: no pool named 'other'",
        "gpu.mappings[4]: instance 10.0.0.11:8000 is in pool 'llama', not 'other'",
    ]


# -- health ---------------------------------------------------------------------------------------


def test_new_xid_events_by_page_kind():
    counted = reading(0, U[0], xid_last=79, xid_recent={79: 1})
    assert new_xid_events(None, counted, 5.0) == [XidEvent(5.0, 79)]  # in the window: recent
    assert new_xid_events(counted, counted, 6.0) == []
    assert new_xid_events(counted, reading(0, U[0], xid_last=79, xid_recent={79: 3}), 7.0) == [XidEvent(7.0, 79)] * 2
    last_only = reading(0, U[0], xid_last=48)
    assert new_xid_events(None, last_only, 5.0) == []  # a sticky last value is a baseline, not news
    assert new_xid_events(last_only, last_only, 6.0) == []
    assert new_xid_events(last_only, reading(0, U[0], xid_last=79), 7.0) == [XidEvent(7.0, 79)]
    assert new_xid_events(last_only, reading(0, U[0], xid_last=0), 7.0) == []


def test_gpu_reasons():
    r = reading(3, U[3], "node-a", fb_used_mib=74000, fb_free_mib=7000, fb_reserved_mib=559)
    assert gpu_reasons(r, now=0) == (f"GPU 3 ({U[3]}) on node-a memory 91% used (above 90%)",)
    assert gpu_reasons(r, now=0, memory_threshold=0.95) == ()
    assert gpu_reasons(r, now=0, fresh=False) == ()
    events = [XidEvent(100.0, 79), XidEvent(10.0, 13)]
    assert gpu_reasons(reading(3, U[3]), events, now=130.0, xid_hold_s=300) == (
        f"GPU 3 ({U[3]}) XID 79 (GPU has fallen off the bus) 30s ago",
        f"GPU 3 ({U[3]}) XID 13 (Graphics Engine Exception) 120s ago")
    assert gpu_reasons(reading(3, U[3]), events, now=399.0, xid_hold_s=300) == (
        f"GPU 3 ({U[3]}) XID 79 (GPU has fallen off the bus) 299s ago",)
    assert gpu_reasons(reading(3, U[3]), events, now=400.0, xid_hold_s=300) == ()
    assert gpu_reasons(reading(3, U[3], lost=True), now=0) == (f"GPU 3 ({U[3]}) lost",)


# -- scraping both kinds of exporter and mapping to instances ------------------------------------


@pytest.fixture
def our_exporter(monkeypatch):
    """`slo-monitor exporter` with a fake NVML: GPU 0 at 95% memory, GPU 1 at 10%."""
    gpus = [FakeGpu(U[0], used=76 * GIB, reserved=0), FakeGpu(U[1], used=8 * GIB)]
    module = make_pynvml(gpus)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    reader = NvmlReader("node-a")
    reader.start()
    server = ExporterServer("127.0.0.1", 0, GpuPageSource(reader, min_interval_s=0.0))
    server.serve_in_thread()
    try:
        yield server, module, gpus
    finally:
        server.shutdown()
        server.server_close()
        reader.close()


async def test_service_scrapes_both_exporters_and_maps_gpus_to_instances(our_exporter):
    server, module, gpus = our_exporter
    state = {"xid": 0, "used": 40000}
    pools = {"llama": ["node-a:8000", "node-a:8001"], "mistral": ["10.0.0.12:8000"]}
    mapper = GpuMapper([GpuMappingConfig(instance="node-a:8000", gpus=[0]),
                        GpuMappingConfig(instance="node-a:8001", gpus=[U[1]]),
                        GpuMappingConfig(instance="10.0.0.12:8000", host="node-b", gpus=[0, 1])], pools)

    def dcgm(path: str) -> tuple[int, bytes]:
        shown = (0,) if state.get("drop_gpu1") else (0, 1)
        return 200, dcgm_page("hostname", "node-b", xid=state["xid"], fb_used=state["used"], gpus=shown).encode()

    with PageServer(dcgm) as dcgm_server:
        down = "http://127.0.0.1:1"
        scraper = GpuScraper([server.url, dcgm_server.url + "/metrics", down], timeout=2.0, max_body_size=2**20)
        tracker = GpuTracker(mapper, exporters=scraper.urls)
        try:
            for scrape in await scraper.scrape_all():
                tracker.observe(scrape, now=1000.0)
            by_uuid = {s.reading.uuid: s for s in tracker.states()}
            assert {u: (s.placement.pool, s.placement.instance) for u, s in by_uuid.items()} == {
                U[0]: ("llama", "node-a:8000"), U[1]: ("llama", "node-a:8001"),
                U[4]: ("mistral", "10.0.0.12:8000"), U[5]: ("mistral", "10.0.0.12:8000")}
            assert tracker.reasons("llama", "node-a:8000", 1000.0) == (
                f"GPU 0 ({U[0]}) on node-a memory 95% used (above 90%)",)
            assert tracker.reasons("llama", "node-a:8001", 1000.0) == ()
            assert tracker.reasons("mistral", "10.0.0.12:8000", 1000.0) == ()
            assert tracker.exporters[down].ok is False and "cannot connect" in tracker.exporters[down].error
            assert tracker.exporters[server.url].nvml_up is True

            # node-b: memory fills and an XID arrives; node-a: an XID on GPU 1
            state.update(xid=79, used=80000)
            module.emit_xid(gpus[1], 31)
            for scrape in await scraper.scrape_all():
                tracker.observe(scrape, now=1010.0)
            reasons = tracker.reasons("mistral", "10.0.0.12:8000", 1020.0)
            assert reasons == (f"GPU 0 ({U[4]}) on node-b memory 98% used (above 90%)",
                               f"GPU 0 ({U[4]}) on node-b XID 79 (GPU has fallen off the bus) 10s ago")
            assert tracker.reasons("llama", "node-a:8001", 1020.0) == (
                f"GPU 1 ({U[1]}) on node-a XID 31 (GPU memory page fault) 10s ago",)
            # past the hold the XID reasons end; stale readings give no memory reason
            assert tracker.reasons("llama", "node-a:8001", 1400.0) == ()
            assert tracker.reasons("mistral", "10.0.0.12:8000", 1400.0) == ()

            # a GPU lost on our exporter, a GPU gone from the dcgm page
            gpus[0].lost = True
            state["drop_gpu1"] = True
            for scrape in await scraper.scrape_all():
                tracker.observe(scrape, now=1500.0)
            assert tracker.reasons("llama", "node-a:8000", 1500.0) == (f"GPU 0 ({U[0]}) on node-a lost",)
            assert tracker.reasons("mistral", "10.0.0.12:8000", 1500.0) == (
                f"GPU 0 ({U[4]}) on node-b memory 98% used (above 90%)", f"GPU 1 ({U[5]}) on node-b lost")

            body = gpus_json(tracker, now=1500.0)
            assert len(body["gpus"]) == 4 and len(body["exporters"]) == 3
            gpu0 = next(g for g in body["gpus"] if g["uuid"] == U[0])
            assert gpu0["lost"] is True and gpu0["instance"] == "node-a:8000" and gpu0["mapping"] == "gpu.mappings[0]"
            registry = CollectorRegistry()
            registry.register(GpuMetricsCollector(tracker))
            text = generate_latest(registry).decode()
            assert (f'slo_monitor_gpu_lost{{gpu="0",host="node-a",instance="node-a:8000",pool="llama",'
                    f'uuid="{U[0]}"}} 1.0') in text
            assert f'slo_monitor_gpu_exporter_up{{exporter="{down}"}} 0.0' in text
        finally:
            await scraper.aclose()


def test_gpu_vanishing_from_a_dcgm_page_is_lost():
    mapper = GpuMapper([], {"llama": ["10.0.0.12:8000"]})
    tracker = GpuTracker(mapper)
    url = "http://10.0.0.12:9400"
    full = parse_gpu_page(dcgm_page("Hostname", "node-b"), source=url)
    tracker.observe(ExporterScrape(url, 0.0, 0.1, full), now=10.0)
    less = parse_gpu_page(dcgm_page("Hostname", "node-b", gpus=(0,)), source=url)
    assert len(less.readings) == 1
    tracker.observe(ExporterScrape(url, 0.0, 0.1, less), now=20.0)
    assert tracker.reasons("llama", "10.0.0.12:8000", 20.0) == (f"GPU 1 ({U[5]}) on node-b lost",)
    tracker.observe(ExporterScrape(url, 0.0, 0.1, None, "timed out"), now=30.0)  # down: nothing new is lost
    assert tracker.reasons("llama", "10.0.0.12:8000", 30.0) == (f"GPU 1 ({U[5]}) on node-b lost",)
    tracker.observe(ExporterScrape(url, 0.0, 0.1, full), now=40.0)  # back on the page
    assert tracker.reasons("llama", "10.0.0.12:8000", 40.0) == ()


def test_metrics_url():
    assert metrics_url("http://10.0.0.11:9400") == "http://10.0.0.11:9400/metrics"
    assert metrics_url("http://10.0.0.11:9400/custom/path") == "http://10.0.0.11:9400/custom/path"
