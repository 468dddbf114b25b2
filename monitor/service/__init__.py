"""The service: the only place that knows every stage and wires them (monitor/service/wiring.py),
runs the cycle (core.py), writes history (history.py) and background outputs (outputs.py), reloads
(reload.py) and serves the app (app.py)."""

from monitor.service.app import create_app
from monitor.service.core import Service

__all__ = ["Service", "create_app"]
