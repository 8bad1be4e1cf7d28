"""``globus-tmp-admin doctor``: the verdicts on slurm.conf, the SPANK plugin and the
configuration, as Slurm 22.05, 24.11 and 25.11 read them (checks called one by one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from globus_tmp.config import Config
from globus_tmp.configkeys import FALLBACK_CONFIG
from globus_tmp.doctor import FAIL, OK, WARN, Check, Doctor
from globus_tmp.slurmconf import read_slurm_settings

from unit.elfbuild import write_elf


def _doctor(
    tmp_path: Path,
    text: str,
    cfg: Config | None = None,
    version: tuple[int, int, int] | None = (25, 11, 7),
) -> Doctor:
    """A doctor for ``text`` as slurm.conf, on a node that runs Slurm ``version``."""
    conf = tmp_path / "slurm.conf"
    conf.write_text(text)
    doctor = Doctor(cfg or Config(), "n1", read_slurm_settings(conf))
    doctor.version_probe = lambda: version
    return doctor


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


def _program(where: Path, name: str) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    path = where / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_every_prolog_line_and_glob_is_what_slurmd_runs(tmp_path: Path) -> None:
    """24.05+: several Prolog= lines all run; an entry is a glob(3) pattern."""
    ours = _program(tmp_path / "venv" / "bin", "globus-tmp-prolog")
    site = _program(tmp_path / "site", "nhc-prolog")
    both = _doctor(tmp_path, f"Prolog={site}\nProlog={ours}\n").hook_script(
        "Prolog", "globus-tmp-prolog"
    )
    assert both.level == OK, both.line()
    assert (
        _doctor(tmp_path, f"Prolog={ours}\nProlog={site}\n")
        .hook_script("Prolog", "globus-tmp-prolog")
        .level
        == OK
    ), "the last line is not the only one"
    prolog_d = tmp_path / "prolog.d"
    prolog_d.mkdir()
    (prolog_d / "50-globus-tmp").symlink_to(ours)
    (prolog_d / "10-site").symlink_to(site)
    glob = _doctor(tmp_path, f"Prolog={prolog_d}/*\n").hook_script("Prolog", "globus-tmp-prolog")
    assert glob.level == OK and "50-globus-tmp" in glob.detail, glob.line()
    wrapper = tmp_path / "epilog.d" / "90-gt"
    _program(wrapper.parent, "90-gt").write_text(
        f"#!/bin/sh\nexec {ours.parent}/globus-tmp-epilog\n"
    )
    relative = _doctor(tmp_path, "Epilog=epilog.d/*\n").hook_script("Epilog", "globus-tmp-epilog")
    assert relative.level == OK, relative.line()


def test_script_entries_slurmd_cannot_run_fail(tmp_path: Path) -> None:
    ours = _program(tmp_path / "bin", "globus-tmp-prolog")
    (tmp_path / "prolog.d").mkdir()
    (tmp_path / "prolog.d" / "x").symlink_to(ours)
    other = _doctor(tmp_path, f"Prolog={tmp_path}/site-prolog\n").hook_script(
        "Prolog", "globus-tmp-prolog"
    )
    assert other.level == FAIL and "matches no file" in other.detail
    a_dir = _doctor(tmp_path, f"Prolog={tmp_path}/prolog.d\n").hook_script(
        "Prolog", "globus-tmp-prolog"
    )
    assert a_dir.level == FAIL and f"write {tmp_path}/prolog.d/*" in a_dir.detail, a_dir.line()
    empty = _doctor(tmp_path, f"Prolog={ours}\nProlog={tmp_path}/none.d/*\n").hook_script(
        "Prolog", "globus-tmp-prolog"
    )
    assert empty.level == FAIL and "none.d/* matches no file" in empty.detail
    unset = _doctor(tmp_path, "").hook_script("Epilog", "globus-tmp-epilog")
    assert unset.level == FAIL and "Epilog=(unset)" in unset.detail
    name_only = _doctor(tmp_path, "Prolog=/opt/globus-tmp-prologue\n").hook_script(
        "Prolog", "globus-tmp-prolog"
    )
    assert name_only.level == FAIL, "a substring of a path is not the program"


def test_health_check_node_states_that_stop_the_periodic_reconcile_warn(tmp_path: Path) -> None:
    hc = _program(tmp_path / "bin", "globus-tmp-healthcheck")
    base = f"HealthCheckProgram={hc}\nHealthCheckInterval=300\n"
    doctor = _doctor(tmp_path, base)
    doctor.timer_enabled = tmp_path / "no-timer"
    assert doctor.periodic_reconcile().level == OK
    for state in ("START_ONLY", "IDLE,NONDRAINED_IDLE", "start_only,CYCLE"):
        doctor = _doctor(tmp_path, base + f"HealthCheckNodeState={state}\n")
        doctor.timer_enabled = tmp_path / "no-timer"
        check = doctor.periodic_reconcile()
        assert check.level == WARN and "not run periodically" in check.detail, check.line()
        assert "globus-tmp-reconcile.timer" in check.detail
        doctor.timer_enabled.symlink_to("/lib/systemd/system/globus-tmp-reconcile.timer")
        assert doctor.periodic_reconcile().level == OK, "the timer does the work"
        doctor.timer_enabled.unlink()
    never = _doctor(tmp_path, f"HealthCheckProgram={hc}\n")
    never.timer_enabled = tmp_path / "no-timer"
    assert never.periodic_reconcile().level == WARN


def _plugstack(tmp_path: Path, so: Path, helper: Path) -> str:
    """slurm.conf lines for job_container/tmpfs, the plugin in an included plugstack file."""
    base = tmp_path / "jc"
    (base / "n1").mkdir(parents=True)
    (tmp_path / "job_container.conf").write_text(f"AutoBasePath=true\nBasePath={base}\n")
    (tmp_path / "plugstack.conf.d").mkdir()
    (tmp_path / "plugstack.conf").write_text("include plugstack.conf.d/*.conf\n")
    (tmp_path / "plugstack.conf.d" / "gt.conf").write_text(
        f"optional {so} helper={helper} timeout=30\n"
    )
    return "PrologFlags=Contain\nJobContainerType=job_container/tmpfs\n"


def test_a_spank_plugin_built_for_another_slurm_fails(tmp_path: Path) -> None:
    """Slurm skips an optional plugin of another major.minor silently."""
    helper = _program(tmp_path / "bin", "globus-tmp-privatetmp")
    so = write_elf(tmp_path / "globus_tmp_spank.so", "plugin_version", 0x160508)  # 22.05.8
    text = _plugstack(tmp_path, so, helper)
    same = _doctor(tmp_path, text, version=(22, 5, 2)).private_tmp()
    assert same.level == OK and "built for Slurm 22.05" in same.detail, same.line()
    upgraded = _doctor(tmp_path, text, version=(24, 11, 7)).private_tmp()
    assert upgraded.level == FAIL, upgraded.line()
    assert "built for Slurm 22.05, this node runs 24.11.7" in upgraded.detail
    assert upgraded.detail.endswith(
        "rebuild globus_tmp_spank.so against this Slurm (spank/Makefile)"
    )
    unknown = _doctor(tmp_path, text, version=None).private_tmp()
    assert unknown.level == WARN and "slurm_bin_dir" in unknown.detail
    so.write_text("not a plugin")
    assert _doctor(tmp_path, text).private_tmp().level == FAIL


def test_clonens_scripts_export_instead_of_the_plugin_from_24_11_only(tmp_path: Path) -> None:
    init = _program(tmp_path / "bin", "globus-tmp-clonens-init")
    epilog = _program(tmp_path / "bin", "globus-tmp-clonens-epilog")
    (tmp_path / "jc" / "n1").mkdir(parents=True)
    jc = tmp_path / "job_container.conf"
    text = "PrologFlags=Contain\nNamespaceType=namespace/tmpfs\n"
    jc.write_text(
        f"BasePath={tmp_path / 'jc'} CloneNSScript={init} CloneNSEpilog={epilog}\n"
        "CloneNSScript_Wait=30\nCloneNSEpilog_Wait=60\n"
    )
    good = _doctor(tmp_path, text).private_tmp()
    assert good.level == OK and "CloneNSScript/CloneNSEpilog" in good.detail, good.line()
    old = _doctor(tmp_path, "JobContainerType=job_container/tmpfs\n", version=(24, 5, 4))
    assert old.private_tmp().level == FAIL and "24.11+" in old.private_tmp().detail
    jc.write_text(f"BasePath={tmp_path / 'jc'} CloneNSScript={init}\n")
    half = _doctor(tmp_path, text).private_tmp()
    assert half.level == FAIL and "CloneNSEpilog=(unset)" in half.detail, half.line()
    jc.write_text(f"BasePath={tmp_path / 'jc'}\nCloneNSScript={init}\nCloneNSEpilog={epilog}\n")
    alone = _doctor(tmp_path, text).private_tmp()  # Slurm ignores them there, silently
    assert alone.level == FAIL and "move them onto it" in alone.detail, alone.line()
    jc.write_text(f"BasePath={tmp_path / 'jc'} CloneNSScript={init} CloneNSEpilog={epilog}\n")
    short = _doctor(tmp_path, text).private_tmp()
    assert short.level == WARN and "10 s" in short.detail, short.line()


def test_namespace_linux_is_a_private_tmp_globus_tmp_does_not_export(tmp_path: Path) -> None:
    check = _doctor(tmp_path, "NamespaceType=namespace/linux\nJobContainerType=tmpfs\n")
    line = check.private_tmp()
    assert line.level == FAIL, line.line()
    assert "exports job_container/tmpfs and namespace/tmpfs only" in line.detail
    old = _doctor(tmp_path, "NamespaceType=tmpfs\n", version=(24, 11, 7)).private_tmp()
    assert old.level == FAIL and "25.11" in old.detail, "24.11 knows no NamespaceType"
    none = _doctor(tmp_path, "NamespaceType=namespace/none\nJobContainerType=tmpfs\n")
    assert none.private_tmp().level == OK and "share the node's /tmp" in none.private_tmp().detail


def test_slurm_22_05_runs_only_the_last_prolog_line_and_knows_no_prolog_timeout(
    tmp_path: Path,
) -> None:
    ours = _program(tmp_path / "venv" / "bin", "globus-tmp-prolog")
    site = _program(tmp_path / "site", "nhc-prolog")
    text = f"Prolog={ours}\nProlog={site}\n"
    old = _doctor(tmp_path, text, version=(22, 5, 8)).hook_script("Prolog", "globus-tmp-prolog")
    assert old.level == FAIL and "runs only the last Prolog= line" in old.detail, old.line()
    new = _doctor(tmp_path, text, version=(24, 11, 7)).hook_script("Prolog", "globus-tmp-prolog")
    assert new.level == OK
    timeouts = "PrologEpilogTimeout=300\nPrologTimeout=200\n"
    (check,) = _doctor(tmp_path, timeouts, version=(24, 11, 7)).timeouts()
    assert check.level == FAIL and "PrologTimeout" in check.detail and "25.05" in check.detail


def test_a_configless_node_running_on_defaults_warns(tmp_path: Path) -> None:
    cache = tmp_path / "spool" / "conf-cache"
    cache.mkdir(parents=True)
    conf = cache / "slurm.conf"
    conf.write_text("PrologFlags=Contain\n")
    env = {"SLURM_CONF": str(conf)}
    doctor = Doctor(Config(), "n1", read_slurm_settings(conf), env=env)
    check = doctor.config()
    assert check.level == WARN and "configless" in check.detail, check.line()
    assert f"{cache}/globus-tmp.conf" in check.detail and FALLBACK_CONFIG in check.detail
    plain = _doctor(tmp_path, "PrologFlags=Contain\n")
    plain.env = {"SLURM_CONF": str(tmp_path / "slurm.conf")}
    assert plain.config().level == OK and "running on defaults" in plain.config().detail
    read = Doctor(Config(source="/etc/x/globus-tmp.conf"), "n1", read_slurm_settings(conf))
    assert read.config().level == OK and "/etc/x/globus-tmp.conf" in read.config().detail


def test_slurm_conf_of_a_configless_node_is_found_through_run_slurm_conf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from globus_tmp import slurmconf

    cache = tmp_path / "spool" / "conf-cache"
    cache.mkdir(parents=True)
    (cache / "slurm.conf").write_text("ClusterName=c\n")
    (tmp_path / "run-slurm-conf").symlink_to(cache)
    monkeypatch.setattr(slurmconf, "DEFAULT_SLURM_CONF", str(tmp_path / "etc" / "slurm.conf"))
    monkeypatch.setattr(
        slurmconf, "CONFIGLESS_SLURM_CONF", str(tmp_path / "run-slurm-conf" / "slurm.conf")
    )
    path = slurmconf.slurm_conf_path(Config(), {})
    assert path == tmp_path / "run-slurm-conf" / "slurm.conf"
    assert read_slurm_settings(path).configless and read_slurm_settings(path).cluster == "c"


def test_metrics_file_in_a_directory_others_can_write_fails(tmp_path: Path) -> None:
    textfile = tmp_path / "textfile"
    textfile.mkdir(mode=0o755)
    cfg = Config(metrics_file=str(textfile / "g_%n.prom"))
    assert _doctor(tmp_path, "", cfg).metrics().level == OK
    textfile.chmod(0o777)
    check = _doctor(tmp_path, "", cfg).metrics()
    assert check.level == FAIL and f"chmod go-w {textfile}" in check.detail, check.line()
    assert _doctor(tmp_path, "").metrics().level == OK


def test_gcp_without_cpu_or_memory_limits_warns(tmp_path: Path) -> None:
    assert _doctor(tmp_path, "").gcp_limits().level == OK  # the defaults limit GCP
    unlimited = _doctor(tmp_path, "", Config(gcp_cpu_max=0, gcp_memory_max=0)).gcp_limits()
    assert unlimited.level == WARN and "gcp_cpu_max=0" in unlimited.detail
    assert "outside the job's cgroup" in unlimited.detail
    cpu_only = _doctor(tmp_path, "", Config(gcp_cpu_max=2.0, gcp_memory_max=0)).gcp_limits()
    assert cpu_only.level == WARN and "gcp_memory_max=0" in cpu_only.detail
    both = _doctor(tmp_path, "", Config(gcp_cpu_max=2.0, gcp_memory_max=1 << 32)).gcp_limits()
    assert both.level == OK
    off = _doctor(tmp_path, "", Config(gcp_cgroup="", gcp_cpu_max=2.0, gcp_memory_max=1))
    assert off.gcp_limits().level == WARN
