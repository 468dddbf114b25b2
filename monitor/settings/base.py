"""What every settings section shares: unknown keys are errors, values are frozen once read."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from monitor.units import HttpUrl


class Section(BaseModel):
    """A section of the YAML. `extra="forbid"`: a typo such as `intervall` would otherwise leave the
    default in force without a word."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def none_if_empty(value: Any) -> Any:
    """`${VAR}` of an unset variable expands to ""; an optional setting treats that as not set."""
    return None if value == "" else value


OptionalUrl = Annotated[HttpUrl | None, BeforeValidator(none_if_empty)]
OptionalStr = Annotated[str | None, BeforeValidator(none_if_empty)]
