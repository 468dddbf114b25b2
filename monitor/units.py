"""Value types of the configuration: durations, ratios, sizes, URLs, listen addresses.

The lowest floor of the house: the settings models (`monitor.settings`) and the stages alike use
these, so one spelling of a duration or a ratio means the same thing everywhere. Each parser's
error says the value it saw and the form it wants, since `check` prints it to a person.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Callable
from urllib.parse import urlsplit, urlunsplit

from pydantic import BeforeValidator, Field

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


MAX_DURATION_S = 3650 * 86400.0  # ten years: no setting means longer, and timedelta/scheduler maths stay finite
MAX_SIZE = 2**30  # 1 GiB: no body, file or answer the service reads is meant to be larger


def _bare_hint(number: float, latency: bool) -> str:
    """What a bare number most likely meant. A latency threshold of 500 is 500 ms (nobody means a
    TTFT of eight minutes), one of 2 is 2 s; anything else (an interval, a window) is seconds."""
    unit = "ms" if latency and number >= 10 else "s"
    return f"did you mean {number:g}{unit}? durations need a unit: 500ms, 5s, 1m, 30d"


def parse_duration(value: Any, *, at_most: float = MAX_DURATION_S, latency: bool = False) -> float:
    """Seconds from a Prometheus-style duration (``500ms``, ``5s``, ``1h30m``, ``30d``).

    A bare number is refused: ``interval: 5`` could mean seconds or minutes, and guessing wrong
    silently changes what an SLO window means. `at_most` bounds it (each setting has its own sane
    maximum: a scrape interval of a century passes every other check and then overflows the
    scheduler); `latency` makes the bare-number hint read as a latency (500 -> 500ms).
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value) if isinstance(value, float) or abs(value) < 10**300 else math.inf
        hint = _bare_hint(number, latency) if math.isfinite(number) else "use e.g. 500ms, 5s, 1m, 30d"
        raise ValueError(f"not a duration: {_short(value)} ({hint})")
    if not isinstance(value, str):
        raise ValueError(f"not a duration: {_short(value)} (use a unit, e.g. 500ms, 5s, 1m, 30d)")
    text = value.strip()
    if re.fullmatch(r"\d{1,300}(?:\.\d{1,300})?", text):
        raise ValueError(f"not a duration: {_short(value)} ({_bare_hint(float(text), latency)})")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"not a duration: {_short(value)} (use e.g. 500ms, 5s, 1m, 30d)")
    if total <= 0:
        raise ValueError(f"duration must be positive: {_short(value)}")
    if not total <= at_most:  # also inf and nan
        raise ValueError(f"duration too long: {_short(value)} (at most {format_duration(at_most)})")
    return total


def _short(value: Any) -> str:
    """The value seen, as an error message quotes it: repr, cut to a readable length."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**100 else "a very large number"
    return text if len(text) <= 80 else text[:77] + "..."


def bounded_duration(at_most: str, *, latency: bool = False, zero: bool = False) -> Callable[[Any], float]:
    """The reader of a duration setting with its own upper bound (`"1d"`); `zero`: `0s` is allowed
    (off, none)."""
    limit = parse_duration(at_most)

    def read(value: Any) -> float:
        if zero and _is_zero(value):
            return 0.0
        return parse_duration(value, at_most=limit, latency=latency)

    return read


def _is_zero(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip() in ("0", "0s", "0ms", "0m")
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


def format_duration(seconds: float) -> str:
    """`30d`, `1h30m`, `500ms`: the config's own notation, for the API's `window`."""
    if seconds <= 0:
        return "0s"
    out, rest = "", round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 pool`, `2 pools`, `0 SLOs`: a count with its noun, for messages and logs."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _number(value: Any, what: str, example: str, read: Callable[[str], float]) -> float:
    """A YAML number as it is, or a string that `read` understands (stripped); a boolean is refused
    (YAML reads `yes` as true), and anything else names the form wanted."""
    if isinstance(value, bool):
        raise ValueError(f"not a {what}: {value!r}")
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an int beyond a double's range: out of every range asked for
            return math.inf
    if isinstance(value, str):
        try:
            return read(value.strip())
        except (ValueError, ArithmeticError):
            pass
    raise ValueError(f"not a {what}: {_short(value)} (use e.g. {example})")


def parse_ratio(value: Any) -> float:
    """A fraction in [0, 1] from ``99.9%`` or ``0.999``."""
    # Decimal, so "99.9%" is the double nearest 0.999 (float division gives 0.9990000000000001,
    # which the API would then print as the objective)
    number = _number(value, "ratio", "99.9% or 0.999",
                     lambda text: float(Decimal(text[:-1]) / 100) if text.endswith("%") else float(text))
    if not 0.0 <= number <= 1.0:
        hint = (f" (did you mean {number:g}%?)" if 1.0 < number <= 100.0 and not str(value).strip().endswith("%")
                else " (use a percentage up to 100%, or a fraction up to 1)")
        raise ValueError(f"ratio out of range [0, 1]: {value!r}{hint}")
    return number


def parse_percent(value: Any) -> float:
    """A percentage in [0, 100] from ``50``, ``50%`` or ``"50"``.

    A fraction such as ``0.5`` is read as 0.5 %, as Envoy's `max_ejection_percent` reads it; the
    name says percent, and guessing "you meant 50 %" would silently allow a hundred times more.
    """
    number = _number(value, "percentage", "50 or 50%", lambda text: float(text.removesuffix("%").strip()))
    if not 0.0 <= number <= 100.0:
        raise ValueError(f"percentage out of range [0, 100]: {value!r}")
    return number


def parse_window(value: Any) -> float:
    """A duration that may be zero (`0s`: no stabilisation, the HPA's scale-up default)."""
    return 0.0 if _is_zero(value) else parse_duration(value)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(value: Any) -> int:
    """Bytes from ``16MiB``, ``512KiB``, ``1MB`` or a plain integer, at most 1 GiB."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        number: float = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip()[:100])):
        number = float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
    else:
        raise ValueError(f"not a size: {_short(value)} (use e.g. 16MiB, 512KiB or a number of bytes)")
    if number < 1:  # "0.5" would be 0 bytes: every page or answer refused as too large
        raise ValueError(f"size must be at least 1 byte: {_short(value)}")
    if not number <= MAX_SIZE:
        raise ValueError(f"size too large: {_short(value)} (at most 1GiB)")
    return int(number)


# --- targets: one grammar for every host, port and path a target comes with -------------------
#
# Static `targets`, file_sd, http_sd, DNS answers and a Prometheus's activeTargets all end up in
# the same places: a request line (monitor/http1.py), an NGINX `server host:port;` token, an
# HAProxy agent answer. One grammar, checked where a target enters (the config, each discovery
# answer) and again where a token is written (the renderers), so no source can carry `;{}`, a
# space or a control character into a load balancer's config or a request head.

TARGET_REASONS = ("bad_scheme", "bad_host", "bad_port", "bad_path", "malformed", "duplicate")
"""Why a target is refused: the `reason` label of slo_monitor_discovery_rejected_targets_total."""

_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_HEX = frozenset("0123456789abcdefABCDEF")
# what a path may hold as it is (RFC 3986 pchar and "/"); everything else is percent-encoded
_PATH_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/")
MAX_PATH = 2048


class TargetRefused(ValueError):
    """A target outside the grammar; `reason` is one of TARGET_REASONS, the message says what was wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_scheme(scheme: Any) -> str:
    if scheme not in ("http", "https"):
        raise TargetRefused("bad_scheme", f"scheme {_show(scheme)} is not http or https")
    return str(scheme)


def check_host(host: Any) -> str:
    """The host in its one written form: a DNS name or IPv4 address lower-cased, an IPv6 address
    lower-cased without brackets (`[...]` accepted on input). Anything else is refused: a DNS name
    is dot-separated labels of letters, digits, `-` and `_` (no label starts or ends with `-`, at
    most 63 characters, 253 in all); a name of digits and dots must be an IPv4 address; IPv6 zone
    ids (`%eth0`) are refused, as NGINX cannot take them in a `server` line."""
    if not isinstance(host, str) or not host:
        raise TargetRefused("bad_host", f"host {_show(host)} is empty or not text")
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in text or "[" in host or "]" in host:
        try:
            if not text.isascii() or "%" in text:
                raise ValueError
            ipaddress.IPv6Address(text)
        except ValueError:
            raise TargetRefused("bad_host", f"host {_show(host)} is not an IPv6 address") from None
        return text.lower()
    labels = text.split(".")
    if len(text) > 253 or not text.isascii() or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise TargetRefused("bad_host", f"host {_show(host)} is not a DNS name or IP address "
                                        "(letters, digits, '-', '_' and '.' only)")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            raise TargetRefused("bad_host", f"host {_show(host)} is not an IPv4 address") from None
    return text.lower()


def check_port(port: Any) -> int:
    number = int(port) if isinstance(port, str) and port.isascii() and port.isdigit() and len(port) <= 5 else port
    if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 65536:
        raise TargetRefused("bad_port", f"port {_show(port)} is not a number from 1 to 65535")
    return number


def check_path(path: Any) -> str:
    """An absolute path safe for a request line: non-ASCII and characters a path may not hold as
    they are (space, `"`, `#`, `?`, `{`...) are percent-encoded as UTF-8, as Go's url (and so
    Prometheus) writes `__metrics_path__`; a `%` not followed by two hex digits becomes `%25`.
    Control characters are refused: no server means them, and they split request heads."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise TargetRefused("bad_path", f"path {_show(path)} is not an absolute path (e.g. /metrics)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F or 0x80 <= ord(c) < 0xA0 for c in path):
        raise TargetRefused("bad_path", f"path {_show(path)} holds a control character")
    out = []
    for i, c in enumerate(path):
        escape = path[i + 1:i + 3]
        if c in _PATH_SAFE or (c == "%" and len(escape) == 2 and set(escape) <= _HEX):
            out.append(c)
            continue
        try:
            out.append("".join(f"%{b:02X}" for b in c.encode("utf-8")))
        except UnicodeEncodeError:  # a lone surrogate, as JSON's "\ud800" gives
            raise TargetRefused("bad_path", f"path {_show(path)} is not valid Unicode") from None
    encoded = "".join(out)
    if len(encoded) > MAX_PATH:
        raise TargetRefused("bad_path", f"path of {len(encoded)} characters, more than {MAX_PATH}")
    return encoded


def address_of(host: str, port: int) -> str:
    """`host:port`, `[v6]:port`: how an instance is named in the API, NGINX, HAProxy and traces."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(value: Any) -> tuple[str, int]:
    """(host, port) of `host:port` / `[v6]:port`, both checked; TargetRefused otherwise."""
    if not isinstance(value, str) or len(value) > 300:
        raise TargetRefused("malformed", f"{_show(value)} is not host:port")
    if "/" in value:
        raise TargetRefused("malformed", f"{_show(value)} is not host:port (no scheme or path)")
    host, sep, port = value.rpartition(":")
    if not sep:
        raise TargetRefused("bad_port", f"{_show(value)} has no port")
    if not host.startswith("[") and ":" in host:
        raise TargetRefused("bad_host", f"{_show(value)}: an IPv6 address goes in brackets ([fd00::1]:8000)")
    try:
        return check_host(host), check_port(port)
    except TargetRefused as exc:
        raise TargetRefused(exc.reason, f"{_show(value)}: {exc}") from None


def is_server_address(text: Any) -> bool:
    """Whether `text` is `host:port` exactly as the grammar writes it: the last check before a
    token goes into an NGINX upstream file or an HAProxy answer."""
    try:
        return address_of(*split_host_port(text)) == text
    except TargetRefused:
        return False


def parse_http_url(value: Any) -> str:
    """An http(s) URL whose host and port follow the target grammar (`check_host`, `check_port`)
    and that holds no whitespace or control character; the text as given, stripped, without a
    trailing `/`. Non-ASCII in the path is percent-encoded."""
    if not isinstance(value, str):
        raise ValueError(f"not an http(s) URL: {value!r} (use http://host:port)")
    text = value.strip()
    if "://" not in text and text:
        raise ValueError(f"not an http(s) URL: {value!r} (did you mean http://{text}?)")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"not an http(s) URL: {_show(value)} (no spaces or control characters)")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {value!r} (use http://host:port or https://host:port)")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("not an http(s) URL (bad port)") from None
    host = parts.netloc.rpartition("@")[2]
    host = host.rpartition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]
    try:
        check_host(host)
        if parts.port is not None:
            check_port(parts.port)
        path = check_path(parts.path) if parts.path else ""
    except TargetRefused as exc:
        raise ValueError(f"not an http(s) URL: {_show(value)} ({exc})") from None
    if path != parts.path:
        text = urlunsplit(parts._replace(path=path))
    return text.rstrip("/")


def parse_target_url(value: Any) -> str:
    """A pool's static target: `parse_http_url`, and a base URL only (no query or fragment), since
    the metrics and health paths are added to it."""
    text = parse_http_url(value)
    parts = urlsplit(text)
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError(f"not a target URL: {_show(value)} (scheme://host:port, no query or fragment)")
    return text


def parse_listen(value: Any) -> str:
    if (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.strip().isdigit()):
        raise ValueError(f"not HOST:PORT: {value!r} (did you mean 127.0.0.1:{value}, or 0.0.0.0:{value} "
                         "for every interface?)")
    if not isinstance(value, str) or not re.fullmatch(r"\[?[\w.:-]*\]?:\d{1,5}", value.strip()):
        raise ValueError(f"not HOST:PORT: {value!r} (e.g. 127.0.0.1:9470)")
    if not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        raise ValueError(f"port out of range: {value!r}")
    return value.strip()


Duration = Annotated[float, BeforeValidator(parse_duration)]  # at most ten years (storage.retention)
# the bounds each kind of setting gets (docs/configuration.md, "Units and bounds")
Timeout = Annotated[float, BeforeValidator(bounded_duration("1h"))]  # per request, query or refresh
Interval = Annotated[float, BeforeValidator(bounded_duration("1d"))]  # how often something runs; how long state is held
Latency = Annotated[float, BeforeValidator(bounded_duration("1d", latency=True))]  # latency thresholds (a bare 500 reads as 500ms)
Week = Annotated[float, BeforeValidator(bounded_duration("7d"))]  # weekly maintenance windows, trace retention
SloPeriod = Annotated[float, BeforeValidator(bounded_duration("400d"))]  # SLO windows and their alert windows
Ratio = Annotated[float, BeforeValidator(parse_ratio)]
Size = Annotated[int, BeforeValidator(parse_size)]
HttpUrl = Annotated[str, BeforeValidator(parse_http_url)]
TargetUrl = Annotated[str, BeforeValidator(parse_target_url)]
Listen = Annotated[str, BeforeValidator(parse_listen)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
Percent = Annotated[float, BeforeValidator(parse_percent)]
Window = Annotated[float, BeforeValidator(bounded_duration("1d", zero=True))]  # may be 0s: stabilisation windows
LatencyOrZero = Annotated[float, BeforeValidator(bounded_duration("1d", latency=True, zero=True))]


def redact_url(url: str) -> str:
    """The URL with any user:password@ replaced by `***@`, for logs and error messages: an
    Alertmanager (or target) URL may carry basic-auth credentials, which must never be printed."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


@functools.lru_cache(maxsize=16384)  # asked for every target each cycle
def instance_address(url: str) -> str:
    """The ``host:port`` that names an instance in the API, NGINX and traces."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def rfc3339(t: float | None) -> str | None:
    """Unix seconds as RFC 3339 UTC with milliseconds (`2026-12-04T22:53:14.000Z`); None stays None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
