"""Every hook makes its user look-up (NSS, maybe LDAP, which can hang) under its alarm,
and the SPANK plugin refuses a timeout that is not a finite number."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from globus_tmp.hookrunner import run_hook
from globus_tmp.job import UserIdentity

SPANK = Path(__file__).resolve().parents[2] / "spank" / "globus_tmp_spank.c"


def _backstop_left() -> float:
    """Seconds left on a hook's alarm backstop now (0: none armed). pytest-timeout arms
    the same timer, so the SIGALRM handler must be the backstop's too."""
    handler = signal.getsignal(signal.SIGALRM)
    ours = getattr(handler, "__qualname__", "").endswith("alarm_backstop.<locals>.on_alarm")
    return signal.getitimer(signal.ITIMER_REAL)[0] if ours else 0.0  # alarm() uses it


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Seconds left on the hook's alarm at each user look-up (0: none armed)."""
    seen: list[float] = []
    original = UserIdentity._lookup

    def lookup(cls: type[UserIdentity], getter: Callable[[Any], Any], key: Any, what: str) -> Any:
        seen.append(_backstop_left())
        return original(getter, key, what)

    monkeypatch.setattr(UserIdentity, "_lookup", classmethod(lookup))
    return seen


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    conf = tmp_path / "globus-tmp.conf"
    conf.write_text(f'state_dir = "{tmp_path / "state"}"\ngcp_cgroup = ""\n')
    (tmp_path / "slurm.conf").write_text("ClusterName=c\n")
    for key, value in {
        "GLOBUS_TMP_CONFIG": str(conf),
        "SLURM_CONF": str(tmp_path / "slurm.conf"),
        "SLURM_JOB_ID": "7",
        "SLURM_JOB_USER": "nobody",
        "SLURMD_NODENAME": "n1",
    }.items():
        monkeypatch.setenv(key, value)
    return tmp_path


def test_the_prolog_and_epilog_look_the_user_up_under_the_alarm(
    env: Path, lookups: list[float]
) -> None:
    assert run_hook("epilog", lambda lc, job: "done", honours_on_failure=False) == 0
    assert lookups and all(left > 0 for left in lookups), lookups
    assert _backstop_left() == 0  # and disarmed after


def test_the_private_tmp_helper_looks_the_user_up_under_the_alarm(
    env: Path, lookups: list[float]
) -> None:
    from globus_tmp.privatetmp import main

    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert main(["init", "7", "65534"]) == 0  # no job dir here: one log line, exit 0
    finally:  # it ignores SIGTERM (Slurm's, at a job's end): not for later tests' children
        signal.signal(signal.SIGTERM, previous)
    assert lookups and all(left > 0 for left in lookups), lookups


def test_the_drain_looks_the_user_up_under_the_alarm(env: Path, lookups: list[float]) -> None:
    from globus_tmp_epilog.drain import main

    assert main(["--user", "nobody", "--node", "n1", "--until", "0"]) == 0
    assert lookups and all(left > 0 for left in lookups), lookups


def test_the_taskprolog_looks_the_user_up_under_the_alarm(env: Path, lookups: list[float]) -> None:
    from globus_tmp_prolog.taskprolog import task_lines

    assert task_lines()[0].startswith(("print globus-tmp:", "export "))
    assert lookups and all(left > 0 for left in lookups), lookups


@pytest.mark.skipif(
    not shutil.which("gcc") or not Path("/usr/include/slurm/spank.h").exists(),
    reason="needs gcc and Slurm's headers (libslurm-dev)",
)
@pytest.mark.parametrize(
    ("value", "taken"),
    [("12.5", "12.5"), ("nan", "30"), ("NAN", "30"), ("inf", "30"), ("-inf", "30"),
     ("1e999", "30"), ("0", "30"), ("-3", "30"), ("abc", "30"), ("5s", "30")],
)  # fmt: skip
def test_the_spank_plugin_takes_only_a_finite_positive_timeout(
    tmp_path: Path, value: str, taken: str
) -> None:
    """A NaN passed ``t <= 0``: the helper's deadline never came."""
    harness = tmp_path / "harness.c"
    harness.write_text(
        "#include <stdarg.h>\n"
        f'#include "{SPANK}"\n'
        "void slurm_error(const char *fmt, ...) { va_list ap; va_start(ap, fmt);\n"
        "  vfprintf(stderr, fmt, ap); fputc('\\n', stderr); va_end(ap); }\n"
        "spank_context_t spank_context(void) { return S_CTX_ERROR; }\n"
        "spank_err_t spank_get_item(spank_t sp, spank_item_t item, ...)\n"
        "  { (void)sp; (void)item; return ESPANK_ERROR; }\n"
        "int main(int argc, char **argv) { parse_options(argc - 1, argv + 1);\n"
        '  printf("%g\\n", timeout_s); return 0; }\n'
    )
    binary = tmp_path / "harness"
    subprocess.run(
        ["gcc", "-Wall", "-Wextra", "-Werror", "-I/usr/include/slurm", "-o", str(binary),
         str(harness)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    out = subprocess.run(
        [str(binary), "helper=/x", f"timeout={value}"], capture_output=True, text=True, timeout=10
    )
    assert out.stdout.strip() == taken
    assert ("bad timeout=" in out.stderr) == (taken == "30")
