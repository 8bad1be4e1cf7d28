"""globus-tmp.conf's keys: where the file is, what each key may say, and root's cache of
the parsed table. The one place these rules live.

Light on purpose (``json``, ``os``, ``stat``; no dataclasses, pathlib or typing): the
endpoint lookup, run in every job, checks the configuration through this module
(:mod:`globus_tmp.quickconfig`) without importing :mod:`globus_tmp.config`, whose
frozen dataclass is the configuration everything else uses.
"""

from __future__ import annotations

import json
import os
import stat

from .errors import ConfigError

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Literal

    OnFailure = Literal["continue", "fail"]
    StartWait = Literal["spawned", "connected"]
    """What a failed Prolog exits with: 0 (the job runs without an endpoint) or 1."""

CONFIG_NAME = "globus-tmp.conf"
DEFAULT_SLURM_CONF = "/etc/slurm/slurm.conf"
FALLBACK_CONFIG = "/etc/slurm/globus-tmp.conf"
"""Read when no file is beside ``SLURM_CONF``: a configless slurmd (23.11+) hands the
hooks ``SLURM_CONF=<SlurmdSpoolDir>/conf-cache/slurm.conf``, and slurmctld pushes only
Slurm's own files there. It is the place every program without ``SLURM_CONF`` already
reads (``HealthCheckProgram``, the reconcile timer), so one file serves them all."""
CACHE_DIR = "/run/globus-tmp/.config-cache"
MAX_CONFIG = 1 << 20
"""A larger file is not a configuration (and is never read whole)."""

ON_FAILURE_CHOICES: tuple[OnFailure, ...] = ("continue", "fail")
START_WAIT_CHOICES: tuple[StartWait, ...] = ("spawned", "connected")
SYSLOG_FACILITIES = ("daemon", "user", *(f"local{i}" for i in range(8)))

# The defaults the lookup needs; config.Config's fields take them from here.
DEFAULT_STATE_DIR = "/run/globus-tmp/%n"
DEFAULT_EXPOSED_PATHS = ("/tmp",)
DEFAULT_START_TIMEOUT = 60.0
DEFAULT_HOOK_TIMEOUT = 120.0
DEFAULT_LINGER_MAX = 7200.0
DEFAULT_IDLE_LINGER = 120.0

_SECONDS = frozenset(
    {
        "start_timeout",
        "stop_grace",
        "hook_timeout",
        "linger_max",
        "linger_poll_seconds",
        "linger_unverified",
        "job_grace",
    }
)
_SECONDS_OR_ZERO = frozenset({"idle_linger"})
_BYTES = frozenset({"hold_max_bytes", "gcp_memory_max"})
_ABSOLUTE = frozenset({"gcp_path", "state_dir"})
_ABSOLUTE_OR_EMPTY = frozenset({"log_file", "chain_health_check", "metrics_file", "slurm_bin_dir"})
_STRINGS = frozenset(
    {*_ABSOLUTE, *_ABSOLUTE_OR_EMPTY, "user_dir", "on_failure", "start_wait", "globus_client_id"}
)
KEYS = frozenset(
    {
        *_SECONDS,
        *_SECONDS_OR_ZERO,
        *_BYTES,
        *_STRINGS,
        "exposed_paths",
        "gcp_cpu_max",
        "syslog_facility",
        "gcp_cgroup",
        "globus_service_urls",
    }
)
"""Every key of the file (config.Config has one field for each, plus ``source``)."""


def config_file(env: Mapping[str, str]) -> tuple[str, bool]:
    """The config file to read, and whether it was named explicitly (then it must
    exist): ``$GLOBUS_TMP_CONFIG``, else ``globus-tmp.conf`` beside ``slurm.conf``."""
    explicit = env.get("GLOBUS_TMP_CONFIG")
    if explicit:
        return explicit, True
    slurm_conf = env.get("SLURM_CONF") or DEFAULT_SLURM_CONF
    return os.path.join(os.path.dirname(slurm_conf.rstrip("/") or "/"), CONFIG_NAME), False


def fallback_config(path: str, explicit: bool) -> str | None:
    """Where to look when the file ``config_file`` named does not exist: nowhere for a
    file named explicitly, else :data:`FALLBACK_CONFIG` (unless that was ``path``)."""
    return None if explicit or path == FALLBACK_CONFIG else FALLBACK_CONFIG


def check_table(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The keys of a parsed table, checked and converted (tuples for lists, floats for
    seconds); a wrong key or value is one :class:`ConfigError` naming it and the file."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in KEYS:
            known = ", ".join(sorted(KEYS))
            raise ConfigError(f"{source}: unknown key '{key}' (known keys: {known})")
        values[key] = check_value(key, value, source)
    start = values.get("start_timeout", DEFAULT_START_TIMEOUT)
    hook = values.get("hook_timeout", DEFAULT_HOOK_TIMEOUT)
    if hook < start + 10:
        raise ConfigError(
            f"{source}: key 'hook_timeout' ({hook:g}) must exceed "
            f"start_timeout ({start:g}) by at least 10 seconds"
        )
    linger_max = values.get("linger_max", DEFAULT_LINGER_MAX)
    if "idle_linger" not in values:  # the default bows to a shorter linger_max
        values["idle_linger"] = min(DEFAULT_IDLE_LINGER, linger_max)
    linger = values["idle_linger"]
    if linger > linger_max:
        raise ConfigError(
            f"{source}: key 'idle_linger' ({linger:g}) must not exceed linger_max ({linger_max:g})"
        )
    return values


def check_value(key: str, value: Any, source: str) -> Any:
    """One key's value as the configuration holds it, or :class:`ConfigError`."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: key '{key}' must be {expected}, got {value!r}")

    if key in _SECONDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise bad("a number of seconds > 0")
        return float(value)
    if key in _SECONDS_OR_ZERO:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise bad("a number of seconds >= 0 (0: off)")
        return float(value)
    if key in _BYTES:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad("a whole number of bytes >= 0")
        return value
    if key == "gcp_cpu_max":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise bad("a number of CPUs >= 0 (0: no limit)")
        return float(value)
    if key == "syslog_facility":
        if value not in SYSLOG_FACILITIES:
            raise bad(" or ".join(f'"{f}"' for f in SYSLOG_FACILITIES))
        return value
    if key == "gcp_cgroup":
        if not isinstance(value, str) or any(c in value for c in "/\n") or value.startswith("."):
            raise bad('a cgroup name without "/", e.g. "globus-tmp" (empty: off)')
        return value
    if key == "globus_service_urls":
        if not isinstance(value, dict) or not all(
            isinstance(k, str)
            and k.isidentifier()
            and isinstance(v, str)
            and v.startswith(("http://", "https://"))
            for k, v in value.items()
        ):
            raise bad('a table of service = "http(s)://..." entries, e.g. { transfer = "..." }')
        return tuple(sorted(value.items()))
    if key == "exposed_paths":
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(p, str) and p.startswith("/") for p in value)
        ):
            raise bad('a non-empty list of absolute paths, e.g. ["/tmp"]')
        return tuple(value)
    if key in _STRINGS:
        if not isinstance(value, str):
            raise bad("a string")
        if key == "on_failure" and value not in ON_FAILURE_CHOICES:
            raise bad(" or ".join(f'"{c}"' for c in ON_FAILURE_CHOICES))
        if key == "start_wait" and value not in START_WAIT_CHOICES:
            raise bad(" or ".join(f'"{c}"' for c in START_WAIT_CHOICES))
        if key in _ABSOLUTE and not value.startswith("/"):
            raise bad("an absolute path")
        if key in _ABSOLUTE_OR_EMPTY and value and not value.startswith("/"):
            raise bad("an absolute path")
        if key == "user_dir":
            problem = user_dir_problem(value)
            if problem:
                raise ConfigError(f"{source}: key 'user_dir' {problem}")
        if key == "slurm_bin_dir" and value and not os.path.isdir(value):
            raise bad("an existing directory (where squeue, scontrol, slurmd are)")
        return value
    raise AssertionError(key)  # pragma: no cover - KEYS and the checks are kept in step


USER_DIR_PLACEHOLDERS = {"u": "the user's name", "U": "the user's uid"}
"""What ``user_dir`` may say besides ``~``: each gives every user a path of their own."""


def user_dir_problem(value: str) -> str | None:
    """Why ``value`` cannot be ``user_dir``, as the rest of a one-line error; None if it
    can. Each user needs a directory of their own: one shared by all would let a user
    plant stage-out records another user's Epilog submits with that user's tokens, and
    read or replace their tokens, pool and leases. So the value is ``~``-relative or has
    a per-user placeholder, and no ``..`` lets it climb out of that."""
    fix = (
        'must give each user their own directory: "~/..." or an absolute path with %u '
        '(user name) or %U (uid), e.g. "/scratch/%u/.globus-tmp"'
    )
    if value != "~" and not value.startswith(("~/", "/")):
        return f"{fix}; got {value!r}"
    if ".." in value.split("/"):
        return f"must not contain '..' (it can leave the user's own directory); got {value!r}"
    unknown = sorted(set(placeholders(value)) - set(USER_DIR_PLACEHOLDERS))
    if unknown:
        return f"knows only the placeholders %u, %U and %%, not %{unknown[0]}; got {value!r}"
    if value.startswith("/") and not placeholders(value):
        return f"{fix}; got {value!r}, one directory shared by every user"
    return None


def placeholders(text: str) -> list[str]:
    """The letters of the ``%X`` placeholders in ``text`` (``%%`` is none)."""
    found, i = [], 0
    while i < len(text) - 1:
        if text[i] == "%":
            if text[i + 1] != "%":
                found.append(text[i + 1])
            i += 2
        else:
            i += 1
    return found


def expand_percent(text: str, values: Mapping[str, str]) -> str:
    """``%n`` and friends replaced from ``values``; ``%%`` is ``%``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "%" and i + 1 < len(text):
            key = text[i + 1]
            if key == "%":
                out.append("%")
                i += 2
                continue
            if key in values:
                out.append(values[key])
                i += 2
                continue
        out.append(ch)
        i += 1
    return "".join(out)


# Root's cache of parsed tables. Parsing TOML (tomllib pulls in typing) was the largest
# single cost of the join path, so root keeps each file's parsed table, keyed by its
# path and checked against its inode, size and times on every read. Users read the cache
# (TaskProlog, CLI) but never write it; a cache that is not root's is ignored.


def cache_file(cache_dir: str, path: str) -> str:
    return os.path.join(cache_dir, path.replace("%", "%25").replace("/", "%2F")[:200])


def fingerprint(path: str, st: os.stat_result) -> list[object]:
    return [path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def cached_table(cache_dir: str, path: str, st: os.stat_result) -> dict[str, Any] | None:
    """The parsed table of ``path`` if root cached it for exactly this file version."""
    try:
        if not _root_only(os.lstat(cache_dir), stat.S_ISDIR):
            return None
        fd = os.open(cache_file(cache_dir, path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            if not _root_only(os.fstat(fd), stat.S_ISREG):
                return None
            doc = json.loads(os.read(fd, MAX_CONFIG))
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("file") != fingerprint(path, st):
        return None
    table = doc.get("table")
    return table if isinstance(table, dict) else None


def _root_only(st: os.stat_result, is_type: Callable[[int], bool]) -> bool:
    return is_type(st.st_mode) and st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
