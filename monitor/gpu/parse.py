"""dcgm-exporter and `slo-monitor exporter` pages → typed `GpuReading`s.

Built on our fast sample reader (`collect.exposition.samples`), since a dcgm page is scraped with the
fleet every cycle. Tolerant the way the pages demand:
- the node label is `Hostname` in every tagged dcgm-exporter and `hostname` on its main branch (PR #655),
  and absent with some flags: both spellings are read, else the exporter URL's host stands in;
- `UUID` is `uuid` under `--use-old-namespace`;
- NVLink / NVSwitch entity series (keyed `nvlink`, `nvswitch`, `gpu_uuid`) are not GPUs and are skipped;
- series of one GPU repeat with pod labels when Kubernetes attribution is on: same value, merged;
- MIG instances (`GPU_I_ID`) are separate readings of the same UUID;
- blank sentinels printed by old dcgm-exporter versions (e.g. 9223372036854775794) mean "no value".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from monitor.collect.exposition import ExpositionError, samples
from monitor.gpu.readings import (
    FIELD_BY_METRIC,
    LOST_METRIC,
    METRIC_ALIASES,
    NVML_UP_METRIC,
    XID_COUNT_METRIC,
    XID_METRIC,
    GpuReading,
)

_INT32_BLANK = 0x7FFFFFF0  # DCGM_INT32_BLANK and above: "no value" for 32-bit fields
_INT64_BLANK = float(0x7FFFFFFFFFFFFFF0)
_FP64_BLANK = 140737488355328.0
_WIDE_FIELDS = {"energy_mj", "pcie_replays", "ecc_sbe_volatile", "ecc_dbe_volatile", "ecc_sbe_aggregate",
                "ecc_dbe_aggregate", "throttle_reasons"}


class GpuPageError(ValueError):
    """The page is not in the Prometheus text format; the message names the line."""


@dataclass(frozen=True, slots=True)
class GpuPage:
    """One parsed page. `nvml_up` is our exporter's own status (None on a dcgm-exporter page)."""

    readings: tuple[GpuReading, ...]
    nvml_up: bool | None = None


def _blank(attr: str, value: float) -> bool:
    if value != value or value >= _INT64_BLANK or value == _FP64_BLANK:  # NaN or a DCGM blank
        return True
    return attr not in _WIDE_FIELDS and value >= _INT32_BLANK


def parse_gpu_page(text: str, *, source: str | None = None) -> GpuPage:
    """Readings per GPU. `source` is the exporter URL: its host names the node when no label does."""
    fallback_host = (urlsplit(source).hostname or "") if source else ""
    builders: dict[tuple[str, str, str], dict[str, Any]] = {}
    nvml_up: bool | None = None
    try:
        found = list(samples(text, "DCGM_")) + list(samples(text, "slo_monitor_gpu_"))
    except ExpositionError as exc:
        raise GpuPageError(str(exc)) from None
    for name, labels, value in found:
        if name == NVML_UP_METRIC:
            nvml_up = value == 1.0
            continue
        if "nvlink" in labels or "nvswitch" in labels:
            continue
        uuid = labels.get("UUID", labels.get("uuid", ""))
        index_text = labels.get("gpu", "")
        if not uuid and not index_text:
            continue
        host = labels.get("Hostname", labels.get("hostname", "")) or fallback_host
        mig = labels.get("GPU_I_ID", "")
        key = (host.lower(), uuid or f"index:{index_text}", mig)
        b = builders.get(key)
        if b is None:
            b = builders[key] = {
                "uuid": uuid,
                "index": int(index_text) if index_text.isdigit() else None,
                "host": host,
                "model_name": labels.get("modelName") or labels.get("model_name") or None,
                "pci_bus_id": labels.get("pci_bus_id") or None,
                "driver_version": labels.get("DCGM_FI_DRIVER_VERSION") or None,
                "mig_instance": mig or None,
                "mig_profile": labels.get("GPU_I_PROFILE") or None,
                "source": source,
            }
        _apply(b, name, labels, value)
    readings = []
    for b in builders.values():
        limit_fallback = b.pop("_power_mgmt_limit", None)
        if b.get("power_limit_w") is None and limit_fallback is not None:
            b["power_limit_w"] = limit_fallback
        readings.append(GpuReading(**b))
    readings.sort(key=lambda r: (r.host, r.index if r.index is not None else 1 << 30, r.uuid, r.mig_instance or ""))
    return GpuPage(tuple(readings), nvml_up)


def _apply(b: dict[str, Any], name: str, labels: dict[str, str], value: float) -> None:
    if name == XID_METRIC:
        if not _blank("xid", value):
            b["xid_last"] = int(value)
        return
    if name == XID_COUNT_METRIC:
        recent = b.setdefault("xid_recent", {})
        xid = labels.get("xid", "")
        if xid.isdigit() and int(xid) != 0 and value > 0 and not _blank("xid", value):
            recent[int(xid)] = int(value)
        return
    if name == LOST_METRIC:
        b["lost"] = value == 1.0
        return
    spec = FIELD_BY_METRIC.get(name)
    if spec is not None:
        if not _blank(spec.attr, value):
            b[spec.attr] = value
        return
    alias = METRIC_ALIASES.get(name)
    if alias is None or _blank(alias, value):
        return
    if name == "DCGM_FI_DEV_POWER_MGMT_LIMIT":
        b["_power_mgmt_limit"] = value
    else:
        b.setdefault(alias, value)
