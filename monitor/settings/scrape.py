"""Where the per-instance signals come from (`source:`, `scrape:`) and the window they are judged over
(`evaluation:`)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from monitor.settings.base import (
    HeaderMap,
    HeaderStr,
    OptionalStr,
    OptionalUrl,
    Section,
)
from monitor.units import Interval, Size, Timeout

DEFAULT_SCRAPE_TIMEOUT = 2.0


class ScrapeConfig(Section):
    interval: Interval = 5.0
    # unset: min(2s, interval), as Prometheus does, so `interval: 1s` alone is valid
    timeout: Timeout = Field(default=None, validate_default=False,  # type: ignore[assignment]
                              description="default min(2s, interval)")
    max_body_size: Size = 16 * 2**20
    metrics_path: str = "/metrics"
    health_path: str | None = "/health"
    concurrency: int = Field(default=256, ge=1, le=10_000)

    @model_validator(mode="after")
    def _timeout_fits(self) -> ScrapeConfig:
        if self.timeout is None:
            # frozen model: the default follows another field, so it is filled in here, once
            object.__setattr__(self, "timeout", min(DEFAULT_SCRAPE_TIMEOUT, self.interval))
        elif self.timeout > self.interval:
            raise ValueError(f"timeout must not exceed interval (timeout {self.timeout:g}s, interval "
                             f"{self.interval:g}s: scrapes of one target would overlap); set timeout to "
                             f"{self.interval:g}s or less, or leave it out (default min(2s, interval))")
        return self


class EvaluationConfig(Section):
    window: Interval = Field(default=60.0, description="rolling window of the per-instance figures")


_MATCHER = r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
_SELECTOR = re.compile(rf"{_MATCHER}(?:,{_MATCHER})*,?\s*")


class SourceConfig(Section):
    """Where the per-instance signals come from.

    `scrape` (default): the service GETs every target's /metrics and /health itself. `prometheus`:
    it asks a Prometheus-compatible API (Prometheus, Thanos Query, Mimir, VictoriaMetrics) for the
    raw vLLM series that backend already scrapes, so a fleet large enough to need sharded
    Prometheus does not need a second set of scrapers, and several monitor replicas add no load
    on the vLLM servers.
    """

    type: Literal["scrape", "prometheus"] = "scrape"
    url: OptionalUrl = Field(default=None, description="base URL of the Prometheus HTTP API (…/api/v1/query is added)")
    instance_label: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "instance"
    selector: OptionalStr = Field(default=None, description='extra label matchers, e.g. job="vllm"')
    timeout: Timeout | None = Field(default=None, description="per query; default scrape.timeout")
    max_response_size: Size = 64 * 2**20
    max_instances_per_query: int = Field(default=100, ge=1, le=10_000)
    max_age: Interval = Field(default=60.0, description="an instance whose last sample is older is reported stale")
    headers: HeaderMap = Field(default_factory=dict, description="e.g. X-Scope-OrgID for Mimir")
    bearer_token: HeaderStr = None

    @field_validator("selector")
    @classmethod
    def _matchers_only(cls, value: str | None) -> str | None:
        # pasted into every selector of the query: only matchers, so it can never change the query's shape
        if value is not None and not _SELECTOR.fullmatch(value):
            raise ValueError('must be PromQL label matchers separated by commas, e.g. job="vllm", env=~"prod|canary"')
        return value.strip().rstrip(",").strip() if value else None

    @model_validator(mode="after")
    def _url_matches_type(self) -> SourceConfig:
        if self.type == "prometheus" and not self.url:
            raise ValueError("type prometheus needs url (e.g. http://prometheus:9090)")
        if self.type == "scrape" and self.url:
            raise ValueError("url is only used with type: prometheus (add `type: prometheus`, or remove url)")
        return self
