"""GPU readings rolled up per GPU per minute: what the database keeps of GPU telemetry.

Readings arrive every scrape cycle (5 s by default); a row per reading would be 17,280 rows per GPU a
day, while capacity planning, cost and post-mortems ("was the GPU throttling when TTFT went up?") need
minutes. Per minute and GPU we keep means and maxima of the gauges, the energy used (the increase of
the total-energy counter since the previous reading, so minutes add up), the throttle reasons seen
(bitwise OR), the XID events that started in the minute and whether the GPU was lost at any point.
Units are the base units of `/metrics` (ratio, bytes, watts, joules, °C, Hz), not dcgm-exporter's
MiB/%/mJ/MHz. The pool and instance are the ones the GPU was mapped to at the minute's last reading.

`GpuRollups` is fed by `GpuTracker.observe` and drained by the service's persist step through the
store's buffered writes; minutes are handed out once finished (or all of them at shutdown).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from monitor.gpu.readings import MIB, GpuReading

MINUTE = 60.0
MAX_OPEN_MINUTES = 180  # per GPU: a persist step that stopped running must not grow memory forever


@dataclass(frozen=True, slots=True)
class GpuRollup:
    """One GPU over one minute [minute, minute + 60), ready to store."""

    minute: float  # unix seconds at the minute's start
    host: str
    uuid: str  # the GPU's UUID, or `index:N` when the page had none
    mig_instance: str  # "" for a whole GPU
    gpu_index: int | None
    model_name: str | None
    pool: str | None
    instance: str | None
    samples: int
    lost: bool
    utilization_mean: float | None = None  # ratio 0-1
    utilization_max: float | None = None
    memory_used_bytes_mean: float | None = None
    memory_used_bytes_max: float | None = None
    memory_total_bytes: float | None = None
    memory_used_ratio_max: float | None = None
    power_watts_mean: float | None = None
    power_watts_max: float | None = None
    energy_joules: float | None = None
    temperature_celsius_max: float | None = None
    sm_clock_hertz_mean: float | None = None
    throttle_reasons: int | None = None  # OR of every bitmask read in the minute
    xid_events: int = 0
    xid_last: int | None = None

    @property
    def key(self) -> tuple[str, str, str, float]:
        return (self.host, self.uuid, self.mig_instance, self.minute)


@dataclass(slots=True)
class _Mean:
    total: float = 0.0
    count: int = 0
    peak: float = -math.inf

    def add(self, value: float | None) -> None:
        if value is not None and math.isfinite(value):
            self.total += value
            self.count += 1
            self.peak = max(self.peak, value)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def max(self) -> float | None:
        return self.peak if self.count else None


@dataclass(slots=True)
class _Minute:
    """A minute still filling: running sums of one GPU's readings."""

    minute: float
    reading: GpuReading  # the newest (for the labels)
    pool: str | None
    instance: str | None
    samples: int = 0
    lost: bool = False
    util: _Mean = field(default_factory=_Mean)
    used: _Mean = field(default_factory=_Mean)
    ratio: _Mean = field(default_factory=_Mean)
    power: _Mean = field(default_factory=_Mean)
    temp: _Mean = field(default_factory=_Mean)
    clock: _Mean = field(default_factory=_Mean)
    total_mib: float | None = None
    energy_j: float | None = None
    throttle: int | None = None
    xid_events: int = 0
    xid_last: int | None = None

    def add(self, reading: GpuReading, pool: str | None, instance: str | None, xid_events: int,
            energy_j: float | None) -> None:
        self.reading, self.pool, self.instance = reading, pool, instance
        self.samples += 1
        self.xid_events += xid_events
        if reading.xid_last:
            self.xid_last = int(reading.xid_last)
        if reading.lost:  # a lost GPU's figures are its last ones, not a reading
            self.lost = True
            return
        self.util.add(reading.util_pct / 100.0 if reading.util_pct is not None else None)
        self.used.add(reading.fb_used_mib * MIB if reading.fb_used_mib is not None else None)
        self.ratio.add(reading.memory_used_ratio)
        self.power.add(reading.power_w)
        self.temp.add(reading.gpu_temp_c)
        self.clock.add(reading.sm_clock_mhz * 1e6 if reading.sm_clock_mhz is not None else None)
        if reading.memory_total_mib is not None:
            self.total_mib = reading.memory_total_mib
        if reading.throttle_reasons is not None:
            self.throttle = (self.throttle or 0) | int(reading.throttle_reasons)
        if energy_j is not None:
            self.energy_j = (self.energy_j or 0.0) + energy_j

    def rollup(self) -> GpuRollup:
        r = self.reading
        host, ident, mig = r.key
        return GpuRollup(
            minute=self.minute, host=host, uuid=ident, mig_instance=mig, gpu_index=r.index, model_name=r.model_name,
            pool=self.pool, instance=self.instance, samples=self.samples, lost=self.lost,
            utilization_mean=self.util.mean, utilization_max=self.util.max,
            memory_used_bytes_mean=self.used.mean, memory_used_bytes_max=self.used.max,
            memory_total_bytes=self.total_mib * MIB if self.total_mib is not None else None,
            memory_used_ratio_max=self.ratio.max, power_watts_mean=self.power.mean, power_watts_max=self.power.max,
            energy_joules=self.energy_j,
            temperature_celsius_max=self.temp.max, sm_clock_hertz_mean=self.clock.mean,
            throttle_reasons=self.throttle, xid_events=self.xid_events, xid_last=self.xid_last,
        )


class GpuRollups:
    """Open minutes per GPU; `take(before)` hands out the finished ones."""

    def __init__(self) -> None:
        self._open: dict[tuple[tuple[str, str, str], float], _Minute] = {}
        self._energy_mj: dict[tuple[str, str, str], float] = {}  # last energy counter read, per GPU
        self.dropped = 0

    def add(self, reading: GpuReading, at: float, *, pool: str | None = None, instance: str | None = None,
            xid_events: int = 0) -> None:
        """One reading of one GPU at `at` (unix seconds), with the placement it had then."""
        minute = math.floor(at / MINUTE) * MINUTE
        key = (reading.key, minute)
        acc = self._open.get(key)
        if acc is None:
            acc = self._open[key] = _Minute(minute, reading, pool, instance)
            self._bound(at)
        acc.add(reading, pool, instance, xid_events, self._energy_since_last(reading))

    def _energy_since_last(self, reading: GpuReading) -> float | None:
        """Joules since this GPU's previous reading, filed under the minute of this one, so that
        minutes partition the energy exactly (None for the first reading: no baseline)."""
        if reading.energy_mj is None or reading.lost:
            return None
        previous = self._energy_mj.get(reading.key)
        self._energy_mj[reading.key] = reading.energy_mj
        if previous is None:
            return None
        delta = reading.energy_mj - previous
        return (delta if delta >= 0 else reading.energy_mj) / 1000.0  # a lower value: the counter restarted

    def _bound(self, now: float) -> None:
        horizon = now - MAX_OPEN_MINUTES * MINUTE
        for key in [k for k in self._open if k[1] < horizon]:
            del self._open[key]
            self.dropped += 1

    def take(self, before: float = math.inf) -> list[GpuRollup]:
        """Remove and return the minutes that ended at or before `before` (every one: `math.inf`),
        oldest first."""
        done = sorted((k for k in self._open if k[1] + MINUTE <= before or math.isinf(before)),
                      key=lambda k: (k[1], k[0]))
        return [self._open.pop(k).rollup() for k in done]

    def __len__(self) -> int:
        return len(self._open)
