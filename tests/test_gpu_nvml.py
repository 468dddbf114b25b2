"""The NVML reader against a fake `pynvml` injected through sys.modules: every field, NotSupported per
field, no driver, no package, a lost GPU, a vanished GPU, XID events and old-driver fallbacks."""

from __future__ import annotations

import logging
import sys

import pytest

from monitor.gpu.nvml import NvmlReader
from monitor.gpu.readings import MIB
from monitor.gpu.render import render_page

from tests.helpers.fake_pynvml import DRIVER_NOT_LOADED, GIB, LIBRARY_NOT_FOUND, FakeGpu, make_pynvml

UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-66666666-7777-8888-9999-000000000000"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def inject(monkeypatch):
    """Put a fake pynvml in sys.modules (for this test only) and return it."""

    def put(gpus: list[FakeGpu], **kwargs):
        module = make_pynvml(gpus, **kwargs)
        monkeypatch.setitem(sys.modules, "pynvml", module)
        return module

    return put


def reader(clock: Clock | None = None, **kwargs) -> NvmlReader:
    return NvmlReader("node-a", clock=clock or Clock(), **kwargs)


def test_all_fields_in_dcgm_units(inject):
    inject([FakeGpu(UUID0), FakeGpu(UUID1, bus_id="00000000:2A:00.0", used=10 * GIB, util=(3, 1))])
    r = reader()
    assert r.start() and r.available
    first, second = r.read()
    assert (first.index, first.uuid, first.host, first.model_name, first.pci_bus_id, first.driver_version) == (
        0, UUID0, "node-a", "NVIDIA H100 80GB HBM3", "00000000:18:00.0", "550.54.15")
    assert (first.util_pct, first.mem_copy_util_pct) == (87.0, 41.0)
    assert first.fb_total_mib == 80 * 1024 and first.fb_used_mib == 60 * 1024 and first.fb_reserved_mib == 512
    assert first.fb_free_mib == (80 * GIB - 60 * GIB - 512 * MIB) // MIB
    assert (first.gpu_temp_c, first.memory_temp_c) == (64.0, 71.0)
    assert first.power_w == pytest.approx(512.345) and first.power_limit_w == 700.0  # mW → W
    assert (first.energy_mj, first.sm_clock_mhz, first.mem_clock_mhz) == (123_456_789.0, 1980.0, 2619.0)
    assert (first.throttle_reasons, first.pcie_replays) == (4.0, 2.0)
    assert (first.ecc_sbe_volatile, first.ecc_dbe_volatile, first.ecc_sbe_aggregate, first.ecc_dbe_aggregate) == (
        5.0, 0.0, 17.0, 1.0)
    assert first.xid_last == 0 and first.xid_recent == {}
    assert first.memory_used_ratio == pytest.approx(0.75)
    assert not first.lost
    assert second.index == 1 and second.util_pct == 3.0 and second.pci_bus_id == "00000000:2A:00.0"


def test_each_unsupported_field_is_skipped_alone_and_not_asked_again(inject):
    gpu = FakeGpu(UUID0, unsupported={"nvmlDeviceGetPowerUsage", "nvmlDeviceGetUtilizationRates",
                                      "nvmlDeviceGetTotalEccErrors", "memory_temp", "nvmlDeviceGetPcieReplayCounter",
                                      "nvmlDeviceRegisterEvents"})
    inject([gpu])
    r = reader()
    r.start()
    for _ in range(3):
        (reading,) = r.read()
    assert reading.power_w is None and reading.util_pct is None and reading.mem_copy_util_pct is None
    assert reading.ecc_sbe_volatile is None and reading.ecc_dbe_aggregate is None
    assert reading.memory_temp_c is None and reading.pcie_replays is None
    assert reading.xid_last is None and reading.xid_recent is None  # no XID events on this GPU
    # everything else still read
    assert reading.power_limit_w == 700.0 and reading.gpu_temp_c == 64.0 and reading.fb_used_mib == 60 * 1024
    assert reading.sm_clock_mhz == 1980.0 and reading.throttle_reasons == 4.0
    # NotSupported is permanent for a device: asked once, never again
    assert gpu.calls["nvmlDeviceGetPowerUsage"] == 1
    assert gpu.calls["nvmlDeviceGetTotalEccErrors"] == 4  # once per counter (each may be unsupported alone)
    assert gpu.calls["nvmlDeviceGetEnforcedPowerLimit"] == 3
    page = render_page([reading], nvml_up=True)
    assert "DCGM_FI_DEV_POWER_USAGE" not in page and "DCGM_FI_DEV_GPU_UTIL" not in page
    assert "DCGM_FI_DEV_XID_ERRORS" not in page and "DCGM_FI_DEV_ENFORCED_POWER_LIMIT{" in page


def test_other_errors_skip_the_field_and_log_once(inject, caplog):
    gpu = FakeGpu(UUID0, failing={"nvmlDeviceGetPowerUsage"})
    inject([gpu])
    r = reader()
    r.start()
    with caplog.at_level(logging.WARNING, logger="monitor.gpu"):
        for _ in range(3):
            (reading,) = r.read()
    assert reading.power_w is None and reading.gpu_temp_c == 64.0
    lines = [rec.getMessage() for rec in caplog.records if "power" in rec.getMessage()]
    assert len(lines) == 1 and "NVMLError_Unknown" in lines[0]
    assert gpu.calls["nvmlDeviceGetPowerUsage"] == 3  # transient errors are retried


def test_old_driver_falls_back_to_the_older_calls(inject):
    inject([FakeGpu(UUID0, old_driver=True)])
    r = reader()
    r.start()
    (reading,) = r.read()
    assert reading.gpu_temp_c == 64.0  # nvmlDeviceGetTemperature after TemperatureV: FunctionNotFound
    assert reading.fb_reserved_mib is None  # v1 memory info has no reserved
    assert reading.fb_used_mib == 60 * 1024 + 512 and reading.fb_total_mib == 80 * 1024


@pytest.mark.parametrize("code, shown", [(LIBRARY_NOT_FOUND, "NVMLError_LibraryNotFound"),
                                         (DRIVER_NOT_LOADED, "NVMLError_DriverNotLoaded")])
def test_no_driver_one_log_line_and_an_empty_page(inject, caplog, code, shown):
    module = inject([FakeGpu(UUID0)], init_error=code)
    clock = Clock()
    r = reader(clock, retry_init_s=60.0)
    with caplog.at_level(logging.INFO, logger="monitor.gpu"):
        assert r.start() is False
        for _ in range(5):
            clock.t += 30  # retried every 60 s, logged only once per cause
            assert r.read() == []
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert len(warnings) == 1 and shown in warnings[0] and "empty page" in warnings[0]
    assert not r.available and shown in (r.problem or "")
    page = render_page(r.read(), nvml_up=r.available)
    assert "DCGM_" not in page and "slo_monitor_gpu_exporter_nvml_up 0" in page
    # the driver loads later: picked up at the next retry
    module.init_error = None
    clock.t += 61
    (reading,) = r.read()
    assert reading.uuid == UUID0 and r.available


def test_no_pynvml_package(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    r = reader()
    with caplog.at_level(logging.WARNING, logger="monitor.gpu"):
        assert r.start() is False
        assert r.read() == []
    assert "nvidia-ml-py" in caplog.text and "not installed" in caplog.text


def test_lost_gpu_is_marked_and_kept_lost(inject, caplog):
    gpus = [FakeGpu(UUID0), FakeGpu(UUID1)]
    inject(gpus)
    r = reader()
    r.start()
    assert [g.lost for g in r.read()] == [False, False]
    gpus[1].lost = True  # fell off the bus: every call now raises NVMLError_GpuIsLost
    with caplog.at_level(logging.ERROR, logger="monitor.gpu"):
        first, second = r.read()
    assert not first.lost and first.util_pct == 87.0
    assert second.lost and second.uuid == UUID1 and second.util_pct is None and second.index == 1
    assert "lost" in caplog.text
    gpus[1].lost = False  # NVML answering again does not resurrect it: a lost GPU needs a reset
    assert r.read()[1].lost
    page = render_page(r.read(), nvml_up=True)
    assert f'slo_monitor_gpu_lost{{gpu="1",UUID="{UUID1}"' in page
    assert page.count(UUID1) == 1  # only the lost series: no stale values for it


def test_gpu_gone_from_enumeration_is_lost(inject):
    gpus = [FakeGpu(UUID0), FakeGpu(UUID1)]
    module = inject(gpus)
    r = reader()
    r.start()
    r.read()
    module.gpus = [gpus[0]]  # the count drops: GPU 1 no longer enumerated
    gpus[1].lost = True
    readings = r.read()
    assert [(g.uuid, g.lost) for g in readings] == [(UUID0, False), (UUID1, True)]


def test_gpu_lost_at_start_is_listed_lost(inject):
    gpus = [FakeGpu(UUID0), FakeGpu(UUID1, lost=True)]
    inject(gpus)
    r = reader()
    assert r.start()
    readings = r.read()
    assert readings[1].lost and readings[1].index == 1 and readings[1].uuid == ""


def test_xid_events_last_value_and_window_counts(inject):
    gpus = [FakeGpu(UUID0), FakeGpu(UUID1)]
    module = inject(gpus)
    clock = Clock()
    r = reader(clock, xid_window_s=300.0)
    r.start()
    module.emit_xid(gpus[1], 79)
    module.emit_xid(gpus[1], 79)
    module.emit_xid(gpus[1], 13)
    first, second = r.read()
    assert first.xid_last == 0 and first.xid_recent == {}
    assert second.xid_last == 13 and second.xid_recent == {79: 2, 13: 1}
    page = render_page([first, second], nvml_up=True)
    assert 'err_code="13",err_msg="Graphics Engine Exception"} 13' in page
    assert 'xid="79"} 2' in page and 'err_code="0",err_msg="No Error"} 0' in page
    clock.t += 301  # out of the window: the count goes, the last value stays (as dcgm-exporter)
    second = r.read()[1]
    assert second.xid_recent == {} and second.xid_last == 13


def test_gpm_is_asked_once_on_a_gpu_without_it_and_never_on_an_old_driver(inject):
    module = inject([FakeGpu(UUID0), FakeGpu(UUID1, gpm=(10.0, 5.0), unsupported={"nvmlGpmQueryDeviceSupport"})])
    r = reader()
    assert r.start()
    for _ in range(3):
        readings = r.read()
    assert all(x.gr_engine_active is None and x.pipe_tensor_active is None for x in readings)
    assert [g.calls.get("nvmlGpmQueryDeviceSupport") for g in module.gpus] == [1, 1]
    assert "nvmlGpmSampleGet" not in module.gpus[0].calls
    del module.nvmlGpmQueryDeviceSupport  # a binding older than the GPM API
    r.close()
    r2 = reader()
    assert r2.start() and r2.read()[0].gr_engine_active is None
    assert "DCGM_FI_PROF" not in render_page(r2.read(), nvml_up=True)


def test_gpm_ratios_come_from_two_samples(inject):
    module = inject([FakeGpu(UUID0, gpm=(100.0, 0.0))])
    r = reader()
    assert r.start()
    assert r.read()[0].gr_engine_active is None
    [reading] = r.read()
    assert (reading.gr_engine_active, reading.pipe_tensor_active) == (1.0, 0.0)  # 0 here is measured, not absent
    assert module.gpm_samples_live == 1  # the latest sample, kept for the next read
    r.close()
    assert module.gpm_samples_live == 0
