"""Release packaging: one version source, a wheel that leaves the checkout clean, an sdist
with docs, snippets, the SPANK plugin source, benchmarks and tests. Builds from a copy
of the tracked files (the build backend comes from the package registry, as for pip)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import globus_tmp

REPO = Path(__file__).resolve().parents[2]


def _tracked_copy(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True
    ).stdout.decode().split("\0")
    for name in filter(None, files):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return dest


def test_wheel_and_sdist(tmp_path: Path) -> None:
    src = _tracked_copy(tmp_path / "src")
    before = sorted(p.name for p in src.iterdir())
    out = tmp_path / "out"
    wheel = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert wheel.returncode == 0, wheel.stderr
    assert sorted(p.name for p in src.iterdir()) == before  # no build/, no *.egg-info
    (whl,) = out.glob("*.whl")
    assert whl.name == f"globus_tmp-{globus_tmp.__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(whl).namelist())
    assert {"globus_tmp/stageout.py", "globus_tmp/py.typed", "globus_tmp_prolog/prolog.py",
            "globus_tmp_epilog/drain.py"} <= names  # fmt: skip
    entry_points = zipfile.ZipFile(whl).read(
        f"globus_tmp-{globus_tmp.__version__}.dist-info/entry_points.txt"
    ).decode()
    assert "globus-tmp-privatetmp = globus_tmp.privatetmp:entry" in entry_points
    sdist = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert sdist.returncode == 0, sdist.stderr
    (tgz,) = out.glob("*.tar.gz")
    with tarfile.open(tgz) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    for wanted in ("docs/DESIGN.md", "slurm-conf-snippets/globus-tmp.conf",
                   "spank/globus_tmp_spank.c", "tests/run", "bench/hot_paths.py",
                   "CHANGELOG.md", "README.md", "lib/globus_tmp/__init__.py"):  # fmt: skip
        assert wanted in members, wanted
    assert not any(m.endswith((".pyc", ".so")) for m in members)
    assert sorted(p.name for p in src.iterdir()) == before
