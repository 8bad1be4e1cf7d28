"""Slurm's commands come from ``slurm_bin_dir`` (a Slurm under a prefix) or the safe
PATH, never from the caller's PATH."""

from __future__ import annotations

from pathlib import Path

import pytest
from globus_tmp.config import parse_config
from globus_tmp.errors import ConfigError
from globus_tmp.slurmconf import read_slurm_settings
from globus_tmp.slurmjobs import SlurmJobProbe
from globus_tmp.slurmview import SlurmView, slurm_program


def _tool(where: Path, name: str, script: str) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    path = where / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


def test_slurm_bin_dir_must_be_an_existing_absolute_directory(tmp_path: Path) -> None:
    assert parse_config({"slurm_bin_dir": str(tmp_path)}, "t").slurm_bin_dir == str(tmp_path)
    assert parse_config({}, "t").slurm_bin_dir == ""
    with pytest.raises(ConfigError, match=r"slurm_bin_dir.*absolute path"):
        parse_config({"slurm_bin_dir": "opt/slurm/bin"}, "t")
    with pytest.raises(ConfigError, match=r"slurm_bin_dir.*existing directory"):
        parse_config({"slurm_bin_dir": str(tmp_path / "none")}, "t")


def test_commands_come_from_slurm_bin_dir_and_its_sbin(tmp_path: Path) -> None:
    prefix = tmp_path / "opt" / "slurm"
    squeue = _tool(prefix / "bin", "squeue", 'echo "5 RUNNING"')
    slurmd = _tool(prefix / "sbin", "slurmd", "echo slurm 25.11.7")
    assert slurm_program("squeue", str(prefix / "bin")) == str(squeue)
    assert slurm_program("slurmd", str(prefix / "bin")) == str(slurmd)
    assert slurm_program("scontrol", str(prefix / "bin")) is None, "no fallback to PATH"
    assert SlurmView(bin_dir=str(prefix / "bin")).jobs("alice") == [("5", "RUNNING")]
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"SlurmdSpoolDir={tmp_path / 'spool'}\nPrologFlags=Alloc\n")
    probe = SlurmJobProbe(read_slurm_settings(conf), "n1", bin_dir=str(prefix / "bin"))
    assert probe.running_here("alice") == {"5"}


def test_the_running_slurm_version_from_slurmd_or_scontrol(tmp_path: Path) -> None:
    from globus_tmp.slurmview import slurm_version

    bin_dir = tmp_path / "opt" / "bin"
    _tool(bin_dir, "scontrol", "echo slurm 24.11.7")
    assert slurm_version(str(bin_dir)) == (24, 11, 7)
    _tool(tmp_path / "opt" / "sbin", "slurmd", "echo slurm-wlm 25.11.1")
    assert slurm_version(str(bin_dir)) == (25, 11, 1), "slurmd is asked first"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert slurm_version(str(empty)) is None
