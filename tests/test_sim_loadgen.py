"""The load generator's parts: the streaming client (lean and httpx paths), the summary arithmetic."""

from __future__ import annotations

import httpx
import pytest

from monitor.loadgen.client import Outcome, send
from monitor.http1 import ConnectionPool
from monitor.loadgen.report import format_summary, parse_goodput, percentile, summarize
from monitor.loadgen.workload import RequestSpec, Workload
from monitor.sim.fleet import running_fleet
from monitor.sim.params import InstanceParams

SPEC = RequestSpec(prompt="one two three four five", prompt_tokens=5, max_tokens=12)


@pytest.mark.e2e
async def test_both_clients_time_a_stream_the_same_way_and_reuse_connections():
    params = InstanceParams(time_scale=0.2, seed=2)
    async with running_fleet([params]) as fleet:
        url = fleet.urls[0]
        pool = ConnectionPool()
        async with httpx.AsyncClient(timeout=10) as client:
            lean = await send(client, url, SPEC, params.model, pool=pool)
            idle = list(pool._idle.values())[0]
            assert len(idle) == 1  # read to the end: the connection went back to the pool
            connection = idle[0]
            again = await send(client, url, SPEC, params.model, chat=True, pool=pool)
            assert list(pool._idle.values())[0] == [connection]  # and was used again
            plain = await send(client, url, SPEC, params.model)
            missing = await send(client, url, SPEC, "no-such-model", pool=pool)
            await pool.aclose()
    for outcome in (lean, again, plain):
        assert outcome.ok, outcome.error
        assert outcome.output_tokens == 12 and len(outcome.itls) == 11
        assert 0 < outcome.ttft < outcome.e2e
        assert outcome.tpot is not None and outcome.tpot > 0
    assert not missing.ok and missing.status == 404
    assert "does not exist" in (missing.error or "")


def test_percentiles_interpolate_like_numpy():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile([], 50) is None


def test_goodput_counts_requests_meeting_every_limit():
    def done(ttft: float, e2e: float, tokens: int) -> Outcome:
        return Outcome(target="http://a", started=0.0, prompt_tokens=10, ok=True, ttft=ttft, e2e=e2e,
                       output_tokens=tokens)

    outcomes = [done(0.1, 1.1, 11), done(0.9, 1.9, 11), done(0.1, 5.1, 11),
                Outcome(target="http://a", started=0.0, prompt_tokens=10, error="HTTP 500")]
    limits = parse_goodput(["ttft:500", "tpot:200"])
    assert limits == {"ttft": 0.5, "tpot": 0.2}
    summary = summarize(outcomes, rate=1.0, duration_s=2.0, goodput=limits)
    assert (summary.completed, summary.failed, summary.good) == (3, 1, 1)  # slow start, slow tokens, ok
    assert summary.goodput == 0.5
    text = format_summary(summary)
    assert "Request goodput (req/s):                 0.50" in text
    assert "Median TTFT (ms):" in text
    for bad in (["ttft"], ["latency:5"], ["ttft:fast"], ["tpot:0"]):
        with pytest.raises(ValueError):
            parse_goodput(bad)


def test_workloads_are_reproducible_and_share_their_prefix():
    a = Workload(prompt_tokens=20, output_tokens=10, prefix_tokens=8, seed=3).generator()
    b = Workload(prompt_tokens=20, output_tokens=10, prefix_tokens=8, seed=3).generator()
    first, second = a.next(), a.next()
    assert first == b.next()
    assert first.prompt.split()[:8] == second.prompt.split()[:8]
    assert first.prompt_tokens == len(first.prompt.split())
    assert 5 <= first.max_tokens <= 15
