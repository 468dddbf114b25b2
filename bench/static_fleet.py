"""N static vLLM pages on loopback ports from one asyncio process (the targets of scrape benchmarks).

Run as a script: `python bench/static_fleet.py N BASE_PORT PAGE_FILE`; it prints "ready" when listening.
"""

from __future__ import annotations

import asyncio
import sys


async def serve(n: int, base_port: int, page: bytes) -> None:
    metrics = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %d\r\n\r\n" % len(page) + page
    health = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                writer.write(health if b" /health " in request.split(b"\r\n", 1)[0] else metrics)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(handle, "127.0.0.1", base_port + i, backlog=512) for i in range(n)]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3], "rb").read()))  # noqa: SIM115 (read once, the process is short-lived)
