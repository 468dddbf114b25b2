"""Leader election for several replicas sharing one database: a lease row, renewed or taken over.

Every replica scrapes (or queries), evaluates and answers the API, so any of them can serve a
health check or a dashboard. Only one may *act*: write the NGINX upstream file, page
Alertmanager and write the shared history, or two replicas would fight over the file and write
every minute twice. That one is the holder of the `leader_lease` row.

Why a lease in the database rather than a lock or a consensus library: the database is the one
thing the replicas already share, and a lease (holder + expiry) survives the failure that matters
most, a leader that dies without saying so (SIGKILL, a lost machine): nobody has to release
anything, the row simply expires. One statement does the whole election, so two replicas racing
for an expired lease cannot both win:

    INSERT ... ON CONFLICT (name) DO UPDATE SET holder = me, expires_at = now + lease ...
      WHERE holder = me OR expires_at < now

`now` is the database's clock, so replicas whose clocks disagree still agree on expiry. A replica
trusts its own leadership only until its *local* monotonic clock says the lease it last renewed
may have run out (measured from before it sent the renewal, less a margin): a leader cut off from
the database stops acting before anyone else can take over, instead of both acting at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

LEASE_NAME = "leader"

# the database's clock as Unix seconds; PostgreSQL's now() is the transaction's start, which is
# earlier than the statement when it waited for a row lock: an expiry computed from it is early,
# never late, and a takeover check with it is late, never early
_NOW = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM now()) AS DOUBLE PRECISION)",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}

_ACQUIRE = """
INSERT INTO leader_lease (name, holder, term, acquired_at, renewed_at, expires_at)
VALUES (:name, :holder, 1, {now}, {now}, {now} + :duration)
ON CONFLICT (name) DO UPDATE SET
    term = CASE WHEN leader_lease.holder = excluded.holder AND leader_lease.expires_at >= excluded.renewed_at
                THEN leader_lease.term ELSE leader_lease.term + 1 END,
    acquired_at = CASE WHEN leader_lease.holder = excluded.holder AND leader_lease.expires_at >= excluded.renewed_at
                       THEN leader_lease.acquired_at ELSE excluded.acquired_at END,
    holder = excluded.holder,
    renewed_at = excluded.renewed_at,
    expires_at = excluded.expires_at
WHERE leader_lease.holder = excluded.holder OR leader_lease.expires_at < excluded.renewed_at
"""
_READ = "SELECT holder, term, expires_at, {now} AS db_now FROM leader_lease WHERE name = :name"
_RELEASE = "UPDATE leader_lease SET expires_at = {now} - 0.001 WHERE name = :name AND holder = :holder"


def default_replica_id() -> str:
    """hostname-pid-random: unique per process, readable in logs; a restarted process is a new
    holder, so it never assumes a lease its previous life may have lost meanwhile."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass(frozen=True, slots=True)
class LeaseState:
    """The lease row as the database holds it after an election attempt."""

    holder: str
    term: int
    expires_at: float  # database clock
    db_now: float


class LeaderLease:
    """The SQL of one lease row (`leader_lease.name`)."""

    def __init__(self, engine: Engine, name: str = LEASE_NAME) -> None:
        self.engine = engine
        self.name = name
        dialect = engine.dialect.name
        if dialect not in _NOW:
            raise ValueError(f"leader lease: unsupported database {dialect!r} (use PostgreSQL or SQLite)")
        now = _NOW[dialect]
        self._acquire = text(_ACQUIRE.format(now=now))
        self._read = text(_READ.format(now=now))
        self._release = text(_RELEASE.format(now=now))

    def acquire(self, holder: str, duration_s: float) -> LeaseState:
        """Renew the lease if `holder` has it, take it if it expired; either way, return the row."""
        with self.engine.begin() as conn:
            conn.execute(self._acquire, {"name": self.name, "holder": holder, "duration": float(duration_s)})
            row = conn.execute(self._read, {"name": self.name}).one()
        return LeaseState(row.holder, int(row.term), float(row.expires_at), float(row.db_now))

    def current(self) -> LeaseState | None:
        with self.engine.connect() as conn:
            row = conn.execute(self._read, {"name": self.name}).one_or_none()
        return None if row is None else LeaseState(row.holder, int(row.term), float(row.expires_at), float(row.db_now))

    def release(self, holder: str) -> bool:
        """Expire the lease now if `holder` has it (a clean shutdown hands over without waiting)."""
        with self.engine.begin() as conn:
            return conn.execute(self._release, {"name": self.name, "holder": holder}).rowcount > 0


class Leadership:
    """This replica's view of the lease: `renew()` once per renew interval, `is_leader()` anywhere.

    `renew` blocks on the database (run it in a worker thread); the attributes it sets are read
    from the event loop, one assignment at a time.
    """

    def __init__(self, lease: LeaderLease, replica_id: str, duration_s: float) -> None:
        self.lease = lease
        self.replica_id = replica_id
        self.duration_s = duration_s
        # acting stops this much before the lease could have run out, for clock drift and for an
        # action already started (a POST in flight) to finish inside the lease
        self.margin_s = min(1.0, duration_s / 10.0)
        self.holder: str | None = None
        self.term = 0
        self.expires_at: float | None = None
        self._valid_until = 0.0  # monotonic
        self.elections = 0  # times this replica became the leader
        self.errors = 0  # renewals that failed (database unreachable)
        self.last_error: str | None = None
        self.acting_term: int | None = None  # the term this replica last took over in

    def take_stock(self) -> bool:
        """After `renew`: True when this replica has just become the one that acts (a new term:
        whatever the previous leader may not have delivered is to be delivered again). Logs every
        change of role once."""
        if self.is_leader():
            if self.acting_term == self.term:
                return False
            self.acting_term = self.term
            log.warning("leader: replica %s holds the lease (term %d, %gs)", self.replica_id, self.term,
                        self.duration_s)
            return True
        if self.acting_term is not None:
            self.acting_term = None
            if self.holder != self.replica_id:
                log.warning("leadership lost: %s holds the lease (term %d); this replica (%s) follows",
                            self.holder, self.term, self.replica_id)
            else:
                log.warning("leadership suspended: the lease could not be renewed in time (%s)", self.last_error)
        return False

    def is_leader(self) -> bool:
        return time.monotonic() < self._valid_until

    def renew(self) -> bool:
        """One election round; True when this replica holds the lease afterwards."""
        sent_at = time.monotonic()
        was = self.is_leader()
        try:
            state = self.lease.acquire(self.replica_id, self.duration_s)
        except SQLAlchemyError as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            log.warning("leader lease: renewal failed (%s); %s", self.last_error,
                        "still leading until the lease runs out" if was else "staying a follower")
            return self.is_leader()
        self.last_error = None
        held = state.holder == self.replica_id
        if held and not was:
            self.elections += 1
        self.holder, self.term, self.expires_at = state.holder, state.term, state.expires_at
        self._valid_until = sent_at + self.duration_s - self.margin_s if held else 0.0
        return held

    def release(self) -> None:
        """Hand the lease back on a clean shutdown (the next renewal elsewhere takes it at once)."""
        if self.holder != self.replica_id:
            return
        self._valid_until = 0.0
        try:
            if self.lease.release(self.replica_id):
                log.info("leader lease released by %s", self.replica_id)
        except SQLAlchemyError as exc:
            log.warning("leader lease not released (it expires by itself): %s", str(exc).splitlines()[0])
