"""A stand-in for nvidia-ml-py's `pynvml`, injected through `sys.modules` by the GPU tests only.

It mirrors the real binding's surface as far as the reader uses it (checked against nvidia-ml-py
13.615.71): `NVMLError(code)` maps to the `NVMLError_*` subclass, subclasses take no argument,
memory in bytes, power in milliwatts, `nvmlEventSetWait_v2(set, 0)` raises `NVMLError_Timeout` when
no event waits. Each `FakeGpu` says which calls it does not support and whether it has been lost,
and tests change that between reads, as a GPU would.
"""

from __future__ import annotations

import types
from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

# error codes as in nvml.h / pynvml
SUCCESS, UNINITIALIZED, NOT_SUPPORTED, DRIVER_NOT_LOADED, TIMEOUT = 0, 1, 3, 9, 10
LIBRARY_NOT_FOUND, FUNCTION_NOT_FOUND, GPU_IS_LOST, ARGUMENT_VERSION_MISMATCH = 12, 13, 15, 25
_NAMES = {
    UNINITIALIZED: ("Uninitialized", "Uninitialized"),
    NOT_SUPPORTED: ("NotSupported", "Not Supported"),
    DRIVER_NOT_LOADED: ("DriverNotLoaded", "Driver Not Loaded"),
    TIMEOUT: ("Timeout", "Timeout"),
    LIBRARY_NOT_FOUND: ("LibraryNotFound", "NVML Shared Library Not Found"),
    FUNCTION_NOT_FOUND: ("FunctionNotFound", "Function Not Found"),
    GPU_IS_LOST: ("GpuIsLost", "GPU is lost"),
    ARGUMENT_VERSION_MISMATCH: ("ArgumentVersionMismatch", "Argument Version Mismatch"),
    999: ("Unknown", "Unknown Error"),
}
GIB = 2**30


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    bus_id: str = "00000000:18:00.0"
    util: tuple[int, int] = (87, 41)
    total: int = 80 * GIB
    used: int = 60 * GIB
    reserved: int = 512 * 2**20
    temp: int = 64
    mem_temp: int = 71
    power_mw: int = 512_345
    limit_mw: int = 700_000
    energy_mj: int = 123_456_789
    sm_clock: int = 1980
    mem_clock: int = 2619
    throttle: int = 0x4  # SwPowerCap
    pcie_replays: int = 2
    ecc: dict[tuple[int, int], int] = field(default_factory=lambda: {(0, 0): 5, (1, 0): 0, (0, 1): 17, (1, 1): 1})
    unsupported: set[str] = field(default_factory=set)  # names of calls answering NotSupported
    failing: set[str] = field(default_factory=set)  # calls answering NVMLError_Unknown
    old_driver: bool = False  # no _v2 / V entry points: FunctionNotFound
    xid_events: bool = True
    # GPM (Hopper+): (graphics engine %, tensor pipe %) between two samples; None: the GPU has no GPM
    gpm: tuple[float, float] | None = None
    lost: bool = False
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.total - self.used - self.reserved


def make_pynvml(gpus: list[FakeGpu], *, driver: str = "550.54.15", init_error: int | None = None) -> types.ModuleType:
    """A fresh fake module. `module.gpus` is the enumerated list (remove one to make it vanish),
    `module.init_error` makes nvmlInit fail with that code, `module.emit_xid(gpu, xid)` queues an event."""
    m = types.ModuleType("pynvml")
    m.gpus = gpus
    m.init_error = init_error
    m.initialized = False
    m.events = deque()

    class NVMLError(Exception):
        _map: dict[int, type] = {}

        def __new__(cls, value: int = 999):
            if cls is NVMLError:
                cls = NVMLError._map.get(value, NVMLError)
            obj = Exception.__new__(cls)
            obj.value = value
            return obj

        def __init__(self, value: int = 999) -> None:
            super().__init__(getattr(self, "value", value))

        def __str__(self) -> str:
            return _NAMES.get(self.value, ("", f"NVML Error with code {self.value}"))[1]

    m.NVMLError = NVMLError
    for code, (name, _) in _NAMES.items():
        def new(cls, *args, _code=code):
            return NVMLError.__new__(cls, _code)

        sub = type(f"NVMLError_{name}", (NVMLError,), {"__new__": new})
        NVMLError._map[code] = sub
        setattr(m, f"NVMLError_{name}", sub)

    m.NVML_SUCCESS, m.NVML_ERROR_NOT_SUPPORTED = SUCCESS, NOT_SUPPORTED
    m.NVML_TEMPERATURE_GPU, m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM = 0, 1, 2
    m.NVML_MEMORY_ERROR_TYPE_CORRECTED, m.NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 0, 1
    m.NVML_VOLATILE_ECC, m.NVML_AGGREGATE_ECC = 0, 1
    m.NVML_FI_DEV_MEMORY_TEMP = 82
    m.NVML_VALUE_TYPE_UNSIGNED_INT = 1
    m.nvmlEventTypeXidCriticalError = 8
    m.nvmlMemory_v2 = 0x02000028

    def check(h: FakeGpu, call: str) -> None:
        h.calls[call] = h.calls.get(call, 0) + 1
        if not m.initialized:
            raise NVMLError(UNINITIALIZED)
        if h.lost:
            raise NVMLError(GPU_IS_LOST)
        if call in h.unsupported:
            raise NVMLError(NOT_SUPPORTED)
        if call in h.failing:
            raise NVMLError(999)

    def nvmlInit() -> None:
        if m.init_error is not None:
            raise NVMLError(m.init_error)
        m.initialized = True

    def nvmlShutdown() -> None:
        if not m.initialized:
            raise NVMLError(UNINITIALIZED)
        m.initialized = False

    def nvmlDeviceGetCount() -> int:
        if not m.initialized:
            raise NVMLError(UNINITIALIZED)
        return len(m.gpus)

    def nvmlDeviceGetHandleByIndex(i: int) -> FakeGpu:
        if not m.initialized:
            raise NVMLError(UNINITIALIZED)
        gpu = m.gpus[i]
        if gpu.lost:
            raise NVMLError(GPU_IS_LOST)
        return gpu

    def nvmlDeviceGetMemoryInfo(h: FakeGpu, version: Any = None) -> SimpleNamespace:
        check(h, "nvmlDeviceGetMemoryInfo")
        if version:
            if h.old_driver:
                raise NVMLError(FUNCTION_NOT_FOUND)
            return SimpleNamespace(total=h.total, free=h.free, used=h.used, reserved=h.reserved, version=version)
        return SimpleNamespace(total=h.total, free=h.free, used=h.used + h.reserved)

    def nvmlDeviceGetTemperatureV(h: FakeGpu, sensor: int) -> int:
        check(h, "nvmlDeviceGetTemperatureV")
        if h.old_driver:
            raise NVMLError(FUNCTION_NOT_FOUND)
        return h.temp

    def nvmlDeviceGetFieldValues(h: FakeGpu, ids: list[int]) -> list[SimpleNamespace]:
        check(h, "nvmlDeviceGetFieldValues")
        supported = "memory_temp" not in h.unsupported
        return [SimpleNamespace(fieldId=i, valueType=1, nvmlReturn=SUCCESS if supported else NOT_SUPPORTED,
                                value=SimpleNamespace(uiVal=h.mem_temp if supported else 0)) for i in ids]

    def nvmlDeviceGetTotalEccErrors(h: FakeGpu, kind: int, counter: int) -> int:
        check(h, "nvmlDeviceGetTotalEccErrors")
        return h.ecc[(kind, counter)]

    def nvmlEventSetWait_v2(event_set: object, timeout_ms: int) -> SimpleNamespace:
        if not m.events:
            raise NVMLError(TIMEOUT)
        gpu, xid = m.events.popleft()
        return SimpleNamespace(device=gpu, eventType=m.nvmlEventTypeXidCriticalError, eventData=xid,
                               gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)

    def nvmlDeviceRegisterEvents(h: FakeGpu, types_: int, event_set: object) -> None:
        check(h, "nvmlDeviceRegisterEvents")
        if not h.xid_events:
            raise NVMLError(NOT_SUPPORTED)

    simple = {
        "nvmlDeviceGetUUID": lambda h: h.uuid,
        "nvmlDeviceGetName": lambda h: h.name,
        "nvmlDeviceGetPciInfo": lambda h: SimpleNamespace(busId=h.bus_id),
        "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=h.util[0], memory=h.util[1]),
        "nvmlDeviceGetTemperature": lambda h, sensor: h.temp,
        "nvmlDeviceGetPowerUsage": lambda h: h.power_mw,
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: h.limit_mw,
        "nvmlDeviceGetTotalEnergyConsumption": lambda h: h.energy_mj,
        "nvmlDeviceGetClockInfo": lambda h, clock: h.sm_clock if clock == 1 else h.mem_clock,
        "nvmlDeviceGetCurrentClocksEventReasons": lambda h: h.throttle,
        "nvmlDeviceGetCurrentClocksThrottleReasons": lambda h: h.throttle,
        "nvmlDeviceGetPcieReplayCounter": lambda h: h.pcie_replays,
    }
    for name, body in simple.items():
        def call(h: FakeGpu, *args: Any, _name: str = name, _body: Any = body) -> Any:
            check(h, _name)
            return _body(h, *args)

        setattr(m, name, call)

    for name, fn in dict(locals()).items():
        if name.startswith("nvml") and callable(fn):
            setattr(m, name, fn)
    m.NVML_GPM_METRICS_GET_VERSION, m.NVML_GPM_METRIC_GRAPHICS_UTIL, m.NVML_GPM_METRIC_ANY_TENSOR_UTIL = 1, 1, 5
    m.gpm_samples_live = 0  # allocated and not freed, so tests can check nothing leaks

    def nvmlGpmQueryDeviceSupport(h: FakeGpu) -> SimpleNamespace:
        check(h, "nvmlGpmQueryDeviceSupport")
        return SimpleNamespace(version=1, isSupportedDevice=1 if h.gpm is not None else 0)

    def nvmlGpmSampleAlloc() -> SimpleNamespace:
        m.gpm_samples_live += 1
        return SimpleNamespace(gpu=None)

    def nvmlGpmSampleFree(sample: SimpleNamespace) -> None:
        m.gpm_samples_live -= 1

    def nvmlGpmSampleGet(h: FakeGpu, sample: SimpleNamespace) -> SimpleNamespace:
        check(h, "nvmlGpmSampleGet")
        sample.gpu = h
        return sample

    def c_nvmlGpmMetricsGet_t() -> SimpleNamespace:
        return SimpleNamespace(version=0, numMetrics=0, sample1=None, sample2=None,
                               metrics=[SimpleNamespace(metricId=0, nvmlReturn=SUCCESS, value=0.0) for _ in range(98)])

    def nvmlGpmMetricsGet(request: SimpleNamespace) -> SimpleNamespace:
        gpu = request.sample2.gpu
        assert request.version == 1 and request.sample1.gpu is gpu
        for metric in request.metrics[: request.numMetrics]:
            metric.value = {1: gpu.gpm[0], 5: gpu.gpm[1]}.get(metric.metricId, 0.0)
        return request

    for fn in (nvmlGpmQueryDeviceSupport, nvmlGpmSampleAlloc, nvmlGpmSampleFree, nvmlGpmSampleGet,
               c_nvmlGpmMetricsGet_t, nvmlGpmMetricsGet):
        setattr(m, fn.__name__, fn)
    m.nvmlSystemGetDriverVersion = lambda: driver
    m.nvmlEventSetCreate = lambda: object()
    m.nvmlEventSetFree = lambda event_set: None
    m.emit_xid = lambda gpu, xid: m.events.append((gpu, xid))
    return m
