"""A scrape source for in-process service tests: each target answers a hand-built vLLM result (see
slo_scrapes.py) on the wall clock, no network. A test can make one target slow (a high TTFT), make the
whole source raise (a bug in the scraper), or hold a scrape until it lets go (a cycle in progress)."""

from __future__ import annotations

import asyncio
import time

from monitor.samples import ScrapeResult
from tests.helpers.slo_scrapes import Server, result


class HandScraper:
    """`scrape_all(targets)` as the service calls it; `closed` once `aclose` ran."""

    def __init__(self) -> None:
        self.servers: dict[str, Server] = {}
        self.slow: set[str] = set()  # instances whose requests take 3 s to the first token
        self.broken: str | None = None  # raise this from every scrape_all (a scraper bug)
        self.hold: asyncio.Event | None = None  # when set (an Event), scrape_all waits for it
        self.started = 0
        self.closed = False

    async def scrape_all(self, targets) -> list[ScrapeResult]:
        self.started += 1
        if self.hold is not None:
            await self.hold.wait()
        if self.broken is not None:
            raise RuntimeError(self.broken)
        now = time.time()
        out = []
        for target in targets:
            instance = target.url.split("//", 1)[1]
            server = self.servers.setdefault(instance, Server())
            server.requests(20, ttft_s=3.0 if instance in self.slow else 0.05)
            out.append(result(target.pool, instance, now, server))
        return out

    def keep_only(self, targets) -> None:
        pass

    async def aclose(self) -> None:
        self.closed = True
