"""HTML built from Python strings, every value escaped where it is placed.

Instance names, reasons, labels and model names come from the network (targets, discovery, vLLM
pages), so nothing reaches a page unescaped: `esc` for text and attribute values (quotes included),
`data_json` for JSON read by the page's script (`<`, `>` and `&` written as \\u escapes, so no value can
close the element). Markup is only ever the module's own literals joined with escaped values.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

# script-src 'self': no inline script can run, whatever a value smuggles into a page
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

NAV = (("/ui/", "Fleet"), ("/ui/slos", "SLOs"), ("/ui/decisions", "Decisions"), ("/ui/pools", "Scaling & cost"),
       ("/ui/reports", "Reports"))


def esc(value: Any) -> str:
    """Text or an attribute value (always double-quoted by the callers), escaped."""
    return html.escape("" if value is None else str(value), quote=True)


def url_part(value: str) -> str:
    """A path segment or query value (then escaped again by `esc` where it lands in an attribute)."""
    return quote(value, safe="")


def data_json(value: Any) -> str:
    """JSON for a `<script type="application/json">` block: nothing in it can end the element."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def when(t: float | None) -> str:
    """A moment as <time>: UTC ISO in the markup, shown in the browser's zone by console.js."""
    if t is None or not math.isfinite(t):
        return '<span class="muted">never</span>'
    iso = datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return f'<time datetime="{esc(iso)}">{esc(iso)}</time>'


def when_text(text: str | None) -> str:
    """An RFC 3339 string from the API's JSON, as <time>."""
    if not text:
        return '<span class="muted">never</span>'
    return f'<time datetime="{esc(text)}">{esc(text)}</time>'


def number(value: Any, unit: str = "", digits: int = 3) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return '<span class="muted">–</span>'
    return esc(f"{value:.{digits}g}{unit}")


def seconds(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return '<span class="muted">–</span>'
    return esc(f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.2f} s")


def percent(value: Any, digits: int = 2) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return '<span class="muted">–</span>'
    return esc(f"{value * 100:.{digits}f}%")


def badge(state: Any) -> str:
    text = str(state or "unknown")
    css = text if text in ("healthy", "degraded", "ejected", "unknown", "starting", "leaving", "sleeping",
                           "firing", "page", "ticket", "ok", "pass", "fail", "inconclusive", "met", "missed") else "other"
    return f'<span class="badge badge-{css}">{esc(text)}</span>'


def table(caption: str, headers: Iterable[str], rows: Iterable[Iterable[str]], empty: str = "nothing yet",
          css: str = "") -> str:
    """`rows` hold cells already rendered (escaped) by the callers."""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="muted">{esc(caption)}: {esc(empty)}</p>'
    return (f'<div class="scroll"><table class="{esc(css)}"><caption>{esc(caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def page(title: str, main: str, *, path: str = "", refresh_s: float | None = None, nav: bool = True,
         logout: bool = False, scripts: Iterable[str] = ("console.js",), charts: bool = False) -> str:
    """A whole page. `refresh_s`: console.js re-reads the page's <main> this often (live view)."""
    current = ' aria-current="page"'
    links = "".join(f'<a href="{esc(href)}"{current if href == path else ""}>{esc(label)}</a>'
                    for href, label in NAV) if nav else ""
    out = ('<form method="post" action="/ui/logout" class="logout"><button type="submit">Log out</button></form>'
           if logout else "")
    styles = '<link rel="stylesheet" href="/ui/static/uPlot.min.css">' if charts else ""
    js = ('<script src="/ui/static/uPlot.iife.min.js"></script>' if charts else "") + "".join(
        f'<script src="/ui/static/{esc(s)}"></script>' for s in scripts)
    refresh = f' data-refresh="{esc(f"{refresh_s:g}")}"' if refresh_s else ""
    header = (f'<header><nav aria-label="Console"><span class="brand">slo-monitor</span>{links}</nav>{out}</header>'
              if nav else '<header><span class="brand">slo-monitor</span></header>')
    return ("<!doctype html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)} · slo-monitor</title>'
            f'<link rel="stylesheet" href="/ui/static/console.css">{styles}</head>'
            f'<body{refresh}><a class="skip" href="#main">Skip to content</a>{header}'
            f'<main id="main" tabindex="-1"><h1>{esc(title)}</h1>{main}</main>{js}</body></html>\n')
