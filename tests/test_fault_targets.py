"""Slow, hung, oversized and malformed targets cost `slo-monitor serve` bounded time and memory.

One pool of good vLLM-shaped servers (one of them answering gzip, as vLLM does for a client that
accepts it) beside a pool of targets that misbehave below HTTP's good manners: no answer, an answer
10 s late, a body that trickles a byte every 50 ms (a per-read timeout never fires), 50 MB with and
without Content-Length, an endless chunked body, gzip bombs (1 GiB of zeros in ~1 MB, and the same
behind a second gzip layer in ~2.5 KB), endless headers, garbage, a TCP reset, a redirect. The
service runs for a dozen cycles while the test reads /metrics and the process's memory:

* every cycle ends within `scrape.timeout` + a margin (the cycle runs all targets concurrently);
* peak RSS stays far below what the bodies would cost (the bombs alone inflate to 1 GiB and
  more), and RSS does not grow from cycle to cycle;
* each bad target has its reason, the good pool's figures and health are unaffected, and the
  redirect was not followed.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import raw_targets as raw
from tests.helpers.ports import free_port
from tests.helpers.serve_proc import serve, stop
from tests.helpers.vllm_pages import ClockedVllm, PageServer

pytestmark = pytest.mark.e2e  # every test here starts a process or a server on a real port


TIMEOUT_S = 1.0
INTERVAL_S = 2.0
CYCLE_MARGIN_S = 1.0  # generous: the CI machine may be busy; measured figures are printed
MAX_BODY = 16 * 2**20  # the default scrape.max_body_size

BAD = {
    "hung": (raw.hung, "timed out"),
    "slow": (raw.slow, "timed out"),
    "trickle": (raw.trickle, "timed out"),
    "huge_declared": (raw.huge_declared, "body larger than"),
    "huge_undeclared": (raw.huge_undeclared, "body larger than"),
    "endless_chunked": (raw.endless_chunked, "body larger than"),
    "gzip_bomb": (raw.gzip_bomb, "body larger than"),
    "nested_gzip_bomb": (raw.nested_gzip_bomb, "unsupported Content-Encoding"),
    "bad_gzip": (raw.bad_gzip, "does not decode"),
    # h11 refuses a head over 100 KB; a test process busy feeding the other targets may not get
    # that much out within the timeout
    "endless_headers": (raw.endless_headers, ("cannot connect", "timed out")),
    "garbage": (raw.garbage, "not a vLLM endpoint"),
    "malformed": (raw.malformed_vllm, "malformed metrics page"),
    "not_http": (raw.not_http, "cannot connect"),
    "reset": (raw.reset, "cannot connect"),
}


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB, from /proc (no psutil needed)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def series(text: str, name: str) -> dict[str, float]:
    return {m.group(1) or "": float(m.group(2)) for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M)}


def test_bad_targets_stay_bounded_in_time_and_memory(tmp_path):
    raw._bomb(1), raw._bomb(2)  # built before the clock starts
    good = [ClockedVllm(rps=20, ttft=(0.05, 0.2), kv=0.3, waiting=0, seed=i) for i in range(3)]
    canary = raw.RawServer(raw.hung)
    servers = {name: raw.RawServer(behaviour) for name, (behaviour, _) in BAD.items()}
    servers["redirect"] = raw.RawServer(raw.redirect_to(canary.url))
    zipped = raw.RawServer(raw.gzip_page(lambda: good[2]("/metrics")[1].decode()))
    with PageServer(good[0]) as a, PageServer(good[1]) as b, zipped, canary:
        for server in servers.values():
            server.__enter__()
        try:
            config = tmp_path / "c.yaml"
            config.write_text(f"""
storage: {{url: "sqlite:///{tmp_path}/m.db"}}
scrape: {{interval: {INTERVAL_S:g}s, timeout: {TIMEOUT_S:g}s, max_body_size: {MAX_BODY}}}
evaluation: {{window: 10s}}
pools:
  - name: good
    targets: [{a.url}, {b.url}, {zipped.url}]
  - name: bad
    targets: [{", ".join(s.url for s in servers.values())}]
""")
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            proc = serve(config, port)
            try:
                cycles: dict[int, float] = {}
                rss: dict[int, float] = {}
                deadline = time.monotonic() + 60
                while len(cycles) < 12 and time.monotonic() < deadline:
                    try:
                        text = httpx.get(f"{base}/metrics", timeout=5).text
                    except httpx.TransportError:
                        time.sleep(0.2)
                        continue
                    n = int(series(text, "slo_monitor_scrape_cycles_total").get("", 0))
                    if n and n not in cycles:
                        cycles[n] = series(text, "slo_monitor_scrape_cycle_duration_seconds")[""]
                        rss[n] = rss_mb(proc.pid)[0]
                    time.sleep(0.2)
                current, peak = rss_mb(proc.pid)
                instances = {i["instance"]: i for i in httpx.get(f"{base}/api/v1/instances", timeout=5).json()}
                per_target = series(httpx.get(f"{base}/metrics", timeout=5).text, "slo_monitor_scrape_duration_seconds")
            finally:
                output = stop(proc)
        finally:
            for server in servers.values():
                server.__exit__()

    assert len(cycles) >= 10, (cycles, output[-3000:])
    durations = sorted(cycles.values())
    steady = [rss[n] for n in sorted(rss) if n >= 4]
    print(f"\n{len(BAD) + 1} bad targets + 3 good: cycle time median {durations[len(durations) // 2]:.3f} s, "
          f"max {durations[-1]:.3f} s (timeout {TIMEOUT_S:g} s); RSS from cycle 4 {steady[0]:.0f} -> {steady[-1]:.0f} "
          f"MiB, now {current:.0f} MiB, peak {peak:.0f} MiB; slowest target "
          f"{max(per_target.values()):.3f} s")
    assert durations[-1] <= TIMEOUT_S + CYCLE_MARGIN_S, cycles
    # memory: a bomb inflates to 1 GiB, the bodies total > 200 MB a cycle; the caps keep the process
    # at its size with a few capped bodies in flight, and nothing accumulates from cycle to cycle
    assert peak < 400, f"peak RSS {peak:.0f} MiB"
    assert max(steady) - steady[0] < 60, steady

    for name, (_, reason) in BAD.items():
        row = instances[f"127.0.0.1:{servers[name].port}"]
        reasons = (reason,) if isinstance(reason, str) else reason
        assert row["scrape"]["error"] and any(r in row["scrape"]["error"] for r in reasons), (name, row["scrape"])
        assert row["state"] == "unknown", (name, row["state"])  # never scraped successfully: fails open
    redirect = instances[f"127.0.0.1:{servers['redirect'].port}"]
    assert redirect["scrape"]["error"].startswith("HTTP 302"), redirect["scrape"]
    assert canary.connections == 0  # the redirect was not followed
    for server in (a, b, zipped):
        row = instances[f"127.0.0.1:{server.port}"]
        assert row["state"] == "healthy" and row["scrape"]["error"] is None, row
        assert row["metrics"]["requests_per_s"] and row["scrape"]["duration_s"] < 0.5, row
