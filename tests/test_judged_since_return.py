"""Issue 20, item 2: an instance is judged for what it does now.

An instance that was ejected for slowness and came back must not be ejected again for requests it
served while sick: its health window restarts on every change of state, so only requests served
after the change count, and only once there are `min_requests` of them. A fresh slowness after the
return ejects it again, on that new evidence.

Driven in process as the service drives it: hand-built scrape results of cumulative vLLM counters
ingested into a `FleetView`, the signals built with each instance's last change of state
(`FleetDecisions.judged_since`), decided by `FleetDecisions`. Only instances a load balancer would
send to (their verdict serves traffic) get requests.
"""

from __future__ import annotations

from monitor.decide.fleet import FleetDecisions, PoolPolicy
from monitor.decide.verdicts import DEGRADED, EJECTED, HEALTHY
from monitor.evaluate.fleet import FleetView
from monitor.evaluate.signals import pool_signals
from monitor.evaluate.windows import select_window, window_stats
from monitor.settings import HealthSettings, ScalingSettings
from tests.helpers.slo_scrapes import T0, Server, result

INTERVAL = 5.0
WINDOW = 60.0
POOL = "llama"
SICK_TTFT = 2.44  # s: the figure, far above the 1 s eject threshold
FAST_TTFT = 0.05


class Quiet(Server):
    """A server whose page says 1 running after an interval with requests and 0 after one without
    (an idle server is idle, not hung)."""

    busy: bool = False

    def requests(self, n: float, reason: str = "stop", ttft_s: float = 0.05) -> None:
        super().requests(n, reason, ttft_s)
        self.busy = n > 0

    def sample(self):
        sample = super().sample()
        sample.gauges["running"] = 1.0 if self.busy else 0.0
        self.busy = False
        return sample


class Pool:
    """Four instances behind a load balancer that follows the verdicts, one scrape cycle per step."""

    def __init__(self, settings: HealthSettings | None = None) -> None:
        self.names = [f"10.0.0.{i}:8000" for i in range(1, 5)]
        self.victim = self.names[0]
        self.servers = {name: Quiet() for name in self.names}
        self.fleet = FleetView(WINDOW, INTERVAL, {POOL: {n: f"http://{n}" for n in self.names}})
        self.decisions = FleetDecisions({POOL: PoolPolicy(settings or HealthSettings(), ScalingSettings())},
                                        {POOL: self.names}, INTERVAL)
        self.decisions.set_members({POOL: self.names}, joining=False)
        self.t = float(T0)
        self.ejections: list[float] = []

    def step(self, victim_requests: int = 0, victim_ttft: float = FAST_TTFT, in_flight: int = 0) -> None:
        """One interval: every serving instance finishes its requests, then a scrape and a decision.
        `in_flight`: slow requests the victim had accepted before it was ejected, finishing now."""
        self.t += INTERVAL
        if in_flight:
            self.servers[self.victim].requests(in_flight, ttft_s=SICK_TTFT)
        for name, server in self.servers.items():
            verdict = self.decisions.verdict(POOL, name, self.t)
            if verdict is not None and not verdict.serves_traffic:
                continue  # ejected: the load balancer sends it nothing
            if name == self.victim:
                if victim_requests:
                    server.requests(victim_requests, ttft_s=victim_ttft)
            else:
                server.requests(10, ttft_s=FAST_TTFT)
        self.fleet.ingest([result(POOL, n, self.t, s) for n, s in self.servers.items()])
        self.fleet.last_cycle_at, self.fleet.last_cycle_duration_s = self.t + 0.01, 0.01
        now = self.t + 0.02
        windows = self.decisions.windows(self.fleet.window)
        signals = {POOL: pool_signals(self.fleet, POOL, self.names, now, windows[POOL],
                                      self.decisions.judged_since())}
        outcome = self.decisions.decide(signals, now, data_at=self.fleet.last_cycle_at,
                                        cycle_duration_s=self.fleet.last_cycle_duration_s)
        for t in outcome.health[0].transitions:
            if t.instance == self.victim and t.to_state == EJECTED:
                self.ejections.append(now)

    @property
    def state(self) -> str:
        return self.decisions.verdict(POOL, self.victim, self.t + 0.02).state

    @property
    def reasons(self) -> str:
        return self.decisions.verdict(POOL, self.victim, self.t + 0.02).reason_line


def _sick_then_ejected(pool: Pool) -> None:
    """The issue's victim: a quiet instance (one request an interval) whose requests turn slow; it is
    ejected once the window holds `min_requests` (5) of them."""
    for _ in range(3):
        pool.step(victim_requests=1)
    assert pool.state == HEALTHY
    for _ in range(5):
        pool.step(victim_requests=1, victim_ttft=SICK_TTFT)
        if pool.state == EJECTED:
            break
    assert pool.state == EJECTED and "TTFT p99" in pool.reasons and "eject threshold" in pool.reasons


def test_an_instance_that_returned_is_not_ejected_again_for_requests_it_served_while_sick():
    pool = Pool()
    _sick_then_ejected(pool)
    for _ in range(3):  # slow requests it had accepted before the ejection finish after it
        pool.step(in_flight=1)
    # the fault has cleared; ejected, it gets nothing new until it is back
    for _ in range(40):
        if pool.state != EJECTED:
            break
        pool.step(victim_requests=4)
    assert pool.state == HEALTHY and "returned after" in pool.reasons
    returned_at, returned_reasons = pool.t, pool.reasons
    # the issue: idle, it got a burst from the load balancer; 4 new requests and a late sick one
    # made 5 in the window, and it was ejected again 5 s later for 60 s ("TTFT p99 2.43s > eject
    # threshold 1s (60s window, 5 requests)", "ejection #2; 4/3 good intervals")
    for _ in range(int(2 * WINDOW / INTERVAL)):
        pool.step(victim_requests=4)
        assert pool.state == HEALTHY, (pool.t - returned_at, pool.reasons)
    assert len(pool.ejections) == 1
    assert "judged only on the requests it serves from now on" in returned_reasons


def test_fresh_slowness_after_the_return_ejects_it_again_on_new_evidence_only():
    pool = Pool()
    _sick_then_ejected(pool)
    for _ in range(40):
        if pool.state != EJECTED:
            break
        pool.step()
    assert pool.state == HEALTHY
    # sick again at once: four new slow requests are too few to judge it (min_requests 5) ...
    for _ in range(4):
        pool.step(victim_requests=1, victim_ttft=SICK_TTFT)
        assert pool.state == HEALTHY, pool.reasons
    # ... the fifth is enough, and the reason says what the verdict rests on: requests since it came back
    pool.step(victim_requests=1, victim_ttft=SICK_TTFT)
    assert pool.state == EJECTED and len(pool.ejections) == 2
    assert "TTFT p99" in pool.reasons and "5 requests in the 25s since it turned healthy" in pool.reasons
    assert "(2nd ejection in a row)" in pool.reasons and "ejected for 60s until" in pool.reasons


def test_the_reason_of_an_ejected_instance_counts_its_good_intervals_in_words():
    pool = Pool()
    _sick_then_ejected(pool)
    pool.step()
    pool.step()
    assert "(first ejection); 2 of 3 good intervals needed" in pool.reasons, pool.reasons
    for _ in range(2):
        pool.step()
    assert "3 of 3 good intervals needed, 4 seen" in pool.reasons, pool.reasons
    assert "/3" not in pool.reasons and "#" not in pool.reasons


def test_a_degraded_instance_earns_its_return_only_on_enough_requests_served_since():
    settings = HealthSettings(ttft_p99_degraded="500ms", ttft_p99_eject=None)
    pool = Pool(settings)
    for _ in range(2):
        pool.step(victim_requests=10)
    pool.step(victim_requests=10, victim_ttft=0.9)
    assert pool.state == DEGRADED
    # fewer requests than min_requests since it was degraded: its silence proves nothing either way
    for _ in range(6):
        pool.step(victim_requests=0)
        assert pool.state == DEGRADED, pool.reasons
    assert "recovering: 0 of 3 good intervals needed; an interval counts once 0 of 5 requests needed" in pool.reasons
    # served fast again, with enough of them: three good intervals bring it back
    for _ in range(3):
        pool.step(victim_requests=10)
    assert pool.state == HEALTHY, pool.reasons


def test_a_window_starts_at_the_last_change_of_state_when_that_is_later():
    times = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
    assert select_window(times, now=25.0, window=60.0) == (0, 5)
    # changed state at 12 s: the scrape at 10 s is the baseline, requests after it count
    assert select_window(times, now=25.0, window=60.0, since=12.0) == (2, 5)
    # a change older than the window cuts nothing
    assert select_window(times, now=25.0, window=10.0, since=2.0) == (3, 5)
    old = Server()
    old.requests(4, ttft_s=SICK_TTFT)
    points = [(0.0, old.sample())]
    old.requests(1, ttft_s=FAST_TTFT)
    points.append((5.0, old.sample()))
    stats = window_stats(points, now=5.0, window=60.0, since=1.0)
    assert stats is not None and stats.histograms["ttft"].count == 1
