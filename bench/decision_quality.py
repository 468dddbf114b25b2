"""Decisions against ground truth (issue 20, "Decisions you can trust"): does the monitor eject what is
sick and only that, and does its replica recommendation match what the load needs?

Each scenario runs the real simulator engines and the monitor's real decision path (parse_page →
FleetView → fleet_signals → FleetDecisions, default health and scaling settings, scrape every 5 s) in
one process on a virtual clock (tests/helpers/decision_sim.py): 30 minutes of a fleet take seconds and
a rerun gives the same figures. A load balancer follows the verdicts and a follower resizes the pool to
`desired_replicas` (capped at 12 replicas, a new one listening after 30 s).

The truth is the simulator's: which instance was faulted, when, and what the load needs. The needed
replica count is the capacity model of tests/helpers/decision_truth.py:

    mu     = speed / (latency_multiplier × ((mean_output_tokens + 0.5) × (step_base_s / max_num_seqs
             + step_s_per_seq) + prompt_tokens × prefill_s_per_token))        requests/s per replica
    needed = max(min_replicas, ceil(rate / (0.8 × mu))) + members that are sick or asleep

(a mixed-model pool sums the first term per model over its share of the requests).

Columns: detect_s, seconds from the fault (or from the change of the needed count, for load scenarios)
to the first verdict saying so (ejected/degraded, sleeping) or the first move of desired toward it;
false_ej, ejections of an instance that was not sick; missed_ej, sick instances never ejected while
sick; flaps_h, verdict changes per simulated hour of instances whose truth had not changed (the first
reaction to a change of truth excepted); max_desired, the highest desired_replicas; err_settled, the
largest |desired - needed| once settled (7 minutes after the last change: "-" where the truth drifts to
the end); over_gpu_min / under_gpu_min, GPU-minutes a follower of the recommendation buys beyond what
is needed / lacks of it (the integrals of max(0, desired - needed) and max(0, needed - desired));
scale_changes, how often desired changed.

Targets (issue 20): false_ej 0, missed_ej 0, no scale-up from a single sick node, err_settled ≤ 1.

    .venv/bin/python bench/decision_quality.py [--scenario NAME] [--interval 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, table

from monitor.sim.params import Faults, InstanceParams
from tests.helpers.decision_sim import Scenario, Simulation
from tests.helpers.decision_truth import (
    ASLEEP,
    SICK,
    Capacity,
    detection_times,
    false_ejections,
    flaps,
    missed_ejections,
    replica_score,
    replica_throughput,
    scale_detection,
)

PROMPT = 200
# a small engine so that a simulated hour costs seconds: 16 slots, 60 ms steps, ~25-token answers
# (mu ≈ 6.2 requests/s per replica); 512 KV blocks: 16 full slots fit without preemption
BASE = InstanceParams(model="chat-8b", max_num_seqs=16, num_gpu_blocks=512, step_base_s=0.06, step_s_per_seq=0.002,
                      prefill_s_per_token=0.0001, mean_output_tokens=24)
BIG = BASE.with_(model="chat-70b", step_base_s=0.15, step_s_per_seq=0.005)


def capacity(p: InstanceParams) -> Capacity:
    return Capacity(p.max_num_seqs, p.step_base_s, p.step_s_per_seq, p.prefill_s_per_token, p.mean_output_tokens,
                    PROMPT, p.speed)


def mu(p: InstanceParams, multiplier: float = 1.0) -> float:
    return replica_throughput(capacity(p), multiplier)


MU = mu(BASE)


def step(before: float, after: float, at: float = 60.0):
    return lambda t: before if t < at else after


def scenarios() -> dict[str, Scenario]:
    four = [BASE] * 4
    sick_m = 3.0 / BASE.step_base_s  # TTFT ~3 s: a prefill step of a sick engine lasts 3 s
    hang = {"engine_dead": Faults(engine_dead=True), "health_timeout": Faults(health_timeout=True),
            "metrics_frozen": Faults(metrics_frozen=True, engine_dead=True), "hang": Faults(hang=True)}
    out = [
        Scenario("healthy", "4 replicas at 40% load, nothing wrong", four, step(0.4 * 4 * MU * 0.8, 0.4 * 4 * MU * 0.8),
                 480),
        Scenario("sick_node_low_load", "4 replicas at 30% load; one turns slow (TTFT ~3 s) at 60 s", four,
                 step(0.3 * 4 * MU * 0.8, 0.3 * 4 * MU * 0.8), 600,
                 events=[(60.0, 0, Faults(latency_multiplier=sick_m), SICK)]),
        Scenario("overload", "2 replicas; load from 60% to 250% of them at 60 s", [BASE] * 2,
                 step(0.6 * 2 * MU * 0.8, 2.5 * 2 * MU * 0.8), 720),
        Scenario("engine_dies", "4 replicas at 50%; one's server dies (/health 503, requests 500) at 60 s", four,
                 step(0.5 * 4 * MU * 0.8, 0.5 * 4 * MU * 0.8), 480, events=[(60.0, 1, Faults(dead=True), SICK)]),
        *[Scenario(f"hang_{name}", f"4 replicas at 50%; one hangs ({name}) at 60 s", four,
                   step(0.5 * 4 * MU * 0.8, 0.5 * 4 * MU * 0.8), 480, events=[(60.0, 1, faults, SICK)])
          for name, faults in hang.items()],
        Scenario("sleeping", "4 replicas at 40%; one is put to sleep (level 1) at 60 s", four,
                 step(0.4 * 4 * MU * 0.8, 0.4 * 4 * MU * 0.8), 600, events=[(60.0, 2, Faults(sleep=1), ASLEEP)]),
        Scenario("slow_drift", "3 replicas at 50%; every step slows from 1x to 2.5x over 30 minutes", [BASE] * 3,
                 step(0.5 * 3 * MU * 0.8, 0.5 * 3 * MU * 0.8), 1800, multiplier=lambda t: 1.0 + 1.5 * min(t, 1800) / 1800),
        Scenario("flapping_network", "4 replicas at 50%; every third scrape of each times out", four,
                 step(0.5 * 4 * MU * 0.8, 0.5 * 4 * MU * 0.8), 600, timeouts=lambda index, n: (n + index) % 3 == 0),
        Scenario("idle_night", "4 replicas; load drops from 60% to 3% at 60 s (night)", four,
                 step(0.6 * 4 * MU * 0.8, 0.03 * 4 * MU * 0.8), 720),
        Scenario("mixed_model", "2 x chat-8b + 2 x chat-70b (2.5x slower steps) at 50%, nothing wrong",
                 [BASE, BIG], step(0.5 * 2 * 0.8 * (MU + mu(BIG)), 0.5 * 2 * 0.8 * (MU + mu(BIG))), 600,
                 model_shares={"chat-8b": MU / (MU + mu(BIG)), "chat-70b": mu(BIG) / (MU + mu(BIG))}),
    ]
    return {s.name: s for s in out}


def score(scenario: Scenario, interval: float) -> dict:
    started = time.perf_counter()
    run = Simulation(scenario, interval, mu=mu).run_sync()
    wall = time.perf_counter() - started
    end = scenario.duration_s
    truth_changes: dict[str, list[float]] = {}
    for f in run.faults:
        truth_changes.setdefault(f.instance, []).append(f.start)
        if f.end is not None:
            truth_changes[f.instance].append(f.end)
    detected = list(detection_times(run.faults, run.changes))
    if run.faults:
        detect = None if any(d is None for d in detected) else max(d for d in detected if d is not None)
    else:
        detect = scale_detection(run.samples)
    replicas = replica_score(run.samples, interval, run.settle_at)
    return {
        "scenario": scenario.name, "what": scenario.what, "simulated_s": end, "wall_s": round(wall, 1),
        "requests": run.requests,
        "detect_s": detect, "false_ejections": false_ejections(run.changes),
        "missed_ejections": missed_ejections(run.faults, run.changes, end),
        "flaps_per_hour": round(flaps(run.changes, truth_changes) * 3600.0 / end, 1),
        "max_desired": replicas.max_desired, "needed_start": run.samples[0][2], "needed_end": run.samples[-1][2],
        "error_settled": replicas.error_after_settle,
        "over_gpu_minutes": round(replicas.over_gpu_minutes, 1), "under_gpu_minutes": round(replicas.under_gpu_minutes, 1),
        "scale_changes": replicas.scale_changes, "highest_desired_reason": run.reasons[0] if run.reasons else "",
        "transitions": [f"{c.at:.0f}s {c.instance} {c.from_state}->{c.to_state} (truth {c.truth})"
                        + (f": {c.reason}" if c.to_state in ("ejected", "degraded") and c.reason else "")
                        for c in run.changes if c.from_state not in ("", "starting") or c.to_state != "healthy"][:20],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", action="append", help="run only this scenario (repeatable); default all")
    ap.add_argument("--interval", type=float, default=5.0, help="scrape interval, seconds (default 5)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args()
    known = scenarios()
    if args.list:
        for s in known.values():
            print(f"{s.name}: {s.what}")
        return
    names = args.scenario or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")
    results = [score(known[n], args.interval) for n in names]
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(load_average())
    fmt = lambda v: "-" if v is None else (f"{v:.0f}" if isinstance(v, float) else str(v))
    rows = [(r["scenario"], fmt(r["detect_s"]), r["false_ejections"], r["missed_ejections"], r["flaps_per_hour"],
             f"{r['needed_start']}->{r['needed_end']}", r["max_desired"], fmt(r["error_settled"]),
             r["over_gpu_minutes"], r["under_gpu_minutes"], r["scale_changes"], f"{r['wall_s']:.0f}")
            for r in results]
    print(table(rows, ("scenario", "detect_s", "false_ej", "missed_ej", "flaps_h", "needed", "max_desired",
                       "err_settled", "over_gpu_min", "under_gpu_min", "scale_changes", "wall_s")))
    for r in results:
        print(f"{r['scenario']}: {r['highest_desired_reason']}")
        for line in r["transitions"]:
            print(f"    {line}")


if __name__ == "__main__":
    main()
