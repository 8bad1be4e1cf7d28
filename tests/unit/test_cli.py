"""The CLI's command table and its one printer: text and --json come from one result;
the plain lookup imports neither argparse nor the modules with dataclasses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from globus_tmp.cli import COMMAND_MODULES, build_parser, commands, main
from globus_tmp.cli.output import Output, emit, render
from globus_tmp.cli.pool import list_text
from globus_tmp.cli.stage import status_text
from globus_tmp.config import load_config
from globus_tmp.lookup import EndpointInfo
from globus_tmp.process import ProcessRef


def test_the_table_has_every_command_once_in_help_order() -> None:
    table = commands()
    assert list(table) == [
        "login", "logout", "setup", "list", "remove", "adopt",
        "stage-out", "stage-in", "stage-status",
    ]  # fmt: skip
    assert COMMAND_MODULES == ("account", "pool", "stage")
    assert {name for name, c in table.items() if c.json_dest} == {"list", "stage-status"}
    parser = build_parser(table)
    for name, command in table.items():
        argv = {
            "setup": [name, "--count", "2"],
            "remove": [name, "ep1"],
            "adopt": [name, "/d"],
            "stage-out": [name, "a", "b:/c"],
            "stage-in": [name, "b:/c", "a"],
        }.get(name, [name])
        args = parser.parse_args(argv)
        assert args.command == name and not command.wants_json(args)
        if command.json_dest:
            assert command.wants_json(parser.parse_args([*argv, "--json"]))


def test_usage_errors_exit_2_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["setup"])
    assert info.value.code == 2
    assert "--count" in capsys.readouterr().err


def _info() -> EndpointInfo:
    return EndpointInfo(
        endpoint_id="ep-id",
        endpoint_name="alice-ep1",
        node="n1",
        user="alice",
        paths=("/tmp",),
        state="running",
        since=1.5,
        jobs=("7", "12"),
        pid=42,
        log="/l",
    )


def test_lookup_text_is_the_id_and_json_is_the_same_result() -> None:
    info = _info()
    out = Output(info.endpoint_id, info.as_json())
    assert render(out, as_json=False) == "ep-id"
    assert json.loads(render(out, as_json=True)) == info.as_json()
    assert render(out, as_json=True) == json.dumps(info.as_json(), indent=2)


def test_list_text_and_json_from_the_same_rows() -> None:
    rows: list[dict[str, Any]] = [
        {"name": "ep1", "endpoint_id": "id-1", "node": "n3", "since": 0.0, "phase": "draining",
         "drain_until": 60.0, "gcp_connected": True},
        {"name": "ep2", "endpoint_id": "id-2", "node": None, "since": None, "phase": None,
         "drain_until": None, "gcp_connected": None},
    ]  # fmt: skip
    out = Output(list_text(rows, "/home/a/.globus-tmp/endpoints"), rows)
    lines = render(out, as_json=False).splitlines()
    assert lines[0].startswith("ep1          id-1  leased to n3 since ")
    assert ", draining until " in lines[0] and lines[0].endswith(" connected")
    assert lines[1] == f"ep2          id-2  {'free':<40} Globus not asked"
    assert json.loads(render(out, as_json=True)) == rows
    empty = list_text([], "/e")
    assert empty == "no endpoints in /e; run 'globus-tmp-endpoint setup --count N' or 'adopt DIR'"


def test_stage_status_text_and_json_from_the_same_rows() -> None:
    row = {
        "job_id": "700", "node": "n1", "state": "failed", "task_id": None,
        "bytes_transferred": 2048, "source": "/tmp/a", "destination_endpoint": "d",
        "destination_path": "/x", "error": "no such file",
    }  # fmt: skip
    text = status_text([row], "your jobs", "/r")
    header, line, error = text.splitlines()
    assert header.startswith("JOB        NODE       STATE      TASK")
    assert line.startswith("700        n1         failed     -") and "/tmp/a -> d:/x" in line
    assert error == f"{'':<10} no such file"
    assert json.loads(render(Output(text, [row]), as_json=True)) == [row]
    assert status_text([], "job 5", "/r") == "no stage-out declared by job 5 (in /r)"


def test_a_command_without_json_has_only_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="no --json"):
        render(Output("logged out"), as_json=True)
    followed: list[str] = []

    def then() -> None:
        followed.append(capsys.readouterr().out)

    assert emit(Output("task-1", {"task_id": "task-1"}, exit_code=3, then=then)) == 3
    assert followed == ["task-1\n"], "the answer is out before --wait follows the task"


def _site(tmp_path: Path) -> dict[str, str]:
    """A config root has cached (as the hooks leave it) and a running endpoint."""
    conf = tmp_path / "globus-tmp.conf"
    conf.write_text(f'state_dir = "{tmp_path}/%n"\nexposed_paths = ["/tmp", "/s"]\n')
    env = {"GLOBUS_TMP_CONFIG": str(conf), "SLURMD_NODENAME": "n1", "SLURM_JOB_ID": "12"}
    assert os.geteuid() == 0
    load_config(env)  # as root: caches the parsed table, as every hook does
    me = ProcessRef.of(os.getpid())
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout
    state = {
        "version": 1, "user": user.strip(), "uid": os.getuid(), "jobs": {"12": 1.0},
        "phase": "running", "job_tmp": {"12": "/tmp/held/12"},
        "instance": {"pid": me.pid, "start_ticks": me.start_ticks, "endpoint_id": "ep-id",
                     "endpoint_name": "ep1", "config_dir": "/c", "log_path": "/c/l", "since": 2.0},
    }  # fmt: skip
    (tmp_path / "n1" / "users").mkdir(parents=True)
    (tmp_path / "n1" / "users" / f"{user.strip()}.json").write_text(json.dumps(state))
    return {**os.environ, **env}


@pytest.mark.parametrize("argv", [[], ["--json"]])
def test_the_plain_lookup_imports_only_what_it_needs(tmp_path: Path, argv: list[str]) -> None:
    code = (
        "import sys\nfrom globus_tmp.cli import main\n"
        "try:\n    main(sys.argv[1:])\nfinally:\n"
        "    heavy = ('argparse', 'dataclasses', 'pathlib', 'typing', 'globus_tmp.config',\n"
        "             'globus_tmp.nodestate', 'globus_tmp.job', 'globus_sdk')\n"
        "    print('HEAVY', [m for m in heavy if m in sys.modules], file=sys.stderr)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, *argv], env=_site(tmp_path), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stderr
    if argv:
        assert json.loads(res.stdout)["paths"] == ["/tmp/held/12", "/s"]
    else:
        assert res.stdout == "ep-id\n"


def test_a_lookup_with_a_bad_config_fails_as_before(tmp_path: Path) -> None:
    env = _site(tmp_path)
    Path(env["GLOBUS_TMP_CONFIG"]).write_text("linger_max = -1\n")
    res = subprocess.run(
        [sys.executable, "-c", "from globus_tmp.cli import main; main()"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 3 and res.stdout == ""
    assert res.stderr.startswith("globus-tmp-endpoint: ") and "'linger_max'" in res.stderr
