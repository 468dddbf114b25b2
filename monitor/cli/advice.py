"""Warnings about a valid config that need a stage's knowledge, printed by `check` and logged by
`serve` at start. They live here, at the top of the house, so that `monitor.config` loads no stage."""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import shlex
from pathlib import Path

from monitor.collect.vllm import threshold_warning
from monitor.config import Config, LatencyIndicator
from monitor.evaluate.slo import objective_warnings, slo_pairs
from monitor.settings.pools import DEFAULT_MAX_REPLICAS


def advice(config: Config) -> list[str]:
    """Each warning prefixed with its key path, as the config's own warnings are."""
    warnings: list[str] = []
    for i, slo in enumerate(config.slos):
        if isinstance(slo.indicator, LatencyIndicator):
            warning = threshold_warning(slo.indicator.metric, slo.indicator.threshold)
            if warning:
                warnings.append(f"slos[{i}].indicator.threshold: {warning}")
        # an objective so low that even 100% errors cannot reach a pair's burn factor: that alert
        # would stay silent through a total outage, which the operator must hear about now
        for warning in objective_warnings(slo.objective, slo.window, slo_pairs(slo), name=slo.name):
            warnings.append(f"slos[{i}].objective: {warning}")
    for i, pool in enumerate(config.pools):
        if pool.scaling.max_replicas is None:  # the recommendation is bounded anyway; say by what
            warnings.append(f"pools[{i}].scaling.max_replicas: unset: pool {pool.name}'s recommendation is "
                            f"bounded at {DEFAULT_MAX_REPLICAS} replicas (or its current size when larger); "
                            "set the most replicas (GPUs) the pool may run")
    nginx = nginx_check_warning(config.nginx.check, config.nginx.upstream_file)
    if nginx:
        warnings.append(nginx)
    return warnings


# --- nginx.check: does the config it validates include the upstream file? ----------------------------

DEFAULT_NGINX_CONF = "/etc/nginx/nginx.conf"  # Debian, Ubuntu, RHEL and the nginx images compile this in
_NGINX_PROGRAMS = {"nginx", "nginx-debug", "openresty"}
_WRAPPERS = {"sudo", "command", "exec", "nice", "env"}  # run nginx on this machine, with this file system
_INCLUDE = re.compile(r"(?:^|[;{}\s])include\s+(['\"]?)([^;'\"\s]+)\1\s*;")


def nginx_check_warning(check: str | None, upstream_file: str | None, *, cwd: Path | None = None,
                        default_conf: str = DEFAULT_NGINX_CONF) -> str | None:
    """A warning when `nginx.check` runs `nginx -t` on a config that does not include the upstream
    file: the check then passes whatever the service writes, and the reload serves the old upstreams.

    The config is the `-c` file (a relative one under `-p`'s prefix, else the working folder), or
    NGINX's default without `-c`; it includes the file when it or a file it includes (one level)
    names the file, or has an `include` whose glob matches it. A check that is not `nginx` on this
    machine (`docker exec`, `ssh`, a script) is left alone: its files cannot be read from here.
    """
    if not check or not upstream_file:
        return None
    cwd = cwd or Path.cwd()
    invocation = _nginx_test(check)
    if invocation is None:
        return None
    conf, prefix = invocation
    target = os.path.normpath(cwd / upstream_file)
    if conf is None:
        path, which = Path(default_conf), f"NGINX's default config {default_conf} (no -c)"
    else:
        path = Path(conf) if os.path.isabs(conf) else Path(prefix or cwd) / conf
        which = str(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return (f"nginx.check: cannot read {which}, the config `{check}` validates ({exc.strerror or exc}), "
                f"to see whether it includes nginx.upstream_file {upstream_file}")
    if _includes(text, path.parent, target, depth=1):
        return None
    return (f"nginx.check: `{check}` validates {which}, which does not include nginx.upstream_file "
            f"{upstream_file} (nor does any file it includes): the check would pass whatever the service "
            f"writes; add `include {target};` in its http block, or give -c the nginx.conf that has it")


def _nginx_test(check: str) -> tuple[str | None, str | None] | None:
    """(-c file, -p prefix) of the first `nginx -t`/`-T` run directly by the command, else None."""
    lexer = shlex.shlex(check, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: the shell will say so when it runs
        return None
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token and all(c in "();&|<>" for c in token):
            commands.append([])
        else:
            commands[-1].append(token)
    for words in commands:
        while words and (os.path.basename(words[0]) in _WRAPPERS or "=" in words[0]):
            words = words[1:]  # `sudo nginx`, `env A=b nginx`, `A=b nginx`
            while words and words[0].startswith("-") and os.path.basename(words[0]) not in _NGINX_PROGRAMS:
                words = words[1:]  # the wrapper's own flags (`sudo -n`)
        if not words or os.path.basename(words[0]) not in _NGINX_PROGRAMS:
            continue
        flags = words[1:]
        if not any(f.startswith("-") and not f.startswith("--") and ("t" in f[1:] or "T" in f[1:])
                   and not f.startswith(("-c", "-p", "-g", "-e", "-s")) for f in flags):
            continue
        conf = prefix = None
        for i, flag in enumerate(flags):
            for name in ("-c", "-p"):
                if flag == name and i + 1 < len(flags):
                    value = flags[i + 1]
                elif flag.startswith(name) and len(flag) > 2:
                    value = flag[2:]
                else:
                    continue
                if name == "-c":
                    conf = value
                else:
                    prefix = value
        return conf, prefix
    return None


def _includes(text: str, conf_dir: Path, target: str, *, depth: int) -> bool:
    """Whether this config text names `target` or includes it through a glob; `depth` more levels of
    included files are read (a file that cannot be read counts as not including it)."""
    text = re.sub(r"#[^\n]*", "", text)
    if target in text:
        return True
    for _, pattern in _INCLUDE.findall(text):
        full = os.path.normpath(pattern if os.path.isabs(pattern) else conf_dir / pattern)
        if fnmatch.fnmatchcase(target, full) or fnmatch.fnmatchcase(os.path.realpath(target), full):
            return True
        if depth > 0:
            for included in sorted(glob.glob(full))[:100]:
                try:
                    inner = Path(included).read_text(errors="replace")
                except OSError:
                    continue
                if _includes(inner, conf_dir, target, depth=depth - 1):
                    return True
    return False
