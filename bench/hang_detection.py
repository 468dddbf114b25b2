"""Hang detection time, per hang shape, at a 1 s and a 5 s scrape interval (issue 15's closing figures).

The stack of tests/test_engine_e2e.py (tests/helpers/engine_stack.py), all on loopback: `slo-monitor
simulate` (--instances, half of them faulted), `slo-monitor load` (--rate requests/s round-robin over every
instance, faulted ones included, as a load balancer sends before it knows), `slo-monitor serve` with the
default health settings (hang_intervals 6, failure_threshold 3; scrape.timeout = min(2 s, interval)) but
for `max_ejection_percent: 100`, so that four simultaneous faults never wait on the ejection cap (which
would measure the cap, not the detection). Once every instance is healthy and serving, one fault per
shape goes to its own instance, one shape at a time (each cleared once detected; `--together`: all at once):

- engine_dead: the EngineCore is dead, the API server answers (vllm#39863): running 0, waiting climbing,
  /health 200;
- health_timeout: /health never answers, /metrics and the engine work on;
- frozen: /metrics serves the same page byte for byte with requests in flight on it, the engine dead
  (injected at a moment the page shows work);
- hang: the older shape, the engine stops stepping and /health never answers.

Detection time: from the fault's POST to the first 503 at the instance's check URL
(`/upstreams/{pool}/{instance}`, polled every 0.1 s), with the reason the API gave then.

    .venv/bin/python bench/hang_detection.py [--intervals 1s,5s] [--rate 8]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, table

from monitor.units import parse_duration
from tests.helpers.engine_stack import EngineStack

SHAPES = {
    "engine_dead": {"engine_dead": True},
    "health_timeout": {"health_timeout": True},
    "frozen": {"metrics_frozen": True, "engine_dead": True},
    "hang": {"hang": True},
}


def busy(page: str) -> bool:
    values = [float(m.group(1)) for m in re.finditer(r"^vllm:num_requests_(?:running|waiting)\{[^}]*\} (\S+)$", page, re.M)]
    return sum(values) > 0


def measure(interval: str, rate: float, deadline_s: float, together: bool) -> tuple[dict[str, tuple[float, str]], list[str]]:
    """({shape: (seconds to the 503, the reason then)}, the pool's fail-open reasons seen meanwhile).

    One shape at a time (each fault cleared once detected), or all at once with `together`."""
    healthy = 2
    n = healthy + len(SHAPES)
    with tempfile.TemporaryDirectory(prefix="bench-hang-") as tmp, \
            EngineStack(Path(tmp), n, {"scrape": {"interval": interval}}, rate=rate, output_tokens=60,
                        health={"max_ejection_percent": 100}, base_port=26000) as stack:
        stack.wait(lambda: all(r["state"] == "healthy" and r["metrics"]["generation_tokens_per_s"]
                               for r in stack.by_instance().values()), 120, "all healthy and serving")
        results: dict[str, tuple[float, str]] = {}
        fail_open: list[str] = []  # why the pool failed open while faults were pending (holds every ejection)
        done = threading.Event()

        def watch_fail_open() -> None:
            while not done.is_set():
                for row in stack.by_instance().values():
                    for reason in row["reasons"]:
                        if reason.startswith("failing open") and reason not in fail_open:
                            fail_open.append(reason)
                time.sleep(0.2)

        def inject(shape: str, index: int) -> float:
            body = SHAPES[shape]
            if shape == "frozen":  # a frozen page must show requests in flight
                while True:
                    stack.wait(lambda: busy(stack.page(index)), 30, "requests in flight")
                    at = time.monotonic()
                    stack.fault(index, body)
                    if busy(stack.page(index)):
                        return at
                    stack.fault(index, {})  # a request finished in between: again
            at = time.monotonic()
            stack.fault(index, body)
            return at

        def watch(shape: str, index: int, injected: float) -> None:
            instance = stack.instances[index]
            while time.monotonic() - injected < deadline_s:
                if stack.check_url(index).status_code == 503:
                    seconds = time.monotonic() - injected
                    reasons = stack.by_instance()[instance]["reasons"]
                    results[shape] = (seconds, next((r for r in reasons if r.startswith("hung")), reasons[0]))
                    return
                time.sleep(0.1)
            results[shape] = (float("nan"), "not detected")

        threading.Thread(target=watch_fail_open, daemon=True).start()
        watchers = []
        for offset, shape in enumerate(SHAPES):
            index = healthy + offset
            injected = inject(shape, index)
            if together:
                watchers.append(threading.Thread(target=watch, args=(shape, index, injected), daemon=True))
                watchers[-1].start()
            else:
                watch(shape, index, injected)
                stack.fault(index, {})  # cleared: its /health answers again and cannot slow the next cycles
                time.sleep(2 * parse_duration(interval))
        for watcher in watchers:
            watcher.join()
        done.set()
        for index in range(healthy):
            assert stack.check_url(index).status_code == 200, "a healthy instance lost its 200"
        return results, fail_open


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--intervals", default="1s,5s", help="scrape intervals to measure, comma-separated")
    ap.add_argument("--rate", type=float, default=8.0, help="requests/s over all instances")
    ap.add_argument("--deadline", type=float, default=120.0, help="give up on a shape this long after its fault")
    ap.add_argument("--together", action="store_true",
                    help="inject every shape at once instead of one after the other (a /health that times out "
                         "lengthens every scrape cycle, so the others are detected later)")
    args = ap.parse_args()
    print(load_average())
    rows = []
    for interval in args.intervals.split(","):
        seconds = parse_duration(interval)
        found, fail_open = measure(interval, args.rate, args.deadline, args.together)
        for reason in fail_open:
            print(f"{interval}: {reason}")
        for shape in SHAPES:
            t, reason = found[shape]
            rows.append((interval, shape, f"{t:.1f}", f"{t / seconds:.1f}", reason[:90]))
    print(table(rows, ("interval", "shape", "detected after (s)", "intervals", "reason")))


if __name__ == "__main__":
    main()
