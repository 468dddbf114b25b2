"""Instances replaced round after round (as pods are rescheduled, each with a new address) leave
nothing behind once drained: no track, health entry, joined_at, SLO baseline or idle connection of a
departed instance stays in the service, and each departed instance's history is in the database.

The service runs in process (its cycles driven by the test) against real loopback servers listed in
a file_sd file; bench/discovery_churn.py measures the same at 1,000 targets.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import create_engine, text

from monitor.config import validate
from monitor.service.core import Service
from monitor.store import Store, upgrade
from tests.helpers.fleet import Backend, write_file_sd

pytestmark = pytest.mark.e2e

MEMBERS = 6
ROUNDS = 4
REPLACED = 3  # per round


async def cycles_until(service: Service, condition, what: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, what
        await service.scrape_cycle()
        await asyncio.sleep(0.1)


def held(service: Service) -> dict[str, set[str]]:
    """Which instances each per-instance structure holds."""
    idle = service.scraper._plain._idle
    return {
        "tracks": set(service.fleet.tracks),
        "health": {i for h in service.decisions.health.values() for i in h.instances},
        "pool_of": set(service.decisions.pool_of),
        "stats cache": {key[0] for key in service.fleet._stats_cache},
        "joined_at": set(service.joined_at),
        "SLO baselines": {key[0] for key in service.slo._previous},
        "idle connections": {f"{host}:{port}" for host, port, _ in idle},
    }


async def test_instances_replaced_round_after_round_leave_no_state_behind_once_drained(tmp_path):
    backends = [Backend(f"b{i}", seed=i).start() for i in range(MEMBERS + ROUNDS * REPLACED)]
    sd = tmp_path / "sd" / "p.json"
    members = [b.address for b in backends[:MEMBERS]]
    write_file_sd(sd, members)
    db = f"sqlite:///{tmp_path}/monitor.db"
    upgrade(db)
    store = Store.open(db)
    config = validate({
        "storage": {"url": db},
        "scrape": {"interval": "1s", "timeout": "500ms"},
        "pools": [{"name": "p", "discovery": [{"type": "file", "files": [str(sd)]}],
                   "health": {"drain_time": "1s", "min_requests": 1}}],
        "slos": [{"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99%"}],
    }).config
    service = Service(config, store)
    departed: list[str] = []
    try:
        await service.start()
        await cycles_until(service, lambda: service.cycles >= 3, "three cycles")
        for round_ in range(ROUNDS):
            fresh = [b.address for b in backends[MEMBERS + round_ * REPLACED:MEMBERS + (round_ + 1) * REPLACED]]
            departed += members[:REPLACED]
            members = members[REPLACED:] + fresh
            write_file_sd(sd, members)
            await cycles_until(service, lambda: set(service.fleet.tracks) == set(members)
                               and all(service.decisions.verdict("p", m).state == "healthy" for m in members),
                               f"round {round_}: the new members healthy, the departed ones dropped")
            await service.scrape_cycle()  # one more: the new members' second scrape gives SLO baselines
            for structure, instances in held(service).items():
                assert instances <= set(members), (round_, structure, sorted(instances - set(members)))
        assert {key[0] for key in service.slo._previous} == set(members)
        assert set(service.joined_at) == set(members)  # every member now joined after the start
        await service.persist(final=True)
    finally:
        await service.stop()
        store.close()
        for b in backends:
            b.stop()
    engine = create_engine(db)
    with engine.connect() as conn:
        stored = dict(conn.execute(text(
            "select i.address, sum(r.requests) from instance_rollups r join instances i on i.id = r.instance_id "
            "group by i.address")).all())
    engine.dispose()
    assert all(stored.get(address, 0) > 0 for address in departed), (departed, stored)
