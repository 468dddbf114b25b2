"""The web console (`/ui/`) and the public status page (`/status`): the `ui:` section."""

from __future__ import annotations

from pydantic import Field

from monitor.settings.base import Section


class UiConfig(Section):
    # /status answers without the token and shows per pool only SLO attainment and current incidents:
    # off unless asked for, since even that tells an outsider which pools exist
    status_page: bool = Field(default=False, description="serve the public status page at /status")
    # the console's session cookie carries `Secure` when the request came over https (directly or as
    # X-Forwarded-Proto says); true forces it (a TLS proxy that sends no such header), false never sets it
    secure_cookie: bool | None = Field(default=None, description="Secure flag on the console's cookie; "
                                       "unset: when the request came over https")
