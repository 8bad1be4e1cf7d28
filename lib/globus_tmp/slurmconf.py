"""The few slurm.conf settings the hooks act on, read from the file slurmd reads.

- ``SlurmdSpoolDir``: where slurmd keeps one root-owned socket per job step on this
  node (``<node>_<jobid>.<step>``), the unforgeable witness of a live job;
- ``PrologFlags``: with ``Contain`` every node of a job runs an extern step for the
  job's whole life, so "no step here" proves "job gone"; without it, it does not. Flags
  imply others as ``prolog_str2flags`` in Slurm's ``read_config.c`` sets them
  (:data:`IMPLIED_FLAGS`): ``PrologFlags=RunInJob`` alone is ``Alloc,Contain,RunInJob``;
- ``JobContainerType`` (``NamespaceType`` from 25.11, which wins when both are set):
  ``job_container/tmpfs`` (``namespace/tmpfs``) gives each job a private ``/tmp`` under
  ``job_container.conf``'s ``BasePath``, which :mod:`globus_tmp.privatetmp` exports to
  the user's GCP; 25.11's ``namespace/linux`` gives one too, configured in
  ``namespace.yaml``, which globus-tmp does not export.

slurmd hands the hooks ``SLURM_CONF``; ``HealthCheckProgram`` gets no such variable,
so the file beside ``globus-tmp.conf`` is the next guess, then Slurm's default, then
``/run/slurm/conf/slurm.conf``: a configless slurmd (23.11+) keeps slurmctld's copy in
``<SlurmdSpoolDir>/conf-cache`` and links ``/run/slurm/conf`` to it, as Slurm's
commands find it. Only
top-level ``Key=Value`` lines and ``Include`` are read: this is not a Slurm parser, and
a site whose settings it cannot see gets the safe answer (no job is ever proven gone).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .boundedio import STATE, read_text_bounded
from .config import DEFAULT_SLURM_CONF, Config

DEFAULT_SPOOL_DIR = "/var/spool/slurmd"
CONFIGLESS_SLURM_CONF = "/run/slurm/conf/slurm.conf"
CONF_CACHE = "conf-cache"
"""The directory below ``SlurmdSpoolDir`` where a configless slurmd keeps its copy."""
_WANTED = (
    "slurmdspooldir",
    "prologflags",
    "jobcontainertype",
    "namespacetype",
    "clustername",
    "prolog",
    "epilog",
    "taskprolog",
    "prologepilogtimeout",
    "prologtimeout",
    "epilogtimeout",
    "plugstackconfig",
    "plugindir",
    "healthcheckprogram",
    "healthcheckinterval",
    "healthchecknodestate",
)
EXPORTED_PRIVATE_TMP = ("job_container/tmpfs", "namespace/tmpfs")
"""The plugins whose private ``/tmp`` globus-tmp exports (``job_container.conf``)."""
PRIVATE_TMP_PLUGINS = (*EXPORTED_PRIVATE_TMP, "namespace/linux")
"""Every plugin that gives each job a private ``/tmp``."""
DEFAULT_PLUGIN_DIR = "/usr/local/lib/slurm"
IMPLIED_FLAGS = {
    "contain": ("alloc",),
    "runinjob": ("alloc", "contain"),
    "x11": ("alloc", "contain"),
    "forcerequeueonfail": ("alloc",),
    "nohold": ("alloc",),
}
"""What each PrologFlag sets besides itself (Slurm 22.05-25.11: ``prolog_str2flags``,
and ``NoHold`` adds ``Alloc`` after it)."""


@dataclass(frozen=True)
class SlurmSettings:
    path: str
    found: bool
    spool_dir: str
    prolog_flags: frozenset[str]
    job_container: str
    cluster: str = ""
    values: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Every value of each key read (lower case), in the order Slurm reads them
    (``Include`` files where they are included; for ``globus-tmp-admin doctor``)."""

    def hook(self, key: str) -> str:
        """The value in effect of a single-valued key: the last one (Slurm's parser keeps
        the latest value of a key given more than once)."""
        entries = self.entries(key)
        return entries[-1] if entries else ""

    def entries(self, key: str) -> tuple[str, ...]:
        """Every value of ``key``: ``Prolog`` and ``Epilog`` are lists from 24.05 (one
        entry per line, each run in turn; a comma is part of a path, not a separator)."""
        return dict(self.values).get(key.lower(), ())

    def scripts(self, key: str) -> list[tuple[str, list[str]]]:
        """Each ``key`` entry (``Prolog``/``Epilog``) with the programs slurmd runs for it."""
        return [(entry, script_paths(Path(self.path), entry)) for entry in self.entries(key)]

    def script_timeout(self, script: str, per_script: bool = True) -> tuple[str, str]:
        """The key that sets slurmd's timeout for ``script`` (``Prolog`` or ``Epilog``),
        and its value (empty: unset, slurmd waits forever). From 25.05 ``PrologTimeout``
        and ``EpilogTimeout`` override ``PrologEpilogTimeout`` for their script
        (``read_config.c``: ``prolog_timeout`` defaults to ``PrologEpilogTimeout``);
        ``per_script=False``: a Slurm before 25.05, which has only the shared key."""
        own = f"{script}Timeout"
        if per_script and self.hook(own):
            return own, self.hook(own)
        return "PrologEpilogTimeout", self.hook("PrologEpilogTimeout")

    @property
    def configless(self) -> bool:
        """Whether this is a configless slurmd's copy of slurmctld's slurm.conf (in its
        ``conf-cache``): files of ours beside it are not pushed there."""
        return CONF_CACHE in Path(os.path.realpath(self.path)).parts[:-1]

    @property
    def health_check_node_state(self) -> frozenset[str]:
        """``HealthCheckNodeState`` as upper-case words (Slurm's default: ``ANY``)."""
        words = {w.strip().upper() for w in self.hook("HealthCheckNodeState").split(",")}
        return frozenset(w for w in words if w) or frozenset({"ANY"})

    @property
    def contain(self) -> bool:
        return "contain" in self.prolog_flags

    @property
    def run_in_job(self) -> bool:
        """``PrologFlags=RunInJob`` (24.05+): Prolog and Epilog run inside the job's extern
        step, in its cgroup, so a GCP they start dies with that one job."""
        return "runinjob" in self.prolog_flags

    @property
    def private_tmp(self) -> bool:
        """Whether each job gets a private ``/tmp`` (tmpfs, or 25.11's namespace/linux)."""
        return any(p in PRIVATE_TMP_PLUGINS for p in self.job_container.split(","))

    @property
    def exports_private_tmp(self) -> bool:
        """Whether that private ``/tmp`` is one globus-tmp exports (job_container.conf)."""
        return any(p in EXPORTED_PRIVATE_TMP for p in self.job_container.split(","))

    def spool_dir_for(self, node: str) -> Path:
        text = self.spool_dir.replace("%n", node).replace("%h", os.uname().nodename)
        return Path(text)


def slurm_conf_path(cfg: Config, env: Mapping[str, str]) -> Path:
    if env.get("SLURM_CONF"):
        return Path(env["SLURM_CONF"])
    if cfg.source != "<defaults>":
        beside = Path(cfg.source).parent / "slurm.conf"
        if beside.exists():
            return beside
    if not os.path.exists(DEFAULT_SLURM_CONF) and os.path.exists(CONFIGLESS_SLURM_CONF):
        return Path(CONFIGLESS_SLURM_CONF)
    return Path(DEFAULT_SLURM_CONF)


def cluster_name(cfg: Config, env: Mapping[str, str]) -> str:
    """This cluster's name: slurmd's ``SLURM_CLUSTER_NAME``, else slurm.conf's
    ``ClusterName``. Lease owners carry it: clusters often share one home file system,
    and node names are unique only within a cluster."""
    return env.get("SLURM_CLUSTER_NAME") or read_slurm_settings(slurm_conf_path(cfg, env)).cluster


def read_slurm_settings(path: Path) -> SlurmSettings:
    """The settings from ``path`` (and its ``Include`` files); defaults where absent."""
    lists: dict[str, list[str]] = {}
    found = _read_into(path, lists, depth=0)
    values = {key: entries[-1] for key, entries in lists.items()}  # the latest wins
    flags = effective_prolog_flags(values.get("prologflags", ""))
    return SlurmSettings(
        path=str(path),
        found=found,
        spool_dir=values.get("slurmdspooldir", DEFAULT_SPOOL_DIR),
        prolog_flags=flags,
        job_container=namespace_plugins(values),
        cluster=values.get("clustername", ""),
        values=tuple((k, tuple(lists[k])) for k in _WANTED if k in lists),
    )


def script_paths(slurm_conf: Path, entry: str) -> list[str]:
    """The programs slurmd runs for one ``Prolog``/``Epilog`` entry: a relative entry is
    beside slurm.conf (``get_extra_conf_path``; configless: in the conf cache), and the
    entry is a glob(3) pattern whose matches run in turn (``prep_script_slurmd.c``). A
    plain path matches only if it exists; no match at all fails the script."""
    path = entry if entry.startswith("/") else str(slurm_conf.parent / entry)
    return sorted(glob.glob(path))


def namespace_plugins(values: Mapping[str, str]) -> str:
    """The job namespace plugins slurmd loads, comma-separated (empty: none). 25.11's
    ``read_config.c``: ``NamespaceType`` wins over ``JobContainerType``, and a value
    containing ``none`` (any case) means none; ``namespace_g_init`` splits it at commas,
    drops a ``namespace/`` or ``job_container/`` prefix and loads ``namespace/<name>``
    (so ``tmpfs`` is ``namespace/tmpfs``). Up to 24.11 ``JobContainerType`` alone, a bare
    name meaning ``job_container/<name>``."""
    raw, family = values.get("namespacetype", ""), "namespace/"
    if not raw:
        raw, family = values.get("jobcontainertype", ""), "job_container/"
    if not raw or "none" in raw.lower():
        return ""
    names = []
    for name in raw.lower().split(","):
        for prefix in ("namespace/", "job_container/"):
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        names.append(family + name)
    return ",".join(names)


def spank_plugins(plugstack: Path, plugin_dir: str = "", depth: int = 0) -> list[list[str]]:
    """The plugin lines of ``plugstack`` as Slurm's ``spank.c`` reads them, ``include``
    globs followed (relative to the including file): ``[kind, path, *args]`` with
    ``kind`` ``optional`` or ``required``, a relative plugin path found in
    ``PluginDir``. A missing file is no plugin."""
    try:
        text = read_text_bounded(plugstack, STATE)
    except OSError:
        return []
    out: list[list[str]] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        kind, path = words[0], words[1]
        if kind == "include" and depth < 4:
            pattern = path if path.startswith("/") else str(plugstack.parent / path)
            for inc in sorted(glob.glob(pattern)):
                out.extend(spank_plugins(Path(inc), plugin_dir, depth + 1))
        elif kind in ("optional", "required"):
            out.append([kind, _plugin_path(path, plugin_dir), *words[2:]])
    return out


def _plugin_path(path: str, plugin_dir: str) -> str:
    if path.startswith("/"):
        return path
    for where in (plugin_dir or DEFAULT_PLUGIN_DIR).split(":"):
        if where and os.path.exists(os.path.join(where, path)):
            return os.path.join(where, path)
    return path


def effective_prolog_flags(text: str) -> frozenset[str]:
    """The flags ``PrologFlags=text`` sets (lower case), implied ones included."""
    written = {f.strip().lower() for f in text.split(",") if f.strip()}
    return frozenset(written.union(*(IMPLIED_FLAGS.get(f, ()) for f in written)))


def _read_into(path: Path, values: dict[str, list[str]], depth: int) -> bool:
    try:
        text = read_text_bounded(path, STATE)
    except OSError:
        return False
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        first, _, rest = line.partition(" ")
        if first.lower() == "include" and depth < 4:
            inc = Path(rest.strip())
            _read_into(inc if inc.is_absolute() else path.parent / inc, values, depth + 1)
            continue
        key, sep, value = first.partition("=")
        if sep and key.lower() in _WANTED:
            values.setdefault(key.lower(), []).append(value.strip().strip('"'))
    return True
