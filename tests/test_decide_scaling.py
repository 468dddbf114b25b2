"""Desired replicas by the HPA formula: tolerance, max over metrics, stabilisation windows, bounds."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from monitor.decide.scaling import PoolScaler, ScalingSettings, ScalingSignals, hpa_replicas, scaling_signals
from monitor.evaluate.windows import WindowStats
from monitor.samples import Histogram

T0 = 1_700_000_000.0


def load(waiting_per_replica: float = 0.0, kv: float | None = 0.4, replicas: int = 4, ttft: float | None = None,
         requests: float = 100.0, burn: float | None = None) -> ScalingSignals:
    return ScalingSignals(replicas, waiting_per_replica * replicas, kv, ttft, requests, burn)


def test_hpa_formula_and_tolerance():
    assert hpa_replicas(4, 5.4, 5.0, 0.1) == 4  # ratio 1.08: within tolerance
    assert hpa_replicas(4, 4.6, 5.0, 0.1) == 4
    assert hpa_replicas(4, 5.6, 5.0, 0.1) == 5  # ceil(4 × 1.12) = ceil(4.48)
    assert hpa_replicas(4, 10.0, 5.0, 0.1) == 8
    assert hpa_replicas(4, 1.0, 5.0, 0.1) == 1  # ceil(0.8)
    assert hpa_replicas(3, 5.0 * 4 / 3, 5.0, 0.1) == 4  # exactly 4.0 despite float error
    assert hpa_replicas(0, 12.0, 5.0, 0.1) == 3  # from zero: KEDA's ceil(total / target)


def test_settings_defaults_and_validation():
    s = ScalingSettings()
    assert (s.tolerance, s.scale_up_stabilization, s.scale_down_stabilization) == (0.1, 60.0, 300.0)
    assert (s.target_waiting_per_replica, s.target_kv_cache_usage) == (5.0, 0.8)
    assert ScalingSettings.model_validate({"scale_up_stabilization": "0s"}).scale_up_stabilization == 0.0
    assert ScalingSettings.model_validate({"target_kv_cache_usage": "75%", "max_replicas": 8}).target_kv_cache_usage == 0.75
    for bad in ({"min_replicas": 5, "max_replicas": 2}, {"tolerance": 1.5}, {"scale_up_stabilization": 60},
                {"target": 3}, {"target_kv_cache_usage": 0}):
        with pytest.raises(ValidationError):
            ScalingSettings.model_validate(bad)


def test_max_over_metrics_and_reason():
    scaler = PoolScaler("p", ScalingSettings(scale_up_stabilization="0s"))
    d = scaler.recommend(4, load(waiting_per_replica=7.5, kv=0.96), T0)
    # waiting: ceil(4 × 1.5) = 6; kv: ceil(4 × 1.2) = 5 -> 6
    assert d.desired_replicas == 6
    assert d.signals["metrics"]["waiting_per_replica"]["recommendation"] == 6
    assert d.signals["metrics"]["kv_cache_usage"]["recommendation"] == 5
    assert d.reason.startswith("scale up 4 -> 6: waiting_per_replica 7.5 vs target 5 wants 6")
    assert d.to_json()["pool"] == "p" and d.to_json()["current_replicas"] == 4


def test_latency_and_burn_rate_metrics():
    # a queue of 3 per replica (0.6 of its target) corroborates the latency signals: load, not a sick node
    # (tests/test_scaling_capacity.py: latency without it is set aside); no step policy here
    scaler = PoolScaler("p", ScalingSettings(scale_up_stabilization="0s", target_kv_cache_usage=None,
                                             scale_up_max_percent=None, scale_up_max_replicas=None))
    assert scaler.recommend(4, load(3.0, ttft=1.0), T0).desired_replicas == 8  # p99 twice the 500 ms target
    assert scaler.recommend(4, load(3.0, ttft=0.3, burn=3.0), T0 + 5).desired_replicas == 12
    # too few requests behind the p99: not a signal
    scaler = PoolScaler("p", ScalingSettings(scale_up_stabilization="0s", scale_down_stabilization="0s"))
    assert scaler.recommend(4, load(ttft=5.0, requests=3, kv=0.8), T0).desired_replicas == 4


def test_rising_load_waits_out_the_scale_up_window():
    scaler = PoolScaler("p")  # 60 s up, 300 s down
    t = T0
    for _ in range(12):  # a minute of normal load
        assert scaler.recommend(4, load(waiting_per_replica=5.0, kv=0.8), t).desired_replicas == 4
        t += 5
    high_since = t
    desired = []
    while t < high_since + 90:
        d = scaler.recommend(4, load(waiting_per_replica=10.0, kv=0.8), t)
        desired.append((t - high_since, d.desired_replicas))
        t += 5
    # held while any recommendation of the last 60 s is lower; scales once the whole window wants 8
    # (as the HPA, a recommendation exactly 60 s old is outside the window: 12 high ones span 55 s)
    assert all(n == 4 for age, n in desired if age < 55)
    assert all(n == 8 for age, n in desired if age >= 55)
    held = [d for d in desired if d[0] == 30][0]
    assert held == (30, 4)
    d = scaler.recommend(4, load(waiting_per_replica=10.0, kv=0.8), high_since + 30.5)
    assert "held at 4 by scale-up stabilisation (60s, lowest recommendation 4)" in d.reason


def test_a_short_spike_does_not_scale_up():
    scaler = PoolScaler("p")
    t = T0
    for i in range(40):
        spike = 20 <= i < 30  # 50 s of 3× load
        d = scaler.recommend(4, load(waiting_per_replica=15.0 if spike else 5.0, kv=0.8), t)
        assert d.desired_replicas == 4
        t += 5


def test_falling_load_waits_out_the_scale_down_window_with_the_highest_recommendation():
    scaler = PoolScaler("p")
    t = T0
    scaler.recommend(8, load(waiting_per_replica=5.0, kv=0.8, replicas=8), t)  # steady at 8
    t += 5
    low_since = t
    out = []
    while t <= low_since + 320:
        # load drops in two steps: first to what 6 replicas handle, then to what 2 handle
        per_replica = 3.75 if t < low_since + 100 else 1.25
        out.append((t - low_since, scaler.recommend(8, load(per_replica, kv=None, replicas=8), t).desired_replicas))
        t += 5
    by_age = dict(out)
    assert by_age[0] == 8 and by_age[290] == 8  # the steady 8 is still inside the 300 s window
    assert by_age[300] == 6  # the 8 aged out; the highest left is the first step's 6
    assert out[-1][1] == 6  # the 6s stay in the window until 400 s
    d = scaler.recommend(8, load(1.25, kv=None, replicas=8), low_since + 200)
    assert "held at 6 by scale-down stabilisation (300s, highest recommendation 6)" in d.reason
    assert scaler.recommend(8, load(1.25, kv=None, replicas=8), low_since + 401).desired_replicas == 2


def test_min_max_and_no_signal():
    scaler = PoolScaler("p", ScalingSettings(min_replicas=2, max_replicas=6, scale_up_stabilization="0s",
                                             scale_down_stabilization="0s"))
    d = scaler.recommend(4, load(waiting_per_replica=50.0), T0)
    assert d.desired_replicas == 6 and "clamped to max_replicas 6" in d.reason
    d = scaler.recommend(4, load(waiting_per_replica=0.0, kv=0.0), T0 + 5)
    assert d.desired_replicas == 2 and "clamped to min_replicas 2" in d.reason
    d = scaler.recommend(3, ScalingSignals(0), T0 + 10)
    assert d.desired_replicas == 3 and "no load signal" in d.reason


def test_scaling_signals_from_window_stats():
    bounds = (0.1, 0.5, 1.0, math.inf)
    a = WindowStats(T0, T0 + 60, {"ttft": Histogram(bounds, (90, 100, 100, 100), 5.0, 100)}, {}, {"stop": 100},
                    {"waiting": 3.0, "running": 5.0, "kv_cache_usage": 0.5})
    b = WindowStats(T0, T0 + 60, {"ttft": Histogram(bounds, (0, 0, 100, 100), 70.0, 100)}, {}, {"stop": 100},
                    {"waiting": 9.0, "running": 5.0, "kv_cache_usage": 0.9})
    s = scaling_signals([a, None, b], burn_rate=2.0)
    assert s.replicas_reporting == 2
    assert s.requests_waiting == 12.0 and s.kv_cache_usage == pytest.approx(0.7)
    assert s.requests == 200 and s.ttft_burn_rate == 2.0
    assert 0.5 < s.ttft_p99_s <= 1.0  # the pool's p99 over both instances' requests
