"""A parser for the sample lines of the Prometheus text format, limited to one metric prefix.

prometheus_client's parser costs 6–15 ms for a 58 KB vLLM page, which alone would take a core at
about 1,000 targets every 5 s. We need only the `vllm:` samples, as (name, labels, value); this
reads those lines and nothing else, validating each one it reads. Its results are checked against
prometheus_client's on every page the tests have (tests/test_exposition.py).
"""

from __future__ import annotations

import re
from typing import AbstractSet, Iterator

_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*(?:,|$)')
# A whole label set of the usual shape (`a="x",b="y"`, no blanks, no escapes) in one C-level match;
# anything else goes through the label-by-label reader, which names what is wrong.
_PLAIN_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\\n]*)"')
_PLAIN_LABELS = re.compile(f"(?:{_PLAIN_LABEL.pattern}(?:,{_PLAIN_LABEL.pattern})*,?)?")
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_ESCAPE = re.compile(r"\\(.)")


class ExpositionError(ValueError):
    pass


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _labels(body: str, line: str) -> dict[str, str]:
    if _PLAIN_LABELS.fullmatch(body):
        return dict(_PLAIN_LABEL.findall(body))
    labels: dict[str, str] = {}
    pos, end = 0, len(body)
    while pos < end:
        match = _LABEL.match(body, pos)
        if match is None:
            if body[pos:].strip() == "":
                break
            raise ExpositionError(f"bad labels in line: {line[:200]!r}")
        value = match.group(2)
        labels[match.group(1)] = _unescape(value) if "\\" in value else value
        pos = match.end()
    return labels


def samples(text: str, prefix: str = "vllm:",
            names: AbstractSet[str] | None = None) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample line whose name starts with `prefix` (and is one of
    `names`, when given: lines of other families are skipped unread, like python_ and process_ ones).

    HELP/TYPE comments are not needed: the normaliser keys on sample names (`_bucket`, `_sum`,
    `_count`), which also keeps pages without TYPE lines usable.
    """
    for line in text.split("\n"):
        if not line.startswith(prefix):
            # the format allows blanks before a sample (Go's reference parser and prometheus_client
            # skip them); checked only on lines that start with one, so the common case stays cheap
            if not line or line[0] not in " \t":
                continue
            line = line.lstrip(" \t")
            if not line.startswith(prefix):
                continue
        if line.endswith("\r"):
            line = line[:-1]
        brace = line.find("{")
        if names is not None:
            # the name ends at the brace or the first blank; a name not wanted is not read further
            end = brace if brace >= 0 else len(line)
            space = line.find(" ", 0, end)
            if space >= 0:
                end = space
            tab = line.find("\t", 0, end)
            if line[: tab if tab >= 0 else end] not in names:
                continue
        if brace >= 0:
            name = line[:brace].rstrip(" \t")  # `name {labels}` is allowed as well
            close = line.rfind("}")
            if close < brace:
                raise ExpositionError(f"unclosed label set in line: {line[:200]!r}")
            labels = _labels(line[brace + 1 : close], line)
            rest = line[close + 1 :].split()
        else:
            parts = line.split()
            name, rest, labels = parts[0], parts[1:], {}
        if not _NAME.fullmatch(name):
            raise ExpositionError(f"bad metric name in line: {line[:200]!r}")
        if not 1 <= len(rest) <= 2:
            raise ExpositionError(f"expected a value (and optional timestamp) in line: {line[:200]!r}")
        try:
            value = float(rest[0])
            if len(rest) == 2:
                int(rest[1])
        except ValueError:
            raise ExpositionError(f"bad value in line: {line[:200]!r}") from None
        yield name, labels, value
