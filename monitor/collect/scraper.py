"""Scrape every vLLM target concurrently, each bounded in time and in body size.

One slow, hung, huge or broken target must never hold up or take down the others: each scrape runs
under its own deadline, reads at most `max_body_size` bytes (decompressed, so a gzip bomb is cut off
too), and every failure becomes a `ScrapeResult` with a reason instead of an exception.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from monitor.collect.vllm import PageError, parse_page
from monitor.config import Config, instance_address
from monitor.samples import ScrapeResult

ACCEPT = "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"


@dataclass(frozen=True, slots=True)
class Target:
    pool: str
    url: str

    @property
    def instance(self) -> str:
        return instance_address(self.url)


def targets_of(config: Config) -> list[Target]:
    return [Target(pool.name, url) for pool in config.pools for url in pool.targets]


class BodyTooLarge(Exception):
    pass


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(size)
        chunks.append(chunk)
    return b"".join(chunks)


class Scraper:
    """Holds one connection pool for the whole fleet; `scrape_all` is one collection cycle."""

    def __init__(
        self,
        *,
        timeout: float,
        max_body_size: int,
        metrics_path: str = "/metrics",
        health_path: str | None = "/health",
        concurrency: int = 256,
    ) -> None:
        self.timeout = timeout
        self.max_body_size = max_body_size
        self.metrics_path = metrics_path
        self.health_path = health_path
        self._semaphore = asyncio.Semaphore(concurrency)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"Accept": ACCEPT, "User-Agent": "llm-slo-monitor"},
            follow_redirects=False,
            trust_env=False,
        )

    @classmethod
    def from_config(cls, config: Config) -> Scraper:
        s = config.scrape
        return cls(timeout=s.timeout, max_body_size=s.max_body_size, metrics_path=s.metrics_path,
                   health_path=s.health_path, concurrency=s.concurrency)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def scrape_all(self, targets: list[Target]) -> list[ScrapeResult]:
        return list(await asyncio.gather(*(self.scrape(t) for t in targets)))

    async def scrape(self, target: Target) -> ScrapeResult:
        async with self._semaphore:
            started = time.time()
            clock = time.perf_counter()
            metrics, health = await asyncio.gather(
                self._scrape_metrics(target), self._probe_health(target)
            )
            models, error_kind, error, size = metrics
            status, health_error = health
            return ScrapeResult(
                pool=target.pool,
                instance=target.instance,
                url=target.url,
                started_at=started,
                duration_s=time.perf_counter() - clock,
                models=tuple(models),
                error=error,
                error_kind=error_kind,
                health_status=status,
                health_error=health_error,
                body_bytes=size,
            )

    async def _scrape_metrics(self, target: Target):
        url = target.url + self.metrics_path
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client.stream("GET", url) as response:
                    if response.status_code != 200:
                        return (), "http_status", f"HTTP {response.status_code} from {url}", 0
                    body = await _read_capped(response, self.max_body_size)
        except TimeoutError:
            return (), "timeout", f"timed out after {self.timeout:g}s", 0
        except httpx.TimeoutException:
            return (), "timeout", f"timed out after {self.timeout:g}s", 0
        except BodyTooLarge as exc:
            return (), "oversized", f"body larger than {self.max_body_size} bytes ({exc.args[0]}+ read)", 0
        except httpx.HTTPError as exc:
            return (), "down", f"cannot connect: {type(exc).__name__}: {exc}".rstrip(": "), 0
        except OSError as exc:
            return (), "down", f"cannot connect: {exc}", 0
        try:
            models = parse_page(body.decode("utf-8", errors="replace"))
        except PageError as exc:
            kind = "not_vllm" if str(exc).startswith("not a vLLM endpoint") else "malformed"
            return (), kind, str(exc), len(body)
        return models, None, None, len(body)

    async def _probe_health(self, target: Target) -> tuple[int | None, str | None]:
        if not self.health_path:
            return None, None
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client.get(target.url + self.health_path)
                await response.aclose()
                return response.status_code, None
        except (TimeoutError, httpx.TimeoutException):
            return None, f"/health timed out after {self.timeout:g}s"
        except (httpx.HTTPError, OSError) as exc:
            return None, f"/health: cannot connect: {type(exc).__name__}"
