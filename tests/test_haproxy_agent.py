"""The HAProxy agent-check listener over a real TCP socket, as HAProxy talks to it.

HAProxy is not installed here; these tests play its part: connect, send the `agent-send` string,
read the one reply line, and expect the listener to close the connection.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from monitor.act.haproxy import AgentCheckServer, agent_reply
from monitor.decide.fleet import FleetDecisions, PoolPolicy
from monitor.decide.verdicts import DEGRADED, EJECTED, HEALTHY, LEAVING, SLEEPING, STARTING, UNKNOWN, InstanceVerdict
from monitor.evaluate.signals import InstanceSignals
from monitor.settings import HealthSettings, ScalingSettings


def verdict(state: str, kind: str | None = None, weight: float = 1.0, reasons=("r",)) -> InstanceVerdict:
    return InstanceVerdict("p", "10.0.0.1:8000", state, tuple(reasons), kind, 0.0, None, weight)


def test_reply_words_for_lifecycle_states():
    assert agent_reply(verdict(STARTING, weight=0.0, reasons=("starting",))) == "down #starting\n"
    assert agent_reply(verdict(LEAVING, weight=0.0, reasons=("left",))) == "up drain #left\n"
    assert agent_reply(verdict(SLEEPING, weight=0.0, reasons=("asleep",))) == "up drain #asleep\n"
    assert agent_reply(verdict(HEALTHY, weight=0.5)) == "up ready 50%\n"  # warming up under slow_start


def test_reply_words():
    assert agent_reply(verdict(HEALTHY)) == "up ready 100%\n"
    assert agent_reply(verdict(UNKNOWN)) == "up ready 100%\n"
    assert agent_reply(verdict(DEGRADED, "latency", 0.25)) == "up ready 25%\n"
    assert agent_reply(verdict(EJECTED, "unreachable", 0.0, ("scrape failed 3x\nin a row",))) == \
        "down #scrape failed 3x in a row\n"
    assert agent_reply(verdict(EJECTED, "hang", 0.0)).startswith("down #")
    assert agent_reply(verdict(EJECTED, "latency", 0.0)) == "up drain\n"
    assert agent_reply(None, "x/y").startswith("#unknown server 'x/y'")


async def _ask(port: int, payload: bytes | None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if payload is not None:
        writer.write(payload)
        await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 5)  # read() to EOF: the agent must close
    writer.close()
    await writer.wait_closed()
    return reply


@pytest.fixture
async def fleet_agent():
    health = FleetDecisions({"p": PoolPolicy(HealthSettings(hang_intervals=None), ScalingSettings())},
                            {"p": [f"10.0.0.{i}:8000" for i in (1, 2, 3, 4)]}, 5.0)
    pool = health.health["p"]
    t = time.time() - 20.0  # verdicts made just now: fresh as the agent reads them
    for k in range(1, 5):
        now = t + 5 * k
        signals = {i: InstanceSignals(observed_at=now, ttft_p99_s=0.2, requests=50) for i in pool.instances}
        signals["10.0.0.2:8000"] = InstanceSignals(observed_at=now, ttft_p99_s=0.7, requests=50)
        signals["10.0.0.3:8000"] = InstanceSignals(observed_at=now, ttft_p99_s=1.5, requests=50)
        if k > 1:
            signals["10.0.0.4:8000"] = InstanceSignals(observed_at=now, scrape_error="connection refused")
        pool.evaluate(signals, now, data_at=now)
    agent = AgentCheckServer(health.find, read_timeout_s=0.3)
    await agent.start()
    try:
        yield agent, health
    finally:
        await agent.stop()


async def test_agent_answers_per_backend_over_tcp(fleet_agent):
    agent, health = fleet_agent
    assert [v.state for v in health.pool_verdicts("p")] == [HEALTHY, DEGRADED, EJECTED, EJECTED]
    assert await _ask(agent.port, b"p/10.0.0.1:8000\n") == b"up ready 100%\n"
    assert await _ask(agent.port, b"p/10.0.0.2:8000\n") == b"up ready 25%\n"
    assert await _ask(agent.port, b"10.0.0.3:8000\n") == b"up drain\n"  # slow but answering: let streams finish
    reply = await _ask(agent.port, b"p/10.0.0.4:8000\r\n")  # cannot serve at all: down, with the reason
    assert reply.startswith(b"down #scrape failed 3x in a row: connection refused; ejected for 30s until ")
    assert reply.endswith(b"Z (first ejection)\n") and reply.count(b"\n") == 1
    assert (await _ask(agent.port, b"other/10.0.0.1:8000\n")).startswith(b"#unknown server")
    assert agent.answered == 5


async def test_agent_reply_follows_the_instance_back(fleet_agent):
    agent, health = fleet_agent
    pool = health.health["p"]
    now = pool.last_decision.at
    assert await _ask(agent.port, b"p/10.0.0.3:8000\n") == b"up drain\n"
    for _ in range(8):  # 40 s of good signals: past the 30 s ejection and 3 good intervals
        now += 5
        signals = {i: InstanceSignals(observed_at=now, ttft_p99_s=0.2, requests=50) for i in pool.instances}
        pool.evaluate(signals, now, data_at=now)
    assert health.find("10.0.0.3:8000").state == HEALTHY
    # `up ready` undoes the agent's own drain: only the agent can
    assert await _ask(agent.port, b"p/10.0.0.3:8000\n") == b"up ready 100%\n"


async def test_agent_send_without_newline_and_silent_clients(fleet_agent):
    agent, _ = fleet_agent
    assert await _ask(agent.port, b"p/10.0.0.1:8000") == b"up ready 100%\n"  # answered after the read timeout
    assert (await _ask(agent.port, None)).startswith(b"#unknown server ''")
    assert (await _ask(agent.port, b"x" * 5000)).startswith(b"#unknown server")


async def test_agent_survives_a_failing_lookup_and_concurrent_checks():
    def lookup(name: str):
        if name == "boom":
            raise RuntimeError("bug")
        return verdict(HEALTHY)

    agent = AgentCheckServer(lookup, read_timeout_s=0.3)
    await agent.start()
    try:
        assert (await _ask(agent.port, b"boom\n")).startswith(b"#unknown server")
        replies = await asyncio.gather(*(_ask(agent.port, f"p/s{i}\n".encode()) for i in range(50)))
        assert set(replies) == {b"up ready 100%\n"}
    finally:
        await agent.stop()
