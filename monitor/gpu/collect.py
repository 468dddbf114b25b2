"""Scraping the configured GPU exporters (dcgm-exporter or `slo-monitor exporter`).

The same rules as the vLLM scraper: each exporter under its own deadline and body cap, every failure
an `ExporterScrape` with a reason, never an exception, so one dead node cannot stall the cycle.
"""

from __future__ import annotations

import asyncio
import time
from typing import Sequence
from urllib.parse import urlsplit

import httpx

from monitor.collect.scraper import REQUEST_HEADERS, BodyTooLarge, BodyUndecodable, read_capped
from monitor.gpu.health import ExporterScrape
from monitor.gpu.parse import GpuPageError, parse_gpu_page
from monitor.units import redact_url


def metrics_url(exporter: str) -> str:
    """An exporter given as `http://host:9400` is read at `/metrics`; a URL with a path as given."""
    return exporter if urlsplit(exporter).path not in ("", "/") else exporter.rstrip("/") + "/metrics"


class _TooLarge(Exception):
    pass


class GpuScraper:
    """One small client per exporter (the fleet scraper's choice, for the same reason)."""

    def __init__(self, urls: Sequence[str], *, timeout: float, max_body_size: int) -> None:
        self.urls = list(urls)
        self.timeout = timeout
        self.max_body_size = max_body_size
        self._clients: dict[str, httpx.AsyncClient] = {}

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)

    async def scrape_all(self) -> list[ExporterScrape]:
        """Fetch all concurrently, then parse (parsing while others fetch would eat their deadlines)."""
        fetched = await asyncio.gather(*(self._fetch(u) for u in self.urls))
        return [self._finish(*f) for f in fetched]

    def _client(self, url: str) -> httpx.AsyncClient:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                headers=REQUEST_HEADERS,
                follow_redirects=False, trust_env=False,
                limits=httpx.Limits(max_connections=2, max_keepalive_connections=2))
        return client

    async def _fetch(self, url: str) -> tuple[str, float, float, bytes | None, str | None]:
        started, clock = time.time(), time.perf_counter()
        target = metrics_url(url)
        body, error = None, None
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client(url).stream("GET", target) as response:
                    if response.status_code != 200:
                        error = f"HTTP {response.status_code} from {redact_url(target)}"
                    else:
                        body = await self._read(response)
        except (TimeoutError, httpx.TimeoutException):
            error = f"timed out after {self.timeout:g}s"
        except _TooLarge:
            error = f"body larger than {self.max_body_size} bytes"
        except BodyUndecodable as exc:
            error = f"malformed page: {exc}"
        except (httpx.HTTPError, OSError) as exc:
            error = f"cannot connect: {type(exc).__name__}: {exc}".rstrip(": ")
        return url, started, time.perf_counter() - clock, body, error

    async def _read(self, response: httpx.Response) -> bytes:
        """The body under the cap, decompressed step by step (a gzip bomb is cut off at the cap)."""
        try:
            return await read_capped(response, self.max_body_size)
        except BodyTooLarge:
            raise _TooLarge() from None

    @staticmethod
    def _finish(url: str, started: float, duration: float, body: bytes | None, error: str | None) -> ExporterScrape:
        if body is None:
            return ExporterScrape(url, started, duration, None, error)
        try:
            page = parse_gpu_page(body.decode("utf-8", errors="replace"), source=url)
        except GpuPageError as exc:
            return ExporterScrape(url, started, duration, None, f"malformed page: {exc}")
        return ExporterScrape(url, started, duration, page, None)
