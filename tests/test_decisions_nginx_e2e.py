"""End to end: a real NGINX in front of three simulated vLLM instances under load, steered by `slo-monitor serve`.

Every part is real and runs as its own process: `slo-monitor simulate` (three instances, a ground-truth
file with the arrival time of every request each instance received), NGINX (Debian nginx-light, its
own prefix, config, pid file and error log in tmp_path, on a free loopback port), `slo-monitor load`
sending its requests THROUGH NGINX, and `slo-monitor serve` with `nginx.upstream_file`, `nginx -t` as
its check and `nginx -s reload` as its reload command.

One scenario, in order:

1. a latency fault on one instance: its check URL answers 503 within 3 scrape intervals of the first
   slow first token, the upstream file marks it `down`, NGINX reloads (its error log says so), and
   the simulator's ground truth shows it receives no new requests while the others do;
2. clearing the fault brings it back: 200, not `down`, requests arrive again;
3. a latency fault on all three ejects no more than the cap (50% of 3 → 1), the others are held back;
4. stopping the simulator (every target unreachable at once) ejects nothing more: fail open.

Measured and printed (run with -s): fault → 503, fault → file, fault → reload, fault → the last
request NGINX sent to the faulted instance, and clear → back.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from monitor.act.nginx import HEADER, UpstreamServer, render_file
from monitor.decide.verdicts import HEALTHY

from tests.helpers.ci import require
from tests.helpers.nginx_server import NGINX, NginxServer
from tests.helpers.ports import free_port
from tests.helpers.times import parse_rfc3339
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.e2e  # every test here starts a process or a server on a real port


INTERVAL = 0.5  # scrape interval, s
WINDOW = 2.0  # evaluation window, s
TTFT_EJECT = 0.4  # s; healthy TTFT here is ~40-100 ms, the fault makes it ~1 s
MULTIPLIER = 20  # latency_multiplier of the fault
BASE_EJECTION = 8.0  # long enough to watch the ejected instance get nothing, short enough to see it return
RATE = 10.0  # requests/s through NGINX, over three instances
POLL = 0.05


# --- processes ----------------------------------------------------------------------------------


class _Proc:
    """A child process with its output in a file (a pipe nobody reads could fill and block it)."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        self._out = open(log, "w")
        self.process = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()


def _monitor(*args: str) -> list[str]:
    return [sys.executable, "-m", "monitor", *args]


def _nginx(root: Path, upstream_file: Path) -> NginxServer:
    """NGINX proxying to upstream `llama`, streaming answers as they come."""
    return NginxServer(root, upstream_file, "llama", free_port(), location=(
        'proxy_http_version 1.1;\n            proxy_set_header Connection "";\n'
        "            proxy_buffering off;\n            proxy_read_timeout 60s;"))


# --- reading what happened ----------------------------------------------------------------------


def _truth(path: Path) -> list[dict]:
    """The simulator's ground truth so far (whole lines only: it may be mid-write)."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]


def _arrivals(rows: list[dict], instance: str, after: float, before: float = float("inf")) -> list[float]:
    return sorted(r["arrival"] for r in rows if r["instance"] == instance and after < r["arrival"] < before)


def _wait(predicate, timeout: float, what: str, poll: float = POLL):
    return wait_until(predicate, timeout, poll, what, not_yet=(httpx.TransportError, OSError, ValueError))


class _Scene:
    def __init__(self, base: str, addresses: list[str], urls: list[str], nginx: NginxServer, upstream_file: Path,
                 truth: Path) -> None:
        self.base = base
        self.addresses = addresses
        self.urls = urls
        self.nginx = nginx
        self.upstream_file = upstream_file
        self.truth = truth
        self.client = httpx.Client(timeout=5)

    def check(self, address: str) -> httpx.Response:
        return self.client.get(f"{self.base}/upstreams/llama/{address}")

    def statuses(self) -> dict[str, int]:
        return {a: self.check(a).status_code for a in self.addresses}

    def instances(self) -> dict[str, dict]:
        return {row["instance"]: row for row in self.client.get(f"{self.base}/api/v1/instances").json()}

    def down(self) -> set[str]:
        """Servers the upstream file marks `down`."""
        text = self.upstream_file.read_text()
        return set(re.findall(r"server (\S+) down;", text))

    def fault(self, index: int, body: dict) -> None:
        r = self.client.post(f"{self.urls[index]}/sim/faults", json=body)
        assert r.status_code == 200, r.text

    def in_flight(self, index: int) -> int:
        state = self.client.get(f"{self.urls[index]}/sim/state").json()
        return state["running"] + state["waiting"]


# --- the test -----------------------------------------------------------------------------------


def test_nginx_follows_ejections_under_load(tmp_path):
    require(os.path.exists(NGINX), f"nginx binary not found at {NGINX} (apt-get install nginx-light)")
    started = time.monotonic()
    truth = tmp_path / "truth.jsonl"
    procs: list[_Proc] = []
    nginx: NginxServer | None = None
    scene: _Scene | None = None
    try:
        sim = _Proc("simulate", _monitor("simulate", "--instances", "3", "--base-port", "0", "--status-every", "0",
                                         "--ground-truth", str(truth)), tmp_path / "sim.log")
        procs.append(sim)
        urls = _wait(lambda: (found := re.findall(r"^\s+(http://\S+)$", sim.output(), re.MULTILINE)) and len(found) == 3
                     and found, 20, "the simulator's URLs")
        addresses = [u.removeprefix("http://") for u in urls]

        upstream_file = tmp_path / "conf.d" / "llm-upstreams.conf"
        upstream_file.parent.mkdir()
        upstream_file.write_text(render_file({"llama": [UpstreamServer(a, HEALTHY) for a in addresses]}))
        nginx = _nginx(tmp_path / "nginx", upstream_file)
        nginx.start()

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = tmp_path / "monitor.yaml"
        config.write_text(f"""
storage: {{url: "sqlite:///{tmp_path}/monitor.db"}}
scrape: {{interval: {INTERVAL * 1000:g}ms, timeout: {INTERVAL * 1000 - 100:g}ms}}
evaluation: {{window: {WINDOW:g}s}}
pools:
  - name: llama
    targets: [{", ".join(urls)}]
    health:
      min_requests: 1
      ttft_p99_degraded: 250ms
      ttft_p99_eject: {TTFT_EJECT * 1000:g}ms
      base_ejection_time: {BASE_EJECTION:g}s
      recovery_intervals: 2
nginx:
  upstream_file: "{upstream_file}"
  check: "{nginx.command('-t', '-q')}"
  reload: "{nginx.command('-s', 'reload')}"
""")
        service = _Proc("serve", _monitor("serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"),
                        tmp_path / "serve.log")
        procs.append(service)
        load = _Proc("load", _monitor("load", "--targets", f"http://127.0.0.1:{nginx.port}", "--rate", str(RATE),
                                      "--duration", "300", "--prompt-tokens", "256", "--output-tokens", "4",
                                      "--drain", "1", "--quiet"), tmp_path / "load.log")
        procs.append(load)
        scene = _Scene(base, addresses, urls, nginx, upstream_file, truth)
        _scenario(scene, service, sim, load)
        print(f"\n[e2e] whole test {time.monotonic() - started:.1f}s wall")
    except BaseException:
        for p in procs:
            print(f"\n----- {p.name} output (tail) -----\n{p.output()[-4000:] if p.log.exists() else ''}")
        if nginx is not None and nginx.error_log.exists():
            print(f"\n----- nginx error log (tail) -----\n{nginx.error_log.read_text()[-2000:]}")
        raise
    finally:
        if scene is not None:
            scene.client.close()
        for p in reversed(procs):
            p.stop(timeout=15)
        if nginx is not None:
            nginx.stop()


def _scenario(s: _Scene, service: _Proc, sim: _Proc, load: _Proc) -> None:
    victim_i = 1
    victim, others = s.addresses[victim_i], [a for i, a in enumerate(s.addresses) if i != victim_i]

    # --- warm up: all healthy, traffic reaching every instance through NGINX, the service's first write applied
    def warm() -> bool:
        assert service.alive(), "slo-monitor serve exited"
        assert load.alive(), "slo-monitor load exited"
        rows = _truth(s.truth)
        return (all(len(_arrivals(rows, a, 0)) >= 5 for a in s.addresses)
                and all(v["state"] == HEALTHY for v in s.instances().values())
                and set(s.statuses().values()) == {200}
                and s.nginx.reloads() >= 1)  # the service's first write ran `nginx -t` and the reload

    _wait(warm, 30, "every instance healthy and receiving traffic through NGINX", poll=0.2)
    assert s.upstream_file.read_text().startswith(HEADER) and not s.down()

    # --- 1. a latency fault on one instance ---------------------------------------------------
    reloads = s.nginx.reloads()
    t_fault = time.time()
    s.fault(victim_i, {"latency_multiplier": MULTIPLIER})
    seen: dict[str, float] = {}
    cycles: list[tuple[float, int]] = []  # (when, the service's scrape cycles done by then)
    cycles_at_503 = 0
    deadline = time.monotonic() + 20
    while len(seen) < 3:
        assert time.monotonic() < deadline, f"not all seen after the fault: {seen}"
        now = time.time()
        done = s.client.get(f"{s.base}/healthz").json()["cycles"]
        cycles.append((now, done))
        if "503" not in seen and s.check(victim).status_code == 503:
            seen["503"], cycles_at_503 = now, done
        if "file" not in seen and victim in s.down():
            seen["file"] = now
        if "reload" not in seen and s.nginx.reloads() > reloads:
            seen["reload"] = now
        time.sleep(POLL)
    body = s.check(victim).text
    assert body.startswith("ejected:") and "TTFT p99" in body and "eject threshold" in body, body
    assert s.down() == {victim}
    assert all(s.check(a).status_code == 200 for a in others)

    # NGINX no longer sends to it: watch the others get traffic for a while, the victim none
    cutoff = max(seen["file"], seen["reload"]) + 1.0  # the old worker finishes what it had accepted
    _wait(lambda: time.time() > cutoff + 1.5 and all(len(_arrivals(_truth(s.truth), a, cutoff)) >= 4 for a in others),
          20, "the other instances to receive requests after the reload")
    assert s.check(victim).status_code == 503, "returned before the observation ended (machine too slow?)"
    t_clear = time.time()
    quiet_until = t_clear

    # --- 2. clearing the fault brings it back ---------------------------------------------------
    s.fault(victim_i, {})
    _wait(lambda: s.in_flight(victim_i) == 0, 20, "the faulted instance's requests to finish")
    rows = _truth(s.truth)
    late = _arrivals(rows, victim, cutoff, quiet_until)
    assert late == [], f"NGINX still sent {len(late)} requests to the ejected instance after the reload"
    after_fault = [r for r in rows if r["instance"] == victim and r["arrival"] >= t_fault]
    assert after_fault, "no request reached the faulted instance after the fault (load too light?)"
    t_last = max(r["arrival"] for r in after_fault)
    slow = [r["first_token"] for r in rows if r["instance"] == victim and r["first_token"]
            and r["first_token"] > t_fault and r["first_token"] - r["arrival"] > TTFT_EJECT]
    assert slow, "no TTFT above the eject threshold reached the faulted instance's ground truth"
    t_slow = min(slow)  # the first TTFT above the threshold: from here the window shows the fault
    for a in others:
        assert len(_arrivals(rows, a, cutoff, quiet_until)) >= 4

    t_back = _wait(lambda: s.check(victim).status_code == 200 and time.time(), BASE_EJECTION + 20,
                   "the instance to return")
    _wait(lambda: victim not in s.down(), 10, "the upstream file to drop `down`")
    t_file_back = time.time()
    back_body = s.check(victim).text
    assert back_body.startswith("healthy:") and "returned after" in back_body, back_body
    t_again = _wait(lambda: (again := _arrivals(_truth(s.truth), victim, t_back)) and again[0], 20,
                    "requests to reach the instance again")

    # judged for what it does now (issue 20): back in rotation, it is judged on the requests it serves
    # from here, not on those it served while slow; it stays healthy while they come in
    assert "judged only on the requests it serves from now on" in back_body, back_body
    t_served = time.time()
    while time.time() < max(t_back + WINDOW, t_served) + 4 * INTERVAL:
        assert s.check(victim).status_code == 200, s.check(victim).text
        time.sleep(0.1)
    assert len(_arrivals(_truth(s.truth), victim, t_back)) >= 4, "too little traffic to judge it on"

    audit = s.client.get(f"{s.base}/api/v1/decisions", params={"kind": "health", "instance": victim}).json()
    moves = [(d["from"], d["to"]) for d in reversed(audit)]
    assert ("healthy", "ejected") in moves and ("ejected", "healthy") in moves, moves
    assert moves.count(("healthy", "ejected")) == 1, f"ejected again after it returned: {moves}"

    iv = INTERVAL
    print(f"\n[e2e] scrape interval {iv * 1000:.0f} ms, window {WINDOW:g} s, fault x{MULTIPLIER} on {victim}")
    print(f"[e2e] fault -> first TTFT over {TTFT_EJECT * 1000:.0f} ms: {t_slow - t_fault:.2f}s")
    print(f"[e2e] that TTFT -> check URL 503: {seen['503'] - t_slow:.2f}s ({(seen['503'] - t_slow) / iv:.1f} intervals)")
    print(f"[e2e] fault -> check URL 503: {seen['503'] - t_fault:.2f}s")
    print(f"[e2e] fault -> upstream file `down`: {seen['file'] - t_fault:.2f}s; fault -> nginx reloaded: "
          f"{seen['reload'] - t_fault:.2f}s")
    print(f"[e2e] fault -> NGINX stops sending: last request the faulted instance received came "
          f"{t_last - t_fault:.2f}s after the fault ({len(after_fault)} requests reached it after the fault); none "
          f"from +{cutoff - t_fault:.2f}s (reload + 1 s) to +{quiet_until - t_fault:.2f}s while the others got "
          f"{', '.join(str(len(_arrivals(rows, a, cutoff, quiet_until))) for a in others)}")
    print(f"[e2e] clear -> check URL 200: {t_back - t_clear:.2f}s (ejected at +{seen['503'] - t_fault:.1f}s for "
          f"{BASE_EJECTION:g}s); clear -> file without `down`: {t_file_back - t_clear:.2f}s; "
          f"clear -> first request again: {t_again - t_clear:.2f}s")
    # the bound: within 3 scrape intervals once the window shows the fault. On a starved machine
    # the service's own cycles run late (the scheduler coalesces missed runs); then count its cycles.
    before = [n for t, n in cycles if t <= t_slow] or [cycles[0][1]]
    ran = cycles_at_503 - max(before)
    print(f"[e2e] scrape cycles from that TTFT to the 503: {ran}")
    assert seen["503"] - t_slow <= 3 * iv or ran <= 3, \
        f"503 came {seen['503'] - t_slow:.2f}s and {ran} scrape cycles after the first slow TTFT"
    assert t_last <= cutoff

    # --- 3. a fault on all three ejects no more than the cap (50% of 3 → 1) -------------------
    _wait(lambda: all(v["state"] == HEALTHY for v in s.instances().values()), 20, "all healthy again")
    for i in range(3):
        s.fault(i, {"latency_multiplier": MULTIPLIER})
    t_all = time.time()

    def capped() -> dict | None:
        statuses = s.statuses()
        ejected = [a for a, code in statuses.items() if code == 503]
        assert len(ejected) <= 1, f"more than the cap ejected: {statuses}"
        assert len(s.down()) <= 1, s.upstream_file.read_text()
        views = s.instances()
        held = [a for a, v in views.items() if v["state"] == "degraded"
                and any("ejection held back" in r for r in v["reasons"])]
        return views if len(ejected) == 1 and len(held) == 2 else None

    views = _wait(capped, 20, "one ejected and two held back by the cap")
    t_capped = time.time()
    while time.time() < t_capped + 4 * INTERVAL:  # and it stays so
        capped()
        time.sleep(0.1)
    ejected = {a for a, v in views.items() if v["state"] == "ejected"}
    assert s.down() == ejected and len(ejected) == 1
    print(f"[e2e] all three slow: {len(ejected)} ejected (cap 50% of 3) after {t_capped - t_all:.2f}s, "
          f"2 degraded: {next(r for r in views[next(a for a in s.addresses if a not in ejected)]['reasons'] if 'held back' in r)}")

    # --- 4. every target unreachable at once: nothing newly ejected ----------------------------
    sim.stop(signal.SIGKILL)
    t_kill = time.time()

    def failing_open() -> bool:
        assert {a for a, code in s.statuses().items() if code == 503} <= ejected
        return all("failing open" in s.check(a).text and "failed at once" in s.check(a).text for a in s.addresses)

    _wait(failing_open, 15, "every check URL to say it fails open")
    t_open = time.time()
    # failure_threshold (3) and then some: still nothing newly ejected, the one ejected before stays
    while time.time() < t_open + 6 * INTERVAL:
        assert {a for a, code in s.statuses().items() if code == 503} == ejected
        assert s.down() == ejected
        time.sleep(0.1)
    views = s.instances()
    for a, v in views.items():
        assert any(r.startswith("failing open: all 3 targets of pool llama failed at once") for r in v["reasons"]), v
        assert v["scrape"]["error"], v
    audit = s.client.get(f"{s.base}/api/v1/decisions", params={"kind": "health"}).json()
    late_ejections = [d for d in audit if d["to"] == "ejected" and parse_rfc3339(d["at"]) > t_kill]
    assert late_ejections == [], late_ejections
    assert "failing open" in service.output()
    print(f"[e2e] simulator killed: failing open after {t_open - t_kill:.2f}s, nothing newly ejected in "
          f"{time.time() - t_kill:.1f}s; reason: {views[s.addresses[0]]['reasons'][-1]}")
