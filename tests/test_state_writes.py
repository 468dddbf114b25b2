"""What the store writes on every change of state: a pool's health state (the whole fleet's, replaced in
place) and the audit entries, with numbers JSON cannot hold (inf, nan) kept as strings, on SQLite and
PostgreSQL; the JSON columns' serializer and `InstanceHealth.to_dict` against the slower rules they
replaced."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.decide.health import InstanceHealth
from monitor.store import Store, upgrade
from monitor.store.audit import AuditEntry
from monitor.store.rows import json_text, jsonable

T0 = 1_790_000_040.0

leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(), st.text(max_size=8))
values = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner),
    st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-9, 9)), inner, max_size=4)), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(values)
def test_a_json_column_holds_what_the_jsonable_walk_made_of_any_value_and_never_a_nan_token(value):
    stored = json.loads(json_text(value), parse_constant=refuse)  # no NaN or Infinity token
    assert stored == json.loads(json.dumps(jsonable(value), allow_nan=False))


def refuse(token: str) -> None:
    raise AssertionError(f"{token} written into a JSON column")


healths = st.builds(
    InstanceHealth, instance=st.text(min_size=1, max_size=10), state=st.sampled_from(["healthy", "ejected"]),
    reasons=st.lists(st.text(max_size=10), max_size=3).map(tuple), since=st.none() | st.floats(0, 2e9),
    ejections=st.integers(0, 9), ejection_reasons=st.lists(st.text(max_size=10), max_size=2).map(tuple),
    last_progress=st.none() | st.tuples(st.none() | st.floats(0, 1e9), st.floats(0, 1e9)),
    last_signals=st.dictionaries(st.text(max_size=8), st.none() | st.floats() | st.text(max_size=5), max_size=5))


@given(healths)
def test_an_instances_saved_state_is_every_field_as_the_deep_copy_wrote_it_and_reads_back(health):
    old = asdict(health)
    old["reasons"], old["ejection_reasons"] = list(health.reasons), list(health.ejection_reasons)
    saved = health.to_dict()
    assert saved == old or json_text(saved) == json_text(old)  # nan != nan: compared as stored
    assert saved["last_signals"] is not health.last_signals  # the reader's copy
    assert InstanceHealth.from_dict(json.loads(json_text(saved))).state == health.state


def test_the_health_state_is_replaced_in_place_and_non_finite_figures_are_stored_as_strings(db_url):
    upgrade(db_url)
    store = Store.open(db_url)
    try:
        assert store.load_state("health") is None
        store.queue_state("health", {"chat": {"10.0.0.1:8000": {"state": "ejected", "ratio": math.inf}}}, T0)
        store.flush()
        store.queue_state("health", {"chat": {"10.0.0.1:8000": {"state": "healthy", "ratio": math.nan}},
                                     "code": {}}, T0 + 5)
        store.queue_decisions([AuditEntry(T0 + 5, "health", "chat", "10.0.0.1:8000", "ejected", "healthy",
                                          ("earned its way back",), {"ttft_p99_s": math.inf, "n": 3})])
        assert store.flush() == 2
        assert store.load_state("health") == {"chat": {"10.0.0.1:8000": {"state": "healthy", "ratio": "nan"}},
                                              "code": {}}
        [entry] = store.decisions(pool="chat")
        assert entry.to_state == "healthy" and entry.reasons == ("earned its way back",)
        assert dict(entry.signals) == {"ttft_p99_s": "inf", "n": 3}
    finally:
        store.close()
