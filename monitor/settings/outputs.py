"""Where decisions and alerts go: the API (`api:`), Alertmanager, NGINX and HAProxy."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, model_validator

from monitor.settings.base import OptionalStr, OptionalUrl, Section, none_if_empty
from monitor.units import Interval, Listen, Timeout

DEFAULT_ALERTMANAGER_TIMEOUT = 5.0


class ApiConfig(Section):
    listen: Listen = "127.0.0.1:9470"
    token: OptionalStr = None


class AlertmanagerConfig(Section):
    url: OptionalUrl = None
    # While an alert fires it is re-sent this often, with endsAt a few intervals ahead, so an
    # Alertmanager that restarted learns it again and an alert from a dead monitor expires by itself.
    resend_interval: Interval = 60.0
    timeout: Timeout = Field(default=DEFAULT_ALERTMANAGER_TIMEOUT, description="per POST to Alertmanager")

    @model_validator(mode="after")
    def _timeout_fits(self) -> AlertmanagerConfig:
        if self.timeout > self.resend_interval:
            source = "" if "timeout" in self.model_fields_set else ", the default"
            raise ValueError(f"timeout must not exceed resend_interval (timeout {self.timeout:g}s{source}, "
                             f"resend_interval {self.resend_interval:g}s); set timeout to "
                             f"{self.resend_interval:g}s or less")
        return self


class NginxConfig(Section):
    upstream_file: OptionalStr = None
    check: OptionalStr = None
    reload: OptionalStr = None


class HaproxyConfig(Section):
    agent_listen: Annotated[Listen | None, BeforeValidator(none_if_empty)] = Field(
        default=None, description="HOST:PORT of the HAProxy agent-check listener; off when unset")
