"""Kubernetes manifests checked against their schemas, offline.

Built-in kinds (Deployment, Service, ConfigMap, ...) go through `kubernetes-validate`, which bundles
the API server's schemas, in strict mode (an unknown field is an error, as `kubectl apply
--validate=strict` makes it). Custom resources (PrometheusRule, ServiceMonitor, PodMonitor, KEDA's
ScaledObject and TriggerAuthentication) go through `jsonschema` against the CRD schemas vendored in
tests/fixtures/crds/ (SOURCES.md says from which upstream commit; vendor.py rebuilds them), made
strict the same way: every object schema that lists its properties and does not preserve unknown
fields refuses others.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "crds"
KUBERNETES_VERSION = "1.30"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict schema, for every vendored CRD version."""
    out = {}
    for path in sorted(CRDS.glob("*.json")):
        data = json.loads(path.read_text())
        out[(data["apiVersion"], data["kind"])] = _strict(copy.deepcopy(data["schema"]))
    return out


def validate(obj: dict[str, Any]) -> None:
    """Raise AssertionError naming the object and the first problem when it is not valid."""
    kind, api = obj.get("kind"), obj.get("apiVersion")
    name = obj.get("metadata", {}).get("name", "?")
    where = f"{kind} {name}"
    assert isinstance(name, str) and DNS_SUBDOMAIN.match(name), f"{where}: metadata.name is not a DNS subdomain"
    schema = crd_schemas().get((api, kind))
    if schema is not None:
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
        assert not errors, f"{where}: {errors[0].message} at {'/'.join(map(str, errors[0].path))}"
        return
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        raise AssertionError(f"{where}: no schema for {api} {kind} (vendor its CRD into tests/fixtures/crds/)")
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{where}: {exc.message} at {'/'.join(map(str, exc.path))}") from None
