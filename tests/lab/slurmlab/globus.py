"""The lab's Globus: the Transfer/Auth API emulator as a lab daemon, its admin routes,
collections and tasks, and users' tokens.

The emulator (tests/emulators/globus_api/) runs on 127.0.0.1, which every node shares:
every GCP connects out to it, the hooks and the CLI call it, and the tests steer it
(faults, paused tasks) through its ``_emulator/...`` admin routes.
"""

from __future__ import annotations

import json
import os
import pwd
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from .daemons import Daemons
from .layout import GLOBUS_API_LAUNCHER, HOST_PYTHON, LAB_GLOBUS_CLIENT_ID
from .procs import proc_alive
from .shell import LabError, tail

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""The API emulator is on 127.0.0.1: never through a proxy from the environment."""

SEED_TOKENS = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
import globus_api
from globus_sdk.token_storage import SQLiteTokenStorage
url, client_id, username, path = sys.argv[2:6]
tokens = globus_api.AdminClient(url).mint_tokens(
    username, scopes=globus_api.USER_APP_SCOPES, client_id=client_id
)
globus_api.seed_token_storage(SQLiteTokenStorage(path), tokens)
os.chmod(path, 0o600)
print(tokens["identity_id"])
"""
"""Run as the user by the lab venv's python: tokens as ``globus-tmp-endpoint login`` leaves them
(tests/globus/test_globus.py ``_seed_tokens``): minted by the API emulator's admin route, stored in
globus-sdk's SQLite token storage."""


def api_request(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    timeout: float = 30,
    headers: Optional[Mapping[str, str]] = None,
) -> Any:
    """One HTTP call to the API emulator at ``url``: JSON in, JSON out; an HTTP error raises
    :class:`LabError` with the emulator's answer."""
    data = json.dumps(body).encode() if body is not None else None
    all_headers = dict(headers or {})
    if data is not None:
        all_headers["Content-Type"] = "application/json"
    req = urllib.request.Request(
        url.rstrip("/") + "/" + path.lstrip("/"),
        data=data,
        method=method,
        headers=all_headers,
    )
    try:
        with _NO_PROXY.open(req, timeout=timeout) as resp:
            content = resp.read()
    except urllib.error.HTTPError as exc:
        raise LabError(
            f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')}"
        ) from None
    return json.loads(content) if content else None


class GlobusParts(Daemons):
    """The API emulator's service (started by ``up``), its admin routes, and logins."""

    def _start_globus_api(self) -> tuple[list[int], int]:
        """Start the Transfer/Auth API emulator on a free port; return ([pid, start], port).

        From the lab's copy of the emulators, by /usr/bin/python3 (stdlib only), as root in
        the host's mount namespace: it listens on 127.0.0.1, which every node shares, and
        serves the collections under :attr:`collections_dir`.
        """
        port_file = self.run_dir / "globus-api.port"
        port_file.unlink(missing_ok=True)
        launcher = self.emulators_dir / GLOBUS_API_LAUNCHER
        if not launcher.exists():
            raise LabError(f"no {launcher}: the checkout has no Globus API emulator")
        argv = [
            HOST_PYTHON,
            str(launcher),
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--state-file",
            str(self.globus_api_state_file),
            "--gcp-timeout",
            f"{self.globus_api_gcp_timeout:g}",
        ]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
        pid, start = self._spawn(argv, self.globus_api_log, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not proc_alive(pid, start):
                raise LabError(f"the Globus API emulator died:\n{tail(self.globus_api_log)}")
            try:
                port = int(port_file.read_text().strip())
            except (OSError, ValueError):
                time.sleep(0.05)
                continue
            try:
                api_request(f"http://127.0.0.1:{port}", "GET", "_emulator/health")
            except (OSError, ValueError):
                time.sleep(0.1)
                continue
            self._log(f"Globus API emulator pid {pid} on http://127.0.0.1:{port}")
            return [pid, start], port
        self._stop_pid("globus-api", pid, start)
        raise LabError(f"the Globus API emulator did not answer:\n{tail(self.globus_api_log)}")

    def api_call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        """Call the API emulator's admin routes (``_emulator/...``): JSON in, JSON out."""
        return api_request(self.globus_api_url, method, path, body, timeout)

    def create_collection(self, name: str, writable: bool = True) -> tuple[str, Path]:
        """A directory ``<root>/collections/<name>`` served by the API emulator as a collection
        (standing in for another site's Globus endpoint); return (its endpoint id, the dir).

        Outside /tmp, so the host reads what transfers wrote there.
        """
        path = self.collections_dir / name
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        doc = self.api_call(
            "POST", "_emulator/collections", {"path": str(path), "writable": writable}
        )
        return str(doc["id"]), path

    def api_state(self) -> dict[str, Any]:
        """The API emulator's whole state (identities, endpoints, tasks, GCP sessions...)."""
        return dict(self.api_call("GET", "_emulator/state"))

    def api_task(self, task_id: str) -> dict[str, Any]:
        """A task as the emulator stores it (``status``, ``completion_time``, ``_completed_ts``)."""
        task = self.api_state()["tasks"].get(task_id)
        if task is None:
            raise LabError(f"the Globus API emulator has no task {task_id}")
        return dict(task)

    def pause_task(self, task_id: str, pause: bool = True) -> dict[str, Any]:
        """Pause (INACTIVE, as an admin pause in Globus) or resume a task; return its view."""
        action = "pause" if pause else "resume"
        return dict(self.api_call("POST", f"_emulator/tasks/{task_id}/{action}", {}))

    def cancel_task(self, user: str, task_id: str) -> dict[str, Any]:
        """Cancel ``user``'s task through the Transfer API, with a token minted for the user."""
        tokens = self.api_call(
            "POST",
            "_emulator/tokens",
            {"username": f"{user}@example.org", "client_id": LAB_GLOBUS_CLIENT_ID},
        )
        docs = [tokens, *tokens.get("other_tokens", [])]
        (transfer,) = [d for d in docs if d.get("resource_server") == "transfer.api.globus.org"]
        return dict(
            api_request(
                self.globus_api_url,
                "POST",
                f"v0.10/task/{task_id}/cancel",
                {},
                headers={"Authorization": f"Bearer {transfer['access_token']}"},
            )
        )

    def login(self, user: str) -> str:
        """Log ``user`` in to the lab's Globus as ``<user>@example.org``; return the identity id.

        Tokens as ``globus-tmp-endpoint login`` leaves them (``~/.globus-tmp/tokens.db``,
        the user's, 0600), minted by the API emulator for the lab's client id and stored by
        the lab venv's globus-sdk, run as the user (the test process needs no globus-sdk).
        """
        pw = pwd.getpwnam(user)
        base = self.user_dir(user)
        base.mkdir(mode=0o700, exist_ok=True)
        os.chown(base, pw.pw_uid, pw.pw_gid)
        base.chmod(0o700)
        tokens = base / "tokens.db"
        tokens.unlink(missing_ok=True)
        cp = self.run_as(
            user,
            [
                str(self.venv_bin / "python"),
                "-c",
                SEED_TOKENS,
                str(self.emulators_dir),
                self.globus_api_url,
                LAB_GLOBUS_CLIENT_ID,
                f"{user}@example.org",
                str(tokens),
            ],
            check=True,
        )
        st = tokens.stat()
        if st.st_uid != pw.pw_uid or st.st_mode & 0o077:
            raise LabError(f"{tokens}: not {user}'s or not 0600 ({st.st_mode:o})")
        return cp.stdout.strip()

    def logout(self, user: str) -> None:
        """Forget ``user``'s tokens (the epilog can then not ask the Transfer API)."""
        (self.user_dir(user) / "tokens.db").unlink(missing_ok=True)
