"""slurm.conf as Slurm reads it (read_config.c of 22.05, 24.11 and 25.11): flags and
what they imply, script lists, timeouts, the namespace plugin, configless copies."""

from __future__ import annotations

from pathlib import Path

import pytest
from globus_tmp.errors import GlobusTmpError
from globus_tmp.job import UserIdentity
from globus_tmp.nodestate import NodeStateStore
from globus_tmp.slurmconf import SlurmSettings, read_slurm_settings

from unit.lifecycles import ErrorLines, lifecycle_with


def _settings(tmp_path: Path, text: str) -> SlurmSettings:
    conf = tmp_path / "slurm.conf"
    conf.write_text(text)
    return read_slurm_settings(conf)


@pytest.mark.parametrize(
    ("flags", "effective"),
    [
        ("Alloc", {"alloc"}),
        ("Contain", {"alloc", "contain"}),
        ("RunInJob", {"alloc", "contain", "runinjob"}),
        ("X11", {"alloc", "contain", "x11"}),
        ("ForceRequeueOnFail", {"alloc", "forcerequeueonfail"}),
        ("NoHold", {"alloc", "nohold"}),
        ("Serial", {"serial"}),
    ],
)
def test_prolog_flags_imply_others_as_read_config_does(
    tmp_path: Path, flags: str, effective: set[str]
) -> None:
    settings = _settings(tmp_path, f"PrologFlags={flags}\n")
    assert settings.prolog_flags == effective
    assert settings.run_in_job == ("runinjob" in effective)


class _Refuse:
    def start(self, *args: object, **kwargs: object) -> object:
        raise GlobusTmpError("not started in this test")


def test_a_start_under_run_in_job_says_so_in_one_line(tmp_path: Path) -> None:
    store = NodeStateStore(tmp_path / "state")
    store.ensure()
    log = ErrorLines()
    lifecycle = lifecycle_with(store, log, _Refuse())
    lifecycle._slurm = _settings(tmp_path, "PrologFlags=RunInJob\n")
    user = UserIdentity("alice", 1000, 1000, "/home/alice")
    with pytest.raises(GlobusTmpError):
        lifecycle._start_or_take_over(user, "7", "")
    (line,) = log.errors
    assert "RunInJob" in line and "job 7" in line and "Alloc,Contain" in line


def test_prolog_lines_are_a_list_and_commas_are_part_of_a_path(tmp_path: Path) -> None:
    (tmp_path / "more.conf").write_text("Prolog=/b\n")
    settings = _settings(tmp_path, "Prolog=/a\nInclude more.conf\nProlog=/c,/d\nEpilog=/e\n")
    assert settings.entries("Prolog") == ("/a", "/b", "/c,/d")
    assert settings.hook("Prolog") == "/c,/d" and settings.entries("Epilog") == ("/e",)
    assert settings.entries("TaskProlog") == () and settings.hook("TaskProlog") == ""


@pytest.mark.parametrize(
    ("text", "plugin", "private", "exported"),
    [
        ("JobContainerType=job_container/tmpfs\n", "job_container/tmpfs", True, True),
        ("JobContainerType=tmpfs\n", "job_container/tmpfs", True, True),
        ("NamespaceType=tmpfs\n", "namespace/tmpfs", True, True),
        ("NamespaceType=job_container/tmpfs\n", "namespace/tmpfs", True, True),
        # 25.11: NamespaceType wins when both are set
        (
            "JobContainerType=job_container/tmpfs\nNamespaceType=linux\n",
            "namespace/linux",
            True,
            False,
        ),
        ("NamespaceType=namespace/linux\n", "namespace/linux", True, False),
        ("JobContainerType=job_container/none\n", "", False, False),
        ("NamespaceType=None\nJobContainerType=tmpfs\n", "", False, False),
        ("", "", False, False),
    ],
)
def test_the_namespace_plugin_as_slurm_names_it(
    tmp_path: Path, text: str, plugin: str, private: bool, exported: bool
) -> None:
    settings = _settings(tmp_path, text)
    assert settings.job_container == plugin
    assert settings.private_tmp == private and settings.exports_private_tmp == exported
