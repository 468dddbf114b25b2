"""PostgreSQL stopped for 60 s under `slo-monitor serve`: nothing stops, nothing is lost.

A private cluster (tests/private_pg.py; the machine's shared one is never touched) with a password.
Two vLLM-shaped servers finish 20 requests a second each; every /metrics page they serve is counted,
with the request counter it showed. The service runs a few cycles on the database, then:

1. PostgreSQL is stopped (fast shutdown: sessions cut). For 60 s the API keeps answering, cycles and
   SLO figures keep moving, an instance whose latency goes bad is ejected (the audit log answers from
   memory), /metrics shows `slo_monitor_storage_up 0` and the rows held in memory.
2. PostgreSQL is started again. The next flush writes everything held: the test measures how long
   after the restart `storage_up` is back to 1.
3. The servers stop finishing requests, and the service is stopped (final flush). Then the database is
   counted against what the servers served: per instance, the requests in `instance_rollups` equal the
   counter's increase from the first page the monitor saw to the last; the error-ratio SLO's events in
   `slo_events` equal the same total; `scrape_outcomes` holds one scrape per page served and every
   minute from the first to the last, outage included; the ejection is in `decisions`.
4. The service starts again on the same database: the SLO budget is the one counted before, the
   ejected instance answers 503 at once, and the audit log lists its ejection.

Nothing the service printed contains the database password. Slow (about 85 s): `-m "not slow"` skips it.
"""

from __future__ import annotations

import math
import signal
import re
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.helpers.ci import require
from tests.helpers.ports import free_port
from tests.helpers.private_pg import PrivatePostgres
from tests.helpers.serve_proc import serve, stop
from tests.helpers.vllm_pages import ClockedVllm, PageServer
from tests.helpers.waiting import wait_until

PASSWORD = "pg-0utage-S3cret"
OUTAGE_S = 60.0
INTERVAL_S = 1.0


class Counted:
    """A ClockedVllm whose every /metrics page is remembered with the requests it reported."""

    def __init__(self, inner: ClockedVllm) -> None:
        self.inner = inner
        self.pages: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, path: str) -> tuple[int, bytes]:
        with self.lock:
            answer = self.inner(path)
            if path == "/metrics":
                self.pages.append(self.inner.done)
            return answer

    def freeze(self) -> None:
        """No more requests finish from now on."""
        with self.inner.lock:
            self.inner.rps = 0.0


def metric(text_: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text_, re.M)
    assert found, name
    return float(found.group(1))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {table: conn.execute(text(f"select count(*) from {table}")).scalar_one()
                    for table in ("instances", "scrape_outcomes", "instance_rollups", "slo_events", "decisions")}
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.e2e
def test_postgres_down_for_60s_evaluation_goes_on_and_nothing_is_lost(tmp_path):
    ok, why = PrivatePostgres.available()
    require(ok, why)
    counted = [Counted(ClockedVllm(rps=20, ttft=(0.05, 0.2), kv=0.3, waiting=0, seed=i)) for i in range(2)]
    with PrivatePostgres(PASSWORD) as pg, PageServer(counted[0]) as a, PageServer(counted[1]) as b:
        config = tmp_path / "c.yaml"
        config.write_text(f"""
storage: {{url: "{pg.url}"}}
scrape: {{interval: {INTERVAL_S:g}s, timeout: 500ms}}
evaluation: {{window: 5s}}
pools:
  - name: llama
    targets: [{a.url}, {b.url}]
    health: {{min_requests: 1, base_ejection_time: 300s}}
slos:
  - {{name: errors, indicator: {{type: error_ratio}}, objective: 99%}}
  - {{name: up, indicator: {{type: availability}}, objective: 99.9%}}
""")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        slow = f"127.0.0.1:{b.port}"

        def get(path: str) -> httpx.Response:
            answer = httpx.get(base + path, timeout=5)
            assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
            return answer

        def slos() -> dict[str, dict]:
            return {row["name"]: row for row in get("/api/v1/slos").json()}

        proc = serve(config, port)
        outputs = []
        try:
            wait_until(lambda: (s := slos()) and s["errors"]["total"] >= 40, 30, what="SLO events")
            before = counts(pg.url)
            cycles_before = get("/healthz").json()["cycles"]
            rss_before = rss_mb(proc.pid)

            # -- 1. the database goes away ---------------------------------------------------------
            pg.stop()
            stopped, stopped_wall = time.monotonic(), time.time()
            assert isinstance(get("/api/v1/decisions").json(), list)  # no 500 before a flush noticed
            counted[1].inner.ttft = (2.0, 3.0)  # a latency fault, decided while the database is down
            seen = {"errors_total": [], "cycles": [], "pending": [], "rss": []}
            storage_down_at = None
            while time.monotonic() - stopped < OUTAGE_S:
                m = get("/metrics").text
                if metric(m, "slo_monitor_storage_up") == 0 and storage_down_at is None:
                    storage_down_at = time.monotonic() - stopped
                seen["pending"].append(metric(m, "slo_monitor_storage_pending_rows"))
                seen["errors_total"].append(slos()["errors"]["total"])
                seen["cycles"].append(get("/healthz").json()["cycles"])
                seen["rss"].append(rss_mb(proc.pid))
                get("/api/v1/instances")
                time.sleep(2.0)
            assert httpx.get(f"{base}/upstreams/llama/{slow}", timeout=5).status_code == 503
            audit = get("/api/v1/decisions?kind=health").json()
            assert audit[0]["instance"] == slow and audit[0]["to"] == "ejected"  # from memory
            m = get("/metrics").text
            assert metric(m, "slo_monitor_storage_up") == 0 and metric(m, "slo_monitor_storage_dropped_rows_total") == 0
            pending_at_end = metric(m, "slo_monitor_storage_pending_rows")

            # -- 2. it comes back -------------------------------------------------------------------
            pg.start()
            restarted, restarted_wall = time.monotonic(), time.time()
            wait_until(lambda: metric(get("/metrics").text, "slo_monitor_storage_up") == 1, 30,
                       what="the held rows flushed")
            flushed_s = time.monotonic() - restarted
            after_flush = counts(pg.url)

            # -- 3. quiesce, stop, count ------------------------------------------------------------
            for c in counted:
                c.freeze()
            time.sleep(2.5 * INTERVAL_S)  # two more scrapes see the final counters
            final = slos()
        finally:
            outputs.append(stop(proc))
        served = {f"127.0.0.1:{s.port}": c for s, c in ((a, counted[0]), (b, counted[1]))}
        engine = create_engine(pg.url)
        with engine.connect() as conn:
            rollups = dict(conn.execute(text(
                "select i.address, sum(r.requests) from instance_rollups r join instances i on i.id = r.instance_id "
                "group by i.address")).all())
            scrapes = dict(conn.execute(text(
                "select i.address, sum(o.scrapes) from scrape_outcomes o join instances i on i.id = o.instance_id "
                "group by i.address")).all())
            minutes = {addr: [m for (m,) in conn.execute(text(
                "select o.minute from scrape_outcomes o join instances i on i.id = o.instance_id "
                "where i.address = :a order by o.minute"), {"a": addr})] for addr in served}
            slo_sums = {name: (good, total) for name, good, total in conn.execute(text(
                "select slo, sum(good), sum(total) from slo_events where model_name = '' group by slo"))}
            ejections = conn.execute(text(
                "select instance, extract(epoch from at) from decisions where kind = 'health' and to_state = 'ejected'")).all()
        engine.dispose()
        after = counts(pg.url)

        # -- 4. a restart on the same database --------------------------------------------------------
        proc = serve(config, port)
        try:
            first = wait_until(lambda: httpx.get(f"{base}/upstreams/llama/{slow}", timeout=2), 20, what="restart")
            assert first.status_code == 503, first.text  # the ejection came back from the database
            reloaded = slos()
            audit = get(f"/api/v1/decisions?instance={slow}").json()
        finally:
            outputs.append(stop(proc))

    # evaluation and decisions went on without the database
    assert seen["cycles"][-1] - seen["cycles"][0] >= OUTAGE_S / INTERVAL_S - 8, seen["cycles"]
    assert seen["errors_total"] == sorted(seen["errors_total"]) and seen["errors_total"][-1] > seen["errors_total"][0]
    assert storage_down_at is not None and max(seen["pending"]) > 0
    # nothing lost: the database holds exactly what the servers served
    for address, c in served.items():
        expected = c.pages[-1] - c.pages[0]  # the first page is the baseline
        assert rollups[address] == expected, (address, rollups[address], expected)
        assert 0 <= len(c.pages) - scrapes[address] <= 1, (address, len(c.pages), scrapes[address])
        stamps = [m.timestamp() for m in minutes[address]]
        assert stamps == [stamps[0] + 60 * k for k in range(len(stamps))], stamps  # every minute, the outage too
        assert len(stamps) >= 2
    requests = sum(c.pages[-1] - c.pages[0] for c in served.values())
    assert slo_sums["errors"] == (requests, requests), (slo_sums, requests)
    assert final["errors"]["total"] == requests and final["errors"]["good"] == requests
    assert slo_sums["up"][1] >= final["up"]["total"]
    assert any(inst == slow and stopped_wall <= float(at) <= restarted_wall for inst, at in ejections), (
        ejections, stopped_wall, restarted_wall)
    for table in ("scrape_outcomes", "instance_rollups", "slo_events", "decisions"):
        assert after[table] > before[table], (table, before, after)
    # a restart restores the budget and the decisions
    for field in ("good", "total", "sli", "error_budget_remaining"):
        assert reloaded["errors"][field] == pytest.approx(final["errors"][field], rel=1e-9), field
    assert any(d["to"] == "ejected" for d in audit)
    output = "\n".join(outputs)
    assert "database write failed" in output and "rows held for retry" in output
    assert PASSWORD not in output
    print(f"\nPostgreSQL down {OUTAGE_S:.0f} s: {seen['cycles'][-1] - cycles_before} cycles, "
          f"storage_up 0 after {storage_down_at:.1f} s, {int(pending_at_end)} rows held at the end "
          f"(RSS {rss_before:.0f} -> {max(seen['rss']):.0f} MiB); flushed {flushed_s:.1f} s after the restart "
          f"(persist every 15 s). Rows before/after flush/at the end: {before} / {after_flush} / {after}; "
          f"requests served {requests} = rollups {sum(rollups.values())} = SLO events {slo_sums['errors'][1]:.0f}")


@pytest.mark.e2e
def test_a_database_that_never_answers_costs_bounded_time():
    """A server that accepts TCP connections and never says a word (a hung database, a proxy in front
    of a dead one): a flush gives up after the connect timeout and keeps its rows, and the audit-log
    endpoint answers from memory after DB_READ_TIMEOUT_S. Before the connect timeout, the flush (and
    with it every later one, and the shutdown) hung for good."""
    import uvicorn

    from monitor.config import validate
    from monitor.publish.api import DB_READ_TIMEOUT_S
    from monitor.service import create_app
    from monitor.store import PG_CONNECT_TIMEOUT_S, AuditEntry, Store

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # the kernel completes handshakes; nobody ever reads
        store = Store.open(f"postgresql+psycopg://monitor:{PASSWORD}@127.0.0.1:{listener.getsockname()[1]}/db")
        try:
            store.queue_decisions([AuditEntry(time.time(), "health", "p", "127.0.0.1:1", "healthy", "ejected", (), {})])
            result: list[int] = []
            started = time.perf_counter()
            flusher = threading.Thread(target=lambda: result.append(store.flush()), daemon=True)
            flusher.start()
            flusher.join(PG_CONNECT_TIMEOUT_S + 10)
            took = time.perf_counter() - started
            assert result == [0], f"flush still blocked after {took:.1f} s"
            assert took < PG_CONNECT_TIMEOUT_S + 3 and store.pending == 1
            assert "timeout" in store.last_error.lower() and PASSWORD not in store.last_error

            store.last_error = None  # as if the last flush had worked: the endpoint asks the database
            app = create_app(validate({"pools": [{"name": "p", "targets": ["http://127.0.0.1:1"]}]}).config,
                             store=store, migrate=False)
            app.state.service.recent_decisions.append(
                AuditEntry(time.time(), "health", "p", "127.0.0.1:1", "healthy", "ejected", ("test",), {}))
            # under uvicorn (lifespan off: starting would ask the database), as the service runs it
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="off",
                                                   log_level="warning"))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            wait_until(lambda: server.started, 10, what="uvicorn")
            try:
                started = time.perf_counter()
                answer = httpx.get(f"http://127.0.0.1:{server.config.port}/api/v1/decisions", timeout=30)
                took_api = time.perf_counter() - started
            finally:
                server.should_exit = True
                thread.join(15)
            assert answer.status_code == 200 and answer.json()[0]["reasons"] == ["test"]
            assert took_api < DB_READ_TIMEOUT_S + 2, took_api
        finally:
            store.close()
    print(f"\nhung database: flush gave up after {took:.1f} s (connect_timeout {PG_CONNECT_TIMEOUT_S} s), "
          f"/api/v1/decisions answered from memory in {took_api:.1f} s")


def test_a_full_buffer_during_a_slow_write_loses_nothing_silently(tmp_path):
    """The write buffer is full and a flush is slow (the database is back but busy): rows queued
    meanwhile push the oldest out (counted as dropped), and the flush must then take out only what
    it wrote. Popping as many rows as it wrote used to remove the newest, unwritten ones, uncounted."""
    import sqlite3

    from monitor.store import AuditEntry, Store, upgrade

    url = f"sqlite:///{tmp_path}/m.db"
    upgrade(url)
    store = Store.open(url)
    store.max_pending = 10

    def decision(i: int) -> AuditEntry:
        return AuditEntry(1.7e9 + i, "health", "p", f"10.0.0.{i}:8000", "healthy", "ejected", (), {})

    try:
        store.queue_decisions(decision(i) for i in range(10))
        blocker = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # the flush waits for the lock (SQLite's busy timeout)
        written: list[int] = []
        flusher = threading.Thread(target=lambda: written.append(store.flush()))
        flusher.start()
        time.sleep(0.5)
        store.queue_decisions(decision(i) for i in range(10, 15))  # the buffer is full: 0..4 are dropped
        assert store.dropped == 5
        blocker.execute("COMMIT")
        blocker.close()
        flusher.join(30)
        assert written == [10]  # the batch taken before: 0..9
        assert store.pending == 5  # 10..14, still to write
        assert store.flush() == 5 and store.pending == 0
        stored = sorted(d.instance for d in store.decisions(limit=100))
        assert stored == sorted(f"10.0.0.{i}:8000" for i in range(15))  # every row reached the database
    finally:
        store.close()


@pytest.mark.e2e
def test_exit_with_the_database_down_keeps_trying_then_names_what_is_lost(tmp_path):
    """SIGTERM while PostgreSQL is down: the rows held in memory get ~10 s more. A database back in
    time gets every one of them; one that stays down gets a log line with the count lost, and the
    exit is still clean (0, well inside Kubernetes' 30 s grace period)."""
    ok, why = PrivatePostgres.available()
    require(ok, why)
    counted = Counted(ClockedVllm(rps=20, ttft=(0.05, 0.2), kv=0.3, waiting=0, seed=5))
    with PrivatePostgres(PASSWORD) as pg, PageServer(counted) as a:
        config = tmp_path / "c.yaml"
        config.write_text(f"""
storage: {{url: "{pg.url}"}}
scrape: {{interval: 500ms, timeout: 400ms}}
pools: [{{name: llama, targets: [{a.url}]}}]
slos: [{{name: errors, indicator: {{type: error_ratio}}, objective: 99%}}]
""")
        port = free_port()
        base = f"http://127.0.0.1:{port}"

        def storage_up() -> float:
            return metric(httpx.get(f"{base}/metrics", timeout=5).text, "slo_monitor_storage_up")

        # -- the database returns while the service is exiting ------------------------------------
        proc = serve(config, port)
        try:
            wait_until(lambda: httpx.get(f"{base}/healthz", timeout=2).json()["cycles"] >= 4, 30, what="cycles")
            pg.stop()
            counted.freeze()  # from here every page shows the same counter
            time.sleep(1.5)
            proc.send_signal(signal.SIGTERM)
            time.sleep(2.0)
            pg.start()
            output = stop(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert "are lost" not in output, output[-2000:]
        engine = create_engine(pg.url)
        with engine.connect() as conn:
            scrapes = conn.execute(text("select coalesce(sum(scrapes), 0) from scrape_outcomes")).scalar_one()
            requests = conn.execute(text("select coalesce(sum(requests), 0) from instance_rollups")).scalar_one()
        engine.dispose()
        assert scrapes == len(counted.pages), (scrapes, len(counted.pages))  # every scrape, none lost
        assert requests == counted.pages[-1] - counted.pages[0]

        # -- the database stays down -------------------------------------------------------------
        proc = serve(config, port)
        try:
            wait_until(lambda: storage_up() == 1 and httpx.get(f"{base}/healthz", timeout=2).json()["cycles"] >= 2,
                       30, what="cycles")
            pg.stop()
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            asked = time.monotonic()
            output = stop(proc)
            took = time.monotonic() - asked
        finally:
            if proc.poll() is None:
                proc.kill()
    print(f"\nexit with the database down: {took:.1f} s")
    lost = re.search(r"exit: (\d+) rows of history could not be written in 10s \((.*)\) and are lost", output)
    assert lost and int(lost.group(1)) > 0, output[-2000:]
    assert PASSWORD not in output
    assert took < 25.0, took  # inside the 30 s a Kubernetes pod gets
