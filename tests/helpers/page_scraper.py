"""A scrape source for in-process service tests that serves real vLLM-shaped pages (vllm_pages.py's
FakeVllmV1, one per instance) through the real parser, on the wall clock, with no network. Before
each scrape `advance(instance, page)` lets the test add requests to that instance's page."""

from __future__ import annotations

import time
from collections.abc import Callable

from monitor.collect.vllm import parse_page
from monitor.samples import ScrapeResult
from tests.helpers.vllm_pages import FakeVllmV1


class PageScraper:
    def __init__(self, advance: Callable[[str, FakeVllmV1], None]) -> None:
        self.pages: dict[str, FakeVllmV1] = {}
        self.advance = advance

    async def scrape_all(self, targets) -> list[ScrapeResult]:
        now = time.time()
        out = []
        for target in targets:
            instance = target.url.split("//", 1)[1].split("/", 1)[0]
            page = self.pages.setdefault(instance, FakeVllmV1(seed=len(self.pages)))
            self.advance(instance, page)
            out.append(ScrapeResult(target.pool, instance, target.url, now, 0.01,
                                    models=tuple(parse_page(page.render())), health_status=200))
        return out

    def keep_only(self, targets) -> None:
        pass

    async def aclose(self) -> None:
        pass
