"""What every settings section shares: unknown keys are errors, values are frozen once read."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from monitor.units import HttpUrl


class Section(BaseModel):
    """A section of the YAML. `extra="forbid"`: a typo such as `intervall` would otherwise leave the
    default in force without a word. `allow_inf_nan=False`: YAML's `.inf`/`.nan` as a target, factor or
    price passes `gt=0` and then fails every cycle (`ceil(inf)`) or publishes `+Inf` costs."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def none_if_empty(value: Any) -> Any:
    """`${VAR}` of an unset variable expands to ""; an optional setting treats that as not set."""
    return None if value == "" else value


OptionalUrl = Annotated[HttpUrl | None, BeforeValidator(none_if_empty)]
OptionalStr = Annotated[str | None, BeforeValidator(none_if_empty)]

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token


def header_value(value: Any, what: str = "value") -> Any:
    """A value sent in an HTTP header: printable ASCII on one line. The HTTP client refuses
    anything else only when it builds its first request, which is after the service started."""
    if isinstance(value, str) and not all(" " <= c <= "~" or c == "\t" for c in value):
        raise ValueError(f"{what} must be printable ASCII on one line (an HTTP header carries it)")
    return value


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """Extra HTTP headers: token names, printable-ASCII values, no Authorization (bearer_token is)."""
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"not an HTTP header name: {name!r}")
        header_value(value, f"header {name}: value")
        if name.lower() == "authorization":
            raise ValueError("use bearer_token rather than an Authorization header")
    return headers


HeaderMap = Annotated[dict[str, str], AfterValidator(check_headers)]
HeaderStr = Annotated[str | None, BeforeValidator(none_if_empty), AfterValidator(header_value)]
