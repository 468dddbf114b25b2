"""Calling the service's ASGI app in-process, without its lifespan (nothing scrapes)."""

from __future__ import annotations

import asyncio

import httpx

# the bearer token the API tests configure (`api.token: s3cret`)
AUTH = {"Authorization": "Bearer s3cret"}


class Client:
    """GETs through the ASGI app in-process; the lifespan (scraping) is never started."""

    def __init__(self, app) -> None:
        self.app = app

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.get(path, headers=headers)

        return asyncio.run(call())
