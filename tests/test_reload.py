"""Live reload of `slo-monitor serve` (a real subprocess): SIGHUP and `POST /-/reload` re-read the
config file. A changed SLO threshold is applied and keeps the budget counted so far; a renamed SLO
starts afresh; a broken file is refused with every problem by key path (log and 400 body), the old
config goes on serving and `slo_monitor_config_last_reload_successful` is 0; instance states are
kept across every reload.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.fleet import Backend, ServeProcess, metric
from tests.helpers.ports import free_port

pytestmark = pytest.mark.e2e

TOKEN = "reload-t0ken"


def write_config(path: Path, tmp_path: Path, urls: list[str], *, threshold: str = "500ms", slo_name: str = "ttft",
                 extra: str = "") -> None:
    path.write_text(f"""
storage: {{url: "sqlite:///{tmp_path}/monitor.db"}}
api: {{token: {TOKEN}}}
scrape: {{interval: 1s, timeout: 500ms}}
evaluation: {{window: 5s}}
pools:
  - name: chat
    targets: [{", ".join(urls)}]
    health: {{min_requests: 1}}
slos:
  - {{name: {slo_name}, indicator: {{type: latency, metric: ttft, threshold: {threshold}}}, objective: 99%}}
  - {{name: up, indicator: {{type: availability}}, objective: 99.9%}}
{extra}
""")


def reload_gauges(serve: ServeProcess) -> tuple[float, float]:
    page = serve.metrics()
    return (metric(page, "slo_monitor_config_last_reload_successful"),
            metric(page, "slo_monitor_config_last_reload_success_timestamp_seconds"))


def test_sighup_applies_a_new_slo_threshold_and_keeps_the_budget_counted_so_far(tmp_path):
    a, b = Backend("a", seed=1).start(), Backend("b", seed=2).start()
    config = tmp_path / "monitor.yaml"
    write_config(config, tmp_path, [a.url, b.url])
    serve = ServeProcess(config, free_port(), tmp_path / "serve.log", token=TOKEN)
    try:
        serve.wait_ready()
        serve.wait(lambda: serve.slos()["ttft"]["total"] >= 40, 30, "40 TTFT events")
        ok, loaded_at = reload_gauges(serve)
        assert ok == 1 and loaded_at > 0
        before = serve.slos()["ttft"]
        assert before["good"] == before["total"]  # TTFT 50-100 ms against 500 ms
        up_before = serve.slos()["up"]
        settled = serve.health_decisions()

        write_config(config, tmp_path, [a.url, b.url], threshold="80ms")  # TTFT 50-100 ms: some now bad
        serve.sighup()
        serve.wait(lambda: serve.slos()["ttft"]["indicator"]["threshold"] == 0.08, 10, "the new threshold applied")
        ok, reloaded_at = reload_gauges(serve)
        assert ok == 1 and reloaded_at > loaded_at
        after = serve.slos()["ttft"]
        assert after["total"] >= before["total"] and after["good"] >= before["good"]  # the minutes counted stay
        serve.wait(lambda: (s := serve.slos()["ttft"])["total"] - s["good"] >= 5, 30, "new events by 80 ms")
        later = serve.slos()["ttft"]
        assert later["good"] >= before["good"] and later["total"] > before["total"]
        assert serve.slos()["up"]["total"] >= up_before["total"]  # another SLO's budget untouched

        # renamed: a fresh budget (nothing is carried over to a new name)
        write_config(config, tmp_path, [a.url, b.url], threshold="80ms", slo_name="ttft-fast")
        serve.sighup()
        serve.wait(lambda: "ttft-fast" in serve.slos(), 10, "the renamed SLO")
        renamed = serve.slos()["ttft-fast"]
        assert "ttft" not in serve.slos()
        assert renamed["total"] < later["total"], (renamed, later)
        assert serve.health_decisions() == settled  # no instance changed state across the reloads
        assert {i["state"] for i in serve.instances().values()} == {"healthy"}
    finally:
        output = serve.stop()
        a.stop()
        b.stop()
    assert output.count("config reloaded from") == 2, output
    assert "SIGHUP: reloading the configuration" in output
    assert "only a restart applies it" not in output  # nothing needing a restart changed
    assert "Traceback" not in output


BROKEN = """
scrape: {interval: -1s, timeout: 500ms}
pools:
  - name: chat
    targets: [not a url]
    health: {min_requests: many, ttft_p99_eject: 2s, ttft_p99_degraded: 3s}
slos:
  - {name: ttft, indicator: {type: latency, metric: ttft, threshold: fast}, objective: 190%}
colour: blue
"""


def test_a_broken_file_is_refused_with_every_problem_by_key_path_and_the_old_config_keeps_serving(tmp_path):
    a = Backend("a", seed=1).start()
    config = tmp_path / "monitor.yaml"
    write_config(config, tmp_path, [a.url])
    serve = ServeProcess(config, free_port(), tmp_path / "serve.log", token=TOKEN)
    try:
        serve.wait_ready()
        serve.wait(lambda: serve.slos()["ttft"]["total"] >= 10, 30, "TTFT events")
        _, loaded_at = reload_gauges(serve)
        assert serve.client.post(serve.base + "/-/reload", headers={"Authorization": ""}).status_code == 401

        config.write_text(BROKEN)
        answer = serve.post("/-/reload")
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert body["status"] == "refused"
        problems = "\n".join(body["problems"])
        for key in ("scrape.interval", "pools[0].targets[0]", "pools[0].health.min_requests",
                    "pools[0].health", "slos[0].indicator", "slos[0].objective", "colour"):
            assert key in problems, (key, problems)
        ok, at = reload_gauges(serve)
        assert ok == 0 and at == loaded_at
        # the old config still serves: same pool, same SLO, cycles go on
        cycles = serve.cycles()
        serve.wait_cycles(2)
        assert serve.cycles() >= cycles + 2
        assert serve.slos()["ttft"]["indicator"]["threshold"] == 0.5
        assert list(serve.instances()) == [a.address] and serve.instances()[a.address]["state"] == "healthy"

        # SIGHUP with the same broken file: refused the same way, logged again
        serve.sighup()
        serve.wait(lambda: serve.log_count("config reload from .* refused") == 2, 10, "the second refusal logged")
        assert reload_gauges(serve)[0] == 0

        # fixed: applied, the gauge back to 1
        write_config(config, tmp_path, [a.url], threshold="250ms")
        answer = serve.post("/-/reload")
        assert answer.status_code == 200 and answer.json() == {"status": "reloaded", "problems": []}
        ok, at = reload_gauges(serve)
        assert ok == 1 and at > loaded_at
        assert serve.slos()["ttft"]["indicator"]["threshold"] == 0.25
    finally:
        output = serve.stop()
        a.stop()
    refused = output[output.index("refused, still serving the previous config"):]
    for key in ("scrape.interval", "pools[0].targets[0]", "pools[0].health.min_requests", "slos[0].objective",
                "colour"):
        assert key in refused, (key, refused)
    assert "Traceback" not in output
