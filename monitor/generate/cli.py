"""`slo-monitor generate --config FILE --out DIR [--format plain|prometheus-operator ...]` (docs/cli.md)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import TYPE_CHECKING

from monitor.config import load_config, parse_duration, parse_listen
from monitor.errors import BadInput

if TYPE_CHECKING:
    from monitor.generate.kubernetes import KubernetesOptions

FORMATS = ("plain", "prometheus-operator")  # monitor.generate.layout.FORMATS, without importing grafanalib here
# Kubernetes' own rules: a label key is an optional DNS-subdomain prefix and a name; a value is short
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate", help="write Grafana dashboards, Prometheus rules and their promtool tests",
        description="Writes, for the SLOs and pools in FILE: with --format plain (the default) DIR/dashboards/*.json "
                    "(+ Grafana provisioning), DIR/alerts/*.rules.yml with a promtool unit test *.test.yml beside "
                    "each, DIR/alerts/prometheus.yml and DIR/alerts/alertmanager.yml; with --format "
                    "prometheus-operator DIR/prometheus-operator/: one Kubernetes object per file (PrometheusRule "
                    "per rule set, ServiceMonitor, PodMonitor, KEDA ScaledObject per pool and TriggerAuthentication, "
                    "a dashboard ConfigMap per dashboard) and a kustomization.yaml listing them.")
    p.add_argument("--config", required=True, help="YAML config (the one the service runs with)")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--format", action="append", choices=FORMATS, dest="formats", metavar="FORMAT",
                   help="plain (default) or prometheus-operator; give it twice for both")
    p.add_argument("--rule-interval", default="1m",
                   help="evaluation interval of the generated rule groups (default 1m; must divide 5m); long "
                        "windows are summed from 5-minute recordings taken at this interval")
    p.add_argument("--scrape-interval", default="15s",
                   help="scrape interval in the example prometheus.yml and the Service/PodMonitor")
    p.add_argument("--service-target", help="HOST:PORT Prometheus scrapes slo-monitor at (default: api.listen), "
                                            "e.g. slo-monitor:9470 in docker-compose")
    k8s = p.add_argument_group("prometheus-operator format")
    k8s.add_argument("-n", "--namespace", default="default",
                     help="namespace of every object: where the vLLM pods and their Deployments run (default: default)")
    k8s.add_argument("--monitor-namespace", help="namespace of slo-monitor's Service (default: --namespace)")
    k8s.add_argument("--monitor-service", default="slo-monitor", help="slo-monitor's Service name (default: slo-monitor)")
    k8s.add_argument("--monitor-port", type=int, default=None,
                     help="slo-monitor's Service port, for KEDA's URL (default: the port of api.listen; "
                          "deploy/kubernetes serves 9470)")
    k8s.add_argument("--rule-labels", action="append", default=[], metavar="KEY=VALUE",
                     help="label on every PrometheusRule, for the operator's ruleSelector (repeatable), "
                          "e.g. release=kube-prometheus-stack")
    k8s.add_argument("--monitor-labels", action="append", default=[], metavar="KEY=VALUE",
                     help="label on the ServiceMonitor and PodMonitor, for the operator's selectors (repeatable)")
    k8s.add_argument("--pool-label", default="pool",
                     help="pod label whose value is the vLLM pod's pool name (default: pool)")
    k8s.add_argument("--vllm-port", default="http", help="named container port of vLLM's /metrics (default: http)")
    k8s.add_argument("--scale-target", default="vllm-{pool}",
                     help="Deployment a pool's ScaledObject scales; {pool} is the pool's name as in the config "
                          "(default: vllm-{pool})")
    k8s.add_argument("--token-secret", default="slo-monitor",
                     help="Secret with the API token for KEDA's TriggerAuthentication (default: slo-monitor)")
    k8s.add_argument("--token-key", default="token", help="key of the token in that Secret (default: token)")
    p.set_defaults(func=cmd_generate)


def _labels(flag: str, items: list[str]) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not LABEL_KEY.match(key) or not LABEL_VALUE.match(value):
            raise BadInput(f"{flag}: {item!r} is not KEY=VALUE with a Kubernetes label key and value "
                           "(e.g. release=kube-prometheus-stack)")
        out[key] = value
    return tuple(out.items())


def _kubernetes_options(args: argparse.Namespace, listen: str) -> KubernetesOptions:
    from monitor.generate.kubernetes import KubernetesOptions  # loads the generator: see cmd_generate

    for flag, value in (("--namespace", args.namespace), ("--monitor-namespace", args.monitor_namespace),
                        ("--monitor-service", args.monitor_service), ("--token-secret", args.token_secret)):
        if value is not None and not DNS_LABEL.match(value):
            raise BadInput(f"{flag}: {value!r} is not a Kubernetes name (lower-case letters, digits and '-')")
    if not LABEL_KEY.match(args.pool_label):
        raise BadInput(f"--pool-label: {args.pool_label!r} is not a Kubernetes label key")
    if "{pool}" not in args.scale_target:
        raise BadInput(f"--scale-target: {args.scale_target!r} has no {{pool}}: every pool would scale one Deployment")
    return KubernetesOptions(
        namespace=args.namespace, monitor_namespace=args.monitor_namespace, monitor_service=args.monitor_service,
        monitor_port=args.monitor_port or int(listen.rpartition(":")[2]), rule_labels=_labels("--rule-labels", args.rule_labels),
        monitor_labels=_labels("--monitor-labels", args.monitor_labels), pool_label=args.pool_label,
        vllm_port=args.vllm_port, scale_target=args.scale_target, token_secret=args.token_secret,
        token_key=args.token_key)


def cmd_generate(args: argparse.Namespace) -> int:
    # grafanalib and the rest of generation load only when this command runs (startup of the others)
    from monitor.generate.layout import Options, generate, left_out, warnings

    loaded = load_config(args.config)
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
    formats = tuple(dict.fromkeys(args.formats or ["plain"]))
    # relative file_sd globs are read from slo-monitor's working directory: taken to be this one
    options = Options(rule_interval_s=interval, scrape_interval=args.scrape_interval, service_target=service_target,
                      formats=formats, kubernetes=_kubernetes_options(args, loaded.config.api.listen),
                      working_dir=os.getcwd())
    written = generate(loaded.config, args.out, options)
    for path in written:
        print(path)
    for warning in warnings(loaded.config, options):
        print(f"warning: {warning}", file=sys.stderr)
    for note in left_out(loaded.config):
        print(f"note: {note}", file=sys.stderr)
    return 0
