"""How a config's mistakes read: each pydantic error turned into one line naming its key path, the
value seen and the form wanted (with the likely spelling of an unknown key), and ``${NAME}``
expansion, whose unset variables become warnings naming their key.

Apart from `monitor.config` (which assembles the sections and loads the file) because none of this
knows the sections: it walks whatever model it is given.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Mapping

from pydantic import BaseModel

from monitor.settings.slos import INDICATOR_TYPES

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(node: Any, path: str, environ: dict[str, str], warnings: list[str],
               unset: dict[str, list[str]] | None = None) -> Any:
    """Expand ``${NAME}`` / ``${NAME:-default}`` in string values, after YAML parsing.

    Expanding after parsing means a variable's value can never change the document's structure.
    `unset` collects key path -> the unset variables its value named, so that a value refused
    because of one says which (`storage.url: ${SLO_MONITOR_DATABASE_URL} is not set`).
    """
    if isinstance(node, dict):
        return {k: expand_env(v, _join(path, k), environ, warnings, unset) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v, f"{path}[{i}]", environ, warnings, unset) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            warnings.append(f"{path}: environment variable {name} is not set (expanded to an empty string)")
            if unset is not None:
                unset.setdefault(path, []).append(name)
            return ""

        return _ENV_REF.sub(substitute, node)
    return node


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def loc_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in INDICATOR_TYPES and path.endswith("indicator"):
            continue  # pydantic names the union member it tried; the user only wrote `indicator`
        elif isinstance(part, str) and part.startswith("function-"):
            continue
        else:
            path = _join(path, part)
    return path


def known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys a section accepts, to suggest the intended spelling of an unknown one."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field_info = getattr(current, "model_fields", {}).get(part)
        if field_info is None:
            if isinstance(part, str) and part in INDICATOR_TYPES:
                current = INDICATOR_TYPES[part]
            continue
        current = _model_in(field_info.annotation)
    return list(getattr(current, "model_fields", {}).keys())


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# what a missing key wants, for the keys a first config most often lacks
_MISSING_HINTS = {
    "pools": "e.g. pools: [{name: default, targets: [http://127.0.0.1:8000]}]",
    "name": "letters, digits, '_', '.', '-'",
    "indicator": "e.g. {type: latency, metric: ttft, threshold: 500ms}",
    "objective": "e.g. 99.9%",
    "threshold": "e.g. 500ms for latency, 90% for saturation",
    "type": "latency, error_ratio, saturation or availability",
}


def describe(error: Mapping[str, Any], root: type[BaseModel]) -> str:
    """One pydantic error as the operator reads it: key path, what was wrong, the value seen, and
    for an unknown key the spelling `root` (the whole config's model) most likely meant."""
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        keys = known_keys(root, loc)
        close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(keys)})" if keys else ""
        return f"{loc_path(loc)}: unknown key{hint}"
    if kind == "missing":
        why = _MISSING_HINTS.get(str(loc[-1])) if loc else None
        return f"{loc_path(loc)}: required key is missing" + (f" ({why})" if why else "")
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    seen = error.get("input")
    if kind == "union_tag_invalid":
        message = (f"unknown type {seen.get('type')!r} (use latency, error_ratio, saturation or availability)"
                   if isinstance(seen, dict) else message)
    elif kind == "too_short":
        message = "must not be empty"
    elif kind == "string_pattern_mismatch":
        message = f"must start with a letter or digit and use only letters, digits, '_', '.', '-' (got {seen!r})"
    elif kind != "value_error" and isinstance(seen, (str, int, float, bool)) and repr(seen) not in message:
        message = f"{message} (got {seen!r})"  # pydantic's own messages name the form, not the value seen
    return f"{loc_path(loc) or '(top level)'}: {message}"


def name_unset(problems: list[str], unset: dict[str, list[str]]) -> list[str]:
    """Each problem of a key whose value named an unset variable, saying so first: the value seen
    (`''`) alone would send the operator looking in the file, not the environment."""
    out = []
    for problem in problems:
        path, sep, message = problem.partition(": ")
        names = unset.get(path) if sep else None
        if names:
            variables = " and ".join(f"${{{n}}}" for n in dict.fromkeys(names))
            verb = "is" if len(set(names)) == 1 else "are"
            problem = f"{path}: {variables} {verb} not set (expands to an empty string); {message}"
        out.append(problem)
    return out


def unique(problems: list[str]) -> list[str]:
    return list(dict.fromkeys(problems))
