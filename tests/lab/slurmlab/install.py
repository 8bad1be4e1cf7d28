"""What the lab installs: Debian packages, its directories, the hooks' venv, the SPANK plugin.

Everything a node executes or reads is copied under the lab root (the emulators, the node
init, the checkout for the venv), because a node's private /tmp hides a checkout under
/tmp. Nothing is installed outside the lab root except Debian packages and the users.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .layout import (
    ENDPOINT_CLI,
    HOOK_SCRIPTS,
    HOST_PYTHON,
    NODE_INIT,
    NODE_STATE_MOUNT,
    SPANK_PLUGIN,
    SPANK_SOURCE,
    LabBase,
)
from .shell import LabError, run
from .slurmbuild import BUILD_PACKAGES, ensure_built

APT_PACKAGES: tuple[str, ...] = ("slurmctld", "slurmd", "slurm-client", "munge", "python3-venv")
JOB_CONTAINER_APT_PACKAGES: tuple[str, ...] = ("gcc", "libslurm-dev")
"""Only with ``job_container``: to build the SPANK plugin (spank/) against this Slurm."""


class Installer(LabBase):
    """Installs what the lab runs; idempotent, so each ``up`` picks up the current checkout."""

    def ensure_packages(self) -> None:
        """apt-get install what is missing (``apt-get update`` only when the install needs
        it), then build this lab's Slurm from source if it is not Debian's and not cached."""
        wanted = [*APT_PACKAGES, *(JOB_CONTAINER_APT_PACKAGES if self.job_container else ())]
        if self.slurm.prefix is not None:
            wanted += BUILD_PACKAGES
        self._apt_install(wanted)
        ensure_built(self.slurm, log=lambda msg: print(f"lab: {msg}", flush=True))

    def _apt_install(self, wanted: list[str]) -> None:
        missing = [p for p in wanted if not self._dpkg_installed(p)]
        if not missing:
            return
        self._log(f"installing {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", *missing]
        lists = Path("/var/lib/apt/lists")
        if not any(lists.glob("*Packages*")):
            run(["apt-get", "update", "-q"], env=env, timeout=600)
        if run(install, env=env, timeout=900, check=False).returncode != 0:
            run(["apt-get", "update", "-q"], env=env, timeout=600)
            run(install, env=env, timeout=900)

    @staticmethod
    def _dpkg_installed(pkg: str) -> bool:
        cp = run(["dpkg-query", "-W", "-f=${Status}", pkg], check=False)
        return cp.returncode == 0 and cp.stdout.strip().endswith(" installed")

    def _prepare_dirs(self) -> None:
        # The lab root must be traversable by the job users (venv, wrappers, slurm.conf).
        for d in (
            self.root,
            self.etc_dir,
            self.bin_dir,
            self.log_dir,
            self.run_dir,
            self.spool_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        for leftover in self.spool_dir.iterdir():
            # Old job scripts and node state would make slurmd try to recover dead jobs.
            shutil.rmtree(leftover, ignore_errors=True)
        for log in [*self.log_dir.glob("*.log"), self.globus_api_log]:
            log.unlink(missing_ok=True)
        # The API emulator starts afresh: the pools it knew were cleared by ``down``.
        self.globus_api_state_file.unlink(missing_ok=True)
        shutil.rmtree(self.collections_dir, ignore_errors=True)
        self.collections_dir.mkdir(mode=0o755)
        Path(NODE_STATE_MOUNT).mkdir(mode=0o755, parents=True, exist_ok=True)

    def _copy_emulators(self) -> None:
        src = self.repo / "tests" / "emulators"
        if self.emulators_dir.exists():
            shutil.rmtree(self.emulators_dir)
        if src.is_dir():
            shutil.copytree(
                src, self.emulators_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            self.emulators_dir.mkdir()
        for p in [self.emulators_dir, *self.emulators_dir.rglob("*")]:
            # Readable (and, where executable at source, runnable) by every job user.
            mode = p.stat().st_mode
            p.chmod(0o755 if p.is_dir() or mode & 0o111 else 0o644)

    def _install_node_init(self) -> None:
        """Copy nodeinit.py into the lab root: a node's /tmp hides a checkout under /tmp."""
        self.bin_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        dest = self.bin_dir / NODE_INIT
        shutil.copyfile(Path(__file__).resolve().parents[1] / "nodeinit.py", dest)
        dest.chmod(0o755)

    def install_hooks(self) -> None:
        """(Re)install the checkout into the lab venv, so each ``up`` runs the current code.

        Built from a copy of the checkout (only what the package needs). Dependencies are
        installed once; later runs only force-reinstall the project itself (seconds, no
        network; the build backend, hatchling, in the venv makes ``--no-build-isolation``
        possible).
        """
        if not (self.venv_bin / "python").exists():
            self._log(f"creating venv {self.venv} from {HOST_PYTHON}")
            run([HOST_PYTHON, "-m", "venv", str(self.venv)], timeout=300)
        src = self.root / "src"
        if src.exists():
            shutil.rmtree(src)
        shutil.copytree(
            self.repo,
            src,
            ignore=shutil.ignore_patterns(
                ".git",
                "tests",
                "bench",
                "build",
                "dist",
                "*.egg-info",
                "__pycache__",
                "*.pyc",
                ".venv",
                "venv",
                ".mypy_cache",
                ".ruff_cache",
                ".pytest_cache",
            ),
        )
        pip = [str(self.venv_bin / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
        marker = self.venv / ".lab-deps-installed"
        pyproject = self.repo / "pyproject.toml"
        stamp = pyproject.read_bytes() if pyproject.exists() else b""
        for attempt in (1, 2):
            deps_now = not (marker.exists() and marker.read_bytes() == stamp)
            if deps_now:
                self._log("installing the checkout's dependencies into the lab venv")
                cp = run(
                    # the build backend too: the project itself is reinstalled below
                    # without build isolation (fast, offline)
                    [*pip, "install", "hatchling", str(src)],
                    check=False,
                    timeout=900,
                )
                if cp.returncode != 0:
                    raise LabError(
                        f"pip install of {self.repo} into {self.venv} failed; the hooks cannot "
                        f"be installed (`lab up --no-hooks` gives a cluster without them):\n"
                        f"{cp.stdout.strip()[-2000:]}\n{cp.stderr.strip()[-3000:]}"
                    )
                marker.write_bytes(stamp)
            # The project itself, always: same version number, new code.
            cp = run(
                [
                    *pip,
                    "install",
                    "--no-deps",
                    "--force-reinstall",
                    "--no-build-isolation",
                    str(src),
                ],
                check=False,
                timeout=300,
            )
            if cp.returncode == 0:
                break
            marker.unlink()
            if deps_now or attempt == 2:
                raise LabError(
                    f"pip install of {self.repo} into {self.venv} failed:\n"
                    f"{cp.stdout.strip()[-2000:]}\n{cp.stderr.strip()[-3000:]}"
                )
        missing = [
            s for s in [*HOOK_SCRIPTS.values(), ENDPOINT_CLI] if not (self.venv_bin / s).exists()
        ]
        if missing:
            raise LabError(
                f"installed {self.repo}, but {', '.join(missing)} missing from {self.venv_bin}"
            )

    def hooks_installable(self) -> bool:
        """Whether the checkout looks like it provides the hooks (for skipping early)."""
        return (self.repo / "pyproject.toml").exists() and any((self.repo / "prolog").glob("*.py"))

    def build_spank_plugin(self) -> Path:
        """Compile the checkout's spank/globus_tmp_spank.c into ``<root>/lib``; return the .so.

        gcc directly (spank/Makefile's flags), not ``make``: no build artefacts in the
        checkout. Written beside and renamed, so a slurmstepd that has the old one mapped
        keeps a consistent file.
        """
        src = self.repo / SPANK_SOURCE
        if not src.exists():
            raise LabError(f"no {src}: the checkout has no SPANK plugin")
        self.lib_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.lib_dir.chmod(0o755)
        tmp = self.lib_dir / f".{SPANK_PLUGIN}.{os.getpid()}"
        try:
            run(
                [
                    "gcc",
                    "-Wall",
                    "-Wextra",
                    "-O2",
                    "-shared",
                    "-fPIC",
                    f"-I{self.slurm.include_dir}",
                    "-o",
                    str(tmp),
                    str(src),
                ],
                timeout=120,
            )
            tmp.chmod(0o755)  # sbatch/srun of the job users load it too (plugstack.conf)
            tmp.replace(self.spank_plugin)
        finally:
            tmp.unlink(missing_ok=True)
        return self.spank_plugin

    def _prepare_job_container(self) -> None:
        """With job_container on: build the SPANK plugin and empty BasePath; off: nothing.

        Job ids restart at 1 with each ``up`` (slurmctld -c), and a ``<node>/<job>`` dir
        left from an earlier lab makes job_container/tmpfs skip the container and the job
        fail.
        """
        if not self.job_container:
            return
        if "Contain" not in self.prolog_flags.split(","):
            raise LabError("job_container/tmpfs needs PrologFlags=Contain")
        self.build_spank_plugin()
        if self.job_tmp_base.exists():
            shutil.rmtree(self.job_tmp_base)
        self.job_tmp_base.mkdir(mode=0o755, parents=True)
