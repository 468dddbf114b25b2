"""What applying a reloaded config changes in a running service, in process and without a port:
settings that stages derived at start from other keys follow the new file too."""

from __future__ import annotations

from monitor.config import validate
from monitor.service.core import Service
from monitor.service.reload import apply_config


def config(**scrape: object):
    return validate({"scrape": {"interval": "1s", **scrape},
                     "pools": [{"name": "p", "targets": ["http://127.0.0.1:9"]}]}).config


async def test_a_reload_that_changes_the_scrape_interval_moves_every_pools_staleness_limit_with_it():
    service = Service(config())
    assert service.decisions.health["p"].stale_after == 3.0
    await apply_config(service, config(interval="10s"))
    # three of the new interval: a 10 s cycle taking 4 s is not the monitor starving (fail open)
    assert service.decisions.health["p"].stale_after == 30.0
    await service.discovery.aclose()


async def test_a_reload_that_stops_probing_health_stops_requiring_it_for_availability():
    service = Service(config())
    assert service.slo.health_checked
    await apply_config(service, config(health_path=None))
    assert not service.slo.health_checked  # else every scrape would count as unavailable
    await service.discovery.aclose()
