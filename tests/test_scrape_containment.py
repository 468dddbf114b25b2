"""One target never stops the fleet (issue 19): whatever goes wrong with one target, a request that
cannot be written, an error nobody foresaw, a body that runs past its length, it becomes that
target's result, and a cycle with more hung targets than scrape slots still ends within its
deadlines. Real loopback servers; the file_sd case goes from a file on disk through discovery."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import ExitStack
from typing import Any

from monitor.collect.discovery import Discovery, PoolSpec
from monitor.collect.scraper import Scraper, Target
from monitor.settings.discovery import FileDiscovery
from tests.helpers import raw_targets as raw
from tests.helpers.vllm_pages import FakeVllmV1, PageServer

PAGE = FakeVllmV1().render().encode()


def vllm(path: str) -> tuple[int, bytes]:
    return (200, PAGE) if path in ("/metrics", "/health") else (404, b"not found")


async def test_a_file_sd_group_with_a_non_ascii_metrics_path_leaves_every_other_target_scraped(tmp_path):
    with PageServer(vllm) as a, PageServer(vllm) as b, PageServer(vllm) as odd:
        (tmp_path / "chat.json").write_text(json.dumps([
            {"targets": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]},
            {"targets": [f"127.0.0.1:{odd.port}"], "labels": {"__metrics_path__": "/metrics€"}},
        ]))
        discovery = Discovery([PoolSpec("chat", (), (FileDiscovery(type="file", files=[str(tmp_path / "*.json")]),))])
        members = await discovery.refresh(now=0.0)
        scraper = Scraper(timeout=5.0, max_body_size=2**20)
        targets = [Target("chat", t.url, t.metrics_path) for t in members["chat"].values()]
        results = {r.url: r for r in await scraper.scrape_all(targets)}
        await scraper.aclose()
    assert results[a.url].ok and results[b.url].ok and results[a.url].models
    assert results[odd.url].error_kind == "http_status" and "/metrics%E2%82%AC" in results[odd.url].error


async def test_a_request_that_cannot_be_written_is_that_targets_error_and_the_others_are_scraped():
    with PageServer(vllm) as good:
        scraper = Scraper(timeout=5.0, max_body_size=2**20)
        results = await scraper.scrape_all([Target("chat", good.url), Target("chat", good.url, "/metrics€\r\nX: y")])
        await scraper.aclose()
    assert results[0].ok
    assert results[1].error_kind == "bad_target" and "cannot send the request" in results[1].error


class FlakyScraper(Scraper):
    """A scraper with a bug only one target's requests reach: an error none of the known kinds names."""

    def _get(self, target: Target, path: str) -> Any:
        if "bug" in path:
            raise KeyError("a bug")
        return super()._get(target, path)


async def test_any_exception_from_one_target_becomes_its_internal_error_and_never_ends_the_cycle(caplog):
    with PageServer(vllm) as good:
        scraper = FlakyScraper(timeout=5.0, max_body_size=2**20)
        for _ in range(3):
            results = await scraper.scrape_all([Target("chat", good.url), Target("chat", good.url, "/bug")])
        await scraper.aclose()
    assert results[0].ok
    assert results[1].error_kind == "internal" and results[1].error == "internal error: KeyError: 'a bug'"
    assert len([r for r in caplog.records if "internal error" in r.getMessage()]) == 1  # once per target and cause


async def test_more_hung_targets_than_slots_cannot_stretch_a_cycle_and_answering_targets_queue_first():
    with ExitStack() as stack:
        hung = [stack.enter_context(raw.RawServer(raw.hung)) for _ in range(6)]
        good = [stack.enter_context(PageServer(vllm)) for _ in range(2)]
        scraper = Scraper(timeout=0.3, max_body_size=2**20, concurrency=2, health_path=None)
        targets = [Target("chat", s.url) for s in hung] + [Target("chat", s.url) for s in good]
        # each cycle waits at most 0.3s for a slot and 0.3s for an answer: without the slot bound a
        # cycle held four rounds of two targets; the guard here only stops a hang
        cycles = [await asyncio.wait_for(scraper.scrape_all(targets), 30) for _ in range(4)]
        await scraper.aclose()
    first, last = cycles[0], cycles[-1]
    assert all(r.error_kind == "timeout" for r in first[:6])
    assert sum("no free scrape slot" in (r.error or "") for r in first) == 6  # two slots: two tried
    # a target that timed out queues last from then on: by the time each hung one has been
    # tried, the answering ones get the slots first
    assert [r.ok for r in last[6:]] == [True, True]
    assert all(r.error_kind == "timeout" for r in last[:6])


async def test_pages_past_the_held_bodies_limit_are_parsed_on_arrival_and_read_the_same():
    pages = [FakeVllmV1(seed=s) for s in range(8)]
    for n, fake in enumerate(pages):
        fake.finish(10 + n, ttft=(0.05, 0.5 + n / 10), output_tokens=8)
    bodies = [fake.render().encode() for fake in pages]
    with ExitStack() as stack:
        servers = [stack.enter_context(PageServer(lambda path, b=b: (200, b))) for b in bodies]
        targets = [Target("chat", s.url) for s in servers] + [Target("chat", "http://127.0.0.1:9")]
        # all held until the fetch phase ends, against room for two pages (the rest parsed as they come)
        roomy = Scraper(timeout=5.0, max_body_size=2**20)
        tight = Scraper(timeout=5.0, max_body_size=2**20, held_bodies_limit=2 * max(map(len, bodies)))
        held_all, held_two = await roomy.scrape_all(targets), await tight.scrape_all(targets)
        await roomy.aclose()
        await tight.aclose()
    assert roomy.held_bodies_peak == sum(map(len, bodies))
    assert 0 < tight.held_bodies_peak <= tight.held_bodies_limit
    assert [r.url for r in held_two] == [t.url for t in targets]  # in the targets' order, whatever came first
    assert [(r.models, r.error_kind, r.body_bytes) for r in held_two] == [
        (r.models, r.error_kind, r.body_bytes) for r in held_all]
    assert held_two[-1].error_kind == "down" and all(r.ok and r.models for r in held_two[:-1])


class SlowParsingScraper(Scraper):
    """Parsing a page takes 0.1 s of the loop's time (a big page on a busy machine)."""

    @staticmethod
    def _finish(f):
        time.sleep(0.1)
        return Scraper._finish(f)


async def test_time_spent_parsing_pages_as_they_arrive_is_not_taken_from_the_wait_for_a_scrape_slot():
    with ExitStack() as stack:
        servers = [stack.enter_context(PageServer(vllm)) for _ in range(8)]
        # one slot, every page parsed on arrival: 0.8 s of parsing against a 0.3 s wait for a slot; the
        # slot bound is for targets that hang, and none does
        scraper = SlowParsingScraper(timeout=0.3, max_body_size=2**20, concurrency=1, health_path=None,
                                     held_bodies_limit=0)
        results = await asyncio.wait_for(scraper.scrape_all([Target("chat", s.url) for s in servers]), 30)
        await scraper.aclose()
    assert [(r.ok, r.error) for r in results] == [(True, None)] * 8
