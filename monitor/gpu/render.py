"""Readings → a Prometheus text page under dcgm-exporter's metric names, labels and types.

Written by hand rather than through prometheus_client: its counter families append `_total` to the
sample name, and `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total` would break every dashboard and alert
written for dcgm-exporter, which is the point of using its names. The page follows dcgm-exporter's
shape: `# HELP`/`# TYPE` per family, labels `gpu, UUID, pci_bus_id, device, modelName, hostname,
DCGM_FI_DRIVER_VERSION` (then `err_code, err_msg` on XID), a family left out when no GPU has the value.
The node label is spelled `hostname` as dcgm-exporter does since PR #655 (`Hostname` on request).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from monitor.gpu.readings import (
    FIELDS,
    LABEL_DEVICE,
    LABEL_DRIVER,
    LABEL_GPU,
    LABEL_HOSTNAME,
    LABEL_MODEL,
    LABEL_PCI,
    LABEL_UUID,
    LOST_METRIC,
    NVML_UP_METRIC,
    XID_COUNT_METRIC,
    XID_METRIC,
    GpuReading,
    xid_message,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _number(value: float, decimals: bool = False) -> str:
    if decimals:
        return f"{value:f}"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def gpu_labels(reading: GpuReading, hostname_label: str = LABEL_HOSTNAME) -> list[tuple[str, str]]:
    """dcgm-exporter's label set for one GPU, in its order."""
    pairs = [
        (LABEL_GPU, "" if reading.index is None else str(reading.index)),
        (LABEL_UUID, reading.uuid),
        (LABEL_PCI, reading.pci_bus_id or ""),
        (LABEL_DEVICE, "" if reading.index is None else f"nvidia{reading.index}"),
        (LABEL_MODEL, reading.model_name or ""),
    ]
    if reading.host:
        pairs.append((hostname_label, reading.host))
    if reading.driver_version:
        pairs.append((LABEL_DRIVER, reading.driver_version))
    return pairs


def render_page(readings: Sequence[GpuReading], *, nvml_up: bool, hostname_label: str = LABEL_HOSTNAME) -> str:
    """The whole `/metrics` page. Lost GPUs carry only `slo_monitor_gpu_lost 1`: any other value
    would be a stale reading presented as current."""
    live = [r for r in readings if not r.lost]
    labels = {id(r): gpu_labels(r, hostname_label) for r in readings}
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, lines: list[str]) -> None:
        if lines:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(lines)

    for spec in FIELDS:
        lines = []
        for r in live:
            value = getattr(r, spec.attr)
            if value is not None:
                lines.append(f"{spec.metric}{_labels(labels[id(r)])} {_number(value, spec.decimals)}")
        family(spec.metric, spec.kind, spec.help, lines)

    xid_lines, count_lines = [], []
    for r in live:
        if r.xid_last is not None:
            pairs = labels[id(r)] + [("err_code", str(r.xid_last)), ("err_msg", xid_message(r.xid_last))]
            xid_lines.append(f"{XID_METRIC}{_labels(pairs)} {r.xid_last}")
        if r.xid_recent is not None:
            if not r.xid_recent:  # as dcgm-exporter: one 0-valued series without `xid` when there is none
                count_lines.append(f"{XID_COUNT_METRIC}{_labels(labels[id(r)])} 0")
            for xid, count in sorted(r.xid_recent.items()):
                count_lines.append(f"{XID_COUNT_METRIC}{_labels(labels[id(r)] + [('xid', str(xid))])} {count}")
    family(XID_METRIC, "gauge", "Value of the last XID error encountered.", xid_lines)
    family(XID_COUNT_METRIC, "gauge", "Count of XID errors within the exporter's time window, per XID.",
           count_lines)
    family(LOST_METRIC, "gauge", "1 when NVML reports the GPU lost (fallen off the bus or no longer enumerated).",
           [f"{LOST_METRIC}{_labels(labels[id(r)])} {1 if r.lost else 0}" for r in readings])
    family(NVML_UP_METRIC, "gauge", "1 when the exporter can read GPUs through NVML, 0 when NVML is unavailable.",
           [f"{NVML_UP_METRIC} {1 if nvml_up else 0}"])
    return "\n".join(out) + "\n"
