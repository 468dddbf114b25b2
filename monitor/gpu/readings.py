"""One GPU at one moment, as plain data, and the dcgm-exporter names each field travels under.

The exporter and the service share this type so a reading survives the round trip page → parse
unchanged (the tests check that). Units are dcgm-exporter's (MiB, W, °C, MHz, %, mJ), not NVML's
(bytes, mW): the page is what dashboards built for dcgm-exporter read, so it must say what they expect.
Every measured field is optional: a GPU that does not support a field simply lacks it, as
dcgm-exporter drops blank values rather than printing a sentinel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

MIB = 2**20

# label names, in dcgm-exporter's order (render template, tag 4.5.3-4.8.2)
LABEL_GPU, LABEL_UUID, LABEL_PCI, LABEL_DEVICE, LABEL_MODEL = "gpu", "UUID", "pci_bus_id", "device", "modelName"
# The node label: `Hostname` in every tagged dcgm-exporter up to 4.8.2, lowercase `hostname` since
# PR #655 (main, 2026-05-12). We emit the current spelling (exporter `--hostname-label` for the old
# one); the parser reads both.
LABEL_HOSTNAME = "hostname"
LABEL_HOSTNAME_TAGGED = "Hostname"
LABEL_DRIVER = "DCGM_FI_DRIVER_VERSION"

XID_METRIC = "DCGM_FI_DEV_XID_ERRORS"
XID_COUNT_METRIC = "DCGM_EXP_XID_ERRORS_COUNT"
# Our own series (dcgm-exporter has no equivalent): kept under our prefix so no dcgm name changes meaning.
LOST_METRIC = "slo_monitor_gpu_lost"
NVML_UP_METRIC = "slo_monitor_gpu_exporter_nvml_up"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One numeric field of `GpuReading` and the dcgm-exporter metric that carries it."""

    metric: str
    attr: str
    kind: Literal["gauge", "counter"]
    help: str
    decimals: bool = False  # rendered with `%f`, as dcgm-exporter prints float fields (power)


# Order follows dcgm-exporter's default-counters.csv, then the optional rows we fill from NVML.
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("DCGM_FI_DEV_SM_CLOCK", "sm_clock_mhz", "gauge", "SM clock frequency (in MHz)."),
    FieldSpec("DCGM_FI_DEV_MEM_CLOCK", "mem_clock_mhz", "gauge", "Memory clock frequency (in MHz)."),
    FieldSpec("DCGM_FI_DEV_MEMORY_TEMP", "memory_temp_c", "gauge", "Memory temperature (in C)."),
    FieldSpec("DCGM_FI_DEV_GPU_TEMP", "gpu_temp_c", "gauge", "GPU temperature (in C)."),
    FieldSpec("DCGM_FI_DEV_POWER_USAGE", "power_w", "gauge", "Power draw (in W).", decimals=True),
    FieldSpec("DCGM_FI_DEV_ENFORCED_POWER_LIMIT", "power_limit_w", "gauge",
              "Effective power limit that the driver enforces (in W).", decimals=True),
    FieldSpec("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "energy_mj", "counter",
              "Total energy consumption since boot (in mJ)."),
    FieldSpec("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "pcie_replays", "counter", "Total number of PCIe retries."),
    FieldSpec("DCGM_FI_DEV_GPU_UTIL", "util_pct", "gauge", "GPU utilization (in %)."),
    FieldSpec("DCGM_FI_DEV_MEM_COPY_UTIL", "mem_copy_util_pct", "gauge", "Memory utilization (in %)."),
    FieldSpec("DCGM_FI_DEV_FB_FREE", "fb_free_mib", "gauge", "Framebuffer memory free (in MiB)."),
    FieldSpec("DCGM_FI_DEV_FB_USED", "fb_used_mib", "gauge", "Framebuffer memory used (in MiB)."),
    FieldSpec("DCGM_FI_DEV_FB_RESERVED", "fb_reserved_mib", "gauge", "Framebuffer memory reserved (in MiB)."),
    FieldSpec("DCGM_FI_DEV_FB_TOTAL", "fb_total_mib", "gauge", "Framebuffer memory total (in MiB)."),
    FieldSpec("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "throttle_reasons", "gauge",
              "Current clock throttle reasons (bitmask of nvmlClocksThrottleReasons)."),
    FieldSpec("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "ecc_sbe_volatile", "counter",
              "Total number of single-bit volatile ECC errors."),
    FieldSpec("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "ecc_dbe_volatile", "counter",
              "Total number of double-bit volatile ECC errors."),
    FieldSpec("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "ecc_sbe_aggregate", "counter",
              "Total number of single-bit persistent ECC errors."),
    FieldSpec("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "ecc_dbe_aggregate", "counter",
              "Total number of double-bit persistent ECC errors."),
    # DCGM profiling fields, from NVML's GPM API where the GPU has it (Hopper and later)
    FieldSpec("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gr_engine_active", "gauge",
              "Ratio of time the graphics engine is active.", decimals=True),
    FieldSpec("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "pipe_tensor_active", "gauge",
              "Ratio of cycles the tensor (HMMA) pipe is active.", decimals=True),
)
FIELD_BY_METRIC: dict[str, FieldSpec] = {f.metric: f for f in FIELDS}
# other spellings of the same fields met on real pages
METRIC_ALIASES: dict[str, str] = {
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": "throttle_reasons",  # DCGM 3.3+ name of the throttle bitmask
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": "power_limit_w",  # used only when the enforced limit is absent
}

# dcgm-exporter's `err_msg` table (xid_errors.go); anything else is "Unknown Error"
XID_MESSAGES: dict[int, str] = {
    0: "No Error",
    13: "Graphics Engine Exception",
    31: "GPU memory page fault",
    43: "GPU stopped processing",
    45: "Preemptive cleanup, due to previous errors",
    48: "Double Bit ECC Error",
    63: "ECC page retirement or row remapping recording event",
    64: "ECC page retirement or row remapper recording failure",
    74: "NVLINK Error",
    79: "GPU has fallen off the bus",
    92: "High single-bit ECC error rate",
    94: "Contained ECC error",
    95: "Uncontained ECC error",
    119: "GSP RPC Timeout",
    120: "GSP Error",
}


def xid_message(xid: int) -> str:
    return XID_MESSAGES.get(xid, "Unknown Error")


@dataclass(frozen=True, slots=True)
class GpuReading:
    """What one GPU reported at one moment. `None` = not reported (unsupported, or not on the page).

    `host` is the node as the page names it (`Hostname`/`hostname` label), falling back to the
    exporter URL's host; `source` is the exporter URL the service read it from (None in the exporter).
    `xid_last` is dcgm-exporter's last-value XID gauge; `xid_recent` the per-XID counts over the
    exporter's window (`DCGM_EXP_XID_ERRORS_COUNT`), None when the page does not carry them.
    """

    uuid: str
    index: int | None = None
    host: str = ""
    model_name: str | None = None
    pci_bus_id: str | None = None
    driver_version: str | None = None
    mig_instance: str | None = None
    mig_profile: str | None = None
    source: str | None = None
    lost: bool = False
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    memory_temp_c: float | None = None
    gpu_temp_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    energy_mj: float | None = None
    pcie_replays: float | None = None
    util_pct: float | None = None
    mem_copy_util_pct: float | None = None
    fb_free_mib: float | None = None
    fb_used_mib: float | None = None
    fb_reserved_mib: float | None = None
    fb_total_mib: float | None = None
    throttle_reasons: float | None = None
    ecc_sbe_volatile: float | None = None
    ecc_dbe_volatile: float | None = None
    ecc_sbe_aggregate: float | None = None
    ecc_dbe_aggregate: float | None = None
    gr_engine_active: float | None = None  # 0–1, DCGM_FI_PROF_GR_ENGINE_ACTIVE
    pipe_tensor_active: float | None = None  # 0–1, DCGM_FI_PROF_PIPE_TENSOR_ACTIVE
    xid_last: int | None = None
    xid_recent: Mapping[int, int] | None = field(default=None, hash=False, compare=True)

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity across scrapes: host, UUID (or `index:N` when NVML could not say), MIG instance."""
        ident = self.uuid or f"index:{self.index}"
        return (self.host.lower(), ident, self.mig_instance or "")

    @property
    def label(self) -> str:
        """How reasons and logs name the GPU: `GPU 3 (GPU-8f1e…) on node-a`."""
        where = f" on {self.host}" if self.host else ""
        num = f"GPU {self.index}" if self.index is not None else "GPU"
        mig = f" MIG {self.mig_instance}" if self.mig_instance else ""
        return f"{num}{mig} ({self.uuid or 'uuid unknown'}){where}"

    @property
    def memory_total_mib(self) -> float | None:
        """FB total, or used + free (+ reserved) when the page has no total (dcgm's default set)."""
        if self.fb_total_mib is not None and self.fb_total_mib > 0:
            return self.fb_total_mib
        if self.fb_used_mib is None or self.fb_free_mib is None:
            return None
        total = self.fb_used_mib + self.fb_free_mib + (self.fb_reserved_mib or 0.0)
        return total if total > 0 else None

    @property
    def memory_used_ratio(self) -> float | None:
        total = self.memory_total_mib
        if total is None or self.fb_used_mib is None:
            return None
        return self.fb_used_mib / total
