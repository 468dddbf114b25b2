"""Scrape every vLLM target concurrently, each bounded in time and in body size.

One slow, hung, huge or broken target must never hold up or take down the others: each scrape runs
under its own deadline, reads at most `max_body_size` bytes (decompressed, so a gzip bomb is cut off
too), and every failure becomes a `ScrapeResult` with a reason instead of an exception: the known
ones by kind (down, timeout, http_status, oversized, malformed), a target whose URL cannot be sent
as `bad_target`, and anything else, a bug included, as `internal`, logged once per target and
cause. Nothing one target does leaves `scrape_all`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Iterable, cast

import httpx

from monitor.collect.slots import ScrapeSlots, SlotDeadline
from monitor.collect.vllm import PageError, read_page
from monitor.http1 import BadUrl, ConnectionPool, Exchange, RawHttpError, split_url
from monitor.samples import ScrapeResult
from monitor.units import instance_address, redact_url

log = logging.getLogger("monitor.scraper")

PARSE_BATCH = 50
# Page bodies held from fetch to parse, at most: past it a page is parsed as it arrives. At 5,000
# targets the fleet's pages (62 KB each) were 310 MB held at the end of the fetch phase, half the
# service's peak RSS; 1,000 targets' pages fit under it and are all parsed after the fetch phase.
HELD_BODIES_LIMIT = 64 * 1024 * 1024
HEALTH_BODY_LIMIT = 64 * 1024
# Prometheus's own scrape Accept header (3.x, default scrape_protocols): OpenMetrics 1.0 first, then
# the text format, so a server negotiates as it does for Prometheus. `escaping=allow-utf-8` matters:
# prometheus_client (vLLM's exporter) answers an OpenMetrics request without it with `escaping=
# underscores` and writes `vllm:` as `vllm_` on its sample lines (client_python#1177). A server that
# answers OpenMetrics whatever was asked (vLLM's newer frontend) is read the same way: the parser
# reads both formats (exposition.py), and the `vllm_` spelling as well (vllm.read_page).
ACCEPT = ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
          "application/openmetrics-text;version=0.0.1;q=0.5,"
          "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
          "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")


@dataclass(frozen=True, slots=True)
class Target:
    """One instance to scrape: its pool, base URL and, where discovery set `__metrics_path__`, its own path."""

    pool: str
    url: str
    metrics_path: str | None = None

    @property
    def instance(self) -> str:
        return instance_address(self.url)


class BodyTooLarge(Exception):
    pass


class BodyUndecodable(Exception):
    """A Content-Encoding we did not ask for, or a compressed body that does not decode."""


# Only what BoundedDecoder can inflate under a cap; httpx would otherwise advertise br/zstd too
# when those packages happen to be installed.
ACCEPT_ENCODING = "gzip"
REQUEST_HEADERS = {"Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING, "User-Agent": "llm-slo-monitor"}


@dataclass(frozen=True, slots=True)
class _Fetched:
    target: Target
    started_at: float
    duration_s: float
    body: bytes | None
    error_kind: str | None
    error: str | None
    health_status: int | None
    health_error: str | None


class BoundedDecoder:
    """Undoes a Content-Encoding (identity, gzip, deflate) without ever holding more than `limit`
    decoded bytes.

    httpx's own decoders inflate each network chunk in one call with no bound on the output: one
    64 KiB chunk of a gzip bomb becomes ~64 MB, and `Content-Encoding: gzip, gzip` gigabytes, before
    any size check could run (measured: 268 MB for a 591-byte body against a 1 MiB cap). Here zlib's
    `max_length` bounds every step, so a bomb costs at most `limit` + one step of memory.
    """

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        encoding = (content_encoding or "").strip().lower()
        self.limit = limit
        self.size = 0
        self._fed = False
        self._head = b""  # deflate: the input so far, while nothing came out (see feed)
        if encoding in ("", "identity"):
            self._wbits: int | None = None
        elif encoding in ("gzip", "x-gzip"):
            self._wbits = 16 + zlib.MAX_WBITS
        elif encoding == "deflate":
            self._wbits = zlib.MAX_WBITS
        else:
            raise BodyUndecodable(f"unsupported Content-Encoding {encoding!r:.60} (asked for {ACCEPT_ENCODING})")
        self._inflater = zlib.decompressobj(self._wbits) if self._wbits is not None else None

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        self._fed = True
        if self._inflater is None:
            self._count(len(data))
            return data
        # `deflate` is meant to be zlib-wrapped, but some servers send raw deflate; which one it is
        # shows only once the header fails, so the input is kept until the first output to start over
        guessing = self._wbits == zlib.MAX_WBITS and self.size == 0 and len(self._head) < 65536
        if guessing:
            self._head += data
        try:
            return self._inflate(data)
        except zlib.error as first:
            failure = first
            if guessing:
                self._wbits = -zlib.MAX_WBITS
                self._inflater = zlib.decompressobj(self._wbits)
                try:
                    return self._inflate(self._head)
                except zlib.error as again:
                    failure = again
            raise BodyUndecodable(f"body does not decode as its Content-Encoding: {failure}") from None

    def _inflate(self, data: bytes) -> bytes:
        assert self._inflater is not None and self._wbits is not None
        out: list[bytes] = []
        while data:
            # at most one byte past the cap per step (max_length 0 would mean unbounded: never 0)
            piece = self._inflater.decompress(data, self.limit - self.size + 1)
            self._count(len(piece))  # raises once past the cap, so the loop cannot spin
            out.append(piece)
            if self._inflater.eof:
                data = self._inflater.unused_data
                if data and self._wbits != 16 + zlib.MAX_WBITS:
                    raise BodyUndecodable("data after the end of the deflate stream")
                if data:  # gzip allows several members one after the other
                    self._inflater = zlib.decompressobj(self._wbits)
            else:
                data = self._inflater.unconsumed_tail
        return b"".join(out)

    def finish(self) -> None:
        """Refuse a compressed body that stopped before its end."""
        if self._inflater is not None and self._fed and not self._inflater.eof:
            raise BodyUndecodable("compressed body is truncated (the stream ends early)")

    def _count(self, n: int) -> None:
        self.size += n
        if self.size > self.limit:
            raise BodyTooLarge(self.size)


async def read_capped(response: Any, limit: int) -> bytes:
    """The decoded body, at most `limit` bytes; BodyTooLarge past it, BodyUndecodable for bad encodings."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(int(declared))
    decoder = BoundedDecoder(response.headers.get("content-encoding"), limit)
    chunks: list[bytes] = []
    async for raw in response.aiter_raw():
        chunks.append(decoder.feed(raw))
    decoder.finish()
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
        held_bodies_limit: int = HELD_BODIES_LIMIT,
    ) -> None:
        self.timeout = timeout
        self.held_bodies_limit = held_bodies_limit
        self.held_bodies_peak = 0  # bytes of bodies held unparsed at once in the last cycle (benchmarks, tests)
        self.max_body_size = max_body_size
        self.metrics_path = metrics_path
        self.health_path = health_path
        self.concurrency = concurrency
        self._slots = ScrapeSlots(concurrency)
        self._slow: set[str] = set()  # targets whose last scrape timed out: they queue last for a slot
        self._internal: dict[str, str] = {}  # target url -> the internal error last logged for it
        # Plain http targets go through our own HTTP/1.1 client (monitor/http1.py): 0.2 ms of CPU
        # per request against 4-5 ms through httpx, most of a core at 1,000 targets every 5 s.
        # Two idle connections per target: /metrics and /health are fetched side by side.
        self._plain = ConnectionPool(idle_per_host=2)
        # https targets: one small httpx client per target: httpcore's pool scans all its connections on every request
        # event, so a single pool over 1,000 targets costs O(n) per chunk read (measured: 24 ms CPU
        # per target at 200 targets, against about 2 ms with a client each).
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._closing: set[asyncio.Task[None]] = set()  # clients of departed targets being closed
        # one TLS context for all of them: each client would otherwise load the CA bundle (~1 MB)
        self._tls = httpx.create_ssl_context()

    def _get(self, target: Target, path: str) -> AbstractAsyncContextManager[Any]:
        """One GET, as a response with `status_code`, `headers` (lower-case names) and `aiter_raw()`."""
        url = target.url + path
        if url.startswith("http://"):
            return Exchange(self._plain, url, headers=REQUEST_HEADERS)
        return self._client_for(target).stream("GET", url)

    def _client_for(self, target: Target) -> httpx.AsyncClient:
        client = self._clients.get(target.url)
        if client is None:
            client = self._clients[target.url] = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
                headers=REQUEST_HEADERS,
                follow_redirects=False,
                trust_env=False,
                verify=self._tls,
            )
        return client

    def keep_only(self, targets: Iterable[Target]) -> None:
        """What is held for targets no longer scraped goes: idle connections and https clients.
        Under churn (pods replaced, each with a new address) they would otherwise add up to a
        socket or two per departed target, for as long as the process runs."""
        urls = {t.url for t in targets}
        keys = set()
        for url in urls:
            if url.startswith("http://"):
                try:
                    keys.add(split_url(url).key)
                except BadUrl:
                    pass  # never connected: nothing held
        self._plain.retain(keys)
        self._slow &= urls
        self._internal = {u: e for u, e in self._internal.items() if u in urls}
        for url in [u for u in self._clients if u not in urls]:
            task = asyncio.get_running_loop().create_task(self._clients.pop(url).aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
        await self._plain.aclose()

    async def scrape_all(self, targets: list[Target]) -> list[ScrapeResult]:
        """Fetch every target concurrently, then parse.

        Parsing is CPU work on the event loop; done while other fetches are in flight it would eat
        into their deadlines, and a busy monitor would report healthy targets as timed out. So the
        pages wait for the end of the fetch phase, as long as they add up to `held_bodies_limit`
        bytes at most; past it each page is parsed as it arrives, which costs the fetches in flight
        a little time but keeps memory from growing with the fleet (5,000 pages were 310 MB).

        The fetch phase is bounded whatever the fleet does: every target waits for one of the
        `concurrency` slots at most until `timeout` after the cycle began (moved on by the time the
        cycle spent parsing pages as they arrived: that time was the loop's, not the fleet's, and at
        5,000 targets it left 199 answering targets without a slot), then has its own `timeout` to
        answer, so the phase ends within twice `timeout` of its start, plus that parsing. Without the
        first bound, 1,000 hung targets on 256 slots held a cycle for ceil(1000/256) x timeout,
        and every pool's judgement waited for them. A target that got no slot in time is
        answered `timeout` ("no free scrape slot"), which is why targets whose last scrape timed
        out queue last (one that got no slot keeps its place): within a few cycles the slots go
        first to the targets that answer in milliseconds, and what is left waiting at the
        deadline is, cycle after cycle, the targets that hang.
        """
        loop = asyncio.get_running_loop()
        deadline = SlotDeadline(self._slots, loop.time() + self.timeout)
        order = sorted(range(len(targets)), key=lambda i: targets[i].url in self._slow)  # stable: slow ones last
        held = 0

        async def fetch_or_parse(target: Target) -> _Fetched | ScrapeResult:
            nonlocal held
            f = await self._fetch(target)
            size = len(f.body) if f.body is not None else 0
            if held + size > self.held_bodies_limit:
                parse_began = loop.time()
                result = self._finish_contained(f)
                deadline.at += loop.time() - parse_began
                return result
            held += size
            self.held_bodies_peak = max(self.held_bodies_peak, held)
            return f

        self.held_bodies_peak = 0
        try:
            done: list[_Fetched | ScrapeResult | None] = list(
                await asyncio.gather(*(fetch_or_parse(targets[i]) for i in order)))
        finally:
            deadline.cancel()
        results: dict[int, ScrapeResult] = {}
        for n, i in enumerate(order):
            f, done[n] = done[n], None  # its body can go once parsed
            results[i] = self._finish_contained(f) if isinstance(f, _Fetched) else cast(ScrapeResult, f)
            if n % PARSE_BATCH == PARSE_BATCH - 1:
                # let the API answer between batches: 1,000 pages parse in ~2-3 s of CPU, and a
                # health-check poller must not wait for all of them (p99 was 3.6 s without this)
                await asyncio.sleep(0)
        return [results[i] for i in range(len(targets))]

    async def scrape(self, target: Target) -> ScrapeResult:
        return self._finish_contained(await self._fetch(target))

    def _finish_contained(self, f: _Fetched) -> ScrapeResult:
        """`_finish`, with a bug in parsing one page kept to that target (its `internal` error)."""
        try:
            return self._finish(f)
        except Exception as exc:  # noqa: BLE001 - one page's bug must not end the cycle for the others
            failed = _Fetched(f.target, f.started_at, f.duration_s, None, "internal",
                              self._internal_error(f.target, exc, "parsing: "), f.health_status, f.health_error)
            return self._finish(failed)

    async def _fetch(self, target: Target) -> _Fetched:
        """One target's /metrics and /health, side by side in one slot; never raises (but lets
        cancellation through). The wait for a slot ends at the cycle's SlotDeadline."""
        started = time.time()
        clock = time.perf_counter()
        try:
            if not await self._slots.take():  # never tried: whether it is slow stays as the last try said
                return _Fetched(target, started, time.perf_counter() - clock, None, "timeout",
                                f"not scraped: no free scrape slot within timeout {self.timeout:g}s (all "
                                f"{self.concurrency} of scrape.concurrency held by targets that did not answer)",
                                None, None)
            try:
                started = time.time()
                clock = time.perf_counter()
                # side by side: /health on a task of its own, /metrics on this one (one task fewer a target
                # than a gather of both)
                health = asyncio.get_running_loop().create_task(self._probe_health(target))
                try:
                    body, error_kind, error = await self._fetch_metrics(target)
                    status, health_error = await health
                finally:
                    if not health.done():
                        health.cancel()
            finally:
                self._slots.give()
        except Exception as exc:  # noqa: BLE001 - one target's bug must not leave the gather and end the cycle
            body, status, health_error = None, None, None
            error_kind, error = "internal", self._internal_error(target, exc)
        if error_kind == "timeout":
            self._slow.add(target.url)
        else:
            self._slow.discard(target.url)
        return _Fetched(target, started, time.perf_counter() - clock, body, error_kind, error, status, health_error)

    def _internal_error(self, target: Target, exc: BaseException, what: str = "") -> str:
        """The reason shown for an unexpected error, logged with its traceback once per target and cause."""
        message = f"{what}internal error: {type(exc).__name__}: {str(exc)[:300]}".rstrip(": ")
        if self._internal.get(target.url + what) != message:
            self._internal[target.url + what] = message
            log.warning("scraping %s: %s", redact_url(target.url), message, exc_info=exc)
        return message

    @staticmethod
    def _finish(f: _Fetched) -> ScrapeResult:
        models: list = []
        bad: tuple = ()
        error_kind, error = f.error_kind, f.error
        if f.body is not None:
            try:
                page = read_page(f.body.decode("utf-8", errors="replace"))
                models, bad = page.models, page.bad
            except PageError as exc:
                error = str(exc)
                error_kind = "not_vllm" if error.startswith("not a vLLM endpoint") else "malformed"
        return ScrapeResult(
            pool=f.target.pool,
            instance=f.target.instance,
            url=f.target.url,
            started_at=f.started_at,
            duration_s=f.duration_s,
            models=tuple(models),
            error=error,
            error_kind=error_kind,
            health_status=f.health_status,
            health_error=f.health_error,
            body_bytes=len(f.body) if f.body is not None else 0,
            bad_samples=bad,
        )

    async def _fetch_metrics(self, target: Target) -> tuple[bytes | None, str | None, str | None]:
        path = target.metrics_path or self.metrics_path
        url = target.url + path
        try:
            async with asyncio.timeout(self.timeout):
                async with self._get(target, path) as response:
                    if response.status_code != 200:
                        return None, "http_status", f"HTTP {response.status_code} from {redact_url(url)}"
                    return await read_capped(response, self.max_body_size), None, None
        except (TimeoutError, httpx.TimeoutException):
            return None, "timeout", f"timed out after {self.timeout:g}s"
        except BodyTooLarge as exc:
            return None, "oversized", f"body larger than {self.max_body_size} bytes ({exc.args[0]}+ read)"
        except BodyUndecodable as exc:
            return None, "malformed", str(exc)
        except BadUrl as exc:
            return None, "bad_target", f"cannot send the request: {exc}"
        except (httpx.HTTPError, RawHttpError) as exc:
            return None, "down", f"cannot connect: {type(exc).__name__}: {exc}".rstrip(": ")
        except OSError as exc:
            return None, "down", f"cannot connect: {exc}"
        except Exception as exc:  # noqa: BLE001 - contained: this target's result, not the cycle's end
            return None, "internal", self._internal_error(target, exc)

    async def _probe_health(self, target: Target) -> tuple[int | None, str | None]:
        if not self.health_path:
            return None, None
        try:
            async with asyncio.timeout(self.timeout):
                async with self._get(target, self.health_path) as response:
                    # read the (small) body so the connection goes back to the pool; an unread
                    # stream is closed, and every cycle would open a new connection per target
                    size = 0
                    async for chunk in response.aiter_raw():
                        size += len(chunk)
                        if size > HEALTH_BODY_LIMIT:
                            break
                    return response.status_code, None
        except (TimeoutError, httpx.TimeoutException):
            return None, f"/health timed out after {self.timeout:g}s"
        except BadUrl:
            return None, "/health: cannot send the request (bad target URL)"
        except (httpx.HTTPError, RawHttpError, OSError) as exc:
            return None, f"/health: cannot connect: {type(exc).__name__}"
        except Exception as exc:  # noqa: BLE001 - contained, as in _fetch_metrics
            return None, self._internal_error(target, exc, "/health: ")
