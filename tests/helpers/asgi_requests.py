"""Any request (method, raw query string, body) through the service's ASGI app in-process, without
its lifespan: for the properties that throw arbitrary input at the API."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


async def send(app: Any, method: str, path: str, *, headers: dict[str, str] | None = None,
               content: bytes | None = None) -> httpx.Response:
    """`path` may carry a raw query string (`/x?limit=%ff`); it is sent as given."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path, headers=headers, content=content)


def request(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return asyncio.run(send(app, method, path, **kwargs))
