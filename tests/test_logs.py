"""The log a person reads, from a running service: one line per event, in words (issue 13 item 5).

The service runs in-process over two loopback vLLM pages: one pool fed by a file_sd file, an
error-ratio SLO that every request fails, and an NGINX upstream file whose `check` and `reload` are
`true` (the lines are the product's; the commands' success is all they need). Each cycle is driven
by hand, so the test waits on events, never on time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest

from monitor.config import validate
from monitor.service import Service

from tests.helpers.vllm_pages import ClockedVllm, FaultableVllm, PageServer

pytestmark = pytest.mark.e2e  # the vLLM pages listen on real loopback ports


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("monitor")]


async def _cycles_until(service: Service, caplog: pytest.LogCaptureFixture, pattern: str, *, most: int = 60) -> str:
    """Run scrape cycles (each followed by its NGINX apply) until a log line matches `pattern`."""
    for _ in range(most):
        await service.scrape_cycle()
        if service.upstreams is not None and service.upstreams.task is not None:
            await service.upstreams.task
        found = [line for line in _lines(caplog) if re.search(pattern, line)]
        if found:
            return found[0]
        await asyncio.sleep(0.1)  # lets the file_sd refresh started by this cycle land, and requests finish
    raise AssertionError(f"no log line matching {pattern!r} in {most} cycles:\n" + "\n".join(_lines(caplog)))


async def test_a_running_service_says_in_words_that_nginx_was_applied_a_page_started_and_an_instance_joined(
        tmp_path, caplog):
    failing = FaultableVllm(seed=5)
    failing.set(error_ratio=1.0)  # every request fails: the 95% SLO's budget burns at 20x
    newcomer = ClockedVllm(rps=5, ttft=(0.05, 0.1), kv=0.2, waiting=0, seed=6)
    with PageServer(failing) as first, PageServer(newcomer) as second:
        file_sd = tmp_path / "targets.json"
        file_sd.write_text(json.dumps([{"targets": [f"127.0.0.1:{first.port}"]}]))
        upstream_file = tmp_path / "nginx" / "llm-upstreams.conf"
        config = validate({
            "pools": [{"name": "chat", "discovery": [{"type": "file", "files": [str(file_sd)]}]}],
            "scrape": {"interval": "1s", "timeout": "500ms"},
            "slos": [{"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "95%"}],
            "nginx": {"upstream_file": str(upstream_file), "check": "true", "reload": "true"},
        }).config
        service = Service(config)
        caplog.set_level(logging.INFO, logger="monitor")
        await service.start()
        try:
            applied = await _cycles_until(service, caplog, r"^nginx upstreams: ")
            assert re.fullmatch(r"nginx upstreams: wrote 1 pool, 0 servers down, validated, reloaded in \d+ ms",
                                applied), applied
            assert "upstream chat {" in upstream_file.read_text()

            page = await _cycles_until(service, caplog, r"^SLO errors pool chat: page started firing")
            assert re.fullmatch(r"SLO errors pool chat: page started firing \(.+; burn .+; budget left -?\d+%\)",
                                page), page

            file_sd.write_text(json.dumps([{"targets": [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]}]))
            joined = await _cycles_until(service, caplog, rf"127\.0\.0\.1:{second.port}: joined")
            assert joined == f"pool chat 127.0.0.1:{second.port}: joined the fleet (starting)"
        finally:
            await service.stop()

    lines = _lines(caplog)
    assert not [line for line in lines if "WriteResult(" in line or "()" in line], lines  # no reprs, no empty ()
    assert sum(line == joined for line in lines) == 1  # an event is one line
    assert sum(line.startswith("SLO errors pool chat: page started firing") for line in lines) == 1
