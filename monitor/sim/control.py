"""The fleet's own control surface: add and remove instances at run time, and act as KEDA would.

- `POST /sim/instances` on the control port: `{"add": N}` starts N instances (each refusing
  connections for the model-load time), `{"remove": "host:port"}` (or a URL) stops one; `GET` lists
  the members and their state (`loading`, `serving`).
- `Autoscaler`: polls the monitor's `GET /api/v1/pools/{pool}/scaling` every interval and moves the
  fleet one instance toward `desired_replicas` per interval (adding the newest, removing the newest),
  within `min_instances..max_instances`, like KEDA's metrics-api scaler feeding an HPA. An answer that
  cannot be used (down, not JSON, no whole `desired_replicas`) changes nothing and is logged once per
  distinct reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from monitor.sim.fleet import SimFleet

log = logging.getLogger("monitor.sim")

MAX_BODY = 64 * 1024
MAX_ADD = 100  # one request adds at most this many instances
MAX_SCALING_BODY = 1 * 2**20


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def control_app(fleet: SimFleet, *, load_time_s: float = 0.0, max_instances: int = 1000) -> Starlette:
    """The control port's app. `load_time_s` is how long a new instance refuses connections."""

    async def instances(request: Request) -> JSONResponse:
        if request.method == "GET":
            return JSONResponse({"instances": fleet.describe()})
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _bad("body too large", 413)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return _bad("the body is not JSON: expected {\"add\": N} or {\"remove\": \"host:port\"}")
        if not isinstance(body, dict) or set(body) - {"add", "remove", "load_time_s"} or not (
                ("add" in body) ^ ("remove" in body)):
            return _bad("expected {\"add\": N} (optionally with \"load_time_s\") or {\"remove\": \"host:port\"}")
        if "add" in body:
            n = body["add"]
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ADD:
                return _bad(f"add: expected a whole number from 1 to {MAX_ADD}")
            if len(fleet.members) + n > max_instances:
                return _bad(f"add: the fleet is limited to {max_instances} instances (--max-instances)", 409)
            load = body.get("load_time_s", load_time_s)
            if isinstance(load, bool) or not isinstance(load, (int, float)) or not 0 <= load <= 3600:
                return _bad("load_time_s: expected seconds from 0 to 3600")
            added = await fleet.add(n, load_time_s=float(load))
            return JSONResponse({"added": added, "instances": fleet.describe()})
        name = body["remove"]
        if not isinstance(name, str):
            return _bad("remove: expected an instance's host:port or URL")
        try:
            removed = await fleet.remove(name)
        except KeyError:
            return _bad(f"remove: no instance {name!r}; members: {', '.join(fleet.urls) or 'none'}", 404)
        return JSONResponse({"removed": removed, "instances": fleet.describe()})

    return Starlette(routes=[Route("/sim/instances", instances, methods=["GET", "POST"])])


def desired_replicas(body: Any) -> int:
    """`desired_replicas` of a scaling answer; ValueError naming what is wrong."""
    if not isinstance(body, dict) or "desired_replicas" not in body:
        raise ValueError("the answer has no desired_replicas")
    value = body["desired_replicas"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise ValueError(f"desired_replicas is not a whole number >= 0: {value!r}")
    return int(value)


def next_step(current: int, desired: int, *, min_instances: int, max_instances: int) -> int:
    """+1, -1 or 0: one step toward `desired`, kept within the bounds."""
    target = max(min_instances, min(max_instances, desired))
    return (target > current) - (target < current)


class Autoscaler:
    """Polls a scaling URL and moves the fleet one step per interval toward its desired replicas."""

    def __init__(self, fleet: SimFleet, url: str, *, interval_s: float, load_time_s: float = 0.0,
                 min_instances: int = 1, max_instances: int = 1000, timeout_s: float = 5.0,
                 headers: dict[str, str] | None = None) -> None:
        self.fleet = fleet
        self.url = url
        self.interval_s = interval_s
        self.load_time_s = load_time_s
        self.min_instances = min_instances
        self.max_instances = max_instances
        self.timeout_s = timeout_s
        self.headers = headers or {}
        self.steps: list[tuple[str, int, str]] = []  # (action, desired, instance URL), for tests and logs
        self._problem: str | None = None

    async def poll_once(self, client: httpx.AsyncClient) -> int | None:
        """One poll and at most one step; returns the desired count read, None when unusable."""
        try:
            async with asyncio.timeout(self.timeout_s):
                async with client.stream("GET", self.url, headers=self.headers, timeout=self.timeout_s) as response:
                    if response.status_code != 200:
                        raise ValueError(f"HTTP {response.status_code}")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_SCALING_BODY:
                            raise ValueError("the answer is larger than 1 MiB")
            desired = desired_replicas(json.loads(body))
        except TimeoutError:
            exc_text = f"no answer within {self.timeout_s:g} s"
            if exc_text != self._problem:
                log.warning("autoscale: %s: %s; the fleet stays as it is", self.url, exc_text)
                self._problem = exc_text
            return None
        except (httpx.HTTPError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}" if isinstance(exc, httpx.HTTPError) else str(exc)
            if problem != self._problem:
                log.warning("autoscale: %s: %s; the fleet stays as it is", self.url, problem)
                self._problem = problem
            return None
        self._problem = None
        step = next_step(len(self.fleet.members), desired, min_instances=self.min_instances,
                         max_instances=self.max_instances)
        if step > 0:
            [url] = await self.fleet.add(1, load_time_s=self.load_time_s)
            self.steps.append(("add", desired, url))
            log.info("autoscale: desired %d, %d members: added %s", desired, len(self.fleet.members), url)
        elif step < 0:
            newest = self.fleet.newest()
            if newest is not None:
                await self.fleet.remove(newest)
                self.steps.append(("remove", desired, newest))
                log.info("autoscale: desired %d, %d members: removed %s", desired, len(self.fleet.members), newest)
        return desired

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                await self.poll_once(client)
                try:
                    await asyncio.wait_for(stop.wait(), self.interval_s)
                except TimeoutError:
                    pass
