"""GPU readings rolled up per GPU per minute: the arithmetic by hand, then through the service's persist
step and the store's buffered writes into SQLite and PostgreSQL (migration 0005)."""

from __future__ import annotations

import pytest

from monitor.config import validate
from monitor.gpu.health import ExporterScrape, GpuTracker
from monitor.gpu.mapping import GpuMapper
from monitor.gpu.parse import GpuPage
from monitor.gpu.readings import MIB, GpuReading
from monitor.gpu.rollup import GpuRollups
from monitor.service import Service
from monitor.store import Store, upgrade

T0 = 1_790_000_040.0  # a minute boundary
URL = "http://10.0.0.11:9400"
UUID0, UUID1 = "GPU-00000000-0000-0000-0000-000000000000", "GPU-11111111-1111-1111-1111-111111111111"


def gpu(index: int, uuid: str, **figures) -> GpuReading:
    return GpuReading(uuid=uuid, index=index, host="10.0.0.11", model_name="NVIDIA H100 80GB HBM3", source=URL,
                      fb_total_mib=80000.0, **figures)


def page(*readings: GpuReading) -> ExporterScrape:
    return ExporterScrape(URL, 0.0, 0.05, GpuPage(tuple(readings)))


def feed(tracker: GpuTracker) -> None:
    """Minute 0: three readings of GPU 0, one of GPU 1 which then vanishes; minute 1: GPU 0 once more."""
    tracker.observe(page(gpu(0, UUID0, util_pct=50, fb_used_mib=40000, power_w=300, gpu_temp_c=60,
                             sm_clock_mhz=1980, energy_mj=1_000_000, throttle_reasons=0x1, xid_last=0),
                         gpu(1, UUID1, util_pct=10, fb_used_mib=1000, power_w=70)), now=T0 + 5)
    tracker.observe(page(gpu(0, UUID0, util_pct=100, fb_used_mib=76000, power_w=700, gpu_temp_c=80,
                             sm_clock_mhz=1980, energy_mj=1_300_000, throttle_reasons=0x4, xid_last=79)), now=T0 + 25)
    tracker.observe(page(gpu(0, UUID0, util_pct=90, fb_used_mib=40000, power_w=500, gpu_temp_c=70,
                             sm_clock_mhz=1410, energy_mj=1_800_000, xid_last=79)), now=T0 + 45)
    tracker.observe(page(gpu(0, UUID0, util_pct=20, fb_used_mib=40000, power_w=200, energy_mj=2_000_000,
                             xid_last=79)), now=T0 + 65)


def test_minutes_by_hand():
    rollups = GpuRollups()
    tracker = GpuTracker(GpuMapper([], {"llama": ["10.0.0.11:8000"]}), rollups=rollups)  # auto-mapped by host
    feed(tracker)
    assert rollups.take(T0 + 59) == []  # minute 0 has not ended
    first, lost = rollups.take(T0 + 60)
    assert len(rollups) == 1  # minute 1 still open
    assert (first.minute, first.host, first.uuid, first.gpu_index, first.samples) == (T0, "10.0.0.11", UUID0, 0, 3)
    assert (first.pool, first.instance) == ("llama", "10.0.0.11:8000")
    assert first.utilization_mean == pytest.approx(0.8) and first.utilization_max == 1.0
    assert first.memory_used_bytes_mean == pytest.approx(52000 * MIB) and first.memory_used_bytes_max == 76000 * MIB
    assert first.memory_total_bytes == 80000 * MIB and first.memory_used_ratio_max == pytest.approx(0.95)
    assert (first.power_watts_mean, first.power_watts_max, first.temperature_celsius_max) == (500.0, 700.0, 80.0)
    assert first.sm_clock_hertz_mean == pytest.approx((1980 * 2 + 1410) / 3 * 1e6)
    assert first.energy_joules == 800.0  # 1.8M - 1.0M mJ; the first reading is only the baseline
    assert first.throttle_reasons == 0x5 and (first.xid_events, first.xid_last) == (1, 79) and not first.lost
    # GPU 1: read once, then missing from the page: lost in that minute, no figures from the lost sample
    assert (lost.uuid, lost.samples, lost.lost, lost.utilization_mean) == (UUID1, 2, True, 0.1)
    [second] = rollups.take()
    assert (second.minute, second.samples, second.energy_joules, second.xid_events) == (T0 + 60, 1, 200.0, 0)
    assert second.throttle_reasons is None and second.temperature_celsius_max is None


def config(tmp_url: str):
    return validate({"storage": {"url": tmp_url}, "pools": [{"name": "llama", "targets": ["http://10.0.0.11:8000"]}],
                     "gpu": {"exporters": [URL]}}).config


async def test_the_service_stores_gpu_minutes(db_url):
    upgrade(db_url)
    store = Store.open(db_url)
    try:
        service = Service(config(db_url), store)
        assert service.gpus.rollups is not None
        feed(service.gpus)
        await service.persist(final=True)
        assert store.pending == 0 and store.last_error is None
        rows = store.gpu_rollups()
        assert [(r.uuid, r.samples) for r in rows] == [(UUID0, 3), (UUID1, 2), (UUID0, 1)]
        first = rows[0]
        assert (first.pool, first.instance, first.gpu_index, first.mig_instance) == ("llama", "10.0.0.11:8000", 0, "")
        assert first.energy_joules == 800.0 and first.throttle_reasons == 5 and first.lost is False
        assert rows[1].lost is True and store.gpu_rollups(pool="llama", since=T0 + 60)[0].samples == 1

        # the same minute again (a restart inside it) replaces the row, and retention deletes old minutes
        rollups = GpuRollups()
        rollups.add(gpu(0, UUID0, util_pct=5), T0 + 70, pool="llama")
        store.queue_gpu_rollups(rollups.take())
        assert store.flush() == 1
        rows = store.gpu_rollups(since=T0 + 60)
        assert [(r.samples, r.utilization_mean) for r in rows] == [(1, 0.05)]
        assert store.cleanup(T0 + 60) >= 2
        assert [r.minute for r in store.gpu_rollups()] == [rows[0].minute]
    finally:
        store.close()


def test_no_database_no_rollups():
    assert Service(config("sqlite:///unused.db"), None).gpus.rollups is None
