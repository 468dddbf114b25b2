"""The accounting of bench/decision_quality.py: a benchmark that scores decisions must score a trivial case
right, or its "before" and "after" tables mean nothing.

One short run of a healthy pool through the real engines and the real decision path on the virtual
clock (tests/helpers/decision_sim.py), and the scoring functions on cases worked out by hand."""

from __future__ import annotations

import math

from monitor.sim.params import InstanceParams
from tests.helpers.decision_sim import Scenario, Simulation
from tests.helpers.decision_truth import (
    EJECTED,
    SICK,
    WELL,
    Capacity,
    Fault,
    StateChange,
    false_ejections,
    flaps,
    missed_ejections,
    needed_replicas,
    replica_score,
    replica_throughput,
)

ENGINE = InstanceParams(model="m", max_num_seqs=16, num_gpu_blocks=512, step_base_s=0.06, step_s_per_seq=0.002,
                        prefill_s_per_token=0.0001, mean_output_tokens=24)
CAPACITY = Capacity(16, 0.06, 0.002, 0.0001, 24, 200)


def mu(params: InstanceParams, multiplier: float = 1.0) -> float:
    return replica_throughput(CAPACITY, multiplier)


def test_the_capacity_model_is_the_engine_formula_written_down() -> None:
    # 24.5 tokens × (60 ms / 16 slots + 2 ms) + 200 prompt tokens × 0.1 ms = 0.160875 s of engine time per request
    assert math.isclose(replica_throughput(CAPACITY), 1 / 0.160875)
    assert math.isclose(replica_throughput(CAPACITY, 2.0), 1 / (2 * 0.160875))
    assert needed_replicas(10.0, 1 / 0.160875) == math.ceil(10.0 / (0.8 / 0.160875))  # 3
    assert needed_replicas(0.0, 5.0) == 1  # min_replicas
    assert needed_replicas(10.0, 1 / 0.160875, not_serving=1) == 4  # a sick member carries nothing


def test_a_healthy_pool_run_briefly_scores_no_ejection_no_flap_and_the_formula_s_count() -> None:
    rate = 0.4 * 4 * 0.8 * mu(ENGINE)
    scenario = Scenario("healthy", "4 replicas, nothing wrong", [ENGINE] * 4, lambda t: rate, duration_s=60)
    run = Simulation(scenario, 5.0, mu=mu).run_sync()
    assert run.requests > 100  # the load really ran on the virtual clock
    assert false_ejections(run.changes) == 0
    assert missed_ejections(run.faults, run.changes, 60) == 0
    assert flaps(run.changes, {}) == 0
    assert not run.faults
    assert [t for t, _, _ in run.samples] == [5.0 * k for k in range(13)]  # one sample per 5 s cycle
    assert {n for _, _, n in run.samples} == {needed_replicas(rate, mu(ENGINE))} == {2}


def test_ejecting_a_healthy_instance_is_false_and_a_sick_one_never_ejected_is_missed() -> None:
    changes = [StateChange(70, "a", "healthy", EJECTED, WELL), StateChange(80, "b", "healthy", EJECTED, SICK)]
    faults = [Fault("b", SICK, 60), Fault("c", SICK, 60, 90)]
    assert false_ejections(changes) == 1
    assert missed_ejections(faults, changes, 600) == 1  # c


def test_the_first_reaction_to_a_fault_is_not_a_flap_and_later_changes_are() -> None:
    changes = [StateChange(70, "b", "healthy", "degraded", SICK), StateChange(80, "b", "degraded", EJECTED, SICK),
               StateChange(90, "a", "healthy", "degraded", WELL), StateChange(5, "c", "unknown", "healthy", WELL)]
    assert flaps(changes, {"b": [60.0]}) == 2  # b's second change and a's change


def test_gpu_minutes_integrate_the_gap_each_way() -> None:
    samples = [(0.0, 4, 2), (5.0, 4, 2), (10.0, 1, 2), (15.0, 2, 2)]
    score = replica_score(samples, 5.0, settle_at=10.0)
    assert math.isclose(score.over_gpu_minutes, 4 * 5 / 60)
    assert math.isclose(score.under_gpu_minutes, 1 * 5 / 60)
    assert score.error_after_settle == 1 and score.max_desired == 4 and score.scale_changes == 2
