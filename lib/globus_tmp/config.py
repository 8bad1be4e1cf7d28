"""globus-tmp.conf: where it is, what it may say, and its defaults.

The file is TOML and lives beside ``slurm.conf`` (as Slurm's own plugins keep
``cgroup.conf`` and friends), so a cluster with several Slurm configurations gets one
globus-tmp configuration each. ``GLOBUS_TMP_CONFIG`` names another file.

Every key is checked: a wrong key, type or value is one line naming the key and the
file, because an admin reads it in a slurmd log.

Every hook reads the file, and parsing TOML (``tomllib`` pulls in ``typing``) was the
largest single cost of the join path. So root keeps the parsed table in a root-owned
cache (:data:`CACHE_DIR`), keyed by the file's path and checked against its inode,
size and times on every read; the table is validated again each time (cheap). Users
read the cache too (TaskProlog, CLI) but never write it; a cache that is not root's is
ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from typing import Any, Literal

    OnFailure = Literal["continue", "fail"]
    """What a failed Prolog exits with: 0 (the job runs without an endpoint) or 1."""

CONFIG_NAME = "globus-tmp.conf"
DEFAULT_SLURM_CONF = "/etc/slurm/slurm.conf"
ON_FAILURE_CHOICES: tuple[OnFailure, ...] = ("continue", "fail")
SYSLOG_FACILITIES = ("daemon", "user", *(f"local{i}" for i in range(8)))
CACHE_DIR = "/run/globus-tmp/.config-cache"
_MAX_CONFIG = 1 << 20


@dataclass(frozen=True)
class Config:
    """The validated configuration; defaults suit a typical cluster."""

    gcp_path: str = "/opt/globusconnectpersonal/globusconnectpersonal"
    """The ``globusconnectpersonal`` launcher, run as the job user."""
    state_dir: str = "/run/globus-tmp/%n"
    """Node-local, root-owned state; ``%n`` is the node name (several slurmd per host)."""
    user_dir: str = "~/.globus-tmp"
    """Per-user directory (pool, registry, logs); ``~`` is the job user's home."""
    exposed_paths: tuple[str, ...] = ("/tmp",)
    """What GCP may read and write, written to ``lta/config-paths`` as ``PATH,0,1``."""
    start_timeout: float = 60.0
    """How long the Prolog waits for GCP to say ``connected``."""
    stop_grace: float = 15.0
    """How long GCP gets to exit after ``-stop`` before it is killed."""
    hook_timeout: float = 120.0
    """Hard bound on one Prolog/Epilog run; keep PrologEpilogTimeout above it."""
    linger_max: float = 7200.0
    """How long a drain keeps GCP up for an active transfer after the last job."""
    linger_poll_seconds: float = 30.0
    """How often a drain asks whether the transfer is still active."""
    linger_unverified: float = 120.0
    """When the Transfer API cannot be asked, how long a drain keeps an idle GCP up."""
    job_grace: float = 300.0
    """A job older than this with no slurmstepd on the node is taken as gone."""
    on_failure: OnFailure = "continue"
    """``continue``: the job runs without an endpoint; ``fail``: the Prolog fails."""
    log_file: str = ""
    """Node-local hook log; empty means ``<state_dir>/hooks.log``."""
    globus_client_id: str = ""
    """The site's native-app client id for user logins (``globus-tmp-endpoint login``)."""
    chain_health_check: str = ""
    """The site's own HealthCheckProgram (e.g. NHC) that ``globus-tmp-healthcheck`` runs
    first; its exit code is the health check's verdict."""
    hold_max_bytes: int = 100 * 1024**3
    """With a private ``/tmp`` (job_container/tmpfs): how many bytes of ended jobs'
    ``/tmp`` this node may keep for their declared stage-outs."""
    metrics_file: str = ""
    """A Prometheus node_exporter textfile (e.g. ``/var/lib/node_exporter/textfile/
    globus_tmp.prom``) the hooks and ``reconcile`` rewrite atomically; empty: off."""
    syslog_facility: str = "daemon"
    """The syslog facility of the hook log lines (``daemon``, ``user``, ``local0``..7)."""
    gcp_cgroup: str = "globus-tmp"
    """Parent cgroup of every (node, user) GCP (a systemd scope's slice, or a directory in
    each cgroup hierarchy); empty: GCP stays in slurmd's cgroup."""
    gcp_cpu_max: float = 0.0
    """CPUs one user's GCP (with its transfers) may use, e.g. 2.0; 0: no limit."""
    gcp_memory_max: int = 0
    """Bytes of memory one user's GCP may use; 0: no limit."""
    globus_service_urls: tuple[tuple[str, str], ...] = ()
    """Service name -> base URL, e.g. a test deployment of Globus (default: Globus itself).

    Applied as globus-sdk's ``GLOBUS_SDK_SERVICE_URL_<NAME>``: slurmd gives the hooks an
    environment built from scratch, so the configuration is the only way to say it."""
    source: str = "<defaults>"
    """The file this came from (not a key)."""

    def state_dir_for(self, node: str) -> Path:
        """The state directory of ``node`` (``%n`` expanded, ``%%`` is ``%``)."""
        return Path(_expand_percent(self.state_dir, {"n": node}))

    def log_file_for(self, node: str) -> Path:
        if self.log_file:
            return Path(_expand_percent(self.log_file, {"n": node}))
        return self.state_dir_for(node) / "hooks.log"

    def user_dir_for(self, home: str) -> Path:
        """``user_dir`` for a user whose home is ``home`` (string work, no file access)."""
        if self.user_dir == "~":
            return Path(home)
        if self.user_dir.startswith("~/"):
            return Path(home) / self.user_dir[2:]
        return Path(self.user_dir)


def _expand_percent(text: str, values: Mapping[str, str]) -> str:
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


def config_path(env: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file to read, and whether it was named explicitly (then it must exist)."""
    explicit = env.get("GLOBUS_TMP_CONFIG")
    if explicit:
        return Path(explicit), True
    slurm_conf = env.get("SLURM_CONF") or DEFAULT_SLURM_CONF
    return Path(slurm_conf).parent / CONFIG_NAME, False


def load_config(env: Mapping[str, str] | None = None, cache_dir: str = CACHE_DIR) -> Config:
    """Find, read and validate the configuration; a missing default file means defaults."""
    path, explicit = config_path(os.environ if env is None else env)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, after the error cases
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                f"{path}: no such file (named by GLOBUS_TMP_CONFIG); "
                "create it or unset the variable"
            ) from None
        return Config()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    with fh:
        st = os.fstat(fh.fileno())
        raw = _cached_table(cache_dir, path, st)
        if raw is None:
            try:
                data = fh.read(_MAX_CONFIG + 1)
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
            if len(data) > _MAX_CONFIG:
                raise ConfigError(f"{path}: larger than {_MAX_CONFIG} bytes; not a config")
            raw = _parse_toml(data, path)
            _store_table(cache_dir, path, st, raw)
    return parse_config(raw, str(path))


def _parse_toml(data: bytes, path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.9/3.10 only
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    try:
        table: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
        return table
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _cache_file(cache_dir: str, path: Path) -> str:
    return os.path.join(cache_dir, str(path).replace("%", "%25").replace("/", "%2F")[:200])


def _fingerprint(path: Path, st: os.stat_result) -> list[object]:
    return [str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _cached_table(cache_dir: str, path: Path, st: os.stat_result) -> dict[str, Any] | None:
    """The parsed table of ``path`` if root cached it for exactly this file version."""
    try:
        dst = os.lstat(cache_dir)
        if not _root_only(dst, stat.S_ISDIR):
            return None
        fd = os.open(_cache_file(cache_dir, path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            if not _root_only(os.fstat(fd), stat.S_ISREG):
                return None
            doc = json.loads(os.read(fd, _MAX_CONFIG))
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("file") != _fingerprint(path, st):
        return None
    table = doc.get("table")
    return table if isinstance(table, dict) else None


def _store_table(cache_dir: str, path: Path, st: os.stat_result, raw: dict[str, Any]) -> None:
    """As root: remember the parsed table (never fails the caller)."""
    if os.geteuid() != 0:
        return
    try:
        text = json.dumps({"file": _fingerprint(path, st), "table": raw})
    except (TypeError, ValueError):
        return  # e.g. a TOML date: not worth caching
    from .nodestate import write_atomic  # a cache miss only: keeps the hot path lean

    try:
        os.makedirs(cache_dir, mode=0o755, exist_ok=True)
        write_atomic(Path(_cache_file(cache_dir, path)), text, 0o644)
    except OSError:
        pass


def _root_only(st: os.stat_result, is_type: Callable[[int], bool]) -> bool:
    return is_type(st.st_mode) and st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def parse_config(raw: Mapping[str, Any], source: str) -> Config:
    """Validate a parsed TOML table into a Config; errors name the key and the file."""
    fields = {f.name: f for f in dataclasses.fields(Config) if f.name != "source"}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: unknown key '{key}' (known keys: {known})")
        values[key] = _check(key, value, source)
    cfg = Config(**values, source=source)
    if cfg.hook_timeout < cfg.start_timeout + 10:
        raise ConfigError(
            f"{source}: key 'hook_timeout' ({cfg.hook_timeout:g}) must exceed "
            f"start_timeout ({cfg.start_timeout:g}) by at least 10 seconds"
        )
    return cfg


_NUMBERS = {
    "start_timeout",
    "stop_grace",
    "hook_timeout",
    "linger_max",
    "linger_poll_seconds",
    "job_grace",
    "linger_unverified",
}
_STRINGS = {
    "metrics_file",
    "gcp_path",
    "state_dir",
    "user_dir",
    "on_failure",
    "log_file",
    "globus_client_id",
    "chain_health_check",
}


def _check(key: str, value: Any, source: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: key '{key}' must be {expected}, got {value!r}")

    if key in _NUMBERS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise bad("a number of seconds > 0")
        return float(value)
    if key in ("hold_max_bytes", "gcp_memory_max"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad("a whole number of bytes >= 0")
        return value
    if key == "gcp_cpu_max":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
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
        if key in ("gcp_path", "state_dir") and not value.startswith("/"):
            raise bad("an absolute path")
        if (
            key in ("log_file", "chain_health_check", "metrics_file")
            and value
            and not value.startswith("/")
        ):
            raise bad("an absolute path")
        if key == "user_dir" and not (value.startswith("/") or value.startswith("~")):
            raise bad("an absolute path or one starting with ~")
        return value
    raise AssertionError(key)  # pragma: no cover - fields and checks are kept in step
