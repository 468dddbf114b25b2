"""Pages with traffic for the scrape benchmarks: every second, GROUPS realistic vLLM V1 pages whose counters
and histograms have advanced (requests finished, tokens generated, load changed), written to DIR.

Run as a script: `python bench/traffic_pages.py DIR GROUPS`; it prints "ready" once the first pages are
written, then rewrites DIR/page-<g>.txt (write, then rename: a reader never sees half a page) every second.
bench/static_fleet.py serves them (target i serves group i % GROUPS), so the cost of the traffic is one
process rendering GROUPS pages a second (about 5 ms each), whatever the number of targets. The requests
finished per second vary by group and by second, with latencies drawn around a TTFT SLO's threshold, so SLO
events, window increases and quantile interpolation all have work.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers.realistic_page import build_live


def main(out: Path, groups: int) -> None:
    servers = [build_live(seed=g) for g in range(groups)]
    rng = random.Random(1)
    first = True
    next_at = time.monotonic()
    while True:
        for g, fake in enumerate(servers):
            if not first:
                fake.finish(rng.randint(2, 8), ttft=(0.05, 0.3 + 0.2 * g), output_tokens=12)
                if rng.random() < 0.05:
                    fake.finish(1, reason="error", output_tokens=2)
                fake.set_load(rng.randint(4, 16), rng.randint(0, 4), round(rng.uniform(0.3, 0.9), 3))
            tmp = out / f".page-{g}.tmp"
            tmp.write_bytes(fake.render().encode())
            os.replace(tmp, out / f"page-{g}.txt")
        if first:
            print("ready", flush=True)
            first = False
        next_at += 1.0
        time.sleep(max(0.0, next_at - time.monotonic()))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
