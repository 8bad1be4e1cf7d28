"""Which Slurm the lab runs: Debian's 22.05 packages, or a release built from SchedMD's source.

Sites run 23.x to 25.x; the registries here carry only Debian 12's 22.05.8. For newer
releases ``../shared/slurm/`` (beside the checkout; ``$GLOBUS_TMP_SLURM_SOURCES``
overrides it) holds ``git archive`` exports of SchedMD's repository at release tags and
their ``SHA256SUMS``. A build is a few minutes of CPU here, so it is cached outside the
checkout under ``/opt/globus-tmp-lab/slurm/<version>-<digest>/`` (keyed by the tarball's
digest and the build recipe) and reused while its marker matches; it is never assumed to
be there: a fresh machine builds it.

How it is built (``configure`` flags, :data:`CONFIGURE_FLAGS`): ``--enable-multiple-slurmd``
(one slurmd per lab node on one host, as Debian's build does), munge auth, libyaml for
25.11's ``namespace.yaml``. Nothing is installed outside the prefix: the lab runs the
prefix's ``sbin/slurmd`` and ``bin/sbatch``..., and the SPANK plugin is compiled against
the prefix's headers.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .shell import LabError, run

DEBIAN = "22.05"
"""Debian 12's packages (22.05.8): installed with apt, no build."""
SOURCE_VERSIONS: tuple[str, ...] = ("24.11", "25.11")
SUPPORTED: tuple[str, ...] = (DEBIAN, *SOURCE_VERSIONS)
CACHE_ROOT = Path(os.environ.get("GLOBUS_TMP_SLURM_CACHE", "/opt/globus-tmp-lab/slurm"))
CONFIGURE_FLAGS: tuple[str, ...] = (
    "--enable-multiple-slurmd",
    "--with-munge",
    "--disable-debug",
    "--without-hdf5",
    "--without-rrdtool",
)
BUILD_PACKAGES: tuple[str, ...] = ("gcc", "make", "libmunge-dev", "libyaml-dev", "xz-utils")
"""Debian packages a source build needs (``munge`` itself the lab installs anyway)."""
_RECIPE = "1:" + " ".join(CONFIGURE_FLAGS)
"""Part of the cache key: a change of recipe rebuilds."""


def sources_dir() -> Path:
    env = os.environ.get("GLOBUS_TMP_SLURM_SOURCES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "shared" / "slurm"


def normalise(version: str) -> str:
    """``24.11``, ``24.11.7`` or ``slurm-24.11`` -> ``24.11``; a clear error otherwise."""
    m = re.fullmatch(r"(?:slurm-)?(\d+\.\d+)(?:\.\d+)?", version.strip())
    if not m or m.group(1) not in SUPPORTED:
        raise LabError(
            f"Slurm '{version}' is not one the lab runs; use one of {', '.join(SUPPORTED)}"
        )
    return m.group(1)


@dataclass(frozen=True)
class SlurmInstall:
    """Where one Slurm's programs, headers and plugins are."""

    version: str
    """major.minor, e.g. ``25.11``."""
    prefix: Optional[Path]
    """None for Debian's packages (``/usr``)."""
    tarball: Optional[Path] = None
    digest: str = ""

    @property
    def bin_dir(self) -> Path:
        return self.prefix / "bin" if self.prefix else Path("/usr/bin")

    @property
    def sbin_dir(self) -> Path:
        return self.prefix / "sbin" if self.prefix else Path("/usr/sbin")

    @property
    def include_dir(self) -> Path:
        """Where ``slurm/spank.h`` is."""
        return self.prefix / "include" if self.prefix else Path("/usr/include")

    @property
    def path(self) -> str:
        """A ``PATH`` that finds this Slurm's commands first."""
        base = "/usr/bin:/bin:/usr/sbin:/sbin"
        return f"{self.bin_dir}:{self.sbin_dir}:{base}" if self.prefix else base

    def program(self, name: str) -> str:
        """Absolute path of a Slurm program (``slurmd``, ``sbatch``...)."""
        for d in (self.sbin_dir, self.bin_dir):
            if (d / name).exists():
                return str(d / name)
        return name

    def at_least(self, major: int, minor: int) -> bool:
        return tuple(int(x) for x in self.version.split(".")) >= (major, minor)

    @property
    def dirs_layout(self) -> bool:
        """23.02+: the job's /tmp is ``.<job>/_tmp`` (job_container.conf's ``Dirs``)."""
        return self.at_least(23, 2)

    @property
    def clonens(self) -> bool:
        """24.11+: job_container.conf's ``CloneNSScript``/``CloneNSEpilog``."""
        return self.at_least(24, 11)

    @property
    def namespace_interface(self) -> bool:
        """25.11 renamed job_container to namespace (``NamespaceType``)."""
        return self.at_least(25, 11)


def debian() -> SlurmInstall:
    return SlurmInstall(DEBIAN, None)


def tarball(version: str) -> tuple[Path, str]:
    """The source tarball of ``version`` and its digest, checked against ``SHA256SUMS``."""
    src = sources_dir()
    found = sorted(src.glob(f"slurm-{version}.*.tar.xz"))
    if not found:
        raise LabError(
            f"no slurm-{version}.*.tar.xz in {src}: the lab builds Slurm {version} from "
            "SchedMD's source there (set GLOBUS_TMP_SLURM_SOURCES to another directory)"
        )
    path = found[-1]
    sums: dict[str, str] = {}
    try:
        for line in (src / "SHA256SUMS").read_text().splitlines():
            if line.strip():
                digest, _, name = line.strip().partition("  ")
                sums[name.strip().lstrip("*")] = digest
    except OSError as exc:
        raise LabError(f"{src / 'SHA256SUMS'}: {exc.strerror}; cannot check {path}") from None
    want = sums.get(path.name)
    if not want:
        raise LabError(f"{path.name} is not listed in {src / 'SHA256SUMS'}; refusing to build")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != want:
        raise LabError(f"{path} has digest {h.hexdigest()}, SHA256SUMS says {want}; refusing")
    return path, want


def locate(version: str) -> SlurmInstall:
    """Where ``version`` is (or will be, once built): its prefix is keyed by the checked
    tarball's digest and the recipe. Builds nothing."""
    version = normalise(version)
    if version == DEBIAN:
        return debian()
    path, digest = tarball(version)
    full = path.name[len("slurm-") : -len(".tar.xz")]
    key = hashlib.sha256(f"{digest} {_RECIPE}".encode()).hexdigest()[:12]
    return SlurmInstall(version, CACHE_ROOT / f"{full}-{key}", path, digest)


def ensure_built(install: SlurmInstall, log: Callable[[str], None] = print) -> None:
    """Build ``install`` into its prefix unless a finished build is there already."""
    if install.prefix is None or install.tarball is None:
        return  # Debian's packages
    prefix, path = install.prefix, install.tarball
    full = prefix.name.rsplit("-", 1)[0]
    marker = prefix / ".globus-tmp-lab-build"
    stamp = f"{install.digest}\n{_RECIPE}\n"
    if _marker_ok(marker, stamp, install):
        return
    CACHE_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(CACHE_ROOT / f".{full}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second lab waits for the first one's build
        if _marker_ok(marker, stamp, install):
            return
        _build(path, prefix, log)
        marker.write_text(stamp)


def _marker_ok(marker: Path, stamp: str, install: SlurmInstall) -> bool:
    try:
        ok = marker.read_text() == stamp
    except OSError:
        return False
    return ok and all(
        os.access(install.program(p), os.X_OK) for p in ("slurmd", "slurmctld", "sbatch")
    )


def _build(tar: Path, prefix: Path, log: Callable[[str], None]) -> None:
    """Extract, configure, make and install into ``prefix`` (emptied first)."""
    jobs = str(max(1, len(os.sched_getaffinity(0))))
    work = CACHE_ROOT / f".build-{prefix.name}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(prefix, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    log(f"building Slurm from {tar.name} into {prefix} (a few minutes, once per machine)")
    try:
        run(["tar", "-xJf", str(tar), "-C", str(work)], timeout=600)
        srcdir = next(p for p in work.iterdir() if (p / "configure").exists())
        build = work / "build"
        build.mkdir()
        configure = [
            str(srcdir / "configure"),
            f"--prefix={prefix}",
            f"--sysconfdir={prefix}/etc",
            *CONFIGURE_FLAGS,
        ]
        steps = (
            (configure, 900),
            (["make", f"-j{jobs}"], 3600),
            (["make", "install"], 900),
        )
        for argv, timeout in steps:
            cp = run(argv, cwd=build, timeout=timeout, check=False)
            if cp.returncode != 0:
                raise LabError(
                    f"Slurm build step failed (rc={cp.returncode}): {' '.join(argv[:2])}\n"
                    f"{cp.stdout.strip()[-3000:]}\n{cp.stderr.strip()[-3000:]}"
                )
        for d in [prefix, *(p for p in prefix.rglob("*") if p.is_dir())]:
            d.chmod(0o755)  # job users run sbatch/srun and load plugins from here
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"built Slurm into {prefix} in {time.monotonic() - t0:.0f}s")
