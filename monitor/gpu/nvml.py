"""Reading every local GPU through NVML (`pynvml`, from NVIDIA's nvidia-ml-py package).

What can go wrong is the normal case on a fleet, so each failure has its own narrow consequence:
- no package, no library or no driver: one log line saying which, an empty page, never a crash; the
  reader retries quietly (a node whose driver loads after the exporter starts is picked up);
- a field the GPU does not support (`NVMLError_NotSupported`): that field is absent, the others are
  read, and it is not asked again (support does not come back on the same device);
- any other error on one field: that field is absent this time, logged once per GPU and field;
- a GPU that drops off the bus (`NVMLError_GpuIsLost`, or gone from a new enumeration): marked lost
  and kept on the page as lost until the exporter restarts, so an alert sees it instead of a series
  that silently vanished.

XID events come from an NVML event set drained (without blocking) at each read: no thread, and the
last XID and the per-XID counts over `xid_window_s` are what dcgm-exporter publishes.

`DCGM_FI_PROF_GR_ENGINE_ACTIVE` and `DCGM_FI_PROF_PIPE_TENSOR_ACTIVE` have no classic NVML getter; they
come from NVML's GPM API (Hopper and later): a GPM sample is taken at each read and the metrics are
computed between it and the previous one (`NVML_GPM_METRIC_GRAPHICS_UTIL`, `…_ANY_TENSOR_UTIL`, in %,
published as dcgm's 0–1 ratios). A GPU without GPM support (`nvmlGpmQueryDeviceSupport`), or a driver
or binding without the API, simply lacks the two fields — absent, never 0 — and is not asked again;
the first read after start has no previous sample, so the fields appear from the second read on.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from contextlib import suppress
from dataclasses import replace
from typing import Any, Callable

from monitor.gpu.nvml_device import (
    GpuLost,
    GpuState,
    describe,
    gpm_activity,
    memory_info,
    memory_temperature,
    temperature,
    text,
    throttle_reasons,
)
from monitor.gpu.readings import MIB, GpuReading

log = logging.getLogger("monitor.gpu")

XID_WINDOW_S = 300.0  # dcgm-exporter's default --xid-count-window-size (5 minutes)
RETRY_INIT_S = 60.0
_MAX_EVENTS_PER_READ = 1024  # bounds one drain if a GPU floods events


class NvmlReader:
    """The local GPUs as `GpuReading`s. Thread-safe: the HTTP server may call `read` concurrently.

    `hostname` is what the page's `Hostname` label will say (dcgm-exporter: `$NODE_NAME`, else the
    OS hostname). `clock` is monotonic seconds (XID windows, init retries); tests pass their own.
    """

    def __init__(
        self,
        hostname: str,
        *,
        xid_window_s: float = XID_WINDOW_S,
        retry_init_s: float = RETRY_INIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hostname = hostname
        self.xid_window_s = xid_window_s
        self.retry_init_s = retry_init_s
        self.clock = clock
        self.problem: str | None = "not started"  # why no GPU can be read, None while NVML works
        self.driver_version: str | None = None
        # the pynvml module once nvmlInit succeeded (None before): imported at start, so Any to the checker
        self._nvml: Any = None
        self._gpus: list[GpuState] = []
        self._event_set: Any = None
        self._next_init = 0.0
        self._logged_problem: str | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.problem is None

    # -- lifecycle

    def start(self) -> bool:
        """Initialise NVML and enumerate the GPUs; False (and one log line) when NVML is unusable."""
        with self._lock:
            return self._start()

    def _start(self) -> bool:
        self._next_init = self.clock() + self.retry_init_s
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return self._unavailable("the nvidia-ml-py package (module pynvml) is not installed")
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return self._unavailable(f"nvmlInit failed: {type(exc).__name__}: {exc}")
        self._nvml = nvml
        try:
            self.driver_version = text(nvml.nvmlSystemGetDriverVersion())
        except nvml.NVMLError:
            self.driver_version = None
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            self._shutdown()
            return self._unavailable(f"nvmlDeviceGetCount failed: {type(exc).__name__}: {exc}")
        self._event_set = self._create_event_set()
        self._gpus = [self._enumerate(i) for i in range(count)]
        self.problem = None
        self._logged_problem = None
        log.info("NVML: driver %s, %d GPU(s)%s", self.driver_version or "unknown", count,
                 "".join(f"; {g.index}: {g.name} {g.uuid}" for g in self._gpus))
        return True

    def _unavailable(self, problem: str) -> bool:
        self.problem = problem
        if problem != self._logged_problem:  # one line per distinct cause, not one per retry
            log.warning("no GPU telemetry: %s; serving an empty page (is the NVIDIA driver installed "
                        "and loaded on this node?)", problem)
            self._logged_problem = problem
        return False

    def close(self) -> None:
        with self._lock:
            self._shutdown()
            self.problem = "closed"

    def _shutdown(self) -> None:
        nvml, self._nvml = self._nvml, None
        if nvml is None:
            return
        for gpu in self._gpus:
            if gpu.gpm_sample is not None:
                with suppress(nvml.NVMLError):
                    nvml.nvmlGpmSampleFree(gpu.gpm_sample)
                gpu.gpm_sample = None
        if self._event_set is not None:
            with suppress(nvml.NVMLError):
                nvml.nvmlEventSetFree(self._event_set)
            self._event_set = None
        with suppress(nvml.NVMLError):
            nvml.nvmlShutdown()

    # -- enumeration

    def _create_event_set(self) -> Any:
        nvml = self._nvml
        try:
            return nvml.nvmlEventSetCreate()
        except (nvml.NVMLError, AttributeError) as exc:
            log.info("NVML: XID events unavailable (%s)", exc)
            return None

    def _enumerate(self, index: int) -> GpuState:
        """Handle and identity of GPU `index`; a GPU already lost at start is listed as lost."""
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = text(nvml.nvmlDeviceGetUUID(handle))
        except nvml.NVMLError as exc:
            log.warning("GPU %d: cannot be opened (%s: %s); reported as lost", index, type(exc).__name__, exc)
            return GpuState(index, None, "", None, None, lost=True)
        name = self._identity(lambda: text(nvml.nvmlDeviceGetName(handle)))
        pci = self._identity(lambda: text(nvml.nvmlDeviceGetPciInfo(handle).busId))
        gpu = GpuState(index, handle, uuid, name, pci)
        if self._event_set is not None:
            try:
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, self._event_set)
                gpu.xid_supported = True
            except nvml.NVMLError as exc:
                log.info("GPU %d: XID events not available (%s)", index, exc)
        return gpu

    def _identity(self, call: Callable[[], str]) -> str | None:
        try:
            return call()
        except self._nvml.NVMLError:
            return None

    def _reenumerate(self, count: int) -> None:
        """The GPU count changed: GPUs no longer enumerated are lost, new ones are added."""
        nvml = self._nvml
        found: dict[str, int] = {}
        for i in range(count):
            try:
                found[text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i)))] = i
            except nvml.NVMLError:
                continue
        for gpu in self._gpus:
            if not gpu.lost and gpu.uuid not in found:
                gpu.lost = True
                log.error("%s: no longer enumerated by NVML; marked lost", describe(gpu))
        known = {g.uuid for g in self._gpus}
        for uuid, i in found.items():
            if uuid not in known:
                self._gpus.append(self._enumerate(i))
                log.info("GPU %d (%s) appeared", i, uuid)

    # -- reading

    def read(self) -> list[GpuReading]:
        """Every GPU's reading now; [] while NVML is unavailable (retried every `retry_init_s`)."""
        with self._lock:
            if self._nvml is None:
                if self.problem == "closed" or self.clock() < self._next_init or not self._start():
                    return []
            nvml = self._nvml
            try:
                count = nvml.nvmlDeviceGetCount()
                if count != sum(1 for g in self._gpus if not g.lost):
                    self._reenumerate(count)
            except nvml.NVMLError as exc:
                log.warning("nvmlDeviceGetCount failed (%s); reading the known GPUs", exc)
            self._drain_xid_events()
            now = self.clock()
            return [self._read_gpu(gpu, now) for gpu in self._gpus]

    def _read_gpu(self, gpu: GpuState, now: float) -> GpuReading:
        base = GpuReading(uuid=gpu.uuid, index=gpu.index, host=self.hostname, model_name=gpu.name,
                          pci_bus_id=gpu.pci_bus_id, driver_version=self.driver_version, lost=gpu.lost)
        if gpu.lost:
            return base
        try:
            values = self._fields(gpu)
        except GpuLost:
            gpu.lost = True
            log.error("%s: NVML reports the GPU lost (fallen off the bus?); marked lost", describe(gpu))
            return replace(base, lost=True)
        if gpu.xid_supported:
            while gpu.xid_events and gpu.xid_events[0][0] <= now - self.xid_window_s:
                gpu.xid_events.popleft()
            recent: dict[int, int] = {}
            for _, xid in gpu.xid_events:
                recent[xid] = recent.get(xid, 0) + 1
            values["xid_last"] = gpu.xid_last
            values["xid_recent"] = recent
        return replace(base, **values)

    def _fields(self, gpu: GpuState) -> dict[str, Any]:
        """Each field read on its own: one unsupported or failing call costs only its own fields."""
        nvml, h = self._nvml, gpu.handle
        out: dict[str, Any] = {}

        def get(name: str, call: Callable[[], Any]) -> Any:
            if name in gpu.unsupported:
                return None
            try:
                return call()
            except nvml.NVMLError_NotSupported:
                gpu.unsupported.add(name)
                log.debug("%s: %s not supported", describe(gpu), name)
            except nvml.NVMLError_GpuIsLost:
                raise GpuLost() from None
            except nvml.NVMLError as exc:
                if name not in gpu.warned:
                    gpu.warned.add(name)
                    log.warning("%s: reading %s failed (%s: %s); skipped", describe(gpu), name, type(exc).__name__, exc)
            return None

        util = get("utilization", lambda: nvml.nvmlDeviceGetUtilizationRates(h))
        if util is not None:
            out["util_pct"], out["mem_copy_util_pct"] = float(util.gpu), float(util.memory)
        mem = get("memory", lambda: memory_info(nvml, h))
        if mem is not None:
            out["fb_total_mib"] = float(mem.total // MIB)
            out["fb_free_mib"] = float(mem.free // MIB)
            out["fb_used_mib"] = float(mem.used // MIB)
            reserved = getattr(mem, "reserved", None)
            if reserved is not None:
                out["fb_reserved_mib"] = float(reserved // MIB)
        out["gpu_temp_c"] = _float(get("temperature", lambda: temperature(nvml, h)))
        out["memory_temp_c"] = _float(get("memory_temperature", lambda: memory_temperature(nvml, h)))
        power = get("power", lambda: nvml.nvmlDeviceGetPowerUsage(h))
        out["power_w"] = power / 1000.0 if power is not None else None
        limit = get("power_limit", lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(h))
        out["power_limit_w"] = limit / 1000.0 if limit is not None else None
        out["energy_mj"] = _float(get("energy", lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h)))
        out["sm_clock_mhz"] = _float(get("sm_clock", lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)))
        out["mem_clock_mhz"] = _float(get("mem_clock", lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM)))
        out["throttle_reasons"] = _float(get("throttle_reasons", lambda: throttle_reasons(nvml, h)))
        out["pcie_replays"] = _float(get("pcie_replays", lambda: nvml.nvmlDeviceGetPcieReplayCounter(h)))
        out.update(gpm_activity(nvml, gpu, get))
        for attr, kind, counter in (
            ("ecc_sbe_volatile", "NVML_MEMORY_ERROR_TYPE_CORRECTED", "NVML_VOLATILE_ECC"),
            ("ecc_dbe_volatile", "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", "NVML_VOLATILE_ECC"),
            ("ecc_sbe_aggregate", "NVML_MEMORY_ERROR_TYPE_CORRECTED", "NVML_AGGREGATE_ECC"),
            ("ecc_dbe_aggregate", "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", "NVML_AGGREGATE_ECC"),
        ):
            def ecc(k: str = kind, c: str = counter) -> Any:  # the constants are looked up inside `get`'s guard
                return nvml.nvmlDeviceGetTotalEccErrors(h, getattr(nvml, k), getattr(nvml, c))

            out[attr] = _float(get(attr, ecc))
        return {k: v for k, v in out.items() if v is not None}

    def _drain_xid_events(self) -> None:
        """Take every pending XID event without blocking (timeout 0 → NVMLError_Timeout when none)."""
        nvml = self._nvml
        if self._event_set is None:
            return
        wait = getattr(nvml, "nvmlEventSetWait_v2", None) or nvml.nvmlEventSetWait
        for _ in range(_MAX_EVENTS_PER_READ):
            try:
                data = wait(self._event_set, 0)
            except nvml.NVMLError_Timeout:
                return
            except nvml.NVMLError as exc:
                log.warning("reading XID events failed (%s); retried at the next read", exc)
                return
            if not data.eventType & nvml.nvmlEventTypeXidCriticalError:
                continue
            gpu = self._gpu_of(data.device)
            if gpu is None:
                log.warning("XID %d on a GPU NVML cannot name", data.eventData)
                continue
            gpu.xid_last = int(data.eventData)
            gpu.xid_events.append((self.clock(), gpu.xid_last))
            log.error("%s: XID %d", describe(gpu), gpu.xid_last)

    def _gpu_of(self, device: Any) -> GpuState | None:
        for gpu in self._gpus:
            if gpu.handle is device:
                return gpu
        try:  # real pynvml returns a new pointer object per event: compare by UUID
            uuid = text(self._nvml.nvmlDeviceGetUUID(device))
        except self._nvml.NVMLError:
            return None
        return next((g for g in self._gpus if g.uuid == uuid), None)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
