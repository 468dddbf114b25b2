"""A minute is rolled up only once no cycle that began before its end is still in flight: `persist` runs
on its own schedule, and a cycle slowed past `settle_s` (a loaded machine, a reload) used to ingest a
reading of a minute already written; the next minute took that reading as its baseline, and its requests
were stored in neither (tests/test_reload_under_load.py, one scrape interval's requests short)."""

from __future__ import annotations

import math
import time

from monitor.config import validate
from monitor.evaluate.fleet import minute_floor
from monitor.samples import Histogram, ModelSample, ScrapeResult
from monitor.service import Service
from monitor.store import Store, upgrade

ADDRESS = "10.0.0.1:8000"


def reading(at: float, finished: float) -> ScrapeResult:
    sample = ModelSample("llama", histograms={"ttft": Histogram((0.5, math.inf), (finished, finished),
                                                                0.1 * finished, finished)},
                         counters={"generation_tokens": 10 * finished}, gauges={"running": 1.0},
                         finished={"stop": finished})
    return ScrapeResult("p", ADDRESS, f"http://{ADDRESS}", at, 0.05, models=(sample,))


async def test_a_minute_waits_for_the_cycle_in_flight_and_every_request_is_stored_once(tmp_path):
    db = f"sqlite:///{tmp_path}/monitor.db"
    upgrade(db)
    store = Store.open(db)
    config = validate({"storage": {"url": db}, "pools": [{"name": "p", "targets": [f"http://{ADDRESS}"]}]}).config
    service = Service(config, store)
    history = service.history
    assert history is not None
    try:
        store.sync_fleet({"p": {ADDRESS: f"http://{ADDRESS}"}}, time.time())
        m = minute_floor(time.time()) - 240.0  # long settled, as far as settle_s goes
        history.rolled_up_to = m
        service.fleet.ingest([reading(m + 10, 100), reading(m + 30, 120), reading(m + 50, 140)])
        # a cycle that began at m + 59.5 is still fetching: minute m is not written yet
        await history.persist(leader=True, in_flight_since=m + 59.5)
        assert history.rolled_up_to == m
        # its reading (started before the minute ended) arrives, then the next minutes' readings
        service.fleet.ingest([reading(m + 59.7, 165), reading(m + 70, 180), reading(m + 130, 200)])
        await history.persist(leader=True)
        store.flush()
        rows = store.rollups(instance=ADDRESS)
    finally:
        await service.stop()
        store.close()
    by_minute = {r.minute.timestamp(): r.requests for r in rows}
    assert (by_minute[m], by_minute[m + 60], by_minute[m + 120]) == (165 - 100, 180 - 165, 200 - 180)
    assert sum(by_minute.values()) == 200 - 100  # every request in one minute, none lost between two
