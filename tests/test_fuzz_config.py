"""Hypothesis properties for the config loader and the API's inputs (issue 19): whatever the bytes,
text or YAML-ish document, loading ends in a Config or a ConfigError, in bounded time; whatever the
query string or body, the API answers 2xx or 4xx JSON, never a 500."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config import ConfigError, parse_yaml, validate
from monitor.service import create_app
from tests.helpers.asgi_client import AUTH
from tests.helpers.asgi_requests import request

FAST = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def loads_or_refuses(data: bytes) -> None:
    """Only ConfigError escapes, and never the last-resort one that means a validator was surprised."""
    try:
        documents = parse_yaml(data, "fuzz.yaml")
        validate(documents[0] if documents else None, environ={})
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert not any("please report it" in p for p in exc.problems), exc.problems


@FAST
@given(st.binary(max_size=2000))
def test_any_bytes_load_or_are_refused_with_a_config_error(data):
    loads_or_refuses(data)


@FAST
@given(st.text(max_size=2000))
def test_any_text_loads_or_is_refused_with_a_config_error(text):
    loads_or_refuses(text.encode("utf-8", "surrogatepass"))


KEYS = st.sampled_from(["pools", "slos", "scrape", "name", "targets", "interval", "timeout", "window", "threshold",
                        "indicator", "type", "metric", "objective", "storage", "url", "api", "listen", "health",
                        "source", "headers", "max_body_size", "alerting", "window_sets", "discovery", "gpu", "ha",
                        "lease", "<<", "cost", "scaling", "exclusions", "x"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from(["5s", "500ms", "99999999999999d", "1e400", "99.9%", "http://127.0.0.1:8000", "latency",
                     "ttft", "availability", "${UNSET}", "0", "-1s", "16MiB", "2026-99-99", "\u00e9", "nan"]))
DOCUMENTS = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(KEYS, inner, max_size=5)), max_leaves=30)


@FAST
@given(st.dictionaries(KEYS, DOCUMENTS, max_size=6))
def test_any_yaml_ish_document_validates_or_is_refused_with_a_config_error(document):
    try:
        validate(document, environ={})
    except ConfigError as exc:
        assert exc.problems and not any("please report it" in p for p in exc.problems), exc.problems


@FAST
@given(st.dictionaries(KEYS, DOCUMENTS, max_size=6), st.sampled_from(["json", "flow"]))
def test_documents_written_as_yaml_load_or_are_refused(document, style):
    # JSON is YAML; a value that JSON cannot write (nan) is written as YAML's own spelling
    text = json.dumps(document, default=str).replace("NaN", ".nan").replace("Infinity", ".inf")
    loads_or_refuses(text.encode())


# --- the API ---------------------------------------------------------------------------------------------

APP = create_app(validate({"pools": [{"name": "chat", "targets": ["http://10.0.0.1:8000"]}],
                           "slos": [{"name": "ttft", "objective": "99%",
                                     "indicator": {"type": "latency", "metric": "ttft", "threshold": "500ms"}}],
                           "api": {"token": "s3cret"}}).config, store=None)
GETS = ["/api/v1/decisions", "/api/v1/instances", "/api/v1/slos", "/api/v1/pools/chat/goodput",
        "/api/v1/exclusions", "/api/v1/pools/chat/scaling", "/api/v1/pools/chat/cost"]
PARAMS = st.sampled_from(["limit", "pool", "instance", "kind", "name", "window", "all", "since", "x"])
VALUES = st.one_of(st.text(max_size=30), st.integers().map(str),
                   st.sampled_from(["-5", "0", "1000", "1001", "5m", "99999999999999d", "true", "health", "chat",
                                    "1e3", "nan", "%ff", "%00"]))


def quoted(value: str) -> str:
    # a raw escape (`%zz`, `%`) is sent as it is, to try the server's decoding; anything a URL cannot
    # carry (control characters, non-ASCII) is quoted, as any client would
    raw = value.startswith("%") and value.isascii() and value.isprintable() and " " not in value
    return value if raw else quote(value, safe="")


def json_answer(answer) -> None:
    assert answer.status_code < 500, (answer.status_code, answer.text)
    if answer.status_code >= 400:
        assert isinstance(answer.json(), dict), answer.text


@FAST
@given(st.sampled_from(GETS), st.lists(st.tuples(PARAMS, VALUES), max_size=4))
def test_any_query_string_on_a_get_endpoint_is_answered_below_500(path, params):
    query = "&".join(f"{k}={quoted(v)}" for k, v in params)
    json_answer(request(APP, "GET", f"{path}?{query}", headers=AUTH))


@FAST
@given(st.binary(max_size=300))
def test_any_raw_query_bytes_on_decisions_are_answered_below_500(raw):
    query = "".join(chr(b) if chr(b).isalnum() or chr(b) in "=&" else f"%{b:02x}" for b in raw)
    json_answer(request(APP, "GET", f"/api/v1/decisions?{query}", headers=AUTH))


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
                    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4)), max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={
    "slo": st.one_of(st.just("ttft"), JSON), "pool": st.one_of(st.just("chat"), JSON),
    "start": st.one_of(st.just("2099-01-01T00:00:00Z"), JSON), "end": JSON,
    "duration": st.one_of(st.sampled_from(["2h", "99999999999999d", "0s"]), JSON),
    "reason": st.one_of(st.just("upgrade"), JSON)})


@FAST
@given(st.one_of(FIELDS.map(json.dumps), JSON.map(json.dumps), st.binary(max_size=200)))
def test_any_body_posted_to_exclusions_is_answered_below_500(body):
    content = body.encode() if isinstance(body, str) else body
    json_answer(request(APP, "POST", "/api/v1/exclusions", headers={**AUTH, "content-type": "application/json"},
                        content=content))


@FAST
@given(st.binary(max_size=200), st.text(max_size=40))
def test_any_body_or_query_posted_to_reload_is_answered_below_500(body, query):
    json_answer(request(APP, "POST", f"/-/reload?{quote(query)}", headers=AUTH, content=body))
