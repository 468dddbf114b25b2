"""N vLLM pages on loopback ports from one asyncio process (the targets of scrape benchmarks).

Run as a script: `python bench/static_fleet.py N BASE_PORT PAGE` ; it prints "ready" when listening.
PAGE is a file (every target serves it, byte-identical forever: a frozen page) or a directory written by
bench/traffic_pages.py (target i serves DIR/page-<i % groups>.txt, read again every second: a page with
traffic).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


def answer(page: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %d\r\n\r\n" % len(page) + page


async def serve(n: int, base_port: int, source: Path) -> None:
    health = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    files = sorted(source.glob("page-*.txt"), key=lambda f: int(f.stem.split("-")[1])) if source.is_dir() else [source]
    pages = [answer(f.read_bytes()) for f in files]

    async def reread() -> None:  # the generator rewrites the pages every second
        while True:
            await asyncio.sleep(1.0)
            for k, f in enumerate(files):
                try:
                    pages[k] = answer(f.read_bytes())
                except OSError:
                    pass

    def handler(i: int):
        group = i % len(pages)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    request = await reader.readuntil(b"\r\n\r\n")
                    writer.write(health if b" /health " in request.split(b"\r\n", 1)[0] else pages[group])
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
        return handle

    servers = [await asyncio.start_server(handler(i), "127.0.0.1", base_port + i, backlog=512)
               for i in range(n)]
    print("ready", flush=True)
    tasks = [s.serve_forever() for s in servers]
    if source.is_dir():
        tasks.append(reread())
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])))
