"""Hostile-review findings on reasons users read (issue 19's "1 pools" class): counts read as sentences."""

from __future__ import annotations

from monitor.decide.pool import PoolHealth
from monitor.decide.verdicts import HEALTHY
from monitor.evaluate.signals import InstanceSignals
from monitor.settings import HealthSettings

T0 = 1_700_000_000.0
NAME = "10.0.0.1:8000"


def signals(t: float, **overrides) -> InstanceSignals:
    values = {"observed_at": t, "ttft_p99_s": 0.2, "e2e_p99_s": 2.0, "error_ratio": 0.0, "requests": 50.0,
                  "kv_cache_usage": 0.3, "requests_running": 4.0, "requests_waiting": 0.0,
                  "generation_tokens_total": (t - T0) * 100.0, "window_s": 60.0}
    values.update(overrides)
    return InstanceSignals(**values)


def test_a_one_instance_pool_whose_target_fails_says_its_only_target_failed_not_all_1_targets():
    pool = PoolHealth("p", [NAME], HealthSettings(), 5.0)
    t = T0 + 5
    pool.evaluate({NAME: signals(t)}, t, data_at=t, cycle_duration_s=0.1)
    for _ in range(5):
        t += 5
        decision = pool.evaluate({NAME: signals(t, scrape_error="connection refused", ttft_p99_s=None,
                                                requests_running=None, generation_tokens_total=None)},
                                 t, data_at=t, cycle_duration_s=0.1)
    assert decision.fail_open is not None
    assert "all 1 targets" not in decision.fail_open
    assert "the only target of pool p failed (connection refused)" in decision.fail_open
    assert pool.instances[NAME].state == HEALTHY  # the last server in rotation is never ejected
