"""The exporter over real HTTP: its page parses with prometheus_client, carries dcgm-exporter's names
and labels, and our dcgm parser reads back exactly the readings NVML gave. The command itself runs
as a subprocess with the real nvidia-ml-py: without a driver it logs one line and serves an empty page."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.gpu.exporter import ExporterServer, GpuPageSource
from monitor.gpu.nvml import NvmlReader
from monitor.gpu.parse import parse_gpu_page

from tests.helpers.fake_pynvml import FakeGpu, make_pynvml
from tests.helpers.ports import free_port

UUIDS = ["GPU-0a0a0a0a-0000-0000-0000-000000000000", "GPU-1b1b1b1b-0000-0000-0000-000000000000"]


@pytest.fixture
def served(monkeypatch):
    gpus = [FakeGpu(UUIDS[0]), FakeGpu(UUIDS[1], bus_id="00000000:2A:00.0", unsupported={"nvmlDeviceGetPowerUsage"})]
    module = make_pynvml(gpus)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    reader = NvmlReader("gpu-node-7")
    reader.start()
    server = ExporterServer("127.0.0.1", 0, GpuPageSource(reader, min_interval_s=0.0))
    server.serve_in_thread()
    try:
        yield server, reader, module, gpus
    finally:
        server.shutdown()
        server.server_close()
        reader.close()


def test_page_has_dcgm_names_and_labels(served):
    server, reader, module, gpus = served
    module.emit_xid(gpus[0], 48)
    response = httpx.get(server.url + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
                 "DCGM_FI_DEV_FB_RESERVED", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_MEMORY_TEMP",
                 "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_ENFORCED_POWER_LIMIT", "DCGM_FI_DEV_SM_CLOCK",
                 "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
                 "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_XID_ERRORS", "DCGM_EXP_XID_ERRORS_COUNT"):
        assert name in families, name
    util = {s.labels["gpu"]: s for s in families["DCGM_FI_DEV_GPU_UTIL"].samples}
    assert util["0"].value == 87.0
    assert util["0"].labels == {"gpu": "0", "UUID": UUIDS[0], "pci_bus_id": "00000000:18:00.0", "device": "nvidia0",
                                "modelName": "NVIDIA H100 80GB HBM3", "hostname": "gpu-node-7",
                                "DCGM_FI_DRIVER_VERSION": "550.54.15"}
    assert families["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"].type == "counter"
    # the raw sample keeps dcgm-exporter's name (no `_total` appended), as Prometheus will store it
    assert "\nDCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{" in response.text
    power = families["DCGM_FI_DEV_POWER_USAGE"].samples
    assert [s.labels["gpu"] for s in power] == ["0"]  # GPU 1 does not support it: absent, not 0
    assert power[0].value == pytest.approx(512.345)
    xid = [s for s in families["DCGM_FI_DEV_XID_ERRORS"].samples if s.labels["gpu"] == "0"][0]
    assert (xid.value, xid.labels["err_code"], xid.labels["err_msg"]) == (48, "48", "Double Bit ECC Error")


def test_the_old_hostname_spelling_on_request_reads_back_the_same(served):
    server, reader, module, gpus = served
    page = GpuPageSource(reader, min_interval_s=0.0, hostname_label="Hostname").page()
    assert 'Hostname="gpu-node-7"' in page and 'hostname="' not in page
    assert [r.host for r in parse_gpu_page(page).readings] == ["gpu-node-7", "gpu-node-7"]


def test_profiling_fields_appear_where_gpm_is_supported_and_are_absent_elsewhere(served):
    server, reader, module, gpus = served
    gpus[0].gpm = (62.5, 40.0)  # GPU 0 is a Hopper; GPU 1 has no GPM
    reader.close()
    reader.start()
    first = httpx.get(server.url + "/metrics").text
    assert "DCGM_FI_PROF_GR_ENGINE_ACTIVE" not in first  # one GPM sample so far: nothing to compare yet
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(server.url + "/metrics").text)}
    for name, value in (("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 0.625), ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", 0.4)):
        samples = families[name].samples
        assert [(s.labels["gpu"], s.value) for s in samples] == [("0", value)], name  # GPU 1: absent, not 0
    reading = parse_gpu_page(httpx.get(server.url + "/metrics").text).readings[0]
    assert (reading.gr_engine_active, reading.pipe_tensor_active) == (0.625, 0.4)
    reader.close()
    assert module.gpm_samples_live == 0  # every GPM sample freed


def test_our_parser_reads_back_what_nvml_gave(served):
    server, reader, module, gpus = served
    module.emit_xid(gpus[1], 79)
    text = httpx.get(server.url + "/metrics").text
    expected = reader.read()  # same state (the XID event was drained by the page read)
    page = parse_gpu_page(text, source=server.url)
    assert page.nvml_up is True
    from dataclasses import replace

    assert list(page.readings) == [replace(r, source=server.url) for r in expected]
    assert page.readings[1].xid_recent == {79: 1} and page.readings[1].power_w is None


def test_lost_gpu_on_the_page(served):
    server, reader, module, gpus = served
    gpus[0].lost = True
    text = httpx.get(server.url + "/metrics").text
    readings = parse_gpu_page(text).readings
    assert [(r.uuid, r.lost) for r in readings] == [(UUIDS[0], True), (UUIDS[1], False)]
    assert readings[0].util_pct is None and readings[1].util_pct == 87.0
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/nope").status_code == 404


@pytest.mark.e2e
def test_exporter_command_without_a_driver(tmp_path):
    """The real command with the real nvidia-ml-py. Where an NVIDIA driver is present it must serve
    GPU series; elsewhere one clear log line and an empty page; SIGTERM ends it with exit 0."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "exporter", "--listen", f"127.0.0.1:{port}",
                             "--hostname", "test-node"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        text = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and text is None:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.TransportError:
                time.sleep(0.1)
        assert text is not None, "exporter did not start"
        families = {f.name for f in text_string_to_metric_families(text)}
        page = parse_gpu_page(text)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    if page.nvml_up:  # an NVIDIA GPU is at hand: its page must carry dcgm-exporter's series
        assert page.readings and "DCGM_FI_DEV_FB_USED" in families
        print(text)  # recorded in the test log: what a real GPU's page read
    else:
        assert not page.readings and not [f for f in families if f.startswith("DCGM_")]
        lines = [line for line in err.splitlines() if "no GPU telemetry" in line]
        assert len(lines) == 1 and "empty page" in lines[0], err


@pytest.mark.e2e
def test_exporter_command_bad_listen():
    result = subprocess.run([sys.executable, "-m", "monitor", "exporter", "--listen", "nowhere"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--listen" in result.stderr
