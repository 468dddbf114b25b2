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
_PLAIN_LABELS_TEXT = re.compile(f"(?:{_ONE_PLAIN}(?:,{_ONE_PLAIN})*,?)?")  # what is inside the braces
_PLAIN_REST = re.compile(f"(?:{{((?:{_ONE_PLAIN}(?:,{_ONE_PLAIN})*,?)?)}})? ([^ \t#]+)")
_LABEL_SETS: dict[str, dict[str, str]] = {}
LABEL_SETS_KEPT = 4096
_SPLIT_SETS: dict[str, dict[str, tuple[str, dict[str, str]]]] = {}  # label -> label text -> (its value, the others)
_SCANNERS: dict[tuple[str, frozenset[str]], re.Pattern[str]] = {}
_INDENTED: dict[str, re.Pattern[str]] = {}  # prefix -> a line with blanks before it
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


def _alternation(words: list[str]) -> str:
    """`words` as one regular expression, factored by common prefixes (a trie): Python's engine tries the
    branches of a flat alternation one by one, so a hundred names cost as much as the rest of the scan."""
    tree: dict[str, dict] = {}
    for word in words:
        node = tree
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def branch(node: dict[str, dict]) -> str:
        parts = [re.escape(ch) + branch(node[ch]) for ch in sorted(node) if ch]
        if not parts:
            return ""
        body = parts[0] if len(parts) == 1 and "" not in node else "(?:" + "|".join(parts) + ")"
        return body + "?" if "" in node else body

    return branch(tree) if words else "(?!)"


def _scanner(prefix: str, names: AbstractSet[str]) -> re.Pattern[str]:
    """One regular expression finding, in a whole page, the sample lines of `names` that start a line:
    the scan between them runs in C (the literal newline and prefix are searched for, the names tried as
    one trie), so the lines of other families cost nothing in Python. A match is either a plain line
    (groups: name, label text, value) or, for anything else (a timestamp, an exemplar, escapes, blanks
    or garbage), the name and the rest of its line (group 4) for the general reader, `_line`."""
    key = (prefix, names if isinstance(names, frozenset) else frozenset(names))
    scanner = _SCANNERS.get(key)
    if scanner is None:
        wanted = [n.removeprefix(prefix) for n in key[1] if n.startswith(prefix)]
        scanner = _SCANNERS[key] = re.compile(
            f"\\n({re.escape(prefix)}{_alternation(wanted)})(?=[ \\t{{]|\\r?\\n|\\r?\\Z)"
            f"(?:(?:{{([^}}\\n]*)}})? ([^ \\t#\\n]+)(?=\\n|\\Z)|([^\\n]*))")
    return scanner


def _scannable(text: str, prefix: str) -> bool:
    """Whether no line has blanks before `prefix` (the scan's assumption: the format allows them, and
    the line-by-line loop reads such pages)."""
    indented = _INDENTED.get(prefix)
    if indented is None:
        indented = _INDENTED[prefix] = re.compile(f"\\n[ \\t]+{re.escape(prefix)}")
    return indented.search(text) is None and not (text[:1] in (" ", "\t") and text.lstrip(" \t").startswith(prefix))


def samples(text: str, prefix: str = "vllm:",
            names: AbstractSet[str] | None = None) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample line whose name starts with `prefix` (and is one of
    `names`, when given: lines of other families are skipped unread, like python_ and process_ ones).

    HELP/TYPE/UNIT comments are not needed: the normaliser keys on sample names (`_bucket`, `_sum`,
    `_count`, `_total`), which also keeps pages without TYPE lines usable.
    """
    if names is None or not _scannable(text, prefix):
        yield from _line_by_line(text, prefix, names)
        return
    for name, label_text, value_text, rest in _scanner(prefix, names).findall("\n" + text):
        labels = _label_set(label_text) if label_text and not rest else None
        if rest or not value_text or (label_text and labels is None):
            read = _general(name, rest or f"{{{label_text}}} {value_text}", prefix, names)
            if read is not None:
                yield read
            continue
        try:
            value = float(value_text)
        except ValueError:
            raise ExpositionError(f"bad value in line: {name}{{{label_text}}} {value_text[:100]!r}") from None
        yield name, labels.copy() if labels else {}, value


def grouped_samples(text: str, label: str, prefix: str,
                    names: AbstractSet[str]) -> dict[str, dict[str, list[tuple[dict[str, str], float]]]]:
    """The sample lines of `names`, as `samples` reads them, grouped as name -> the value of `label`
    ("" without it) -> [(the other labels, value)] in page order. The label dicts of plain lines are
    shared by every page (a cache, as 1,000 instances print the same label sets): do not change them."""
    out: dict[str, dict[str, list[tuple[dict[str, str], float]]]] = {}
    if not _scannable(text, prefix):
        for name, labels, value in _line_by_line(text, prefix, names):
            key = labels.pop(label, "")
            out.setdefault(name, {}).setdefault(key, []).append((labels, value))
        return out
    split = _SPLIT_SETS.setdefault(label, {})
    for name, label_text, value_text, rest in _scanner(prefix, names).findall("\n" + text):
        parts = split.get(label_text)
        if parts is None and not rest and value_text and _PLAIN_LABELS_TEXT.fullmatch(label_text):
            if len(split) >= LABEL_SETS_KEPT:
                split.clear()
            others = dict(_PLAIN_LABEL.findall(label_text))
            parts = split[label_text] = (others.pop(label, ""), others)
        if rest or not value_text or parts is None:
            # not a plain line: the general reader reads it, or names what is wrong
            read = _general(name, rest or f"{{{label_text}}} {value_text}", prefix, names)
            if read is not None:
                key = read[1].pop(label, "")
                out.setdefault(name, {}).setdefault(key, []).append((read[1], read[2]))
            continue
        try:
            value = float(value_text)
        except ValueError:
            raise ExpositionError(f"bad value in line: {name}{{{label_text}}} {value_text[:100]!r}") from None
        by_label = out.get(name)
        if by_label is None:
            by_label = out[name] = {}
        rows = by_label.get(parts[0])
        if rows is None:
            by_label[parts[0]] = [(parts[1], value)]
        else:
            rows.append((parts[1], value))
    return out


def _general(name: str, rest: str, prefix: str, names: AbstractSet[str]) -> tuple[str, dict[str, str], float] | None:
    line = name + rest
    return _line(line[:-1] if line.endswith("\r") else line, prefix, names)


def _label_set(text: str) -> dict[str, str] | None:
    """The labels of a label text, from the cache every page shares (do not change the dict); None
    when the text is not a plain label set (the general reader reads that line)."""
    labels = _LABEL_SETS.get(text)
    if labels is None:
        if not _PLAIN_LABELS_TEXT.fullmatch(text):
            return None
        if len(_LABEL_SETS) >= LABEL_SETS_KEPT:
            _LABEL_SETS.clear()
        labels = _LABEL_SETS[text] = dict(_PLAIN_LABEL.findall(text))
    return labels


def _line_by_line(text: str, prefix: str,
                  names: AbstractSet[str] | None) -> Iterator[tuple[str, dict[str, str], float]]:
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
        read = _line(line, prefix, names)
        if read is not None:
            yield read


def _line(line: str, prefix: str, names: AbstractSet[str] | None) -> tuple[str, dict[str, str], float] | None:
    """One sample line starting with `prefix` (no blank before it, no `\\r` after it): None when its
    family is not wanted."""
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
        return None
    if not _NAME.fullmatch(name):
        raise ExpositionError(f"bad metric name in line: {line[:200]!r}")
    plain = _PLAIN_REST.fullmatch(line, end)
    if plain is not None:
        try:
            value = float(plain.group(2))
        except ValueError:
            raise ExpositionError(f"bad value in line: {line[:200]!r}") from None
        text = plain.group(1)
        return (name, (_label_set(text) or {}).copy(), value) if text else (name, {}, value)
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
    return name, labels, value
