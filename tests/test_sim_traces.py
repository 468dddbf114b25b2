"""Simulator spans → the service's `POST /v1/traces` → goodput, checked against the ground-truth file.

The simulator sends vLLM V1-shaped `llm_request` spans with the real OpenTelemetry SDK (BatchSpanProcessor,
OTLP/HTTP exporter) to the monitor's app served in-process; goodput from the API and from the stored
records must equal goodput computed from the ground-truth rows of the same requests, under the same
TTFT/TPOT thresholds. Only requests vLLM V1 traces (finished `stop`/`length`) have a span.
"""

from __future__ import annotations

import asyncio
import statistics

import httpx
import pytest
import uvicorn

from monitor.config import validate
from monitor.loadgen.runner import LoadRun
from monitor.loadgen.workload import Workload
from monitor.otlp.goodput import LatencyObjective, compute_goodput, latency_objectives
from monitor.otlp.records import tpot
from monitor.service import create_app
from monitor.sim.fleet import QuietServer, SimFleet
from monitor.sim.params import InstanceParams
from monitor.sim.tracing import span_attributes

from tests.helpers.ports import free_port
from tests.helpers.sim_truth import wait_for_rows

TTFT, TPOT = "20ms", "8ms"  # near the medians on an idle machine; any value must agree


def truth_latency(row: dict, metric: str) -> float | None:
    """A ground-truth row's latency, by the receiver's definitions (TPOT = (e2e − TTFT) / (out − 1))."""
    ttft = row["first_token"] - row["arrival"]
    e2e = row["finish"] - row["arrival"]
    return {"ttft": ttft, "e2e": e2e, "tpot": tpot(e2e, ttft, row["generation_tokens"])}[metric]


def truth_goodput(rows: list[dict], objectives: tuple[LatencyObjective, ...]) -> tuple[int, int, list[int]]:
    """(requests, good requests, met per objective) from ground-truth rows, goodput's rules."""
    good, met = 0, [0] * len(objectives)
    for row in rows:
        all_met = True
        for i, o in enumerate(objectives):
            value = truth_latency(row, o.metric)
            ok = row["generation_tokens"] < 2 if value is None else value <= o.threshold_s
            met[i] += ok
            all_met &= ok
        good += all_met
    return len(rows), good, met


@pytest.mark.e2e
async def test_goodput_from_simulator_spans_equals_the_ground_truth(tmp_path):
    truth = tmp_path / "truth.jsonl"
    params = [InstanceParams(time_scale=0.25, seed=5, max_num_seqs=6),
              InstanceParams(time_scale=0.25, seed=6, speed=0.4)]
    port = free_port()
    fleet = SimFleet(params, ground_truth=truth, otlp_endpoint=f"http://127.0.0.1:{port}/v1/traces",
                     otlp_service_name="llama")
    urls = fleet.bind()
    config = validate({
        "pools": [{"name": "llama", "targets": urls}],
        "slos": [{"name": name, "indicator": {"type": "latency", "metric": name, "threshold": threshold},
                  "objective": "99%"} for name, threshold in (("ttft", TTFT), ("tpot", TPOT))],
    }).config
    app = create_app(config, store=None)  # no lifespan: nothing scrapes, only the receiver and the API run
    monitor = QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None,
                                         log_level="warning", access_log=False))
    served = asyncio.get_running_loop().create_task(monitor.serve())
    try:
        while not monitor.started:
            await asyncio.sleep(0.01)
        await fleet.start()
        async with httpx.AsyncClient(timeout=30) as client:
            await client.post(urls[0] + "/sim/faults", json={"error_rate": 0.2})  # errors: no span, as in V1
            run = LoadRun(urls, rate=30, duration_s=2.0,
                          workload=Workload(prompt_tokens=200, output_tokens=20, seed=11))
            await run.run()
            rows = await wait_for_rows(truth, run.sent)
            assert len(rows) == run.sent
            assert await asyncio.to_thread(fleet.spans.force_flush)  # what the BatchSpanProcessor holds, now
            goodput = (await client.get(f"http://127.0.0.1:{port}/api/v1/pools/llama/goodput",
                                        params={"window": "10m"})).json()
    finally:
        await fleet.stop()
        monitor.should_exit = True
        await served

    traced = [r for r in rows if r["status"] in ("stop", "length")]
    assert len(traced) < len(rows)  # some requests failed, and they have no span
    objectives = latency_objectives(config.slos, "llama")
    requests, good, met = truth_goodput(traced, objectives)
    assert requests > 0
    assert (goodput["requests"], goodput["good_requests"]) == (requests, good)
    assert [s["met"] for s in goodput["slos"]] == met
    assert goodput["goodput_rps"] == pytest.approx(good / goodput["covered_seconds"])

    # per request: the span's figures are the ground truth's, so any thresholds agree too
    records = {(r.instance, r.request_id): r for r in app.state.service.traces.records("llama")}
    assert set(records) == {(r["instance"], r["request_id"]) for r in traced}
    for row in traced:
        record = records[(row["instance"], row["request_id"])]
        assert record.ttft_s == truth_latency(row, "ttft") and record.e2e_s == truth_latency(row, "e2e")
        assert record.output_tokens == row["generation_tokens"] and record.prompt_tokens == row["prompt_tokens"]
    medians = {m: LatencyObjective(f"{m}-median", m, statistics.median(
        v for row in traced if (v := truth_latency(row, m)) is not None)) for m in ("ttft", "tpot", "e2e")}
    at = max(r.at for r in records.values())
    for chosen in ((medians["ttft"],), (medians["tpot"],), tuple(medians.values())):
        g = compute_goodput(list(records.values()), chosen, pool="llama", now=at, window_s=600.0)
        assert (g.requests, g.good_requests) == truth_goodput(traced, chosen)[:2]
        assert 0 < g.good_requests < g.requests  # a median threshold splits them: the comparison means something


def test_span_attributes_are_vllm_v1s():
    from monitor.sim.engine import SimRequest

    req = SimRequest(id="7", prompt_len=12, hashes=(), max_tokens=50, max_tokens_param=50, target=3,
                     stop_reason="stop", arrival=100.0, seed=1, generated=3, scheduled_at=100.25,
                     first_token_at=100.5, last_token_at=101.5, finished_at=101.5, finish_reason="stop")
    attrs = span_attributes(req)
    assert attrs == {
        "gen_ai.latency.time_to_first_token": 0.5, "gen_ai.latency.e2e": 1.5, "gen_ai.latency.time_in_queue": 0.25,
        "gen_ai.usage.prompt_tokens": 12, "gen_ai.usage.completion_tokens": 3,
        "gen_ai.latency.time_in_model_prefill": 0.25, "gen_ai.latency.time_in_model_decode": 1.0,
        "gen_ai.latency.time_in_model_inference": 1.25, "gen_ai.request.id": "7", "gen_ai.request.n": 1,
        "gen_ai.request.max_tokens": 50,
    }
    assert "gen_ai.response.model" not in attrs  # V1 names no model


def test_otlp_endpoint_argument(capsys):
    from monitor.cli import main
    from monitor.sim.cli import _otlp_endpoint

    assert main(["simulate", "--instances", "1", "--base-port", "0", "--otlp-endpoint", "ftp://collector"]) == 2
    assert "--otlp-endpoint: not an http(s) URL" in capsys.readouterr().err
    assert _otlp_endpoint("http://monitor:9470") == "http://monitor:9470/v1/traces"  # OTLP/HTTP's path when none
    assert _otlp_endpoint("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"
