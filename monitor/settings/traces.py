"""`traces:`: the OTLP receiver, goodput and exact latency SLIs from spans.

```yaml
traces:
  max_body_size: 4MiB        # per OTLP export, before and after decompression (413 above)
  goodput_window: 5m         # default window of /api/v1/pools/{pool}/goodput (?window= overrides)
  retention: 1h              # records kept in memory; must cover the longest window asked for
  max_records_per_pool: 500000
  exact_slis: true           # latency SLIs of a pool its traces cover are counted from them (exact)
  settle: 20s                # a minute's spans are taken as complete this long after it ends
  min_coverage: 90%          # traces cover a minute when they hold this share of its requests
```
Every key has a default, so a config without `traces:` runs the receiver with these.

Exact SLIs: each latency SLO minute of a pool is recounted from the pool's trace records once it has
settled, if the records number at least `min_coverage` of the requests the histograms counted in it
(spans are lost when a sender's queue overflows or tracing is off on some instances; then the
histograms' interpolated count stays). See monitor/evaluate/slo/engine.py.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from monitor.settings.base import Section
from monitor.units import Interval, Ratio, Size, Timeout, Week


class TracesConfig(Section):
    max_body_size: Size = 4 * 2**20
    goodput_window: Interval = 300.0
    retention: Week = 3600.0
    max_records_per_pool: int = Field(default=500_000, ge=1000)
    exact_slis: bool = True
    settle: Timeout = Field(default=20.0, description="how long after a minute ends its spans are complete")
    min_coverage: Ratio = Field(default=0.9, description="share of the histograms' requests traces must hold")

    @model_validator(mode="after")
    def _window_fits(self) -> TracesConfig:
        if self.goodput_window > self.retention:
            raise ValueError("goodput_window must not exceed retention (records older than retention are gone)")
        return self
