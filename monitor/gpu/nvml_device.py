"""One GPU as NVML sees it: what the reader keeps per device between reads, and the per-device calls
that need care (a newer and an older form of the same call; GPM activity between two samples).

Functions take the `pynvml` module they call, so they work with the real binding and the tests' fake.
"""

from __future__ import annotations

import logging
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

log = logging.getLogger("monitor.gpu")


class GpuLost(Exception):
    """NVML says the GPU fell off the bus: the reader marks it lost for good."""


@dataclass
class GpuState:
    """What the reader keeps per GPU between reads."""

    index: int
    handle: Any
    uuid: str
    name: str | None
    pci_bus_id: str | None
    lost: bool = False
    unsupported: set[str] = field(default_factory=set)
    warned: set[str] = field(default_factory=set)
    xid_supported: bool = False
    xid_last: int = 0
    xid_events: deque = field(default_factory=deque)  # (monotonic time, xid)
    gpm_supported: bool | None = None  # None until asked
    gpm_sample: Any = None  # the previous GPM sample, to compute metrics against


def gpm_activity(nvml: ModuleType, gpu: GpuState, get: Callable[[str, Callable[[], Any]], Any]) -> dict[str, float]:
    """Graphics-engine and tensor-pipe activity (0–1) between the previous GPM sample and one
    taken now; {} where GPM is not supported, and on the first read (no previous sample)."""
    h = gpu.handle
    if gpu.gpm_supported is None:
        if not hasattr(nvml, "nvmlGpmQueryDeviceSupport"):  # a binding older than GPM
            gpu.gpm_supported = False
            return {}

        def query() -> Any:
            try:
                return nvml.nvmlGpmQueryDeviceSupport(h)
            except nvml.NVMLError_FunctionNotFound:  # a driver older than GPM
                raise nvml.NVMLError(nvml.NVML_ERROR_NOT_SUPPORTED) from None

        support = get("gpm", query)
        if support is None and "gpm" not in gpu.unsupported:
            return {}  # the query failed this time: asked again at the next read
        gpu.gpm_supported = bool(support is not None and getattr(support, "isSupportedDevice", 0))
        if not gpu.gpm_supported:
            log.info("%s: no GPM support; DCGM_FI_PROF_GR_ENGINE_ACTIVE / PIPE_TENSOR_ACTIVE left out",
                     describe(gpu))
    if not gpu.gpm_supported or "gpm" in gpu.unsupported:
        return {}

    def sample_now() -> Any:
        sample = nvml.nvmlGpmSampleAlloc()
        try:
            return nvml.nvmlGpmSampleGet(h, sample)
        except nvml.NVMLError:
            nvml.nvmlGpmSampleFree(sample)
            raise

    current = get("gpm", sample_now)
    if current is None:
        return {}
    previous, gpu.gpm_sample = gpu.gpm_sample, current
    if previous is None:
        return {}
    wanted = (("gr_engine_active", nvml.NVML_GPM_METRIC_GRAPHICS_UTIL),
              ("pipe_tensor_active", nvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL))

    def metrics() -> Any:
        request = nvml.c_nvmlGpmMetricsGet_t()
        request.version = nvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(wanted)
        request.sample1, request.sample2 = previous, current
        for i, (_, metric_id) in enumerate(wanted):
            request.metrics[i].metricId = metric_id
        return nvml.nvmlGpmMetricsGet(request)

    try:
        answer = get("gpm", metrics)
    finally:
        with suppress(nvml.NVMLError):
            nvml.nvmlGpmSampleFree(previous)
    if answer is None:
        return {}
    out: dict[str, float] = {}
    for i, (attr, _) in enumerate(wanted):
        metric = answer.metrics[i]
        if metric.nvmlReturn == nvml.NVML_SUCCESS and 0.0 <= metric.value <= 100.0:
            out[attr] = float(metric.value) / 100.0
    return out


# NVML calls with a newer and an older form: the newer is tried first, the older where the
# driver lacks it (NVMLError_FunctionNotFound) or the binding is too old (AttributeError).


def memory_info(nvml: ModuleType, h: Any) -> Any:
    v2 = getattr(nvml, "nvmlMemory_v2", None)
    if v2 is not None:
        try:
            return nvml.nvmlDeviceGetMemoryInfo(h, version=v2)
        except (nvml.NVMLError_FunctionNotFound, version_mismatch(nvml)):
            pass
    return nvml.nvmlDeviceGetMemoryInfo(h)


def temperature(nvml: ModuleType, h: Any) -> Any:
    if hasattr(nvml, "nvmlDeviceGetTemperatureV"):
        try:
            return nvml.nvmlDeviceGetTemperatureV(h, nvml.NVML_TEMPERATURE_GPU)
        except nvml.NVMLError_FunctionNotFound:
            pass
    return nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)


def memory_temperature(nvml: ModuleType, h: Any) -> Any:
    """HBM temperature, only through field values (NVML_FI_DEV_MEMORY_TEMP); per-field status."""
    field_id = getattr(nvml, "NVML_FI_DEV_MEMORY_TEMP", None)
    if field_id is None or not hasattr(nvml, "nvmlDeviceGetFieldValues"):
        raise nvml.NVMLError(nvml.NVML_ERROR_NOT_SUPPORTED)
    value = nvml.nvmlDeviceGetFieldValues(h, [field_id])[0]
    if value.nvmlReturn != nvml.NVML_SUCCESS:
        raise nvml.NVMLError(value.nvmlReturn)
    return field_value(nvml, value)


def throttle_reasons(nvml: ModuleType, h: Any) -> Any:
    if hasattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons"):
        try:
            return nvml.nvmlDeviceGetCurrentClocksEventReasons(h)
        except nvml.NVMLError_FunctionNotFound:
            pass
    return nvml.nvmlDeviceGetCurrentClocksThrottleReasons(h)


def version_mismatch(nvml: ModuleType) -> type[Exception]:
    return getattr(nvml, "NVMLError_ArgumentVersionMismatch", nvml.NVMLError_FunctionNotFound)


def field_value(nvml: ModuleType, value: Any) -> float:
    """The number in an nvmlFieldValue_t union, by its valueType."""
    member = {
        getattr(nvml, "NVML_VALUE_TYPE_DOUBLE", 0): "dVal",
        getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_INT", 1): "uiVal",
        getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_LONG", 2): "ulVal",
        getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG", 3): "ullVal",
        getattr(nvml, "NVML_VALUE_TYPE_SIGNED_LONG_LONG", 4): "sllVal",
        getattr(nvml, "NVML_VALUE_TYPE_SIGNED_INT", 5): "siVal",
    }.get(value.valueType, "uiVal")
    return float(getattr(value.value, member))


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def describe(gpu: GpuState) -> str:
    return f"GPU {gpu.index} ({gpu.uuid or 'uuid unknown'})"
