"""The console's session: a login form takes `api.token` once and sets a cookie; the token itself
never travels in a URL and never sits in the browser's script-readable storage.

The cookie holds an HMAC of the token, not the token: it opens the console and the API's GETs
(console.js reads the JSON API with it), never the API's POST/DELETE endpoints, which still need
the `Authorization: Bearer` header. With SameSite=Strict no other site can make the browser send it;
requiring the header for changes means no form anywhere can change anything with it either.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request

COOKIE = "slo_monitor_session"
MAX_AGE_S = 12 * 3600  # a console left open overnight asks for the token again
READ_METHODS = ("GET", "HEAD")


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"slo-monitor console session v1", hashlib.sha256).hexdigest()


def session_ok(request: Request, token: str) -> bool:
    """The request carries the console's cookie for `token` (compared in constant time)."""
    given = request.cookies.get(COOKIE)
    return given is not None and given != "" and hmac.compare_digest(given.encode(), session_value(token).encode())


def token_matches(given: str, token: str) -> bool:
    """The token typed into the login form, compared in constant time."""
    return hmac.compare_digest(given.strip().encode(), token.encode())


def bearer_ok(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def cookie_reads(request: Request, token: str) -> bool:
    """What the API's token check accepts besides the bearer header: the cookie, on reads only."""
    return request.method in READ_METHODS and session_ok(request, token)


def served_over_https(request: Request) -> bool:
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or proto == "https"


def safe_next(value: str | None) -> str:
    """Where the login form goes back to: a console path only (never another site, `//host`, or a
    backslash trick)."""
    if not value or not value.startswith("/ui/") or "//" in value or "\\" in value or len(value) > 500 \
            or not value.isprintable():
        return "/ui/"
    return value
