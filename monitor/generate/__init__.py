"""`slo-monitor generate`: Grafana dashboards, Prometheus rules and their promtool tests from the config.

Teams that already run Prometheus and Grafana get the SLOs and the fleet view there, from the same
config and the same arithmetic (`monitor.evaluate.slo`) as the service, without running the
service's own alerting. Output layout (docs/cli.md and `monitor.generate.layout`), under DIR:

* `dashboards/*.json` and `dashboards/provisioning/{datasources,dashboards}/llm-slo-monitor.yml`;
* `alerts/<set>.rules.yml` with `alerts/<set>.test.yml` beside each (promtool unit tests), where a
  set is one SLO (`slo-<name>`), the fleet (`fleet`) or slo-monitor's decisions (`decisions`);
* `alerts/prometheus.yml` (scrape config with the `pool` label the rules need) and
  `alerts/alertmanager.yml` (routing and the page-inhibits-ticket rule).

The rooms: `expressions` (PromQL building blocks), `sli` (each indicator's PromQL), `rules` (per
SLO), `rules_fleet`, `rules_service`, `rule_tests` (promtool tests), `panels` and `dashboard_*` (one
per dashboard), `dashboards` (Grafana JSON), `configs` (Prometheus, Alertmanager, Grafana
provisioning), `scrape_discovery` (the pools' discovery in prometheus.yml, and warnings for what it cannot mirror), `docs` (the READMEs), `yaml_text` (how YAML is written) and `layout` (what goes where, and writing it). This module only
re-exports; nothing in the package imports it.
"""

from monitor.generate.layout import Options, generate, render_all, rule_sets
from monitor.generate.yaml_text import MARK, to_yaml

__all__ = ["Options", "generate", "render_all", "rule_sets", "to_yaml", "MARK"]
