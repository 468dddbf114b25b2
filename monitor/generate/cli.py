"""`slo-monitor generate --config FILE --out DIR` (docs/cli.md)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate", help="write Grafana dashboards, Prometheus rules and their promtool tests",
        description="Writes DIR/dashboards/*.json (+ Grafana provisioning), DIR/alerts/*.rules.yml with a promtool "
                    "unit test *.test.yml beside each, DIR/alerts/prometheus.yml and DIR/alerts/alertmanager.yml "
                    "for the SLOs and pools in FILE.")
    p.add_argument("--config", required=True, help="YAML config (the one the service runs with)")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--rule-interval", default="1m",
                   help="evaluation interval of the generated rule groups (default 1m; must divide 5m); long "
                        "windows are summed from 5-minute recordings taken at this interval")
    p.add_argument("--scrape-interval", default="15s", help="scrape interval in the example prometheus.yml")
    p.add_argument("--service-target", help="HOST:PORT Prometheus scrapes slo-monitor at (default: api.listen), "
                                            "e.g. slo-monitor:9470 in docker-compose")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from monitor.config import load_config as _load_config
    from monitor.errors import BadInput
    from monitor.config import parse_duration, parse_listen
    from monitor.generate.layout import Options, generate, left_out

    loaded = _load_config(args.config)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        interval = parse_duration(args.rule_interval)
        parse_duration(args.scrape_interval)
        service_target = parse_listen(args.service_target) if args.service_target else None
    except ValueError as exc:
        raise BadInput(f"--rule-interval/--scrape-interval/--service-target: {exc}") from None
    # every recorded window (5m, 30m, ... the SLO window) must be a whole number of rule intervals,
    # or `sum_over_time(...) * interval` would count a fraction of a recording twice or not at all
    if interval > 300 or abs(300 / interval - round(300 / interval)) > 1e-9:
        raise BadInput(f"--rule-interval: {args.rule_interval} does not divide 5m evenly (use e.g. 15s, 30s, 1m)")
    bad_windows = [s.name for s in loaded.config.slos if abs(s.window / interval - round(s.window / interval)) > 1e-9]
    if bad_windows:
        raise BadInput(f"--rule-interval: does not divide the window of SLO(s) {', '.join(bad_windows)}")
    written = generate(loaded.config, args.out, Options(rule_interval_s=interval, scrape_interval=args.scrape_interval,
                                                          service_target=service_target))
    for path in written:
        print(path)
    for note in left_out(loaded.config):
        print(f"note: {note}", file=sys.stderr)
    return 0
