"""`slo-monitor simulate --instances N --base-port P`: a simulated vLLM fleet until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from monitor.errors import BadInput

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
                                          "/v1/chat/completions on ports P..P+N-1, plus POST /sim/faults and "
                                          "/sim/control; with --control-port, POST /sim/instances adds and "
                                          "removes instances while it runs.")
    p.add_argument("--instances", type=int, required=True, help="how many instances")
    p.add_argument("--base-port", type=int, required=True, help="port of the first instance (0: free ports)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--metrics-version", choices=["latest", "v1", "v0"], default="latest",
                   help="current vLLM's page (latest, default: 0.33 families such as waiting by reason and "
                        "admission rejections), V1 names of vLLM 0.16 (v1), or V0 names of the vLLM 0.8.5 "
                        "V0 engine (v0); switchable live with POST /sim/control {\"metrics_version\": ...}")
    p.add_argument("--spec-decode-acceptance", type=float, metavar="RATE",
                   help="decode speculatively, accepting this share (0-1) of draft tokens (default: off)")
    p.add_argument("--num-speculative-tokens", type=int, default=3,
                   help="draft tokens per speculative step (default 3)")
    p.add_argument("--max-num-queued-reqs", type=int, metavar="N",
                   help="refuse requests with 503 beyond N waiting (vLLM's flag; default: no limit)")
    p.add_argument("--control-port", type=int, metavar="PORT",
                   help="serve POST/GET /sim/instances here ({\"add\": N} / {\"remove\": \"host:port\"}); "
                        "0 picks a free port")
    p.add_argument("--model-load-time", type=float, default=0.0, metavar="S",
                   help="seconds an added instance refuses connections before it serves (default 0)")
    p.add_argument("--file-sd", metavar="PATH",
                   help="keep a Prometheus file_sd JSON file of the live instances here (atomic rewrites)")
    p.add_argument("--autoscale-from", metavar="URL",
                   help="poll this /api/v1/pools/{pool}/scaling URL as KEDA would and move the fleet toward "
                        "its desired_replicas")
    p.add_argument("--autoscale-interval", type=float, default=15.0, metavar="S",
                   help="seconds between polls; at most one instance added or removed per poll (default 15)")
    p.add_argument("--max-instances", type=int, default=64,
                   help="the fleet never grows beyond this many instances (default 64)")
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
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a label on the instances' file_sd target group (repeatable), e.g. version=v2")
    p.add_argument("--tpot-factor", type=float, default=1.0, help="decode steps cost this many times more (a canary)")
    p.add_argument("--ttft-factor", type=float, default=1.0, help="prefill costs this many times more (a canary)")
    p.add_argument("--mean-output-tokens", type=int, default=200, help="mean natural answer length (default 200)")
    p.add_argument("--status-every", type=float, default=30.0, help="log a status line every N seconds (0: never)")
    p.set_defaults(func=cmd_simulate)


def sim_labels(items: list[str]) -> dict[str, str]:
    """`--label KEY=VALUE` flags as the file_sd group's labels (the monitor's canary groups read them)."""
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not (key.strip()[0].isalpha() or key.strip()[0] == "_") \
                or not all(c.isalnum() or c == "_" for c in key.strip()):
            raise BadInput(f"--label: {item!r} is not KEY=VALUE with a label name (letters, digits, _)")
        labels[key.strip()] = value
    return labels


def fleet_params(args: argparse.Namespace):
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
    spec = getattr(args, "spec_decode_acceptance", None)
    if spec is not None and not 0.0 <= spec <= 1.0:
        problems.append("--spec-decode-acceptance: must be from 0 to 1")
    if getattr(args, "num_speculative_tokens", 3) < 1:
        problems.append("--num-speculative-tokens: must be at least 1")
    queued = getattr(args, "max_num_queued_reqs", None)
    if queued is not None and queued < 1:
        problems.append("--max-num-queued-reqs: must be at least 1")
    control = getattr(args, "control_port", None)
    if control is not None and not 0 <= control <= 65535:
        problems.append("--control-port: must lie in 0..65535")
    if not 0 <= getattr(args, "model_load_time", 0.0) <= 3600:
        problems.append("--model-load-time: seconds from 0 to 3600")
    if getattr(args, "autoscale_interval", 15.0) <= 0:
        problems.append("--autoscale-interval: must be positive")
    if getattr(args, "max_instances", 64) < args.instances:
        problems.append("--max-instances: must be at least --instances")
    base = None
    try:
        changes = {"max_model_len": args.max_model_len, "time_scale": args.time_scale, "seed": args.seed,
                   "spec_decode_acceptance": spec, "num_speculative_tokens": getattr(args, "num_speculative_tokens", 3),
                   "max_num_queued_reqs": queued, "tpot_factor": getattr(args, "tpot_factor", 1.0),
                   "ttft_factor": getattr(args, "ttft_factor", 1.0),
                   "mean_output_tokens": getattr(args, "mean_output_tokens", 200)}
        if args.model:
            changes["model"] = args.model
        base = InstanceParams(**changes)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise BadInput("\n".join(problems))
    assert base is not None  # built above unless a problem was found
    spec = FleetSpec(args.instances, base, args.speed, args.kv_blocks, args.max_num_seqs)
    return [spec.params(i) for i in range(args.instances)]


def _otlp_endpoint(url: str | None) -> str | None:
    """The `--otlp-endpoint` URL, checked here so a typo is one clear line, not an exporter's retry log.
    A URL without a path gets OTLP/HTTP's `/v1/traces`, as OTEL_EXPORTER_OTLP_ENDPOINT does."""
    from urllib.parse import urlsplit

    from monitor.units import parse_http_url

    if not url:
        return None
    try:
        checked = parse_http_url(url)
    except ValueError as exc:
        raise BadInput(f"--otlp-endpoint: {exc}") from None
    return checked if urlsplit(checked).path not in ("", "/") else checked + "/v1/traces"


def cmd_simulate(args: argparse.Namespace) -> int:
    from monitor.sim.fleet import SimFleet

    params = fleet_params(args)
    endpoint = _otlp_endpoint(args.otlp_endpoint)
    autoscale = _scaling_url(args.autoscale_from)
    fleet = SimFleet(params, version=args.metrics_version, host=args.host, ground_truth=args.ground_truth,
                     otlp_endpoint=endpoint,
                     otlp_service_name=args.otlp_service_name or os.environ.get("OTEL_SERVICE_NAME"),
                     file_sd=args.file_sd, file_sd_labels=sim_labels(args.label))
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
        if args.file_sd:
            print(f"file_sd: {args.file_sd}", flush=True)
        tasks = []
        control_server = None
        try:
            if args.control_port is not None:
                control_server, control_task, control_url = await _control_server(fleet, args)
                tasks.append(control_task)
                print(f"control: {control_url}/sim/instances", flush=True)
            if autoscale:
                from monitor.sim.control import Autoscaler

                scaler = Autoscaler(fleet, autoscale, interval_s=args.autoscale_interval,
                                    load_time_s=args.model_load_time, max_instances=args.max_instances)
                tasks.append(asyncio.get_running_loop().create_task(scaler.run(stop)))
                print(f"autoscaling from {autoscale} every {args.autoscale_interval:g} s", flush=True)
            await _status_loop(fleet, stop, args.status_every)
        finally:
            if control_server is not None:
                control_server.should_exit = True
            await asyncio.gather(*tasks, return_exceptions=True)
            await fleet.stop()
        print("stopped", flush=True)

    asyncio.run(main())
    return 0


def _scaling_url(url: str | None) -> str | None:
    from monitor.units import parse_http_url

    if not url:
        return None
    try:
        return parse_http_url(url)
    except ValueError as exc:
        raise BadInput(f"--autoscale-from: {exc}") from None


async def _control_server(fleet, args: argparse.Namespace):
    """The control port's server, bound before returning (so its URL can be printed)."""
    import uvicorn

    from monitor.sim.control import control_app
    from monitor.sim.fleet import QuietServer, bind_socket

    try:
        sock = bind_socket(args.host, args.control_port)
    except OSError as exc:
        raise BadInput(f"--control-port: cannot bind {args.host}:{args.control_port}: {exc.strerror or exc}") from None
    app = control_app(fleet, load_time_s=args.model_load_time, max_instances=args.max_instances)
    server = QuietServer(uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                        lifespan="off"))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    host = f"[{args.host}]" if ":" in args.host else args.host
    return server, task, f"http://{host}:{sock.getsockname()[1]}"


async def _status_loop(fleet, stop: asyncio.Event, every_s: float) -> None:
    """Until stopped, log what each engine is doing and how late its steps end against their schedule
    (`late`: a few tenths of a millisecond is timer rounding; tens of milliseconds mean this process
    simulates more than its CPU can keep up with, and every latency it reports is inflated)."""
    before: dict[int, tuple[float, int]] = {}
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every_s if every_s > 0 else None)
        except TimeoutError:
            pass
        if stop.is_set() or every_s <= 0:
            continue
        for instance in list(fleet.instances):  # instances join and leave while this runs
            e = instance.engine
            last_lag, last_steps = before.get(id(e), (0.0, 0))
            lag, steps = e.lag_s - last_lag, e.steps - last_steps
            before[id(e)] = (e.lag_s, e.steps)
            log.info("%s running %d waiting %d kv %.0f%% preemptions %d steps %d late %.1f ms/step faults %s",
                     e.name, len(e.running), len(e.waiting), e.kv.usage * 100, e.preemptions, steps,
                     1000 * lag / steps if steps else 0.0, e.faults.active or "none")
