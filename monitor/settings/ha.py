"""`ha:`: several replicas on one database."""

from __future__ import annotations

from pydantic import Field

from monitor.settings.base import OptionalStr, Section
from monitor.units import Interval


class HaConfig(Section):
    """Several replicas on one database: a lease row elects the one that writes the NGINX file,
    pages Alertmanager and writes history; the others evaluate the same data and answer the API."""

    enabled: bool = False
    lease: Interval = Field(default=15.0, description="a leader that stops renewing is replaced after this")
    renew_interval: Interval | None = Field(default=None, description="default: min(scrape.interval, lease / 3)")
    replica_id: OptionalStr = Field(default=None, max_length=200, description="default: hostname-pid")

    def renew_every(self, scrape_interval: float) -> float:
        return self.renew_interval or min(scrape_interval, self.lease / 3.0)
