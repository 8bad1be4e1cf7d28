"""job_container.conf as Slurm reads it: per-node BasePath (hostlists expanded), Dirs,
the CloneNS waits."""

from __future__ import annotations

from pathlib import Path

import pytest
from globus_tmp.jobcontainer import expand_hostlist, mangled, read_job_container_conf
from globus_tmp.privatetmp import _clonens_job


def _conf(tmp_path: Path, text: str) -> Path:
    (tmp_path / "job_container.conf").write_text(text)
    return tmp_path / "slurm.conf"


def test_base_path_global_and_per_node(tmp_path: Path) -> None:
    conf = _conf(
        tmp_path, "AutoBasePath=true BasePath=/var/jc  # comment\nNodeName=n9 BasePath=/other/%n\n"
    )
    assert read_job_container_conf(conf, "n1").bases == (Path("/var/jc/n1"), Path("/var/jc"))
    assert read_job_container_conf(conf, "n9").bases == (Path("/other/n9/n9"), Path("/other/n9"))
    (tmp_path / "job_container.conf").unlink()
    assert read_job_container_conf(conf, "n1").bases == ()
    assert read_job_container_conf(conf, "n1").found is False


def test_node_name_hostlists_are_expanded(tmp_path: Path) -> None:
    """``NodeName=n[1-4]`` was compared literally: private /tmp export was silently off."""
    conf = _conf(tmp_path, "NodeName=n[1-4],gpu[01-02] BasePath=/jc\nNodeName=x BasePath=/y\n")
    assert read_job_container_conf(conf, "n3").bases == (Path("/jc/n3"), Path("/jc"))
    assert read_job_container_conf(conf, "gpu02").bases == (Path("/jc/gpu02"), Path("/jc"))
    assert read_job_container_conf(conf, "n5").bases == ()


@pytest.mark.parametrize(
    ("hostlist", "names"),
    [
        ("n1", ["n1"]),
        ("n[1-3,7]", ["n1", "n2", "n3", "n7"]),
        ("gpu[08-10]", ["gpu08", "gpu09", "gpu10"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("a,b[1-2],c", ["a", "b1", "b2", "c"]),
        ("bad[x-1]", ["bad[x-1]"]),
    ],
)
def test_expand_hostlist(hostlist: str, names: list[str]) -> None:
    assert expand_hostlist(hostlist) == names


def test_dirs_and_clonens_waits(tmp_path: Path) -> None:
    conf = _conf(
        tmp_path,
        "BasePath=/jc Dirs=/tmp,/var/tmp,/dev/shm CloneNSScript_Wait=30 CloneNSEpilog_Wait=nan\n",
    )
    jc = read_job_container_conf(conf, "n1")
    assert jc.dirs == ("/tmp", "/var/tmp", "/dev/shm")
    assert jc.clonens_script_wait == 30 and jc.clonens_epilog_wait == 10
    assert read_job_container_conf(_conf(tmp_path, "BasePath=/jc\n"), "n1").dirs is None
    assert mangled("/var/tmp") == "_var_tmp" and mangled("/tmp") == "_tmp"


def test_clonens_scripts_are_options_of_the_base_path_line(tmp_path: Path) -> None:
    """As Slurm 24.11/25.11 parse them: on a line of their own they are ignored."""
    on_line = _conf(tmp_path, "BasePath=/jc CloneNSScript=/a CloneNSEpilog=/b\n")
    jc = read_job_container_conf(on_line, "n1")
    assert (jc.clonens_script, jc.clonens_epilog, jc.clonens_ignored) == ("/a", "/b", False)
    alone = read_job_container_conf(_conf(tmp_path, "BasePath=/jc\nCloneNSScript=/a\n"), "n1")
    assert alone.clonens_script == "" and alone.clonens_ignored is True
    node = _conf(tmp_path, "BasePath=/jc\nNodeName=n[1-2] BasePath=/x CloneNSScript=/c\n")
    assert read_job_container_conf(node, "n2").clonens_script == "/c"
    assert read_job_container_conf(node, "n3").clonens_script == ""


def test_clonens_epilog_finds_the_job_and_its_owner_without_a_uid(tmp_path: Path) -> None:
    """CloneNSEpilog gets only SLURM_JOB_ID and SLURM_NS: the uid is the container's owner."""
    job = tmp_path / "n1" / "42"
    (job / ".42").mkdir(parents=True)
    env = {"SLURM_JOB_ID": "42", "SLURM_NS": str(job / ".ns")}
    job_id, uid, bases = _clonens_job(env)
    assert (job_id, bases) == ("42", [tmp_path / "n1"])
    assert uid == str((job / ".42").lstat().st_uid)
    init_env = {"SLURM_JOB_ID": "42", "SLURM_JOB_UID": "1234",
                "SLURM_JOB_MOUNTPOINT_SRC": str(job / ".42")}  # fmt: skip
    assert _clonens_job(init_env) == ("42", "1234", [tmp_path / "n1"])


def test_the_helper_budgets_within_what_slurm_or_the_plugin_gives(tmp_path: Path) -> None:
    """Past CloneNS*_Wait Slurm kills the script (a killed CloneNSScript fails the job);
    past the plugin's timeout= it SIGKILLs the helper, maybe with a view still mounted."""
    from globus_tmp.jobcontainer import JobContainerConf
    from globus_tmp.privatetmp import _given_time

    jc = JobContainerConf(found=True, clonens_script_wait=10, clonens_epilog_wait=60)
    assert _given_time("init", True, jc, {}) == 8
    assert _given_time("exit", True, jc, {}) == 58
    assert _given_time("exit", False, jc, {"GLOBUS_TMP_TIMEOUT": "30"}) == 28
    assert _given_time("exit", False, jc, {"GLOBUS_TMP_TIMEOUT": "nan"}) == float("inf")
    assert _given_time("exit", False, jc, {}) == float("inf")
