"""on_failure = "fail" fails a Prolog for the site's causes only, never for the user's.

Otherwise any user drains nodes at will: break their own pool, or stop their own start
step (``kill -STOP``) until it is killed at its bound. Steps run as ``nobody`` here.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from globus_tmp import errors
from globus_tmp.config import Config
from globus_tmp.errors import (
    ConfigError,
    GlobusTmpError,
    PoolError,
    PrivilegeError,
    StateError,
    from_user_side,
)
from globus_tmp.hookrunner import run_hook
from globus_tmp.job import JobContext, UserIdentity
from globus_tmp.leases import Holder
from globus_tmp.lifecycle import NodeLifecycle
from globus_tmp.privileges import run_as
from globus_tmp.useractions import ForkedUserActions

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: steps run as nobody")


def _nobody() -> UserIdentity:
    return UserIdentity.from_name("nobody")


@pytest.fixture
def hook_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """slurmd's environment for a Prolog of job 7 of nobody; returns the hook log."""

    def configure(**settings: object) -> Path:
        conf = tmp_path / "globus-tmp.conf"
        values = {"state_dir": str(tmp_path / "state"), "gcp_cgroup": "", **settings}
        conf.write_text("".join(f'{k} = "{v}"\n' for k, v in values.items()))
        (tmp_path / "slurm.conf").write_text("ClusterName=c\n")
        env = {
            "GLOBUS_TMP_CONFIG": str(conf),
            "SLURM_CONF": str(tmp_path / "slurm.conf"),
            "SLURM_JOB_ID": "7",
            "SLURM_JOB_USER": "nobody",
            "SLURMD_NODENAME": "n1",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("SLURM_JOB_UID", raising=False)
        return tmp_path / "state" / "hooks.log"

    return configure


def _raises(exc: BaseException) -> Callable[[NodeLifecycle, JobContext], str]:
    def action(lifecycle: NodeLifecycle, job: JobContext) -> str:
        raise exc

    return action


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (PoolError("no endpoint pool: ..."), 0),
        (errors.mark_user_side(ConfigError("a step said ConfigError")), 0),
        (errors.LockTimeout("waited", path="/x", timeout=1.0), 0),
        (StateError("state_dir /run/x is writable by group/others"), 1),
        (ConfigError("gcp_path ... is missing or not executable"), 1),
        (RuntimeError("a bug of ours"), 1),
    ],
)
def test_only_site_side_causes_fail_the_prolog(
    hook_env: Callable[..., Path], exc: BaseException, code: int
) -> None:
    log = hook_env(on_failure="fail")
    assert run_hook("prolog", _raises(exc), honours_on_failure=True) == code
    line = log.read_text().strip().splitlines()[-1]
    assert ("from the job user's side" in line) == (code == 0)
    hook_env(on_failure="continue")
    assert run_hook("prolog", _raises(exc), honours_on_failure=True) == 0
    assert "from the job user's side" not in log.read_text().strip().splitlines()[-1]


def _stop_myself() -> str:
    os.kill(os.getpid(), signal.SIGSTOP)  # what the user can do to their own step
    return "never"


def _die() -> None:
    os._exit(3)


def _forge() -> None:
    raise ConfigError("forged by the user: looks like the site's")


@root_only
@pytest.mark.parametrize("step", [_stop_myself, _die, _forge])
def test_whatever_a_step_as_the_user_does_is_the_users_side(step: Callable[[], object]) -> None:
    with pytest.raises(GlobusTmpError) as info:
        run_as(_nobody(), 2, step)
    assert from_user_side(info.value), info.value


@root_only
def test_a_stopped_start_step_does_not_fail_the_prolog(hook_env: Callable[..., Path]) -> None:
    log = hook_env(on_failure="fail")

    def start(lifecycle: NodeLifecycle, job: JobContext) -> str:
        return str(run_as(job.user, 1, _stop_myself))

    assert run_hook("prolog", start, honours_on_failure=True) == 0
    assert "did not finish within 1 s" in log.read_text()


@root_only
def test_a_user_without_a_pool_does_not_fail_the_prolog(hook_env: Callable[..., Path]) -> None:
    """The real Prolog, its start step as nobody: no pool is the user's own doing."""
    log = hook_env(on_failure="fail", gcp_path="/bin/true")
    assert run_hook("prolog", lambda lc, job: lc.prolog(job), honours_on_failure=True) == 0
    assert "no endpoint pool" in log.read_text()


def test_a_missing_gcp_install_is_the_sites_and_fails_the_prolog(
    hook_env: Callable[..., Path],
) -> None:
    log = hook_env(on_failure="fail", gcp_path="/nonexistent/globusconnectpersonal")
    assert run_hook("prolog", lambda lc, job: lc.prolog(job), honours_on_failure=True) == 1
    assert "gcp_path /nonexistent/globusconnectpersonal is missing or not executable" in (
        log.read_text()
    )


@root_only
def test_an_answer_root_cannot_take_is_the_users_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not an internal error of root's (which would count as the site's)."""
    monkeypatch.setattr(ForkedUserActions, "_status", lambda self, timeout: {"online": [1]})
    actions = ForkedUserActions(Config(), _nobody(), Holder("c", "n1"))
    with pytest.raises(PrivilegeError, match="unusable answer") as info:
        actions.status(5)
    assert from_user_side(info.value)
