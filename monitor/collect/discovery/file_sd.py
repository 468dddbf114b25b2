"""file_sd: Prometheus's file-based discovery, JSON or YAML target groups in files matched by globs.

A file is read again only when its (mtime, size, inode) changes, and each file keeps its own last
good list, so one broken file among many costs only its own targets' freshness.
"""

from __future__ import annotations

import asyncio
import glob
import os
import stat
from dataclasses import dataclass, field

from monitor.collect.discovery.source import Source, dedupe
from monitor.collect.discovery.targets import (
    DiscoveredTarget,
    DiscoveryError,
    Parsed,
    load_document,
    read_target_groups,
)
from monitor.settings.discovery import DiscoverySettings, FileDiscovery


@dataclass(slots=True)
class _FileState:
    signature: tuple[int, int, int] | None = None  # (mtime_ns, size, inode) of the last read
    targets: list[DiscoveredTarget] = field(default_factory=list)  # its last good list


class FileSource(Source):
    """Globs expanded at every check; a file is re-read when its mtime, size or inode changed
    (an atomic rename changes the inode) or every `refresh`.

    Polling beats a watcher here: a check is one glob and a stat per file, microseconds per scrape
    interval, and it also sees files on network filesystems and ConfigMap volumes (symlink swaps)
    where inotify misses changes.
    """

    kind = "file"
    config: FileDiscovery

    def __init__(self, pool: str, index: int, config: FileDiscovery, settings: DiscoverySettings) -> None:
        super().__init__(pool, index, config, settings)
        self._files: dict[str, _FileState] = {}
        self._full_at = 0.0

    def due(self, now: float) -> bool:
        return True  # a check without changes costs a glob and a few stats

    async def _refresh(self, now: float) -> None:
        full = now >= self._full_at
        if full:
            self._full_at = now + self.refresh_s
        paths = sorted({p for pattern in self.config.files for p in glob.glob(pattern)})
        new: dict[str, _FileState] = {}
        changed = set(self._files) - set(paths)  # files gone from the globs: their targets go too
        for gone in changed:
            self._forget(gone)
        read_now: list[str] = []
        for path in paths:
            old = self._files.get(path) or _FileState()
            try:
                st = os.stat(path)
            except FileNotFoundError:
                changed.add(path)  # renamed away between the glob and the stat
                self._ok(path)
                continue
            except OSError as exc:
                self._fail(path, f"file {path}: cannot stat: {exc.strerror or exc}")
                new[path] = old
                continue
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader forever, a device never end
                self._fail(path, f"file {path}: not a regular file")
                new[path] = old
                continue
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            if signature == old.signature and not full:
                new[path] = old
                continue
            changed.add(path)
            try:
                parsed = await asyncio.to_thread(self._read, path, st.st_size)
            except FileNotFoundError:
                self._ok(path)
                self._forget(path)
                continue
            except (OSError, DiscoveryError) as exc:
                message = str(exc) if isinstance(exc, DiscoveryError) else f"file {path}: {exc.strerror or exc}"
                self._fail(path, message)
                new[path] = _FileState(signature, old.targets)  # not re-read until it changes again
                continue
            if not self._take(path, parsed):
                new[path] = _FileState(signature, old.targets)  # as a bad file: kept until it changes
                continue
            new[path] = _FileState(signature, parsed.targets)
            read_now.append(path)
        for gone in set(self._failing) - set(new) - {"*"}:
            self._ok(gone)
        total = sum(len(s.targets) for s in new.values())
        if total > self.max_targets:
            # the files read now are refused as a bad file is: each keeps its last good list, and
            # is not read again until it changes
            for path in read_now:
                self._fail(path, f"file {path}: the files of this source list {total} targets, more than "
                                 f"discovery.max_targets {self.max_targets}")
                new[path] = _FileState(new[path].signature, self._files.get(path, _FileState()).targets)
        else:
            for path in read_now:
                self._ok(path)
        self._files = new
        if changed or full:
            self._set(dedupe([s.targets for s in new.values()]))

    def _read(self, path: str, size: int) -> Parsed:
        """Read and parse one file (in a worker thread), refusing it before reading when too big."""
        where = f"file {path}"
        limit = self.config.max_size
        if size > limit:
            raise DiscoveryError(f"{where}: {size} bytes, more than max_size {limit}")
        with open(path, "rb") as f:
            data = f.read(limit + 1)  # it may have grown since the stat
        if len(data) > limit:
            raise DiscoveryError(f"{where}: more than max_size {limit} bytes")
        document, is_yaml = load_document(data, path, where)
        return read_target_groups(document, "file", where, default_scheme=self.config.scheme,
                                   max_targets=self.max_targets, strict=is_yaml, allow_null=True)
