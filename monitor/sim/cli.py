"""`slo-monitor simulate --instances N --base-port P`: a simulated vLLM fleet until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

log = logging.getLogger("monitor.sim")


def _list(kind):
    """A comma-separated list, one value per instance, cycled (`--speed 1,1,0.5`)."""

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None

    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("simulate", help="run N simulated vLLM instances until stopped",
                              description="Serves vLLM's /metrics, /health, /v1/models, /v1/completions and "
                                          "/v1/chat/completions on ports P..P+N-1, plus POST /sim/faults.")
    p.add_argument("--instances", type=int, required=True, help="how many instances")
    p.add_argument("--base-port", type=int, required=True, help="port of the first instance (0: free ports)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--metrics-version", choices=["v1", "v0"], default="v1",
                   help="V1 metric names (vLLM 0.16, default) or V0 names (vLLM 0.8.5 V0 engine)")
    p.add_argument("--ground-truth", metavar="FILE", help="write one JSON line per finished request")
    p.add_argument("--otlp-endpoint", metavar="URL",
                   help="send one vLLM V1-shaped `llm_request` span per finished request to this OTLP/HTTP "
                        "traces URL (e.g. http://127.0.0.1:9470/v1/traces)")
    p.add_argument("--otlp-service-name", metavar="NAME",
                   help="service.name of the spans (default $OTEL_SERVICE_NAME, else vllm)")
    p.add_argument("--model", help="served model name (default meta-llama/Llama-3.1-8B-Instruct)")
    p.add_argument("--speed", type=_list(float), default=(), help="per-instance speed factors, e.g. 1,1,0.5")
    p.add_argument("--kv-blocks", type=_list(int), default=(), help="per-instance KV cache blocks (16 tokens each)")
    p.add_argument("--max-num-seqs", type=_list(int), default=(), help="per-instance batch slots")
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--time-scale", type=float, default=1.0, help="wall seconds per simulated second (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--status-every", type=float, default=30.0, help="log a status line every N seconds (0: never)")
    p.set_defaults(func=cmd_simulate)


def fleet_params(args: argparse.Namespace):
    from monitor.cli import BadInput
    from monitor.sim.params import FleetSpec, InstanceParams

    problems = []
    if args.instances < 1:
        problems.append("--instances: must be at least 1")
    if not 0 <= args.base_port <= 65535 or (args.base_port and args.base_port + args.instances - 1 > 65535):
        problems.append("--base-port: the ports P..P+N-1 must lie in 1..65535 (or use 0 for free ports)")
    if any(s <= 0 for s in args.speed):
        problems.append("--speed: factors must be positive")
    if any(k < 1 for k in args.kv_blocks):
        problems.append("--kv-blocks: must be at least 1")
    if any(m < 1 for m in args.max_num_seqs):
        problems.append("--max-num-seqs: must be at least 1")
    base = None
    try:
        changes = {"max_model_len": args.max_model_len, "time_scale": args.time_scale, "seed": args.seed}
        if args.model:
            changes["model"] = args.model
        base = InstanceParams(**changes)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise BadInput("\n".join(problems))
    spec = FleetSpec(args.instances, base, args.speed, args.kv_blocks, args.max_num_seqs)
    return [spec.params(i) for i in range(args.instances)]


def _otlp_endpoint(url: str | None) -> str | None:
    """The `--otlp-endpoint` URL, checked here so a typo is one clear line, not an exporter's retry log.
    A URL without a path gets OTLP/HTTP's `/v1/traces`, as OTEL_EXPORTER_OTLP_ENDPOINT does."""
    from urllib.parse import urlsplit

    from monitor.cli import BadInput
    from monitor.units import parse_http_url

    if not url:
        return None
    try:
        checked = parse_http_url(url)
    except ValueError as exc:
        raise BadInput(f"--otlp-endpoint: {exc}") from None
    return checked if urlsplit(checked).path not in ("", "/") else checked + "/v1/traces"


def cmd_simulate(args: argparse.Namespace) -> int:
    from monitor.cli import BadInput
    from monitor.sim.fleet import SimFleet

    params = fleet_params(args)
    endpoint = _otlp_endpoint(args.otlp_endpoint)
    fleet = SimFleet(params, version=args.metrics_version, host=args.host, ground_truth=args.ground_truth,
                     otlp_endpoint=endpoint,
                     otlp_service_name=args.otlp_service_name or os.environ.get("OTEL_SERVICE_NAME"))
    ports = [0] * len(params) if args.base_port == 0 else [args.base_port + i for i in range(len(params))]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            urls = await fleet.start(ports)
        except OSError as exc:
            raise BadInput(f"--base-port: cannot bind {args.host}: {exc.strerror or exc}") from None
        print(f"simulating {len(urls)} vLLM instance(s), {args.metrics_version} metrics, model {params[0].model}:",
              flush=True)
        for url in urls:
            print(f"  {url}", flush=True)
        if endpoint:
            print(f"sending llm_request spans to {endpoint}", flush=True)
        try:
            await _status_loop(fleet, stop, args.status_every)
        finally:
            await fleet.stop()
        print("stopped", flush=True)

    asyncio.run(main())
    return 0


async def _status_loop(fleet, stop: asyncio.Event, every_s: float) -> None:
    """Until stopped, log what each engine is doing and how late its steps end against their schedule
    (`late`: a few tenths of a millisecond is timer rounding; tens of milliseconds mean this process
    simulates more than its CPU can keep up with, and every latency it reports is inflated)."""
    before = [(i.engine.lag_s, i.engine.steps) for i in fleet.instances]
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every_s if every_s > 0 else None)
        except TimeoutError:
            pass
        if stop.is_set() or every_s <= 0:
            continue
        for k, instance in enumerate(fleet.instances):
            e = instance.engine
            lag, steps = e.lag_s - before[k][0], e.steps - before[k][1]
            before[k] = (e.lag_s, e.steps)
            log.info("%s running %d waiting %d kv %.0f%% preemptions %d steps %d late %.1f ms/step faults %s",
                     e.name, len(e.running), len(e.waiting), e.kv.usage * 100, e.preemptions, steps,
                     1000 * lag / steps if steps else 0.0, e.faults.active or "none")
