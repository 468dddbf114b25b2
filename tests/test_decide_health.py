"""The health state machine under scripted signal sequences, one rule at a time.

Each test drives `PoolHealth.evaluate` interval by interval with plain `InstanceSignals`, as the
service does after every scrape cycle, and checks states, reasons and transitions.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from monitor.decide.fleet import FleetDecisions, PoolPolicy
from monitor.decide.pool import PoolHealth
from monitor.decide.verdicts import DEGRADED, EJECTED, HEALTHY, UNKNOWN
from monitor.evaluate.signals import InstanceSignals, pool_signals
from monitor.settings import HealthSettings, ScalingSettings

INTERVAL = 5.0
T0 = 1_700_000_000.0


def good(t: float, **overrides) -> InstanceSignals:
    """A healthy instance's signals: fast, no errors, tokens advancing."""
    values = dict(observed_at=t, ttft_p99_s=0.2, e2e_p99_s=2.0, error_ratio=0.0, requests=50.0,
                  kv_cache_usage=0.3, requests_running=4.0, requests_waiting=0.0,
                  generation_tokens_total=(t - T0) * 100.0, window_s=60.0)
    values.update(overrides)
    return InstanceSignals(**values)


class Driver:
    """Steps one pool through intervals; every instance gets `good` signals unless overridden."""

    def __init__(self, n: int = 4, settings: HealthSettings | None = None, names: list[str] | None = None) -> None:
        self.names = names or [f"10.0.0.{i + 1}:8000" for i in range(n)]
        self.pool = PoolHealth("p", self.names, settings or HealthSettings(), INTERVAL)
        self.t = T0
        self.transitions = []

    def step(self, overrides: dict[str, dict] | None = None, *, data_at: float | None | str = "now",
             cycle_duration_s: float | None = 0.1):
        self.t += INTERVAL
        signals = {name: good(self.t, **(overrides or {}).get(name, {})) for name in self.names}
        decision = self.pool.evaluate(signals, self.t, data_at=self.t if data_at == "now" else data_at,
                                      cycle_duration_s=cycle_duration_s)
        self.transitions.extend(decision.transitions)
        return decision

    def state(self, i: int) -> str:
        return self.pool.instances[self.names[i]].state

    def reasons(self, i: int) -> str:
        return " | ".join(self.pool.instances[self.names[i]].reasons)


def failing(error: str = "connection refused") -> dict:
    return {"scrape_error": error, "ttft_p99_s": None, "requests_running": None, "generation_tokens_total": None}


# --- basics -------------------------------------------------------------------------------------


def test_unknown_before_any_scrape_and_healthy_on_good_data():
    d = Driver(3)
    assert all(h.state == UNKNOWN for h in d.pool.instances.values())
    decision = d.pool.evaluate({}, T0, data_at=None)
    assert decision.fail_open and "no scrape data yet" in decision.fail_open
    assert all(v.state == UNKNOWN for v in decision.verdicts.values())
    decision = d.step()
    assert decision.fail_open is None
    assert [v.state for v in decision.verdicts.values()] == [HEALTHY] * 3
    assert all(v.http_status == 200 and v.weight == 1.0 for v in decision.verdicts.values())
    assert {(t.from_state, t.to_state) for t in decision.transitions} == {(UNKNOWN, HEALTHY)}


def test_settings_defaults_validation_and_disabling_rules():
    s = HealthSettings()
    assert (s.failure_threshold, s.ttft_p99_degraded, s.ttft_p99_eject, s.max_ejection_percent) == (3, 0.5, 1.0, 50.0)
    custom = HealthSettings.model_validate({"ttft_p99_degraded": "300ms", "ttft_p99_eject": "2s",
                                            "max_ejection_percent": "30%", "hang_intervals": None,
                                            "base_ejection_time": "10s"})
    assert (custom.ttft_p99_degraded, custom.ttft_p99_eject, custom.max_ejection_percent) == (0.3, 2.0, 30.0)
    for bad in ({"ttft_p99_degraded": "2s"}, {"intervall": 3}, {"max_ejection_percent": 150},
                {"base_ejection_time": 30}, {"max_ejection_time": "10s"}, {"degraded_weight": 0},
                {"failure_threshold": 0}):
        with pytest.raises(ValidationError):
            HealthSettings.model_validate(bad)


def test_ejection_limit_is_a_share_with_at_least_one():
    s = HealthSettings()
    assert [s.ejection_limit(n) for n in (1, 2, 3, 4, 5, 10)] == [1, 1, 1, 2, 2, 5]
    assert HealthSettings(max_ejection_percent=0).ejection_limit(10) == 0
    assert HealthSettings(max_ejection_percent=10).ejection_limit(3) == 1


# --- consecutive failures -----------------------------------------------------------------------


def test_three_consecutive_scrape_failures_eject():
    d = Driver(4)
    d.step()
    d.step({d.names[0]: failing()})
    d.step({d.names[0]: failing()})
    assert d.state(0) == HEALTHY and "the last 2 observations failed (ejected at 3 in a row)" in d.reasons(0)
    decision = d.step({d.names[0]: failing()})
    assert d.state(0) == EJECTED
    verdict = decision.verdicts[d.names[0]]
    assert verdict.http_status == 503 and verdict.kind == "unreachable"
    assert "scrape failed 3x in a row: connection refused" in verdict.reason_line
    assert [(t.instance, t.from_state, t.to_state) for t in decision.transitions] == [(d.names[0], HEALTHY, EJECTED)]
    assert decision.transitions[0].signals["consecutive_failures"] == 3


def test_a_success_in_between_resets_the_failure_count():
    d = Driver(4)
    d.step()
    for _ in range(5):
        d.step({d.names[0]: failing()})
        d.step({d.names[0]: failing()})
        d.step()
    assert d.state(0) == HEALTHY


def test_health_endpoint_failures_count_as_failures():
    d = Driver(4)
    d.step()
    for _ in range(3):
        d.step({d.names[1]: {"health_error": "/health answered 503"}})
    assert d.state(1) == EJECTED
    assert d.pool.instances[d.names[1]].kind == "health_check"


def test_evaluating_the_same_observation_twice_counts_it_once():
    d = Driver(4)
    d.step()
    d.step({d.names[0]: failing()})
    d.step({d.names[0]: failing()})
    again = {n: good(d.t) for n in d.names}
    again[d.names[0]] = good(d.t, **failing())
    for _ in range(3):
        d.pool.evaluate(again, d.t + 1, data_at=d.t)
    assert d.state(0) == HEALTHY
    assert d.pool.instances[d.names[0]].failures == 2


def test_never_seen_instance_stays_unknown_not_ejected():
    """A vLLM server does not listen until its model is loaded; refusing connections then is not a fault."""
    d = Driver(4)
    for _ in range(6):
        decision = d.step({d.names[3]: failing()})
    assert d.state(3) == UNKNOWN
    assert "never scraped successfully (6x: connection refused)" in d.reasons(3)
    assert decision.verdicts[d.names[3]].serves_traffic
    d.step()
    assert d.state(3) == HEALTHY


# --- latency, errors, saturation, hang ----------------------------------------------------------


def test_latency_degrades_then_ejects_at_once_and_needs_volume():
    d = Driver(4)
    d.step()
    d.step({d.names[0]: {"ttft_p99_s": 0.7}})
    assert d.state(0) == DEGRADED and "TTFT p99 700ms > degraded threshold 500ms" in d.reasons(0)
    assert d.pool.verdict_of(d.pool.instances[d.names[0]]).weight == 0.25
    d.step({d.names[1]: {"ttft_p99_s": 1.4}})
    assert d.state(1) == EJECTED and "TTFT p99 1.4s > eject threshold 1s (60s window, 50 requests)" in d.reasons(1)
    # too few requests: a p99 of three requests is noise
    d.step({d.names[2]: {"ttft_p99_s": 5.0, "requests": 3.0}})
    assert d.state(2) == HEALTHY


def test_e2e_thresholds_when_configured():
    d = Driver(4, HealthSettings(e2e_p99_degraded="20s", e2e_p99_eject="40s"))
    d.step({d.names[0]: {"e2e_p99_s": 30.0}, d.names[1]: {"e2e_p99_s": 50.0}})
    assert (d.state(0), d.state(1)) == (DEGRADED, EJECTED)
    assert "e2e p99 50s > eject threshold 40s" in d.reasons(1)


def test_error_ratio_thresholds():
    d = Driver(4)
    d.step({d.names[0]: {"error_ratio": 0.1}, d.names[1]: {"error_ratio": 0.5}, d.names[2]: {"error_ratio": 0.01}})
    assert [d.state(i) for i in range(3)] == [DEGRADED, EJECTED, HEALTHY]
    assert "error ratio 50% > eject threshold 25%" in d.reasons(1)


def test_kv_cache_full_with_requests_waiting_degrades():
    d = Driver(4)
    d.step({d.names[0]: {"kv_cache_usage": 0.95, "requests_waiting": 7.0},
            d.names[1]: {"kv_cache_usage": 0.95, "requests_waiting": 0.0}})
    assert d.state(0) == DEGRADED and "KV cache 95% >= 90% with 7 requests waiting" in d.reasons(0)
    assert d.state(1) == HEALTHY  # full cache but nothing waiting: busy, not saturated


def test_hang_running_requests_without_generation_tokens():
    d = Driver(4, HealthSettings(hang_intervals=3))
    d.step()
    frozen = {"generation_tokens_total": 12345.0, "requests_running": 6.0}
    for _ in range(3):
        d.step({d.names[0]: frozen})
    assert d.state(0) == HEALTHY  # 2 stalled intervals: the first frozen reading is the baseline
    decision = d.step({d.names[0]: frozen})
    assert d.state(0) == EJECTED
    assert decision.verdicts[d.names[0]].kind == "hang"
    assert "hung: 6 running and 0 waiting, and no generation token for 3 intervals" in d.reasons(0)


def test_hang_with_nothing_running_and_requests_waiting_when_the_engine_core_died():
    # vllm#39863: EngineCore dead, the API server still answers; running 0, waiting climbs, nothing moves
    d = Driver(4, HealthSettings(hang_intervals=3))
    d.step()
    for k in range(4):
        d.step({d.names[0]: {"requests_running": 0.0, "requests_waiting": 3.0 + k, "generation_tokens_total": 500.0,
                             "finished_total": 40.0, "iterations_total": 900.0}})
    assert d.state(0) == EJECTED
    assert d.pool.instances[d.names[0]].kind == "hang"
    assert "hung: 0 running and 6 waiting" in d.reasons(0)
    assert "no generation token, no finished request, no engine iteration" in d.reasons(0)


def test_engine_iterations_moving_mean_the_engine_is_alive_even_without_new_tokens():
    d = Driver(4, HealthSettings(hang_intervals=2))
    for k in range(6):
        d.step({d.names[0]: {"requests_running": 2.0, "generation_tokens_total": 500.0, "finished_total": 40.0,
                             "iterations_total": 900.0 + k}})
    assert d.state(0) == HEALTHY


def test_metrics_answering_while_health_times_out_is_a_hang():
    d = Driver(4, HealthSettings(hang_intervals=3, failure_threshold=3))
    d.step()
    for _ in range(3):
        d.step({d.names[0]: {"health_error": "timed out after 2s"}})
    assert d.state(0) == EJECTED
    assert "hung: /metrics answers but /health timed out 3x in a row" in d.reasons(0)


def test_a_frozen_metrics_page_with_requests_in_flight_is_a_hang():
    # /health says 200 and the page is served, but it is the same page every time
    d = Driver(4, HealthSettings(hang_intervals=2))
    d.step()
    frozen = {"requests_running": 4.0, "requests_waiting": 1.0, "generation_tokens_total": 777.0,
              "finished_total": 12.0, "iterations_total": 3000.0}
    for _ in range(3):
        d.step({d.names[0]: frozen})
    assert d.state(0) == EJECTED and "hung:" in d.reasons(0)


def test_an_idle_instance_with_nothing_running_or_waiting_is_never_hung():
    d = Driver(4, HealthSettings(hang_intervals=2))
    idle = {"requests_running": 0.0, "requests_waiting": 0.0, "generation_tokens_total": 500.0,
            "finished_total": 40.0, "iterations_total": 900.0}
    for _ in range(8):
        d.step({d.names[0]: idle})
    assert d.state(0) == HEALTHY


# --- sleeping engines ----------------------------------------------------------------------------


def test_a_sleeping_engine_is_drained_not_failed_and_returns_when_it_wakes():
    d = Driver(3, HealthSettings(hang_intervals=2))
    d.step()
    asleep = {"sleep_level": 1.0, "requests_running": 0.0, "requests_waiting": 2.0, "generation_tokens_total": 5.0,
              "finished_total": 1.0, "iterations_total": 1.0, "ttft_p99_s": None}
    for _ in range(5):
        decision = d.step({d.names[0]: asleep})
    verdict = decision.verdicts[d.names[0]]
    assert verdict.state == "sleeping" and verdict.http_status == 503 and verdict.weight == 0.0
    assert "engine asleep (weights offloaded)" in verdict.reason_line
    assert d.pool.instances[d.names[0]].ejections == 0  # never ejected, so no backoff either
    decision = d.step({d.names[0]: {"generation_tokens_total": 5.0, "finished_total": 1.0, "iterations_total": 1.0}})
    # awake, and its first interval moved nothing yet: the queued time asleep does not count toward a hang
    assert decision.verdicts[d.names[0]].state == HEALTHY and "engine awake again" in d.reasons(0)


def test_latency_right_after_waking_is_not_held_against_the_instance():
    # requests queued during the sleep finish with the sleep in their TTFT: not the instance's fault
    d = Driver(3)
    d.step()
    for _ in range(3):
        d.step({d.names[0]: {"sleep_level": 1.0}})
    d.step({d.names[0]: {"ttft_p99_s": 30.0}})  # woke: the window still holds the queued requests
    assert d.state(0) == HEALTHY
    for _ in range(12):  # one 60 s window later the figures are the instance's own again
        d.step()
    d.step({d.names[0]: {"ttft_p99_s": 30.0}})
    assert d.state(0) == EJECTED


def test_sleeping_instances_do_not_count_toward_the_ejection_cap_or_fail_open():
    d = Driver(2, HealthSettings(max_ejection_percent=50))
    d.step()
    decision = d.step({d.names[0]: {"sleep_level": 2.0}, d.names[1]: {"ttft_p99_s": 3.0}})
    # the only judged member is the slow one: the last server in rotation is never ejected (the
    # sleeping one serves nothing), and nobody fails open
    assert decision.fail_open is None
    assert d.state(0) == "sleeping" and d.state(1) == DEGRADED
    assert "the last server in rotation is never ejected" in d.reasons(1)


# --- membership: starting, leaving -------------------------------------------------------------


def test_a_joined_instance_is_starting_without_traffic_until_first_seen_healthy():
    d = Driver(3)
    d.step()
    new = "10.0.0.9:8000"
    d.pool.set_members(d.names + [new])
    d.names.append(new)
    decision = d.step({new: failing()})
    verdict = decision.verdicts[new]
    assert verdict.state == "starting" and not verdict.serves_traffic and verdict.http_status == 503
    assert ("", "starting") in {(t.from_state, t.to_state) for t in decision.transitions if t.instance == new}
    for _ in range(5):
        decision = d.step({new: failing()})  # refusing connections while the model loads: not a failure
    assert decision.verdicts[new].state == "starting" and decision.fail_open is None
    decision = d.step()
    assert decision.verdicts[new].state == HEALTHY and decision.verdicts[new].weight == 1.0


def test_a_starting_instance_past_startup_grace_is_judged_like_any_other():
    d = Driver(3, HealthSettings(startup_grace="10s", failure_threshold=3))
    d.step()
    new = "10.0.0.9:8000"
    d.pool.set_members(d.names + [new])
    d.names.append(new)
    for _ in range(5):
        d.step({new: failing()})
    assert d.state(3) == EJECTED


def test_an_instance_gone_from_discovery_is_drained_then_dropped_without_counting_as_a_failure():
    d = Driver(3, HealthSettings(drain_time="12s"))
    d.step()
    d.pool.set_members(d.names[:2])
    decision = d.step()
    gone = d.names[2]
    verdict = decision.verdicts[gone]
    assert verdict.state == "leaving" and verdict.http_status == 503 and verdict.weight == 0.0
    assert d.pool.current_replicas() == 2
    d.step()
    d.step()
    assert gone in d.pool.instances  # 10 s of its 12 s drain
    decision = d.step()
    assert gone not in d.pool.instances and gone not in decision.verdicts
    assert ("leaving", "removed") in {(t.from_state, t.to_state) for t in d.transitions if t.instance == gone}
    assert all(t.to_state != EJECTED for t in d.transitions)


def test_membership_changes_keep_the_state_of_the_instances_that_stay():
    d = Driver(4)
    d.step()
    d.step({d.names[0]: {"ttft_p99_s": 3.0}})
    assert d.state(0) == EJECTED
    until = d.pool.instances[d.names[0]].ejected_until
    d.pool.set_members(d.names[:3] + ["10.0.0.7:8000"])
    d.step()
    assert d.state(0) == EJECTED and d.pool.instances[d.names[0]].ejected_until == until


def test_slow_start_ramps_a_new_instance_weight_from_the_degraded_weight():
    d = Driver(2, HealthSettings(slow_start="20s", degraded_weight=0.25))
    d.step()
    new = "10.0.0.9:8000"
    d.pool.set_members(d.names + [new])
    d.names.append(new)
    first = d.step().verdicts[new]
    assert first.state == HEALTHY and first.weight == 0.25
    later = [d.step().verdicts[new].weight for _ in range(4)]
    assert later == sorted(later) and later[-1] == 1.0


# --- slow decoding and small pools --------------------------------------------------------------


def test_tpot_p99_thresholds_degrade_and_eject():
    d = Driver(4, HealthSettings(tpot_p99_degraded="100ms", tpot_p99_eject="300ms"))
    d.step({d.names[0]: {"tpot_p99_s": 0.15}, d.names[1]: {"tpot_p99_s": 0.5}})
    assert d.state(0) == DEGRADED and "TPOT p99 150ms > degraded threshold 100ms" in d.reasons(0)
    assert d.state(1) == EJECTED


def test_a_small_pool_degrades_an_instance_far_slower_than_the_others_but_never_ejects_on_that_alone():
    # the demo's fault: TPOT p99 0.22 s against 0.04 s, e2e 9.9 s against 1.5 s, TTFT within thresholds
    d = Driver(3, HealthSettings(ttft_p99_degraded=None, ttft_p99_eject=None))
    for _ in range(3):
        d.step({d.names[0]: {"tpot_p99_s": 0.22, "e2e_p99_s": 9.9}, d.names[1]: {"tpot_p99_s": 0.04, "e2e_p99_s": 1.5},
                d.names[2]: {"tpot_p99_s": 0.045, "e2e_p99_s": 1.4}})
    assert d.state(0) == DEGRADED
    assert "slower than the pool: TPOT p99 220ms is 5.2x the median" in d.reasons(0)
    assert d.state(1) == HEALTHY and d.state(2) == HEALTHY


def test_relative_slowness_needs_requests_on_both_sides():
    d = Driver(2, HealthSettings(ttft_p99_degraded=None, ttft_p99_eject=None))
    d.step({d.names[0]: {"e2e_p99_s": 9.0, "requests": 3.0}, d.names[1]: {"e2e_p99_s": 1.0}})
    assert d.state(0) == HEALTHY


def test_idle_instance_with_flat_counter_is_not_a_hang():
    d = Driver(4, HealthSettings(hang_intervals=2))
    for _ in range(6):
        d.step({d.names[0]: {"generation_tokens_total": 500.0, "requests_running": 0.0}})
    assert d.state(0) == HEALTHY


def test_counter_reset_counts_as_progress():
    d = Driver(4, HealthSettings(hang_intervals=2))
    d.step({d.names[0]: {"generation_tokens_total": 900.0}})
    d.step({d.names[0]: {"generation_tokens_total": 900.0}})
    d.step({d.names[0]: {"generation_tokens_total": 10.0}})  # restarted process
    d.step({d.names[0]: {"generation_tokens_total": 10.0}})
    assert d.state(0) == HEALTHY


# --- recovery, flapping, backoff ----------------------------------------------------------------


def test_degraded_returns_after_n_good_intervals():
    d = Driver(4)
    d.step({d.names[0]: {"ttft_p99_s": 0.7}})
    d.step()
    d.step()
    assert d.state(0) == DEGRADED and "recovering: 2 of 3 good intervals needed" in d.reasons(0)
    d.step()
    assert d.state(0) == HEALTHY


def test_flapping_signal_does_not_flap_the_state():
    d = Driver(4)
    d.step()
    for i in range(20):
        d.step({d.names[0]: {"ttft_p99_s": 0.7}} if i % 2 == 0 else None)
    mine = [t for t in d.transitions if t.instance == d.names[0]]
    assert [(t.from_state, t.to_state) for t in mine] == [(UNKNOWN, HEALTHY), (HEALTHY, DEGRADED)]


def test_flapping_eject_signal_ejects_once_and_stays_out():
    d = Driver(4)
    d.step()
    for i in range(30):  # 150 s of bad, good, bad, good ...
        d.step({d.names[0]: {"ttft_p99_s": 1.5}} if i % 2 == 0 else None)
    mine = [(t.from_state, t.to_state) for t in d.transitions if t.instance == d.names[0]]
    assert mine == [(UNKNOWN, HEALTHY), (HEALTHY, EJECTED)]


def test_return_needs_both_the_ejection_time_and_good_intervals():
    d = Driver(4)  # base ejection 30 s = 6 intervals, recovery 3 intervals
    d.step()
    d.step({d.names[0]: {"ttft_p99_s": 1.5}})
    ejected_at = d.t
    h = d.pool.instances[d.names[0]]
    assert h.ejected_until == ejected_at + 30.0
    # good at once, but the ejection time has not passed yet
    while d.t + INTERVAL < ejected_at + 30.0:
        d.step()
        assert d.state(0) == EJECTED
    assert "good intervals" in d.reasons(0) and "ejected until" in d.reasons(0)
    decision = d.step()
    assert d.t == ejected_at + 30.0
    assert d.state(0) == HEALTHY
    assert "returned after 6 good intervals" in decision.verdicts[d.names[0]].reason_line


def test_still_bad_after_the_ejection_time_stays_ejected():
    d = Driver(4)
    d.step({d.names[0]: failing()})  # never seen yet: stays unknown...
    d.step()
    for _ in range(3):
        d.step({d.names[0]: failing()})
    assert d.state(0) == EJECTED
    for _ in range(20):  # 100 s, far past 30 s
        d.step({d.names[0]: failing()})
    assert d.state(0) == EJECTED
    for _ in range(2):
        d.step()
    assert d.state(0) == EJECTED  # 2 of 3 good intervals
    d.step()
    assert d.state(0) == HEALTHY


def _eject_and_return(d: Driver, i: int) -> float:
    """Eject instance i with a latency fault, wait for its return; the ejection's length."""
    d.step({d.names[i]: {"ttft_p99_s": 1.5}})
    h = d.pool.instances[d.names[i]]
    assert h.state == EJECTED
    length = h.ejected_until - d.t
    while d.state(i) == EJECTED:
        d.step()
    return length


def test_backoff_grows_per_ejection_and_is_capped():
    d = Driver(4, HealthSettings(base_ejection_time="30s", max_ejection_time="80s"))
    d.step()
    lengths = [_eject_and_return(d, 0) for _ in range(4)]
    assert lengths == [30.0, 60.0, 80.0, 80.0]
    assert d.pool.instances[d.names[0]].ejections == 4


def test_backoff_decays_with_healthy_time():
    d = Driver(4, HealthSettings(backoff_decay="60s"))
    d.step()
    _eject_and_return(d, 0)
    _eject_and_return(d, 0)
    assert d.pool.instances[d.names[0]].ejections == 2
    for _ in range(int(130 / INTERVAL)):  # a bit over two decay periods of good health
        d.step()
    assert d.pool.instances[d.names[0]].ejections == 0
    assert _eject_and_return(d, 0) == 30.0


# --- the ejection cap ---------------------------------------------------------------------------


def test_cap_never_ejects_more_than_max_ejection_percent_and_picks_the_worst():
    d = Driver(4)
    d.step()
    decision = d.step({d.names[0]: {"error_ratio": 0.3}, d.names[1]: {"error_ratio": 0.9},
                       d.names[2]: {"error_ratio": 0.6}, d.names[3]: {"error_ratio": 0.28}})
    states = [v.state for v in decision.verdicts.values()]
    assert states.count(EJECTED) == 2
    assert (d.state(1), d.state(2)) == (EJECTED, EJECTED)  # the two worst
    assert (d.state(0), d.state(3)) == (DEGRADED, DEGRADED)
    assert "ejection held back: 2 of 4 instances already ejected (max_ejection_percent 50%)" in d.reasons(0)
    for _ in range(30):  # all stay bad: the cap holds over time, nothing rotates in
        d.step({n: {"error_ratio": 0.6} for n in d.names})
        assert sum(h.state == EJECTED for h in d.pool.instances.values()) <= 2


def test_cap_with_three_instances_all_faulty_ejects_one():
    d = Driver(3)
    d.step()
    d.step({n: {"error_ratio": 0.5} for n in d.names})
    assert sorted(h.state for h in d.pool.instances.values()) == [DEGRADED, DEGRADED, EJECTED]


def test_a_whole_pool_slow_together_is_degraded_never_ejected_capacity_not_sickness():
    d = Driver(4)
    d.step()
    d.step({n: {"ttft_p99_s": 1.5 + 0.5 * k} for k, n in enumerate(d.names)})  # overload: every server slow
    assert [d.state(i) for i in range(4)] == [DEGRADED] * 4
    assert "the whole pool is slow" in d.reasons(3) and "capacity, not this instance" in d.reasons(3)
    assert "TTFT p99 3s > eject threshold 1s" in d.reasons(3)


def test_a_sick_node_among_fast_ones_is_still_ejected_and_two_sick_of_four_too():
    d = Driver(4)
    d.step()
    d.step({d.names[0]: {"ttft_p99_s": 3.0}})
    assert d.state(0) == EJECTED and "whole pool" not in d.reasons(0)
    d = Driver(4)
    d.step()
    d.step({d.names[0]: {"ttft_p99_s": 3.0}, d.names[1]: {"ttft_p99_s": 2.5}})
    assert (d.state(0), d.state(1)) == (EJECTED, EJECTED)


def test_a_one_instance_pool_is_never_emptied_and_zero_percent_ejects_none():
    d = Driver(1)
    d.step()
    d.step({d.names[0]: {"ttft_p99_s": 1.5}})
    assert d.state(0) == DEGRADED and "the last server in rotation is never ejected" in d.reasons(0)
    assert d.pool.verdicts()[d.names[0]].http_status == 200
    d = Driver(4, HealthSettings(max_ejection_percent=0))
    d.step({d.names[0]: {"ttft_p99_s": 1.5}})
    assert d.state(0) == DEGRADED and "held back: 0 of 4" in d.reasons(0)


# --- failing open -------------------------------------------------------------------------------


def test_stale_monitor_data_fails_open():
    d = Driver(4)
    d.step()
    decision = d.step({d.names[0]: {"ttft_p99_s": 3.0}}, data_at=d.t + INTERVAL - 40.0)
    assert decision.fail_open and "own data is stale" in decision.fail_open
    assert d.state(0) == HEALTHY and "failing open: the monitor's own data is stale" in d.reasons(0)
    assert decision.transitions == ()
    decision = d.step({d.names[0]: {"ttft_p99_s": 3.0}}, cycle_duration_s=60.0)
    assert decision.fail_open and "took 60s" in decision.fail_open and d.state(0) == HEALTHY
    d.step({d.names[0]: {"ttft_p99_s": 3.0}})
    assert d.state(0) == EJECTED
    assert "failing open" not in d.reasons(0)


def test_every_target_failing_at_once_ejects_nothing():
    d = Driver(3)
    d.step()
    for _ in range(10):
        decision = d.step({n: failing("timed out after 2s") for n in d.names})
        assert decision.fail_open and "all 3 targets of pool p failed at once (timed out after 2s)" in decision.fail_open
    assert all(h.state == HEALTHY for h in d.pool.instances.values())
    assert decision.verdicts[d.names[0]].http_status == 200
    # when the others come back, the one still failing has earned its ejection
    d.step({d.names[0]: failing()})
    assert d.state(0) == EJECTED


def test_fail_open_holds_existing_ejections_and_returns_nobody():
    d = Driver(4)
    d.step()
    d.step({d.names[0]: {"ttft_p99_s": 1.5}})
    for _ in range(12):  # past the ejection time, but the monitor sees nothing
        d.step({n: failing() for n in d.names})
    assert d.state(0) == EJECTED and "failing open" in d.reasons(0)
    assert [d.state(i) for i in (1, 2, 3)] == [HEALTHY] * 3


# --- outliers -----------------------------------------------------------------------------------


def test_latency_outlier_against_the_rest_of_the_pool():
    d = Driver(5)
    busy = {n: {"requests": 500.0, "ttft_p99_s": v} for n, v in zip(d.names, (0.20, 0.21, 0.19, 0.2, 0.45))}
    d.step(busy)
    assert d.state(4) == EJECTED
    assert d.pool.instances[d.names[4]].kind == "outlier"
    assert "outlier: TTFT p99 450ms vs rest of pool 200ms" in d.reasons(4)
    assert [d.state(i) for i in range(4)] == [HEALTHY] * 4


def test_success_rate_outlier():
    d = Driver(6)
    rates = (0.0, 0.01, 0.0, 0.005, 0.0, 0.12)  # 12% errors: under the 25% eject threshold
    d.step({n: {"requests": 300.0, "error_ratio": r} for n, r in zip(d.names, rates)})
    assert d.state(5) == EJECTED and "outlier: success rate 88%" in d.reasons(5)


def test_outliers_need_enough_hosts_and_requests():
    d = Driver(4)  # too few hosts
    d.step({n: {"requests": 500.0, "ttft_p99_s": v} for n, v in zip(d.names, (0.2, 0.2, 0.2, 0.45))})
    assert d.state(3) == HEALTHY
    d = Driver(5)  # enough hosts, too little traffic each
    decision = d.step({n: {"requests": 50.0, "ttft_p99_s": v} for n, v in zip(d.names, (0.2, 0.2, 0.2, 0.2, 0.45))})
    assert d.state(4) == HEALTHY
    assert any("outlier detection skipped: 0 of 5 hosts needed" in note for note in decision.notes)


def test_identical_peers_do_not_make_a_tiny_difference_an_outlier():
    d = Driver(5)
    d.step({n: {"requests": 500.0, "ttft_p99_s": v} for n, v in zip(d.names, (0.2, 0.2, 0.2, 0.2, 0.22))})
    assert d.state(4) == HEALTHY


def test_outlier_action_degrade():
    d = Driver(5, HealthSettings(outlier_action="degrade"))
    d.step({n: {"requests": 500.0, "ttft_p99_s": v} for n, v in zip(d.names, (0.2, 0.2, 0.2, 0.2, 0.45))})
    assert d.state(4) == DEGRADED


# --- persistence --------------------------------------------------------------------------------


def test_snapshot_and_restore_keep_an_ejection_until_earned_back():
    d = Driver(4)
    d.step()
    d.step({d.names[0]: {"ttft_p99_s": 1.5}})
    saved = d.pool.snapshot()
    restarted = Driver(4)
    restarted.t = d.t
    restarted.pool.restore(saved)
    assert restarted.state(0) == EJECTED
    restarted.step()
    restarted.step()
    assert restarted.state(0) == EJECTED
    for _ in range(6):
        restarted.step()
    assert restarted.state(0) == HEALTHY
    assert restarted.pool.instances[restarted.names[0]].ejections == 1  # backoff survives too


# --- end to end from scrape results: the fleet's tracks, the cycle's signals, every pool's rules -----


def test_fleet_decisions_from_real_scrape_results():
    from monitor.evaluate.fleet import FleetView
    from monitor.samples import Histogram, ModelSample, ScrapeResult

    addresses = [f"10.0.0.{i}:8000" for i in (1, 2, 3, 4)]
    fleet = FleetView(60.0, 5.0, {"p": {a: f"http://{a}" for a in addresses}})
    health = FleetDecisions({"p": PoolPolicy(HealthSettings(hang_intervals=2), ScalingSettings())},
                            {"p": addresses}, 5.0)
    bounds = (0.1, 0.5, 1.0, 2.5, float("inf"))

    def sample(i: int, k: int) -> ModelSample:
        slow = i == 2
        fast_count = 0 if slow else 10 * k
        slow_count = 10 * k if slow else 0
        ttft = Histogram(bounds, (fast_count, fast_count, fast_count, fast_count + slow_count,
                                  fast_count + slow_count), 0.0, 10.0 * k)
        moved = 1 if i == 3 else k  # instance 3 is hung: no token, no finished request after the first scrape
        return ModelSample("m", histograms={"ttft": ttft},
                           counters={"generation_tokens": 1000.0 * moved},
                           gauges={"running": 3.0, "waiting": 0.0, "kv_cache_usage": 0.2},
                           finished={"stop": 10.0 * moved})

    for k in range(1, 5):
        t = T0 + 5.0 * k
        results = []
        for i in (1, 2, 3, 4):
            address = f"10.0.0.{i}:8000"
            if i == 4:
                results.append(ScrapeResult("p", address, f"http://{address}", t, 0.01, (),
                                            error="connection refused", error_kind="down") if k > 1 else
                               ScrapeResult("p", address, f"http://{address}", t, 0.01, (sample(i, k),),
                                            health_status=200))
            else:
                results.append(ScrapeResult("p", address, f"http://{address}", t, 0.01, (sample(i, k),),
                                            health_status=200))
        fleet.ingest(results)
        fleet.last_cycle_at, fleet.last_cycle_duration_s = t + 0.01, 0.01
        signals = {"p": pool_signals(fleet, "p", addresses, t + 0.02, 60.0)}
        decisions = health.decide(signals, t + 0.02, data_at=fleet.last_cycle_at,
                                  cycle_duration_s=fleet.last_cycle_duration_s).health
    verdicts = decisions[0].verdicts
    assert verdicts["10.0.0.1:8000"].state == HEALTHY
    assert verdicts["10.0.0.2:8000"].state == EJECTED and "TTFT p99" in verdicts["10.0.0.2:8000"].reason_line
    assert verdicts["10.0.0.3:8000"].state == EJECTED and verdicts["10.0.0.3:8000"].kind == "hang"
    # three failed scrapes, but two of four are already out: held back by the cap
    assert verdicts["10.0.0.4:8000"].state == DEGRADED
    assert "scrape failed 3x in a row" in verdicts["10.0.0.4:8000"].reason_line
    assert "held back" in verdicts["10.0.0.4:8000"].reason_line
    assert health.find("10.0.0.2:8000").state == EJECTED
    assert health.find("p/10.0.0.1:8000").state == HEALTHY
    assert health.find("q/10.0.0.1:8000") is None and health.find("nope") is None


def test_slow_start_of_zero_is_off_as_the_config_example_writes_it():
    assert HealthSettings(slow_start="0s").slow_start is None
    d = Driver(2, HealthSettings(slow_start="0s"))
    d.step()
    new = "10.0.0.9:8000"
    d.pool.set_members(d.names + [new])
    d.names.append(new)
    assert d.step().verdicts[new].weight == 1.0


def test_an_ejected_instance_states_each_rule_once_with_its_current_figures():
    d = Driver(4)
    d.step()
    d.step({d.names[0]: {"ttft_p99_s": 3.0, "requests": 41.0}})
    d.step({d.names[0]: {"ttft_p99_s": 2.5, "requests": 42.0}})
    reasons = d.pool.instances[d.names[0]].reasons
    assert sum(r.startswith("TTFT p99") for r in reasons) == 1
    assert any("TTFT p99 2.5s" in r and "42 requests" in r for r in reasons)


def test_an_ejected_instance_that_drops_out_of_discovery_and_comes_back_is_still_ejected():
    d = Driver(4)
    d.step()
    d.step({d.names[0]: {"ttft_p99_s": 3.0}})
    h = d.pool.instances[d.names[0]]
    until, ejections = h.ejected_until, h.ejections
    d.pool.set_members(d.names[1:])  # a failing pod leaves a headless Service's answer...
    d.step()
    assert d.state(0) == "leaving"
    d.pool.set_members(d.names)  # ...and comes back
    decision = d.step()
    assert decision.verdicts[d.names[0]].state == EJECTED and not decision.verdicts[d.names[0]].serves_traffic
    assert h.ejected_until == until and h.ejections == ejections


def test_sleep_and_wake_do_not_erase_an_ejection():
    d = Driver(4)
    d.step()
    d.step({d.names[0]: {"ttft_p99_s": 3.0}})
    until = d.pool.instances[d.names[0]].ejected_until
    d.step({d.names[0]: {"sleep_level": 1.0}})
    assert d.state(0) == "sleeping"
    d.step()
    assert d.state(0) == EJECTED and d.pool.instances[d.names[0]].ejected_until == until


def test_a_never_seen_member_held_back_by_the_cap_gets_no_traffic():
    d = Driver(2, HealthSettings(startup_grace="10s", max_ejection_percent=50))
    d.step()
    d.step({d.names[0]: {"ttft_p99_s": 3.0}})  # one of two ejected: the cap is full
    new = "10.0.0.9:8000"
    d.pool.set_members(d.names + [new])
    d.names.append(new)
    for _ in range(6):  # refuses connections past its grace, while the first stays slow
        decision = d.step({new: failing(), d.names[0]: {"ttft_p99_s": 3.0}})
    verdict = decision.verdicts[new]
    assert verdict.state == "starting" and verdict.weight == 0.0 and not verdict.serves_traffic


def test_drain_time_and_startup_grace_count_from_the_evaluation_that_sees_the_change():
    d = Driver(3, HealthSettings(drain_time="10s"))
    d.step()
    d.t += 4.0  # the change comes between two evaluations
    d.pool.set_members(d.names[:2])
    d.step()  # left at this evaluation
    d.step()  # 5 s later: still draining
    assert d.names[2] in d.pool.instances
    d.step()  # 10 s after the evaluation that saw it leave
    assert d.names[2] not in d.pool.instances


def test_each_membership_change_is_audited_with_the_reason_of_its_own_moment():
    d = Driver(3)
    d.step()
    d.pool.set_members(d.names[:2])
    d.pool.set_members(d.names)  # gone and back between two evaluations
    d.step()
    moves = [(t.from_state, t.to_state, t.reasons) for t in d.transitions if t.instance == d.names[2]]
    assert moves[-2][1] == "leaving" and moves[-2][2][0].startswith("left the fleet (was healthy)")
    assert moves[-1][0] == "leaving" and moves[-1][2][0] == "rejoined the fleet"


def test_an_ejected_instance_whose_time_is_served_says_it_is_earning_its_way_back():
    d = Driver(4)
    d.step()
    d.step({d.names[0]: {"ttft_p99_s": 3.0}})
    for _ in range(7):  # 35 s: past the 30 s ejection, still slow
        d.step({d.names[0]: {"ttft_p99_s": 3.0}})
    assert d.state(0) == EJECTED
    assert "ejection time served at" in d.reasons(0) and "ejected until" not in d.reasons(0)
