"""The leader lease row (migration 0004) on SQLite and PostgreSQL: renew, refuse, expire, take over,
release, and a race for an expired lease that exactly one replica wins."""

from __future__ import annotations

import threading
import time

from monitor.store import make_engine, upgrade
from monitor.store.lease import LeaderLease, Leadership


def test_lease_is_renewed_refused_taken_over_after_expiry_and_released(db_url):
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        lease = LeaderLease(engine)
        first = lease.acquire("r1", 0.6)
        assert (first.holder, first.term) == ("r1", 1)
        assert first.expires_at > first.db_now
        assert lease.acquire("r2", 0.6).holder == "r1"  # held: refused
        renewed = lease.acquire("r1", 0.6)
        assert (renewed.holder, renewed.term) == ("r1", 1) and renewed.expires_at > first.expires_at
        time.sleep(0.7)  # r1 stops renewing (crashed): the lease runs out by itself
        taken = lease.acquire("r2", 0.6)
        assert (taken.holder, taken.term) == ("r2", 2)
        assert lease.acquire("r1", 0.6).holder == "r2"
        assert lease.release("r2")
        back = lease.acquire("r1", 0.6)
        assert (back.holder, back.term) == ("r1", 3)  # a clean hand-over needs no waiting
    finally:
        engine.dispose()


def test_leadership_stops_acting_by_its_own_clock_before_the_lease_can_expire(tmp_path):
    url = f"sqlite:///{tmp_path}/lease.db"
    upgrade(url)
    engine = make_engine(url)
    try:
        me = Leadership(LeaderLease(engine), "r1", duration_s=1.0)
        other = Leadership(LeaderLease(engine), "r2", duration_s=1.0)
        assert me.renew() and me.is_leader() and me.elections == 1
        assert not other.renew() and not other.is_leader() and other.holder == "r1"
        # no renewal for 0.9 s (lease 1 s, margin 0.1 s): r1 stops acting before r2 can start
        time.sleep(0.92)
        assert not me.is_leader()
        time.sleep(0.1)
        assert other.renew() and other.term == 2
        assert not me.renew() and me.holder == "r2"
        other.release()
        assert me.renew() and me.elections == 2
    finally:
        engine.dispose()


def test_replicas_racing_for_an_expired_lease_elect_exactly_one(pg_url):
    upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        LeaderLease(engine).acquire("old", 0.05)
        time.sleep(0.1)
        barrier = threading.Barrier(8)
        winners: list[str] = []
        terms: list[int] = []

        def race(name: str) -> None:
            barrier.wait()
            state = LeaderLease(engine).acquire(name, 30.0)
            if state.holder == name:
                winners.append(name)
            terms.append(state.term)

        threads = [threading.Thread(target=race, args=(f"r{i}",)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1, winners
        assert set(terms) == {2}  # every racer read the one winner's term
    finally:
        engine.dispose()
