"""globus-tmp.conf: where it is, what it may say, and its defaults.

The file is TOML and lives beside ``slurm.conf`` (as Slurm's own plugins keep
``cgroup.conf`` and friends), so a cluster with several Slurm configurations gets one
globus-tmp configuration each; with none there (a configless slurmd's ``SLURM_CONF``
is in its conf cache, where slurmctld pushes only Slurm's files),
``/etc/slurm/globus-tmp.conf``. ``GLOBUS_TMP_CONFIG`` names another file.

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

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .configkeys import (
    CACHE_DIR,
    CONFIG_NAME,
    DEFAULT_EXPOSED_PATHS,
    DEFAULT_HOOK_TIMEOUT,
    DEFAULT_IDLE_LINGER,
    DEFAULT_LINGER_MAX,
    DEFAULT_SLURM_CONF,
    DEFAULT_START_TIMEOUT,
    DEFAULT_STATE_DIR,
    MAX_CONFIG,
    ON_FAILURE_CHOICES,
    SYSLOG_FACILITIES,
    cache_file,
    cached_table,
    check_table,
    config_file,
    expand_percent,
    fallback_config,
    fingerprint,
    placeholders,
    user_dir_problem,
)
from .errors import ConfigError

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from typing import Any, BinaryIO

    from .configkeys import OnFailure, StartWait
    from .job import UserIdentity

__all__ = [
    "CACHE_DIR",
    "CONFIG_NAME",
    "DEFAULT_SLURM_CONF",
    "ON_FAILURE_CHOICES",
    "SYSLOG_FACILITIES",
    "Config",
    "config_path",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True)
class Config:
    """The validated configuration; defaults suit a typical cluster."""

    gcp_path: str = "/opt/globusconnectpersonal/globusconnectpersonal"
    """The ``globusconnectpersonal`` launcher, run as the job user."""
    state_dir: str = DEFAULT_STATE_DIR
    """Node-local, root-owned state; ``%n`` is the node name (several slurmd per host)."""
    user_dir: str = "~/.globus-tmp"
    """Per-user directory (pool, registry, logs); ``~`` is the job user's home."""
    exposed_paths: tuple[str, ...] = DEFAULT_EXPOSED_PATHS
    """What GCP may read and write, written to ``lta/config-paths`` as ``PATH,0,1``."""
    start_timeout: float = DEFAULT_START_TIMEOUT
    """How long GCP has to say ``connected`` after it was started; then it is stopped and
    its lease given back (watched in the background, or by the Prolog: ``start_wait``)."""
    start_wait: StartWait = "spawned"
    """``spawned``: the Prolog returns once GCP runs (the endpoint id is known; Globus
    queues tasks until it connects) and a detached watcher waits for the connect;
    ``connected``: the Prolog waits for it (up to ``start_timeout``), as before the key
    existed (a GCP that does not connect is the user's side: ``on_failure`` lets the
    job start without an endpoint either way)."""
    stop_grace: float = 15.0
    """How long GCP gets to exit after ``-stop`` before it is killed."""
    hook_timeout: float = DEFAULT_HOOK_TIMEOUT
    """Hard bound on one Prolog/Epilog run; keep PrologEpilogTimeout above it."""
    linger_max: float = DEFAULT_LINGER_MAX
    """How long a drain keeps GCP up for an active transfer after the last job."""
    idle_linger: float = DEFAULT_IDLE_LINGER
    """How long GCP stays up after the user's last job here even when no transfer runs,
    so that the user's next job (an array task, a pipeline step) joins it instead of
    paying a cold start; 0: stop at once once idle is verified. At most ``linger_max``."""
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
    gcp_cpu_max: float = 2.0
    """CPUs one user's GCP (with its transfers) may use; 0: no limit. GCP runs outside
    the job's cgroup, on cores Slurm gave to jobs: 2 keeps a GridFTP server with
    checksums busy without taking a node (docs/ADMIN.md, "Metrics and cgroups")."""
    gcp_memory_max: int = 2 << 30
    """Bytes of memory one user's GCP may use (its page cache included, which the kernel
    reclaims first); 0: no limit. 2 GiB: docs/ADMIN.md, "Metrics and cgroups"."""
    slurm_bin_dir: str = ""
    """The directory of Slurm's commands (``squeue``, ``scontrol``, ``slurmd``), e.g.
    ``/opt/slurm/bin`` for a Slurm installed under a prefix (its ``../sbin`` is searched
    too, where ``make install`` puts ``slurmd``); empty: ``/usr/local/bin:/usr/bin:/bin``
    and the ``sbin`` directories. Slurm commands never come from a caller's PATH."""
    globus_service_urls: tuple[tuple[str, str], ...] = ()
    """Service name -> base URL, e.g. a test deployment of Globus (default: Globus itself).

    Applied as globus-sdk's ``GLOBUS_SDK_SERVICE_URL_<NAME>``: slurmd gives the hooks an
    environment built from scratch, so the configuration is the only way to say it."""
    source: str = "<defaults>"
    """The file this came from (not a key)."""

    def state_dir_for(self, node: str) -> Path:
        """The state directory of ``node`` (``%n`` expanded, ``%%`` is ``%``)."""
        return Path(expand_percent(self.state_dir, {"n": node}))

    def log_file_for(self, node: str) -> Path:
        if self.log_file:
            return Path(expand_percent(self.log_file, {"n": node}))
        return self.state_dir_for(node) / "hooks.log"

    def user_dir_for(self, user: UserIdentity) -> Path:
        """``user``'s ``user_dir``: ``~`` is their home, ``%u`` their name, ``%U`` their
        uid (string work, no file access; :mod:`globus_tmp.userdir` checks the place)."""
        home, values = user.home, {"u": user.name, "U": str(user.uid)}
        text = self.user_dir
        problem = user_dir_problem(text)  # also for a Config built in code, not parsed
        if problem:
            raise ConfigError(f"{self.source}: key 'user_dir' {problem}")
        if placeholders(text):
            if not _safe_component(values["u"]):
                raise ConfigError(
                    f"{self.source}: key 'user_dir' ({text}) cannot be expanded for user "
                    f"name {values['u']!r}; "
                    'use "~/..." or %U (uid) instead'
                )
            text = expand_percent(text, values)
        elif "%" in text:
            text = expand_percent(text, {})  # only %%
        if text == "~":
            return Path(home)
        if text.startswith("~/"):
            return Path(home) / text[2:]
        return Path(text)


def _safe_component(name: str) -> bool:
    """Whether a user name can stand for ``%u`` in a path: no ``/``, not ``.``/``..``
    (a name from NSS is not ours to trust to be a plain word)."""
    return bool(name) and "/" not in name and name not in (".", "..")


def config_path(env: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file to read, and whether it was named explicitly (then it must exist)."""
    path, explicit = config_file(env)
    return Path(path), explicit


def load_config(env: Mapping[str, str] | None = None, cache_dir: str = CACHE_DIR) -> Config:
    """Find, read and validate the configuration; no file beside ``SLURM_CONF`` nor at
    the fallback place means defaults."""
    path, explicit = config_path(os.environ if env is None else env)
    fh = _open(path)
    fallback = fallback_config(str(path), explicit)
    if fh is None and fallback is not None:
        path = Path(fallback)
        fh = _open(path)
    if fh is None:
        if explicit:
            raise ConfigError(
                f"{path}: no such file (named by GLOBUS_TMP_CONFIG); "
                "create it or unset the variable"
            )
        return Config()
    with fh:
        st = os.fstat(fh.fileno())
        raw = cached_table(cache_dir, str(path), st)
        if raw is None:
            try:
                data = fh.read(MAX_CONFIG + 1)
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
            if len(data) > MAX_CONFIG:
                raise ConfigError(f"{path}: larger than {MAX_CONFIG} bytes; not a config")
            raw = _parse_toml(data, path)
            _store_table(cache_dir, path, st, raw)
    return parse_config(raw, str(path))


def _open(path: Path) -> BinaryIO | None:
    """``path`` open for reading; None when there is no such file."""
    try:
        return open(path, "rb")  # the caller closes it
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


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


def _store_table(cache_dir: str, path: Path, st: os.stat_result, raw: dict[str, Any]) -> None:
    """As root: remember the parsed table (never fails the caller)."""
    if os.geteuid() != 0:
        return
    try:
        text = json.dumps({"file": fingerprint(str(path), st), "table": raw})
    except (TypeError, ValueError):
        return  # e.g. a TOML date: not worth caching
    from .nodestate import write_atomic  # a cache miss only: keeps the hot path lean

    try:
        os.makedirs(cache_dir, mode=0o755, exist_ok=True)
        write_atomic(Path(cache_file(cache_dir, str(path))), text, 0o644)
    except OSError:
        pass


def parse_config(raw: Mapping[str, Any], source: str) -> Config:
    """Validate a parsed TOML table into a Config; errors name the key and the file
    (the rules: :mod:`globus_tmp.configkeys`)."""
    return Config(**check_table(raw, source), source=source)
