"""The service's GPU outputs: JSON for `/api/v1/gpus` and a collector for its `/metrics`.

The service re-exposes readings under our own `slo_monitor_gpu_*` names with `pool` and `instance`
labels, not under dcgm-exporter's: Prometheus usually scrapes the exporters too, and the same
`DCGM_FI_*` series from two jobs would double every dashboard sum. Base units (bytes, hertz, ratio).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from monitor.gpu.health import ExporterStatus, GpuState, GpuTracker
from monitor.gpu.readings import MIB, xid_message
from monitor.units import redact_url, rfc3339

NAMESPACE = "slo_monitor_gpu"
_LABELS = ["pool", "instance", "host", "gpu", "uuid"]


def gpu_json(state: GpuState, now: float, tracker: GpuTracker) -> dict[str, Any]:
    """One `/api/v1/gpus` object."""
    r = state.reading
    total = r.memory_total_mib
    return {
        "pool": state.placement.pool,
        "instance": state.placement.instance,
        "mapping": state.placement.rule,
        "host": r.host,
        "gpu": r.index,
        "uuid": r.uuid,
        "model_name": r.model_name,
        "pci_bus_id": r.pci_bus_id,
        "mig_instance": r.mig_instance,
        "exporter": redact_url(state.exporter) if state.exporter else state.exporter,
        "lost": r.lost,
        "last_seen": rfc3339(state.seen_at),
        "reasons": list(tracker.reasons_of(state, now)),
        "metrics": {
            "utilization_pct": r.util_pct,
            "memory_used_bytes": r.fb_used_mib * MIB if r.fb_used_mib is not None else None,
            "memory_total_bytes": total * MIB if total is not None else None,
            "memory_used_ratio": r.memory_used_ratio,
            "temperature_c": r.gpu_temp_c,
            "memory_temperature_c": r.memory_temp_c,
            "power_w": r.power_w,
            "power_limit_w": r.power_limit_w,
            "sm_clock_mhz": r.sm_clock_mhz,
            "throttle_reasons": int(r.throttle_reasons) if r.throttle_reasons is not None else None,
            "ecc_sbe_volatile": r.ecc_sbe_volatile,
            "ecc_dbe_volatile": r.ecc_dbe_volatile,
            "xid_last": r.xid_last,
            "xid_last_message": xid_message(r.xid_last) if r.xid_last else None,
        },
        "xid_events": [{"xid": e.xid, "at": rfc3339(e.at)} for e in state.xid_events],
    }


def exporter_json(status: ExporterStatus) -> dict[str, Any]:
    return {"url": redact_url(status.url), "ok": status.ok, "error": status.error, "gpus": status.gpus,
            "nvml_up": status.nvml_up, "last_scrape": rfc3339(status.last_scrape_at),
            "last_success": rfc3339(status.last_success_at), "duration_s": status.duration_s}


def gpus_json(tracker: GpuTracker, now: float | None = None) -> dict[str, Any]:
    """The whole `/api/v1/gpus` answer: GPUs and the exporters they came from."""
    now = time.time() if now is None else now
    return {"gpus": [gpu_json(s, now, tracker) for s in tracker.states()],
            "exporters": [exporter_json(e) for e in tracker.exporters.values()]}


# reading attribute → (metric, help, scale to base units)
_GAUGES: dict[str, tuple[str, str, float]] = {
    "util_pct": ("utilization_ratio", "GPU utilization (0-1), from DCGM_FI_DEV_GPU_UTIL.", 0.01),
    "fb_used_mib": ("memory_used_bytes", "GPU framebuffer memory used.", float(MIB)),
    "gpu_temp_c": ("temperature_celsius", "GPU temperature.", 1.0),
    "power_w": ("power_watts", "GPU power draw.", 1.0),
    "power_limit_w": ("power_limit_watts", "Enforced GPU power limit.", 1.0),
    "sm_clock_mhz": ("sm_clock_hertz", "SM clock.", 1e6),
    "throttle_reasons": ("throttle_reasons", "Clock throttle reasons bitmask (0 = none).", 1.0),
}


class GpuMetricsCollector(Collector):
    """Reads the tracker at scrape time: a GPU that goes away needs no bookkeeping to disappear."""

    def __init__(self, tracker: GpuTracker | Callable[[], GpuTracker]) -> None:
        self._tracker = tracker

    def collect(self) -> Iterator:
        tracker = self._tracker() if callable(self._tracker) else self._tracker
        now = time.time()
        gauges = {a: GaugeMetricFamily(f"{NAMESPACE}_{m}", doc, labels=_LABELS) for a, (m, doc, _) in _GAUGES.items()}
        total = GaugeMetricFamily(f"{NAMESPACE}_memory_total_bytes", "GPU framebuffer memory total.", labels=_LABELS)
        ratio = GaugeMetricFamily(f"{NAMESPACE}_memory_used_ratio", "GPU memory used over total (0-1).",
                                  labels=_LABELS)
        lost = GaugeMetricFamily(f"{NAMESPACE}_lost", "1 when the GPU is lost or vanished from its exporter.",
                                 labels=_LABELS)
        xid_last = GaugeMetricFamily(f"{NAMESPACE}_xid_last", "Last XID reported for the GPU (0 = none).",
                                     labels=_LABELS)
        xid_held = GaugeMetricFamily(f"{NAMESPACE}_xid_events_held", "XID events still within the health hold.",
                                     labels=_LABELS)
        reasons = GaugeMetricFamily(f"{NAMESPACE}_health_reasons", "Health reasons the GPU gives its instance now.",
                                    labels=_LABELS)
        up = GaugeMetricFamily(f"{NAMESPACE}_exporter_up", "1 when the last scrape of the GPU exporter succeeded.",
                               labels=["exporter"])
        gpus = GaugeMetricFamily(f"{NAMESPACE}_exporter_gpus", "GPUs on the exporter's last good page.",
                                 labels=["exporter"])
        for state in tracker.states():
            r = state.reading
            who = [state.placement.pool or "", state.placement.instance or "", r.host,
                   "" if r.index is None else str(r.index), r.uuid]
            lost.add_metric(who, 1.0 if r.lost else 0.0)
            reasons.add_metric(who, float(len(tracker.reasons_of(state, now))))
            xid_held.add_metric(who, float(sum(1 for e in state.xid_events if now - e.at < tracker.xid_hold_s)))
            if r.lost:
                continue
            for attr, (_, _, scale) in _GAUGES.items():
                value = getattr(r, attr)
                if value is not None:
                    gauges[attr].add_metric(who, value * scale)
            if r.memory_total_mib is not None:
                total.add_metric(who, r.memory_total_mib * MIB)
            if r.memory_used_ratio is not None:
                ratio.add_metric(who, r.memory_used_ratio)
            if r.xid_last is not None:
                xid_last.add_metric(who, float(r.xid_last))
        for status in tracker.exporters.values():
            shown = redact_url(status.url)  # an exporter URL may carry basic-auth credentials
            up.add_metric([shown], 1.0 if status.ok else 0.0)
            gpus.add_metric([shown], float(status.gpus))
        yield from gauges.values()
        yield from (total, ratio, lost, xid_last, xid_held, reasons, up, gpus)
