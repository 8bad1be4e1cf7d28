"""``globus-tmp-admin doctor``: the checks an admin runs after installing or changing
anything. One line per check, ``OK``/``WARN``/``FAIL``, each failure with its fix; the
exit code is the worst (0 all OK, 1 a warning, 2 a failure).

Nothing here changes the node, except what the hooks would create anyway (the state
directory); a home directory is only touched as its user (``--user``), in a temporary
file that is removed again.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .boundedio import read_bounded
from .config import Config
from .configkeys import FALLBACK_CONFIG, config_file, fallback_config
from .elfsym import NotElf, read_uint32
from .errors import CommandFailed, GlobusTmpError
from .job import UserIdentity
from .jobcontainer import JobContainerConf, read_job_container_conf
from .nodestate import NodeStateStore
from .slurmconf import SlurmSettings, spank_plugins
from .slurmview import slurm_version

OK, WARN, FAIL = "OK", "WARN", "FAIL"
CLONENS_WAIT_MIN = 30.0
"""Seconds of CloneNS*_Wait the private-/tmp helper needs for its user steps and a move."""
_RANK = {OK: 0, WARN: 1, FAIL: 2}
HOOKS = {"Prolog": "globus-tmp-prolog", "Epilog": "globus-tmp-epilog",
         "TaskProlog": "globus-tmp-taskprolog"}  # fmt: skip
TIMER = "globus-tmp-reconcile.timer"
TIMER_ENABLED = f"/etc/systemd/system/timers.target.wants/{TIMER}"
"""Where ``systemctl enable`` links the timer (``WantedBy=timers.target``)."""
_WRAPPER_MAX = 64 * 1024
"""A script larger than this is not read to find out whether it runs our hook."""


@dataclass(frozen=True)
class Check:
    level: str
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.level:<4} {self.name}: {self.detail}"


def worst(checks: list[Check]) -> int:
    return max((_RANK[c.level] for c in checks), default=0)


class Doctor:
    def __init__(
        self,
        cfg: Config,
        node: str,
        slurm: SlurmSettings,
        user: UserIdentity | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.cfg, self.node, self.slurm, self.user = cfg, node, slurm, user
        self.env = os.environ if env is None else env
        self.timer_enabled = Path(TIMER_ENABLED)
        self.version_probe: Callable[[], tuple[int, int, int] | None] = lambda: slurm_version(
            cfg.slurm_bin_dir
        )
        self._version: tuple[int, int, int] | None = None
        self._version_asked = False

    def run(self) -> list[Check]:
        return [
            self.config(),
            self.gcp(),
            self.state_dir(),
            self.interpreter(),
            *self.slurm_conf(),
            self.periodic_reconcile(),
            self.private_tmp(),
            self.metrics(),
            self.gcp_limits(),
            self.user_dir(),
            self.syslog(),
        ]

    def config(self) -> Check:
        """Which globus-tmp.conf was read. None on a configless node is the likely slip:
        slurmctld pushes slurm.conf (and Slurm's own files) into slurmd's conf cache, not
        ours, so a file beside the old slurm.conf is not beside ``SLURM_CONF`` any more."""
        if self.cfg.source != "<defaults>":
            return Check(OK, "config", f"{self.cfg.source} parsed")
        path, explicit = config_file(self.env)
        looked = [path, *filter(None, [fallback_config(path, explicit)])]
        none = f"no globus-tmp.conf at {' nor '.join(looked)}: running on defaults"
        if self.slurm.configless:
            return Check(WARN, "config", f"{none}, and {self.slurm.path} is a configless "
                         "copy from slurmctld, which does not push globus-tmp.conf: put it "
                         f"at {FALLBACK_CONFIG} on every node")  # fmt: skip
        return Check(OK, "config", none)

    def gcp(self) -> Check:
        """``gcp_path`` runs (as nobody: GCP refuses root) and says its version."""
        from .privileges import run_as

        path = self.cfg.gcp_path
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            return Check(FAIL, "gcp_path", f"{path} is missing or not executable; install "
                         "Globus Connect Personal there or fix gcp_path")  # fmt: skip
        try:
            nobody = UserIdentity.from_name("nobody")
            version = run_as(nobody, 20, _gcp_version, path)
        except GlobusTmpError as exc:
            return Check(FAIL, "gcp_path", f"{path} -version failed: {exc}")
        return Check(OK, "gcp_path", f"{path}: {version}")

    def state_dir(self) -> Check:
        root = self.cfg.state_dir_for(self.node)
        try:
            NodeStateStore(root).ensure()
        except GlobusTmpError as exc:
            return Check(FAIL, "state_dir", str(exc))
        return Check(OK, "state_dir", f"{root} root-owned, not writable by others")

    def interpreter(self) -> Check:
        """Users run the TaskProlog and the CLI with this interpreter."""
        exe = Path(sys.executable)
        for part in [exe, *exe.parents]:
            try:
                mode = os.stat(part).st_mode
            except OSError as exc:
                return Check(FAIL, "interpreter", f"{part}: {exc.strerror}")
            need = stat.S_IXOTH
            if not mode & need:
                return Check(FAIL, "interpreter", f"{part} is not executable by users "
                             f"(mode {oct(mode & 0o777)}); install into a venv users can "
                             "run, e.g. /opt/globus-tmp/venv")  # fmt: skip
        return Check(OK, "interpreter", f"{exe} executable by every user")

    def slurm_conf(self) -> list[Check]:
        s = self.slurm
        if not s.found:
            return [Check(FAIL, "slurm.conf", f"{s.path} not found; set SLURM_CONF")]
        out = [self.hook_script(key, program) for key, program in HOOKS.items()]
        out.append(self.prolog_flags())
        out.extend(self.timeouts())
        return out

    def hook_script(self, key: str, program: str) -> Check:
        """Whether slurmd runs ``program`` as ``key``: ``Prolog``/``Epilog`` entries are
        globbed (``Prolog=/etc/slurm/prolog.d/*``) and, from 24.05, several lines all run;
        one entry that matches nothing fails them all (slurmd builds the whole list
        first). ``TaskProlog`` is one path. A symlink to the program, or a script that
        names it (a wrapper), counts as the program."""
        s, name = self.slurm, f"slurm.conf {key}"
        if key == "TaskProlog":
            value = s.hook(key)
            path = value if value.startswith("/") else str(Path(s.path).parent / value)
            entries = [(value, [path] if value and os.path.lexists(path) else [])] if value else []
        else:
            entries = s.scripts(key)
        version, note = self.slurm_version(), ""
        if len(entries) > 1 and version is not None and version < (24, 5):
            note = f" (Slurm {_release(version)} runs only the last {key}= line)"
            entries = entries[-1:]
        shown = f"{key}={' + '.join(e for e, _ in entries) or '(unset)'}{note}"
        fix = f"set {key}=<venv>/bin/{program} (or a symlink to it in a {key}=DIR/* directory)"
        broken = [why for why in (_unrunnable(e, paths) for e, paths in entries) if why]
        ours = [p for _, paths in entries for p in paths if _runs(p, program)]
        if broken:
            return Check(FAIL, name, f"{shown}; {'; '.join(broken)}")
        if not ours:
            return Check(FAIL, name, f"{shown}; {program} is not among what slurmd runs: {fix}")
        return Check(OK, name, f"{shown}: runs {ours[0]}")

    def prolog_flags(self) -> Check:
        """Judged on the flags Slurm sets, implied ones included (``RunInJob`` alone is
        ``Alloc,Contain,RunInJob``: see :data:`~globus_tmp.slurmconf.IMPLIED_FLAGS`)."""
        s, name = self.slurm, "slurm.conf PrologFlags"
        written = s.hook("prologflags") or "(none)"
        flags = f"{written} (in effect: {','.join(sorted(s.prolog_flags)) or 'none'})"
        if s.run_in_job:
            return Check(FAIL, name, f"{flags}; RunInJob runs Prolog and Epilog inside the "
                         "job's extern step and its cgroup, so the user's shared GCP and its "
                         "drain would die with that job: remove RunInJob, use "
                         "PrologFlags=Alloc,Contain")  # fmt: skip
        if "alloc" not in s.prolog_flags:
            return Check(FAIL, name, f"{flags}; add Alloc (the Prolog must run on every "
                         "node when the job starts)")  # fmt: skip
        if not s.contain:
            return Check(WARN, name, f"{flags}; add Contain: without it a job whose Epilog "
                         "never ran is only dropped once squeue answers")  # fmt: skip
        return Check(OK, name, flags)

    def timeouts(self) -> list[Check]:
        """slurmd kills a Prolog/Epilog at its timeout and drains the node: each script's
        own timeout (25.05+ ``PrologTimeout``/``EpilogTimeout``, else
        ``PrologEpilogTimeout``) must exceed the hooks' own bound. One line while both
        come from ``PrologEpilogTimeout``."""
        s, version = self.slurm, self.slurm_version()
        per_script = version is None or version >= (25, 5)
        unknown = [k for k in ("PrologTimeout", "EpilogTimeout") if not per_script and s.hook(k)]
        if unknown:
            return [Check(FAIL, "slurm.conf timeouts", f"{', '.join(unknown)}: Slurm "
                          f"{_release(version or ())} has no such key (25.05+) and refuses "
                          "slurm.conf; use PrologEpilogTimeout")]  # fmt: skip
        scripts = [(name, *s.script_timeout(name, per_script)) for name in ("Prolog", "Epilog")]
        if all(key == "PrologEpilogTimeout" for _, key, _ in scripts):
            _, key, value = scripts[0]
            return [self._timeout(f"slurm.conf {key}", key, value)]
        return [self._timeout(f"slurm.conf {n} timeout", k, v) for n, k, v in scripts]

    def _timeout(self, name: str, key: str, value: str) -> Check:
        try:
            seconds = float(value) if value else None
        except ValueError:
            seconds = None
        hook = self.cfg.hook_timeout
        if seconds is None or seconds <= hook:
            return Check(FAIL if seconds else WARN, name, f"{key}={value or '(unset)'}; set it "
                         f"above hook_timeout ({hook:g} s), e.g. {int(hook + 60)}")  # fmt: skip
        return Check(OK, name, f"{key}={value} > hook_timeout {hook:g}")

    def periodic_reconcile(self) -> Check:
        """Orphans on a node where their user never runs again are found only by a
        periodic ``reconcile``: the systemd timer, or ``globus-tmp-healthcheck`` as
        HealthCheckProgram, which slurmd runs every ``HealthCheckInterval`` unless
        ``HealthCheckNodeState`` says ``START_ONLY`` (25.11: only at slurmd's start) or
        ``NONDRAINED_IDLE`` (only on idle nodes: a node kept busy never runs it)."""
        s, name = self.slurm, "periodic reconcile"
        fix = (f"enable the timer instead: install slurm-conf-snippets/{TIMER} and .service, "
               f"systemctl enable --now {TIMER}")  # fmt: skip
        if os.path.lexists(self.timer_enabled):
            return Check(OK, name, f"{TIMER} is enabled")
        program = s.hook("HealthCheckProgram")
        path = program if program.startswith("/") else ""
        if not path or not _runs(path, "globus-tmp-healthcheck"):
            return Check(WARN, name, f"HealthCheckProgram={program or '(unset)'} is not "
                         f"globus-tmp-healthcheck and {TIMER} is not enabled: orphans live "
                         f"until the user's next job on the node; {fix}")  # fmt: skip
        states, interval = s.health_check_node_state, s.hook("HealthCheckInterval")
        if "START_ONLY" in states:
            why = "slurmd runs HealthCheckProgram only when slurmd starts"
        elif "NONDRAINED_IDLE" in states:
            why = "slurmd runs HealthCheckProgram only on idle nodes that are not drained"
        elif _seconds(interval) is None:
            return Check(WARN, name, f"HealthCheckInterval={interval or '(unset)'}: slurmd "
                         f"never runs HealthCheckProgram; set HealthCheckInterval=300, or "
                         f"{fix}")  # fmt: skip
        else:
            return Check(OK, name, f"globus-tmp-healthcheck every {interval} s "
                         "(HealthCheckProgram)")  # fmt: skip
        return Check(WARN, name, f"HealthCheckNodeState={s.hook('HealthCheckNodeState')}: "
                     f"{why}, so reconcile through globus-tmp-healthcheck does not run "
                     f"periodically; {fix}")  # fmt: skip

    def private_tmp(self) -> Check:
        s, name = self.slurm, "private /tmp"
        plugin, version = s.job_container or "(none)", self.slurm_version()
        if s.hook("NamespaceType") and version is not None and version < (25, 11):
            return Check(FAIL, name, f"NamespaceType: Slurm {_release(version)} has no such "
                         "key (25.11+) and refuses slurm.conf; use "
                         "JobContainerType=job_container/tmpfs")  # fmt: skip
        if not s.private_tmp:
            return Check(OK, name, f"namespace plugin {plugin}; jobs share the node's /tmp")
        if not s.exports_private_tmp:
            return Check(FAIL, name, f"namespace plugin {plugin} gives each job a private /tmp "
                         "(namespace.yaml), but globus-tmp exports job_container/tmpfs and "
                         "namespace/tmpfs only: GCP would export the host's /tmp; use "
                         "NamespaceType=namespace/tmpfs with job_container.conf")  # fmt: skip
        jc = read_job_container_conf(Path(s.path), self.node)
        bases = [b for b in jc.bases if b.is_dir()]
        if not bases:
            return Check(FAIL, name, f"{plugin} is on but no BasePath from "
                         f"{Path(s.path).parent / 'job_container.conf'} exists")  # fmt: skip
        if jc.clonens_ignored:
            return Check(FAIL, name, "CloneNSScript/CloneNSEpilog on a line without BasePath "
                         "in job_container.conf: Slurm reads them only as options of the "
                         "BasePath line and ignores them silently; move them onto it")  # fmt: skip
        if jc.clonens_script or jc.clonens_epilog:
            return self.clonens(jc, plugin, bases[0])
        plugstack = Path(s.hook("plugstackconfig") or Path(s.path).parent / "plugstack.conf")
        lines = spank_plugins(plugstack, s.hook("plugindir"))
        line = next((ln for ln in lines if "globus_tmp_spank" in os.path.basename(ln[1])), [])
        if not line:
            return Check(FAIL, name, f"{plugin} is on but {plugstack} has no "
                         "globus_tmp_spank.so line: GCP would export the host's /tmp and move "
                         "nothing of the jobs' (see README, Private /tmp)")  # fmt: skip
        so = line[1]
        helper = next((w[7:] for w in line[2:] if w.startswith("helper=")), "")
        for path, what in ((so, "plugin"), (helper, "helper")):
            if not path or not os.access(path, os.R_OK):
                return Check(FAIL, name, f"the SPANK {what} {path or '(unset)'} "
                             f"named in {plugstack} is missing")  # fmt: skip
        built = self.spank_build(so)
        if built.level != OK:
            return built
        return Check(OK, name, f"{plugin} with the SPANK plugin ({so}, {built.detail}), "
                     f"BasePath {bases[0]}")  # fmt: skip

    def clonens(self, jc: JobContainerConf, plugin: str, base: Path) -> Check:
        """job_container.conf's CloneNSScript/CloneNSEpilog export instead of the plugin:
        24.11+ only (24.05's slurmd refuses the keys), both set, both runnable, and their
        waits long enough for the helper (docs/ADMIN.md)."""
        name, version = "private /tmp", self.slurm_version()
        if version is not None and version < (24, 11):
            return Check(FAIL, name, f"CloneNSScript/CloneNSEpilog: Slurm {_release(version)} "
                         "has no such keys (24.11+); use the SPANK plugin")  # fmt: skip
        for key, path in (("CloneNSScript", jc.clonens_script),
                          ("CloneNSEpilog", jc.clonens_epilog)):  # fmt: skip
            if not path or not os.access(path, os.X_OK):
                return Check(FAIL, name, f"{key}={path or '(unset)'} is not an executable "
                             "file; set both to slurm-conf-snippets/globus-tmp-clonens-init "
                             "and -epilog")  # fmt: skip
        short = min(jc.clonens_script_wait, jc.clonens_epilog_wait)
        if short < CLONENS_WAIT_MIN:
            return Check(WARN, name, f"CloneNSScript_Wait/CloneNSEpilog_Wait {short:g} s: "
                         "the helper gives up early to stay within it, and may not hold a "
                         f"large /tmp; set both to {CLONENS_WAIT_MIN:g} or more")  # fmt: skip
        return Check(OK, name, f"{plugin} with CloneNSScript/CloneNSEpilog, BasePath {base}")

    def spank_build(self, so: str) -> Check:
        """Slurm loads a SPANK plugin only if its ``plugin_version`` has Slurm's own
        major.minor (``plugin_peek``), and skips an ``optional`` one that fails with a
        verbose log line only: an upgrade without a rebuild silently stops it. The
        version is read from the file (:mod:`globus_tmp.elfsym`), never by loading it."""
        name, fix = (
            "private /tmp",
            "rebuild globus_tmp_spank.so against this Slurm (spank/Makefile)",
        )
        try:
            number = read_uint32(so, "plugin_version")
        except (OSError, NotElf) as exc:
            return Check(FAIL, name, f"{so}: no plugin_version ({exc}); {fix}")
        built = (number >> 16 & 0xFF, number >> 8 & 0xFF)
        running = self.slurm_version()
        if running is None:
            where = self.cfg.slurm_bin_dir or "the safe PATH and sbin"
            return Check(WARN, name, f"{so} was built for Slurm {_release(built)}; which Slurm "
                         f"runs here is unknown (no slurmd -V or scontrol --version in "
                         f"{where}): set slurm_bin_dir")  # fmt: skip
        if built != running[:2]:
            return Check(FAIL, name, f"{so} was built for Slurm {_release(built)}, this node "
                         f"runs {_release(running)}: Slurm skips a plugin of another release "
                         f"(an optional one silently); {fix}")  # fmt: skip
        return Check(OK, name, f"built for Slurm {_release(built)}")

    def slurm_version(self) -> tuple[int, int, int] | None:
        """The running Slurm's version (asked once; None: unknown)."""
        if not self._version_asked:
            self._version, self._version_asked = self.version_probe(), True
        return self._version

    def metrics(self) -> Check:
        """The hooks write ``metrics_file`` by rename as root: only into a directory
        nobody else may write to (:func:`globus_tmp.metrics.textfile_dir_problem`)."""
        if not self.cfg.metrics_file:
            return Check(OK, "metrics_file", "off")
        from .metrics import metrics_path, textfile_dir_problem

        path = metrics_path(self.cfg, self.node)
        problem = textfile_dir_problem(path)
        if problem:
            return Check(FAIL, "metrics_file", problem)
        return Check(OK, "metrics_file", f"{path}: its directory is writable by root only")

    def gcp_limits(self) -> Check:
        """GCP and its transfers run outside every job's cgroup (in ``gcp_cgroup``, or in
        slurmd's): without limits nothing bounds what they take from the node's jobs."""
        cpu, memory = self.cfg.gcp_cpu_max, self.cfg.gcp_memory_max
        shown = f"gcp_cpu_max={cpu:g}, gcp_memory_max={memory}"
        if not self.cfg.gcp_cgroup:
            return Check(WARN, "GCP limits", "gcp_cgroup is empty: GCP stays in slurmd's "
                         "cgroup, unlimited; set gcp_cgroup = \"globus-tmp\" and the "
                         "limits (docs/CGROUPS.md)")  # fmt: skip
        if cpu == 0 or memory == 0:
            return Check(WARN, "GCP limits", f"{shown} (0: no limit): GCP runs outside the "
                         "job's cgroup, so nothing bounds it; set both, e.g. gcp_cpu_max = 2 "
                         "and gcp_memory_max = 4294967296 (docs/CGROUPS.md)")  # fmt: skip
        return Check(OK, "GCP limits", f"{shown} in cgroup {self.cfg.gcp_cgroup}")

    def user_dir(self) -> Check:
        """Leases need link() on the users' file system: tried as the user."""
        if self.user is None:
            return Check(WARN, "user_dir", "not checked: --user NAME tries link() in that "
                         f"user's {self.cfg.user_dir}")  # fmt: skip
        from .privileges import run_as

        where = self.cfg.user_dir_for(self.user)
        try:
            verdict = run_as(self.user, 30, _try_link, str(where))
        except GlobusTmpError as exc:
            return Check(FAIL, "user_dir", f"{where} as {self.user.name}: {exc}")
        works = isinstance(verdict, dict) and verdict.get("works") is True
        detail = str(verdict.get("detail") if isinstance(verdict, dict) else verdict)
        return Check(OK if works else FAIL, "user_dir", f"{where} ({self.user.name}): {detail}")

    def syslog(self) -> Check:
        try:
            if stat.S_ISSOCK(os.stat("/dev/log").st_mode):
                return Check(OK, "syslog", f"/dev/log, facility {self.cfg.syslog_facility}")
        except OSError:
            pass
        return Check(WARN, "syslog", "/dev/log is not a socket: hook lines reach only "
                     "the node's hook log; start a syslog daemon or journald")  # fmt: skip


def _release(version: tuple[int, ...]) -> str:
    """``(24, 11, 7)`` -> ``24.11.7``; ``(22, 5)`` -> ``22.05``."""
    return ".".join(f"{n:02d}" if i == 1 else str(n) for i, n in enumerate(version))


def _seconds(value: str) -> float | None:
    """A positive number of seconds, or None (unset, 0, not a number)."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def _unrunnable(entry: str, paths: list[str]) -> str:
    """Why slurmd cannot run one script entry ('' when it can)."""
    if not paths:
        return f"{entry} matches no file: slurmd fails the script (and drains the node)"
    dirs = [p for p in paths if os.path.isdir(p)]
    if dirs:
        return (f"{dirs[0]} is a directory: slurmd would try to run it; to run the "
                f"scripts in it write {dirs[0].rstrip('/')}/*")  # fmt: skip
    return ""


def _runs(path: str, program: str) -> bool:
    """``path`` is ``program``, a symlink to it, or a small script naming it."""
    if program in (os.path.basename(path), os.path.basename(os.path.realpath(path))):
        return True
    try:
        return program.encode() in read_bounded(os.path.realpath(path), _WRAPPER_MAX)
    except OSError:  # not a regular file, too large for a wrapper, unreadable
        return False


def _gcp_version(path: str) -> str:
    from .commands import run_bounded

    res = run_bounded([path, "-version"], 15)
    text = (res.stdout or res.stderr).strip().splitlines()
    if res.returncode != 0 or not text:
        raise CommandFailed(
            f"exit {res.returncode}: {' '.join(text)[:200]}",
            command=res.command,
            returncode=res.returncode,
            output=res.output[-2000:],
        )
    return text[0][:200]


def _try_link(where: str) -> dict[str, Any]:
    """Whether ``link()`` works in ``where`` (as the user), and a note saying so."""
    import tempfile

    os.makedirs(where, mode=0o700, exist_ok=True)
    fd, first = tempfile.mkstemp(prefix=".doctor-", dir=where)
    os.close(fd)
    second = first + ".link"
    try:
        os.link(first, second)
        os.unlink(second)
    except OSError as exc:
        why = (
            f"link() fails ({exc.strerror}): leases cannot work; set user_dir to a "
            "per-user place on a file system with link()"
        )
        return {"works": False, "detail": why}
    finally:
        os.unlink(first)
    return {"works": True, "detail": "link() works"}
