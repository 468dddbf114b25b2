"""file_sd end to end: a real NGINX in front of vLLM-shaped backends, `slo-monitor serve` following a
Prometheus file_sd file and writing NGINX's upstream file (checked with `nginx -t`, applied with
`nginx -s reload`), requests sent through NGINX all along.

One scenario, in order, with one instance (b) ejected for a latency fault before the fleet changes,
so that its ejection can be watched surviving every change:

1. d, already listening, is added to the file: it joins `starting`, turns healthy and takes traffic
   through NGINX; the time from the file change to its first request through NGINX is measured;
2. e is added while it still refuses connections (a model loading): it stays `starting`, out of the
   upstream block, takes nothing and costs the availability SLO nothing; once it listens, it takes
   traffic within two scrape intervals;
3. c is removed from the file and its server stopped: it is drained (`down`) at once, kept visible
   for `drain_time`, then gone from the upstream file and the API;
4. none of it ejected anything, burned the availability budget, or touched a, b or their SLO counts.

Measured and printed (run with -s): file change → traffic, listening → traffic, file change → drained.
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.error
import urllib.request

import pytest
from sqlalchemy import create_engine, text

from monitor.act.nginx import UpstreamServer, render_file
from monitor.decide.verdicts import HEALTHY
from tests.helpers.ci import require
from tests.helpers.fleet import Backend, ServeProcess, metric, write_file_sd
from tests.helpers.nginx_server import NGINX, RoutingNginx
from tests.helpers.ports import free_port

pytestmark = pytest.mark.e2e

INTERVAL = 1.0  # scrape interval, s
DRAIN = 4.0  # drain_time, s


class Traffic:
    """Requests through NGINX, one after the other, in a thread; every failure is kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            request = urllib.request.Request(self.url, headers={"Connection": "close"})
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    answer.read()
            except (urllib.error.URLError, OSError) as exc:
                self.failures.append(f"{time.time():.3f} {exc}")
            self.sent += 1
            self._stop.wait(0.01)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def servers(upstream_file) -> dict[str, str]:
    """Servers in the upstream file: address -> "up" or "down"."""
    return {m.group(1): ("down" if m.group(2) else "up")
            for m in re.finditer(r"^\s+server (\S+?)( down)?(?: weight=\d+)?;", upstream_file.read_text(), re.M)}


def ejection(reasons: list[str]) -> tuple[str, str]:
    """(which ejection: `first`, `2nd`..., until when) from an ejected instance's reasons."""
    text = " ".join(reasons)
    return re.search(r"(\w+) ejection", text).group(1), re.search(r"until (\S+?Z)", text).group(1)


def test_instances_added_to_and_removed_from_a_file_sd_file_take_and_leave_traffic_through_nginx(tmp_path):
    require(os.path.exists(NGINX), f"nginx binary not found at {NGINX} (apt-get install nginx-light)")
    backends = {name: Backend(name, seed=i) for i, name in enumerate("abcde")}
    a, b, c, d, e = backends.values()
    for backend in (a, b, c, d):
        backend.start()
    sd = tmp_path / "sd" / "chat.json"
    write_file_sd(sd, [a.address, b.address, c.address])
    upstream_file = tmp_path / "conf.d" / "upstreams.conf"
    upstream_file.parent.mkdir()
    upstream_file.write_text(render_file({"p": [UpstreamServer(x.address, HEALTHY) for x in (a, b, c)]}))
    nginx = RoutingNginx(tmp_path / "nginx", upstream_file)
    nginx.start()
    config = tmp_path / "monitor.yaml"
    config.write_text(f"""
storage: {{url: "sqlite:///{tmp_path}/monitor.db"}}
scrape: {{interval: {INTERVAL:g}s, timeout: 500ms}}
evaluation: {{window: 5s}}
pools:
  - name: p
    discovery:
      - {{type: file, files: ["{tmp_path}/sd/*.json"]}}
    health:
      min_requests: 1
      ttft_p99_degraded: 250ms
      ttft_p99_eject: 400ms
      base_ejection_time: 600s
      max_ejection_time: 600s
      drain_time: {DRAIN:g}s
slos:
  - {{name: up, indicator: {{type: availability}}, objective: 99.9%}}
  - {{name: errors, indicator: {{type: error_ratio}}, objective: 99%}}
nginx:
  upstream_file: "{upstream_file}"
  check: "{nginx.command('-t', '-q')}"
  reload: "{nginx.command('-s', 'reload')}"
""")
    serve = ServeProcess(config, free_port(), tmp_path / "serve.log")
    budget: list[tuple[float, float, float, float]] = []  # (up good, up total, errors good, errors total)

    def note_budget() -> None:
        slos = serve.slos()
        budget.append((slos["up"]["good"], slos["up"]["total"], slos["errors"]["good"], slos["errors"]["total"]))

    try:
        serve.wait_ready()
        serve.wait(lambda: all(i["state"] == "healthy" for i in serve.instances().values())
                   and len(serve.instances()) == 3, 30, "a, b and c healthy")
        assert {i["source"] for i in serve.instances().values()} == {"file"}
        assert all(i["joined_at"] is None for i in serve.instances().values())  # the fleet found at start

        # b ejected: its ejection must survive everything that follows
        b.set_ttft(1.0, 2.0)
        serve.wait(lambda: serve.instances()[b.address]["state"] == "ejected", 30, "b ejected")
        b_reasons = serve.instances()[b.address]["reasons"]
        serve.wait(lambda: servers(upstream_file).get(b.address) == "down", 10, "b down in the upstream file")
        settled = serve.health_decisions()
        note_budget()

        with Traffic(nginx.url) as traffic:
            # -- 1. d joins, already listening ---------------------------------------------------------
            joined = write_file_sd(sd, [a.address, b.address, c.address, d.address])
            serve.wait(lambda: d.first_routed_after(joined), 20, "d takes traffic through nginx", poll_s=0.01)
            d_traffic_s = d.first_routed_after(joined) - joined
            d_row = serve.instances()[d.address]
            assert d_row["source"] == "file" and d_row["joined_at"] is not None
            assert d_row["state"] == "healthy", d_row
            note_budget()

            # -- 2. e joins while it still refuses connections -------------------------------------------
            write_file_sd(sd, [a.address, b.address, c.address, d.address, e.address])
            serve.wait(lambda: serve.instances()[e.address]["state"] == "starting", 10, "e starting")
            serve.wait_cycles(3)
            assert serve.instances()[e.address]["state"] == "starting"
            assert e.address not in servers(upstream_file)  # a starting server is left out of the block
            assert serve.get(f"/upstreams/p/{e.address}").status_code == 503
            note_budget()
            listening = time.time()
            e.start()
            cycles_then = serve.cycles()
            serve.wait(lambda: e.first_routed_after(listening), 20, "e takes traffic through nginx", poll_s=0.01)
            e_traffic_s = e.first_routed_after(listening) - listening
            e_cycles = serve.cycles() - cycles_then
            note_budget()

            # -- 3. c leaves ----------------------------------------------------------------------------
            left = write_file_sd(sd, [a.address, b.address, d.address, e.address])
            serve.wait(lambda: servers(upstream_file).get(c.address) == "down", 10, "c drained", poll_s=0.01)
            drained_s = time.time() - left
            c.stop()
            assert serve.instances()[c.address]["state"] == "leaving"
            assert serve.get(f"/upstreams/p/{c.address}").status_code == 503
            serve.wait(lambda: c.address not in servers(upstream_file), DRAIN + 10, "c gone from the upstream file")
            gone_s = time.time() - left
            assert c.address not in serve.instances()
            assert serve.get(f"/upstreams/p/{c.address}").status_code == 404
            serve.wait_cycles(2)
            note_budget()
        sent, failures = traffic.sent, traffic.failures

        after = serve.health_decisions()
        page = serve.metrics()
        instances = serve.instances()
        for backend in backends.values():
            backend.freeze()
        serve.wait_cycles(2)  # the final counters scraped
    finally:
        output = serve.stop()
        nginx.stop()
        for backend in backends.values():
            backend.stop()
    engine = create_engine(f"sqlite:///{tmp_path}/monitor.db")
    with engine.connect() as conn:
        stored = dict(conn.execute(text(
            "select i.address, sum(r.requests) from instance_rollups r join instances i on i.id = r.instance_id "
            "group by i.address")).all())
        scrapes = dict(conn.execute(text(
            "select i.address, sum(o.scrapes - o.failures) from scrape_outcomes o join instances i on i.id = o.instance_id "
            "group by i.address")).all())
    engine.dispose()

    print(f"\nfile change -> d takes traffic through nginx: {d_traffic_s:.2f} s; e listening -> traffic: "
          f"{e_traffic_s:.2f} s ({e_cycles} cycles); file change -> c drained: {drained_s:.2f} s, "
          f"gone after {gone_s:.1f} s (drain_time {DRAIN:g} s); {sent} requests through nginx, "
          f"{len(failures)} failed")

    # the new instance takes traffic within two scrape intervals of turning healthy
    assert e_cycles <= 2, (e_cycles, e_traffic_s)
    # nothing was ejected by the changes, and a's and b's states were not touched
    new = after[len(settled):]
    assert all(t["instance"] in (c.address, d.address, e.address) for t in new), new
    assert [(t["instance"], t["from"], t["to"]) for t in new if t["instance"] == d.address][:1] == \
        [(d.address, "", "starting")]
    assert not [t for t in new if t["to"] == "ejected"], new
    assert [(t["from"], t["to"]) for t in new if t["instance"] == c.address] == [("healthy", "leaving"),
                                                                               ("leaving", "removed")], new
    assert instances[b.address]["state"] == "ejected"
    assert ejection(instances[b.address]["reasons"]) == ejection(b_reasons) == ("first", ejection(b_reasons)[1])
    assert instances[a.address]["state"] == "healthy"
    # the SLO counts only grew, and the availability budget was not burned (e and c not counted)
    for column in range(4):
        values = [row[column] for row in budget]
        assert values == sorted(values), budget
    assert budget[-1][0] == budget[-1][1], budget  # every availability event good
    assert budget[-1][2] == budget[-1][3], budget
    assert metric(page, "slo_monitor_pool_current_replicas", pool="p") == 4
    assert not failures, failures[:5]
    assert "Traceback" not in output
    # every instance's history is in the database, the departed one's to its last scrape
    for backend in backends.values():
        assert stored.get(backend.address) == backend.counts[-1] - backend.counts[0], (
            backend.name, stored.get(backend.address), backend.counts[-1] - backend.counts[0])
        assert scrapes.get(backend.address) == len(backend.counts), (backend.name, scrapes, len(backend.counts))  # e's refused ones apart
    assert instances[a.address]["joined_at"] is None  # a member since the start has not joined since
