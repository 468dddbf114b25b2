"""/metrics' per-instance families written straight to text (issue 21: prometheus_client's writer took a
tenth of the service's CPU at 1,000 instances): the bytes must be exactly what prometheus_client writes
for the same families, for any snapshot: label values with quotes, backslashes, newlines and non-ASCII,
figures absent or present, several models per instance, values at the float range's edges."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.decide.verdicts import STATES
from monitor.evaluate.fleet import InstanceView
from monitor.evaluate.windows import FIGURE_NAMES
from monitor.publish.fleet_text import fleet_text
from monitor.publish.metrics import Collected, FleetCollector, FleetSnapshot, InstanceRow

FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
text = st.text(max_size=8) | st.sampled_from(['a"b', "a\\b", "a\nb", "µ", "", "pool-1", "10.0.0.1:8000"])
value = st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, 1e-9, 123456789.0, 5e-324])
figures = st.dictionaries(st.sampled_from(FIGURE_NAMES), value, max_size=len(FIGURE_NAMES))


@st.composite
def row(draw) -> InstanceRow:
    models = draw(st.dictionaries(text, figures, max_size=3))
    view = InstanceView(draw(text), draw(text), "http://x", None, {}, models, None,
                        draw(st.none() | st.floats(0, 100)), None,
                        bad_samples_total=draw(st.dictionaries(st.sampled_from(["non_finite", "duplicate"]),
                                                               st.integers(0, 10**6))))
    return InstanceRow(view, draw(st.sampled_from(STATES)), draw(st.booleans()), draw(st.none() | st.floats(0, 2e9)),
                       draw(st.integers(0, 10**6)))


@FUZZ
@given(st.lists(row(), max_size=4), st.floats(0, 2e9))
def test_the_fast_text_is_byte_for_byte_what_prometheus_client_writes(rows, at) -> None:
    snap = FleetSnapshot(at, tuple(rows), len(rows), None, 0, None)
    assert fleet_text(snap) == generate_latest(Collected(FleetCollector.instance_families(snap))).decode()


def test_a_fleet_reads_back_as_one_series_per_instance_and_figure() -> None:
    view = InstanceView("p", 'i"1', "http://x", None, {}, {"m": {"ttft_p99_s": 0.25, "error_ratio": 0.0}}, None, 0.01, None)
    snap = FleetSnapshot(100.0, (InstanceRow(view, "healthy", True, 90.0, 0),), 1, None, 0, None)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(fleet_text(snap)) for s in family.samples}
    assert samples[("slo_monitor_instance_ttft_seconds",
                    (("instance", 'i"1'), ("model_name", "m"), ("pool", "p"), ("quantile", "0.99")))] == 0.25
    assert samples[("slo_monitor_last_scrape_age_seconds", (("instance", 'i"1'), ("pool", "p")))] == 10.0
    assert samples[("slo_monitor_instance_state", (("instance", 'i"1'), ("pool", "p"), ("state", "healthy")))] == 1.0
