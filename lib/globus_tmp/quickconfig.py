"""globus-tmp.conf as the endpoint lookup reads it: without importing ``config``.

``globus-tmp-endpoint`` with no command runs in every job that wants its endpoint id,
so its start-up is a hot path (``bench/hot_paths.py``: at most 3x a bare interpreter).
``config`` defines a frozen dataclass (``dataclasses`` imports ``inspect``, ``ast`` and
``dis``) and uses ``pathlib``: importing it costs more than the whole lookup may.

So this module reads only the common case: the file as root cached its parsed table
(``config.CACHE_DIR``), or no file at the default place. It may refuse more than
``config`` does, never accept more: every key must be one it knows and every value one
``config`` accepts. For anything else (no cache entry, a key it does not know, a doubtful
value, an error) :func:`quick_lookup_config` returns None and the caller loads the file
with :func:`globus_tmp.config.load_config`, which then gives the one true answer or error
message. ``tests/unit/test_quickconfig.py`` holds the two modules to that.
"""

from __future__ import annotations

import json
import os
import stat

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

# The same values as config.py's (tests/unit/test_quickconfig.py compares them).
CACHE_DIR = "/run/globus-tmp/.config-cache"
CONFIG_NAME = "globus-tmp.conf"
DEFAULT_SLURM_CONF = "/etc/slurm/slurm.conf"
DEFAULT_STATE_DIR = "/run/globus-tmp/%n"
DEFAULT_EXPOSED_PATHS = ("/tmp",)
DEFAULT_START_TIMEOUT = 60.0
DEFAULT_HOOK_TIMEOUT = 120.0
_MAX_CONFIG = 1 << 20

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
_ABSOLUTE = frozenset({"gcp_path", "state_dir"})
_ABSOLUTE_OR_EMPTY = frozenset({"log_file", "chain_health_check", "metrics_file"})
_SYSLOG_FACILITIES = ("daemon", "user", *(f"local{i}" for i in range(8)))
KNOWN_KEYS = frozenset(
    {
        *_SECONDS,
        *_ABSOLUTE,
        *_ABSOLUTE_OR_EMPTY,
        "user_dir",
        "exposed_paths",
        "on_failure",
        "globus_client_id",
        "hold_max_bytes",
        "gcp_memory_max",
        "gcp_cpu_max",
        "syslog_facility",
        "gcp_cgroup",
        "globus_service_urls",
    }
)
"""The keys this module can vouch for; a table with any other key goes to ``config``."""


class LookupConfig:
    """The two settings a lookup needs: where node state is, and what GCP exports."""

    __slots__ = ("exposed_paths", "state_dir")

    def __init__(self, state_dir: str, exposed_paths: tuple[str, ...]) -> None:
        self.state_dir = state_dir
        self.exposed_paths = exposed_paths

    def state_dir_for(self, node: str) -> str:
        """``state_dir`` with ``%n`` as ``node`` and ``%%`` as ``%`` (as ``config`` does)."""
        out: list[str] = []
        text, i = self.state_dir, 0
        while i < len(text):
            if text[i] == "%" and i + 1 < len(text) and text[i + 1] in "%n":
                out.append("%" if text[i + 1] == "%" else node)
                i += 2
            else:
                out.append(text[i])
                i += 1
        return "".join(out)


def quick_lookup_config(env: Mapping[str, str], cache_dir: str = CACHE_DIR) -> LookupConfig | None:
    """The lookup's settings when this module can vouch for them; None: ask ``config``."""
    explicit = env.get("GLOBUS_TMP_CONFIG")
    if explicit:
        path = explicit
    else:
        slurm_conf = env.get("SLURM_CONF") or DEFAULT_SLURM_CONF
        if slurm_conf.endswith("/"):
            return None  # pathlib's parent of "a/b/" is "a": not worth copying here
        path = os.path.join(os.path.dirname(slurm_conf), CONFIG_NAME)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None if explicit else LookupConfig(DEFAULT_STATE_DIR, DEFAULT_EXPOSED_PATHS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        return None
    table = _cached_table(cache_dir, path, st)
    if table is None or not all(_vouch(key, value) for key, value in table.items()):
        return None
    start = table.get("start_timeout", DEFAULT_START_TIMEOUT)
    if table.get("hook_timeout", DEFAULT_HOOK_TIMEOUT) < start + 10:
        return None
    return LookupConfig(
        table.get("state_dir", DEFAULT_STATE_DIR),
        tuple(table.get("exposed_paths", DEFAULT_EXPOSED_PATHS)),
    )


def _cached_table(cache_dir: str, path: str, st: os.stat_result) -> dict[str, Any] | None:
    """Root's parsed table of exactly this version of ``path`` (``config``'s cache)."""
    name = path.replace("%", "%25").replace("/", "%2F")[:200]
    try:
        if not _root_only(os.lstat(cache_dir), stat.S_ISDIR):
            return None
        fd = os.open(os.path.join(cache_dir, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            if not _root_only(os.fstat(fd), stat.S_ISREG):
                return None
            doc = json.loads(os.read(fd, _MAX_CONFIG))
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return None
    fingerprint = [path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    if not isinstance(doc, dict) or doc.get("file") != fingerprint:
        return None
    table = doc.get("table")
    return table if isinstance(table, dict) else None


def _root_only(st: os.stat_result, is_type: Any) -> bool:
    return bool(is_type(st.st_mode)) and st.st_uid == 0 and not st.st_mode & 0o022


def _number(value: object) -> bool:
    return type(value) in (int, float)


def _vouch(key: str, value: Any) -> bool:
    """True only if ``config`` accepts ``value`` for ``key`` (False when in doubt)."""
    if key in _SECONDS:
        return _number(value) and value > 0
    if key in ("hold_max_bytes", "gcp_memory_max"):
        return type(value) is int and value >= 0
    if key == "gcp_cpu_max":
        return _number(value) and value >= 0
    if key == "exposed_paths":
        return (
            type(value) is list
            and bool(value)
            and all(type(p) is str and p.startswith("/") for p in value)
        )
    if key == "globus_service_urls":
        return type(value) is dict and all(
            type(k) is str
            and k.isidentifier()
            and type(v) is str
            and v.startswith(("http://", "https://"))
            for k, v in value.items()
        )
    if type(value) is not str:
        return False
    if key == "syslog_facility":
        return value in _SYSLOG_FACILITIES
    if key == "gcp_cgroup":
        return "/" not in value and "\n" not in value and not value.startswith(".")
    if key == "on_failure":
        return value in ("continue", "fail")
    if key in _ABSOLUTE:
        return value.startswith("/")
    if key in _ABSOLUTE_OR_EMPTY:
        return not value or value.startswith("/")
    if key == "user_dir":
        return value.startswith(("/", "~"))
    return key == "globus_client_id"
