"""The error a command raises for input a person must fix, low in the house so that any module the
CLI runs (the GPU exporter, the simulator, `generate`) can raise it without importing the CLI."""

from __future__ import annotations


class BadInput(Exception):
    """Bad arguments or config: the CLI prints the message (no traceback) and exits 2."""
