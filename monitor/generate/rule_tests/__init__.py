"""promtool unit tests (`*.test.yml`) shipped with every generated rule file.

The rooms: `series` (promtool's notation), `model` (what the SLO rules compute from an input),
`inputs` (scenario series per indicator), `slo` (each SLO's test file) and `operations` (the fleet's
and the service's test files). This module only re-exports.
"""

from monitor.generate.rule_tests.model import Clock, Model, prom_rate
from monitor.generate.rule_tests.operations import fleet_test_file, service_test_file
from monitor.generate.rule_tests.series import series_values
from monitor.generate.rule_tests.slo import slo_test_file

__all__ = ["Clock", "Model", "fleet_test_file", "prom_rate", "series_values", "service_test_file", "slo_test_file"]
