"""`storage:`: where rollups, decisions and SLO minutes are kept."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from monitor.settings.base import Section
from monitor.units import Duration

_KNOWN = re.compile(r"^(sqlite|postgresql)(\+\w+)?://")
_SQLITE = re.compile(r"^sqlite(?:\+\w+)?://(?P<rest>.*)$")


def sqlite_folder(url: str) -> Path | None:
    """The folder a SQLite URL's file lives in; None for an in-memory database or a URI filename."""
    match = _SQLITE.match(url)
    if match is None:
        return None
    rest, _, query = match.group("rest").partition("?")
    path = rest[1:] if rest.startswith("/") else rest  # sqlite:///x.db is relative, sqlite:////x.db absolute
    if path in ("", ":memory:") or "uri=true" in query:
        return None
    return Path(path).parent


class StorageConfig(Section):
    url: str = "sqlite:///./slo-monitor.db"
    retention: Duration = Field(default=30 * 86400.0, description="rollups older than this are deleted")
    statement_timeout: Duration = Field(
        default=10.0, description="longest a database statement may run or wait for a lock before it fails "
                                  "(PostgreSQL statement_timeout, SQLite busy timeout); 0 switches it off")

    @field_validator("url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        url = value.strip()
        # SQLAlchemy reads a bare postgresql:// as psycopg2, which is not installed; psycopg (3) is
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
        elif url.startswith(("postgres://", "postgres+")):
            raise ValueError("postgres:// is not a SQLAlchemy URL (did you mean postgresql+psycopg://...?)")
        if not _KNOWN.match(url):
            scheme = url.partition("://")[0] if "://" in url else url[:20]
            raise ValueError(f"not a sqlite:/// or postgresql+psycopg:// URL: {scheme!r} (use e.g. "
                             "sqlite:///./slo-monitor.db or postgresql+psycopg://user:password@host:5432/db)")
        folder = sqlite_folder(url)
        if folder is not None and not folder.is_dir():
            # SQLite would create the file, but not its folder; a typo in the path would otherwise
            # fail at the first write, or in a tree nobody meant to create
            raise ValueError(f"the SQLite file's folder {str(folder)!r} does not exist (create it, or point "
                             "storage.url at a file in an existing folder)")
        return url
