"""``globus-tmp-admin doctor``: the verdicts on slurm.conf, the SPANK plugin and the
configuration, as Slurm 22.05, 24.11 and 25.11 read them (checks called one by one)."""

from __future__ import annotations

from pathlib import Path

from globus_tmp.config import Config
from globus_tmp.doctor import FAIL, OK, WARN, Check, Doctor
from globus_tmp.slurmconf import read_slurm_settings


def _doctor(tmp_path: Path, text: str, cfg: Config | None = None) -> Doctor:
    conf = tmp_path / "slurm.conf"
    conf.write_text(text)
    return Doctor(cfg or Config(), "n1", read_slurm_settings(conf))


def _one(checks: list[Check], name: str) -> Check:
    (check,) = [c for c in checks if c.name == name]
    return check


def test_prolog_flags_are_judged_with_what_they_imply(tmp_path: Path) -> None:
    contain = _doctor(tmp_path, "PrologFlags=Contain\n").prolog_flags()
    assert contain.level == OK, contain.line()
    x11 = _doctor(tmp_path, "PrologFlags=X11\n").prolog_flags()
    assert x11.level == OK, x11.line()
    requeue = _doctor(tmp_path, "PrologFlags=ForceRequeueOnFail\n").prolog_flags()
    assert requeue.level == WARN and "add Contain" in requeue.detail
    assert _doctor(tmp_path, "PrologFlags=Serial\n").prolog_flags().level == FAIL


def test_run_in_job_fails_with_a_one_line_fix(tmp_path: Path) -> None:
    check = _doctor(tmp_path, "PrologFlags=RunInJob\n").prolog_flags()
    assert check.level == FAIL, check.line()
    assert "add Alloc" not in check.detail
    assert "remove RunInJob, use PrologFlags=Alloc,Contain" in check.detail
    assert "\n" not in check.line()


def test_prolog_and_epilog_timeouts_are_judged_each_on_its_own(tmp_path: Path) -> None:
    """25.05+: PrologTimeout and EpilogTimeout override PrologEpilogTimeout per script."""
    both = _doctor(tmp_path, "PrologEpilogTimeout=300\n").timeouts()
    assert [(c.level, c.name) for c in both] == [(OK, "slurm.conf PrologEpilogTimeout")]
    short_epilog = _doctor(tmp_path, "PrologEpilogTimeout=300\nEpilogTimeout=60\n").timeouts()
    prolog = _one(short_epilog, "slurm.conf Prolog timeout")
    epilog = _one(short_epilog, "slurm.conf Epilog timeout")
    assert prolog.level == OK and "PrologEpilogTimeout=300" in prolog.detail
    assert epilog.level == FAIL and "EpilogTimeout=60" in epilog.detail
    assert "above hook_timeout" in epilog.detail
    rescued = _doctor(tmp_path, "PrologEpilogTimeout=30\nPrologTimeout=200\nEpilogTimeout=200\n")
    assert {c.level for c in rescued.timeouts()} == {OK}
    unset = _doctor(tmp_path, "PrologTimeout=200\n").timeouts()
    assert _one(unset, "slurm.conf Prolog timeout").level == OK
    assert _one(unset, "slurm.conf Epilog timeout").level == WARN
