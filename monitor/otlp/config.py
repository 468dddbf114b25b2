"""Proposed `traces:` section of the config (to attach to `monitor.config.Config` as `traces`).

```yaml
traces:
  max_body_size: 4MiB        # per OTLP export, before and after decompression (413 above)
  goodput_window: 5m         # default window of /api/v1/pools/{pool}/goodput (?window= overrides)
  retention: 1h              # records kept in memory; must cover the longest window asked for
  max_records_per_pool: 500000
```
Every key has a default, so a config without `traces:` runs the receiver with these.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitor.units import Duration, Size


class TracesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_size: Size = 4 * 2**20
    goodput_window: Duration = 300.0
    retention: Duration = 3600.0
    max_records_per_pool: int = Field(default=500_000, ge=1000)

    @model_validator(mode="after")
    def _window_fits(self) -> TracesConfig:
        if self.goodput_window > self.retention:
            raise ValueError("goodput_window must not exceed retention (records older than retention are gone)")
        return self
