"""The real globus-cli against the Globus API emulator.

Why: globus-cli is how users (and the project's docs) drive Globus, and it uses the API
more widely than globus-tmp does: templated login clients, token validation, ls filters,
exclude rules, label filters, event filters, rename, delete tasks, pause info. Running
its commands against the emulator, through ``GLOBUS_SDK_SERVICE_URL_*`` and a real
``globus login`` (the emulator approves the consent), shows the emulator answers what it
expects, in the shapes it parses.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import globus_api
import pytest

GLOBUS = os.environ.get("GLOBUS_TMP_TEST_GLOBUS_CLI", "")
"""``globus`` from its own venv (tests/run builds it): globus-cli pins an exact globus-sdk
release, and the package under test must keep the newest one it allows."""

pytestmark = pytest.mark.skipif(
    not GLOBUS, reason="GLOBUS_TMP_TEST_GLOBUS_CLI unset: tests/run installs globus-cli"
)


class Cli:
    """Runs ``globus`` with its own HOME (token storage) against one emulator."""

    def __init__(self, server: Any, home: Path) -> None:
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "NO_PROXY": "127.0.0.1,localhost",
            "GLOBUS_SDK_SERVICE_URL_TRANSFER": server.url,
            "GLOBUS_SDK_SERVICE_URL_AUTH": server.url,
        }

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [GLOBUS, *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        if ok:
            assert done.returncode == 0, f"globus {' '.join(args)}: {done.stderr}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-F", "json").stdout)

    def login(self) -> str:
        """``globus login --no-local-server``: open the printed link, paste the code."""
        proc = subprocess.Popen(
            [GLOBUS, "login", "--no-local-server"],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        url = ""
        while not url:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("http"):
                url = line.strip()
        assert url, proc.communicate(timeout=30)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=10) as page:
            code = page.headers["X-Emulator-Auth-Code"]
        out, err = proc.communicate(code + "\n", timeout=120)
        assert proc.returncode == 0, err
        return out


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    server = globus_api.EmulatorServer(
        port=0, state_file=str(tmp_path / "state.json"), gcp_timeout=1.0, poll_wait=0.5
    ).start()
    yield server
    server.stop()


def test_globus_cli_logs_in_lists_makes_moves_transfers_and_deletes(
    server: Any, tmp_path: Path
) -> None:
    admin = globus_api.AdminClient(server.url)
    admin.set_login("erin@example.org")
    root = tmp_path / "collection"
    (root / "data" / "sub").mkdir(parents=True)
    for name in ("a.txt", "b.dat", "sub/c.txt", "sub/d.dat"):
        (root / "data" / name).write_text(name)
    collection = admin.create_collection(str(root), owner="erin@example.org")["id"]
    cli = Cli(server, tmp_path / "home")

    assert "successfully logged in" in cli.login()
    assert cli.run("whoami").stdout.strip() == "erin@example.org"
    assert cli.json("whoami")["sub"] == admin.identity("erin@example.org")["id"]

    listing = cli.json("ls", f"{collection}:/data/")
    assert sorted(e["name"] for e in listing["DATA"]) == ["a.txt", "b.dat", "sub"]
    assert cli.run("ls", f"{collection}:/data/", "--filter", "~*.txt").stdout.split() == ["a.txt"]
    assert cli.run("ls", f"{collection}:/data/", "--filter", "!b.dat").stdout.split() == [
        "a.txt",
        "sub/",
    ]
    recursive = cli.run("ls", "-r", f"{collection}:/data/", "--filter", "~*.dat").stdout
    assert sorted(recursive.split()) == ["b.dat", "sub/", "sub/d.dat"]
    missing = cli.run("stat", f"{collection}:/nope", ok=False)
    assert "Nothing found" in missing.stdout + missing.stderr

    cli.run("mkdir", f"{collection}:/made")
    exists = cli.run("mkdir", f"{collection}:/made", ok=False)
    assert exists.returncode == 1
    assert "ExternalError.MkdirFailed.Exists" in exists.stderr
    cli.run("rename", collection, "/made", "/renamed")
    assert (root / "renamed").is_dir() and not (root / "made").exists()

    copy = cli.json(
        "transfer",
        f"{collection}:/data/",
        f"{collection}:/copy/",
        "--recursive",
        "--exclude",
        "*.dat",
        "--label",
        "cli-copy",
    )
    cli.run("task", "wait", copy["task_id"], "--timeout", "60")
    shown = cli.json("task", "show", copy["task_id"])
    assert (shown["status"], shown["label"], shown["type"]) == ("SUCCEEDED", "cli-copy", "TRANSFER")
    copied = sorted(str(p.relative_to(root / "copy")) for p in (root / "copy").rglob("*"))
    assert copied == ["a.txt", "sub", "sub/c.txt"]
    assert cli.json("task", "event-list", copy["task_id"], "--filter-errors")["DATA"] == []
    assert "is not paused" in cli.run("task", "pause-info", copy["task_id"]).stdout

    gcp = cli.json("gcp", "create", "mapped", "node")
    stalled = cli.json("transfer", f"{gcp['id']}:/tmp/x", f"{collection}:/x", "--label", "stalled")
    deadline = time.monotonic() + 20
    while True:
        errors = cli.json("task", "event-list", stalled["task_id"], "--filter-errors")["DATA"]
        if errors or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [e["code"] for e in errors] == ["GC_NOT_CONNECTED"]
    assert cli.json("task", "event-list", stalled["task_id"], "--filter-non-errors")["DATA"] == []
    cli.run("task", "cancel", stalled["task_id"])

    deleted = cli.json("delete", f"{collection}:/renamed", "--recursive", "--label", "tidy")
    cli.run("task", "wait", deleted["task_id"], "--timeout", "60")
    assert not (root / "renamed").exists()

    def labels(*filters: str) -> list[str]:
        tasks = cli.json("task", "list", *filters)["DATA"]
        return sorted(t["label"] for t in tasks)

    assert labels() == ["cli-copy", "stalled", "tidy"]
    assert labels("--filter-label", "cli-copy", "--exact") == ["cli-copy"]
    assert labels("--filter-not-label", "cli-copy", "--exact") == ["stalled", "tidy"]
    assert labels("--filter-label", "CLI-*") == ["cli-copy"]
    assert labels("--filter-not-label", "*l*") == ["tidy"]
    assert labels("--filter-type", "DELETE") == ["tidy"]
    assert labels("--filter-status", "FAILED") == ["stalled"]
