"""The client's `id` of POST /api/v1/exclusions is network input: any JSON value gives back a bounded,
printable string, None, or ValueError naming the key, in bounded time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.publish.exclusions import MAX_REQUEST_ID, parse_request_id

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=10)


@settings(max_examples=300, deadline=200)
@given(JSON)
def test_any_json_id_is_a_bounded_printable_string_none_or_a_named_error(value):
    try:
        found = parse_request_id({"id": value})
    except ValueError as exc:
        assert str(exc).startswith("id:")
        return
    if value is None:
        assert found is None
    else:
        assert isinstance(found, str) and 0 < len(found) <= MAX_REQUEST_ID and found.isprintable()
        assert found == str(value).strip()


@settings(max_examples=200, deadline=200)
@given(st.text(min_size=1, max_size=MAX_REQUEST_ID).filter(lambda t: t.strip() and t.isprintable()))
def test_a_printable_id_is_taken_as_given_stripped(text):
    assert parse_request_id({"id": text}) == text.strip()
