"""A parser for the sample lines of the Prometheus text format and of OpenMetrics 1.0, limited to
one metric prefix.

prometheus_client's parser costs 6–15 ms for a 58 KB vLLM page, which alone would take a core at
about 1,000 targets every 5 s. We need only the `vllm:` samples, as (name, labels, value); this
reads those lines and nothing else, validating each one it reads. Its results are checked against
prometheus_client's text and OpenMetrics parsers on every page the tests have (tests/test_exposition.py,
tests/test_openmetrics.py) and on generated pages (tests/test_fault_fuzz.py, tests/test_fuzz_exposition.py).

Both formats are read by the same loop, whatever the Content-Type said: a server may answer
OpenMetrics whatever we asked (vLLM's newer frontend does), and what differs on the sample lines
is small. OpenMetrics adds exemplars after the value (`151.0 # {trace_id="4bf9"} 0.087 1795342661.5`,
checked for shape and dropped), timestamps in float seconds where the text format has int
milliseconds (either is accepted and ignored), and `# EOF`, `# UNIT` lines (comments, skipped).
Counter families declared without `_total` (`# TYPE vllm:prompt_tokens counter`) still print
their samples as `vllm:prompt_tokens_total` and `_created`, so reading by sample name needs no
TYPE line in either format; `info` families print `_info` samples and `stateset` ones plain
samples, both ordinary lines here.

Values are returned as read, NaN and ±Inf included: which series may hold them is the
normaliser's business (monitor/collect/vllm.py refuses them in every series it judges by).
"""

from __future__ import annotations

import math
import re
from typing import AbstractSet, Iterator

# one label of the usual shape (`a="x"`, no blanks, no escapes); a whole set of them and its closing
# brace is one C-level match, and anything else goes through the label-by-label reader, which names
# what is wrong
_PLAIN_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\\n]*)"')
_PLAIN_LABELS_CLOSED = re.compile(f"(?:{_PLAIN_LABEL.pattern}(?:,{_PLAIN_LABEL.pattern})*,?)?}}")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*')
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# the rest of a sample line as vLLM prints it, after its name: a plain label set (or none), one blank and
# the value, nothing after (no timestamp, no exemplar, no `\r`): one C-level match, and the label text is
# looked up in a cache shared by every page (1,000 instances print the same label sets); any other line
# takes the general path below, which names what is wrong
_ONE_PLAIN = r'[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"'
_PLAIN_REST = re.compile(f"(?:{{((?:{_ONE_PLAIN}(?:,{_ONE_PLAIN})*,?)?)}})? ([^ \t#]+)")
_LABEL_SETS: dict[str, dict[str, str]] = {}
LABEL_SETS_KEPT = 4096
_ESCAPE = re.compile(r"\\(.)")


class ExpositionError(ValueError):
    pass


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _labels(line: str, pos: int) -> tuple[dict[str, str], int]:
    """The label set opening just before `pos` (after its `{`), and where the text after its `}` starts."""
    plain = _PLAIN_LABELS_CLOSED.match(line, pos)
    if plain is not None:
        return dict(_PLAIN_LABEL.findall(line, pos, plain.end() - 1)), plain.end()
    labels: dict[str, str] = {}
    end = len(line)
    while True:
        while pos < end and line[pos] in " \t":
            pos += 1
        if pos < end and line[pos] == "}":
            return labels, pos + 1
        match = _LABEL.match(line, pos)
        if match is None:
            raise ExpositionError(f"bad labels in line: {line[:200]!r}")
        value = match.group(2)
        labels[match.group(1)] = _unescape(value) if "\\" in value else value
        pos = match.end()
        if pos < end and line[pos] == ",":
            pos += 1
        elif pos >= end or line[pos] != "}":
            raise ExpositionError(f"bad labels in line: {line[:200]!r}")


def _exemplar(line: str, at: int) -> None:
    """Check the OpenMetrics exemplar whose `#` is at `at`: ` # {labels} value [timestamp]`."""
    if not line.startswith(" {", at + 1) or line[at - 1] not in " \t":
        raise ExpositionError(f"bad exemplar in line: {line[:200]!r}")
    _, after = _labels(line, at + 3)
    parts = line[after:].split()
    if not 1 <= len(parts) <= 2:
        raise ExpositionError(f"bad exemplar in line: {line[:200]!r}")
    try:
        for part in parts:
            float(part)
    except ValueError:
        raise ExpositionError(f"bad exemplar in line: {line[:200]!r}") from None


def _timestamp(text: str, line: str) -> None:
    """Int milliseconds (text format) or float seconds (OpenMetrics); read only to refuse garbage."""
    try:
        int(text)
        return
    except ValueError:
        pass
    try:
        if math.isfinite(float(text)):
            return
    except ValueError:
        pass
    raise ExpositionError(f"bad timestamp in line: {line[:200]!r}")


def samples(text: str, prefix: str = "vllm:",
            names: AbstractSet[str] | None = None) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample line whose name starts with `prefix` (and is one of
    `names`, when given: lines of other families are skipped unread, like python_ and process_ ones).

    HELP/TYPE/UNIT comments are not needed: the normaliser keys on sample names (`_bucket`, `_sum`,
    `_count`, `_total`), which also keeps pages without TYPE lines usable.
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
        # the name ends at the brace or the first blank; a name not wanted is not read further
        brace = line.find("{")
        end = brace if brace >= 0 else len(line)
        space = line.find(" ", 0, end)
        if space >= 0:
            end = space
        tab = line.find("\t", 0, end)
        if tab >= 0:
            end = tab
        name = line[:end]
        if names is not None and name not in names:
            continue
        if not _NAME.fullmatch(name):
            raise ExpositionError(f"bad metric name in line: {line[:200]!r}")
        plain = _PLAIN_REST.fullmatch(line, end)
        if plain is not None:
            try:
                value = float(plain.group(2))
            except ValueError:
                raise ExpositionError(f"bad value in line: {line[:200]!r}") from None
            text = plain.group(1)
            if not text:
                yield name, {}, value
                continue
            labels = _LABEL_SETS.get(text)
            if labels is None:
                if len(_LABEL_SETS) >= LABEL_SETS_KEPT:
                    _LABEL_SETS.clear()
                labels = _LABEL_SETS[text] = dict(_PLAIN_LABEL.findall(text))
            yield name, labels.copy(), value  # a copy: the caller may change it (read_page pops model_name)
            continue
        if end != brace and brace >= 0:
            # `name {labels}` is allowed as well; a brace after the value is an exemplar's
            after = line[end:].lstrip(" \t")
            brace = len(line) - len(after) if after.startswith("{") else -1
        if brace >= 0:
            labels, end = _labels(line, brace + 1)
        else:
            labels = {}
        hash_at = line.find("#", end)
        if hash_at >= 0:
            _exemplar(line, hash_at)
            rest = line[end:hash_at].split()
        else:
            rest = line[end:].split()
        if not 1 <= len(rest) <= 2:
            raise ExpositionError(f"expected a value (and optional timestamp) in line: {line[:200]!r}")
        try:
            value = float(rest[0])
        except ValueError:
            raise ExpositionError(f"bad value in line: {line[:200]!r}") from None
        if len(rest) == 2:
            _timestamp(rest[1], line)
        yield name, labels, value
