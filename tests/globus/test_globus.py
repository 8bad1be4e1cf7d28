"""Globus for real, against the local Transfer/Auth API emulator (tests/emulators/globus_api/):
login, pool provisioning, staging, and the transfer-aware epilog and drain.

The hooks and the CLI are the installed programs, run as root / as the user; GCP is the
emulator connected out to the API emulator, so transfers move real bytes between the
node's /tmp and a collection the API emulator serves.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import globus_api
import pytest
from hooksite import BIN, Site, UnixUser, gcp_processes
from polling import wait_for

CLIENT_ID = "5b9a6f6e-8bb5-4c5a-9b9e-5d6a7f1e2c3d"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[globus_api.EmulatorServer]:
    state = tmp_path_factory.mktemp("api") / "state.json"
    server = globus_api.EmulatorServer(port=0, state_file=str(state), gcp_timeout=3).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gsite(site: Site, api: globus_api.EmulatorServer) -> Site:
    url = api.url.rstrip("/")
    site.configure(
        gcp_path=site.gcp_wrapper("globus", GCP_EMULATOR_GLOBUS_API=url),
        globus_client_id=CLIENT_ID,
        globus_service_urls={"transfer": url + "/", "auth": url + "/"},
        linger_unverified=3,
    )
    return site


def _admin(api: globus_api.EmulatorServer) -> globus_api.AdminClient:
    return globus_api.AdminClient(api.url)


def _state(api: globus_api.EmulatorServer) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(api.url + "_emulator/state") as resp:
        return json.load(resp)  # type: ignore[no-any-return]


def _seed_tokens(api: globus_api.EmulatorServer, user: UnixUser) -> None:
    """Tokens as a login would leave them (the interactive login has its own test)."""
    from globus_sdk.token_storage import SQLiteTokenStorage

    tokens = _admin(api).mint_tokens(
        f"{user.name}@example.org", scopes=globus_api.USER_APP_SCOPES, client_id=CLIENT_ID
    )
    user.user_dir.mkdir(mode=0o700, exist_ok=True)
    path = user.user_dir / "tokens.db"
    globus_api.seed_token_storage(SQLiteTokenStorage(path), tokens)
    for p in (user.user_dir, path):
        os.chown(p, user.uid, user.gid)
    path.chmod(0o600)


def _logged_in_pool(site: Site, api: globus_api.EmulatorServer, count: int) -> UnixUser:
    """gtunit1, logged in, with ``count`` endpoints set up through the CLI."""
    user = site.users["gtunit1"]
    _seed_tokens(api, user)
    res = site.endpoint("gtunit1", "setup", "--count", str(count))
    assert res.returncode == 0, res.stderr + res.stdout
    return user


def _collection(api: globus_api.EmulatorServer, site: Site) -> tuple[str, Path]:
    root = site.root / "collection"
    root.mkdir(mode=0o755, exist_ok=True)
    doc = _admin(api)._call("POST", "_emulator/collections", {"path": str(root), "writable": True})
    return str(doc["id"]), root


def _write_random(site: Site, user: str, path: str, megabytes: int) -> str:
    res = site.as_user(
        user, ["/bin/sh", "-c", f"head -c {megabytes}M /dev/urandom > {path} && sha256sum {path}"]
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.split()[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_login_through_the_cli(gsite: Site, api: globus_api.EmulatorServer) -> None:
    user = gsite.users["gtunit1"]
    user.user_dir.mkdir(mode=0o700)
    os.chown(user.user_dir, user.uid, user.gid)
    _admin(api)._call("POST", "_emulator/login", {"username": "gtunit1@example.org"})
    env = [f"GLOBUS_TMP_CONFIG={gsite.config}", "PATH=/usr/bin:/bin"]
    proc = subprocess.Popen(
        [
            "runuser",
            "-u",
            user.name,
            "--",
            "env",
            "-i",
            *env,
            str(BIN / "globus-tmp-endpoint"),
            "login",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    url, seen = "", []
    while not url:
        line = proc.stdout.readline()
        seen.append(line)
        assert line, f"login ended before printing the authorization URL: {seen}"
        if line.startswith("http"):
            url = line.strip()
    with urllib.request.urlopen(url) as resp:
        code = resp.headers["X-Emulator-Auth-Code"]
    out, _ = proc.communicate(code + "\n", timeout=60)
    assert proc.returncode == 0, out
    tokens = user.user_dir / "tokens.db"
    assert tokens.stat().st_uid == user.uid and tokens.stat().st_mode & 0o077 == 0
    assert "logged in" in out


def test_setup_creates_the_pool_and_survives_a_lost_answer(
    gsite: Site, api: globus_api.EmulatorServer
) -> None:
    user = gsite.users["gtunit1"]
    _seed_tokens(api, user)
    res = gsite.endpoint("gtunit1", "setup", "--count", "2")
    assert res.returncode == 0, res.stderr + res.stdout
    entries = sorted(p.name for p in (user.user_dir / "endpoints").iterdir())
    assert entries == ["ep1", "ep2"]
    again = gsite.endpoint("gtunit1", "setup", "--count", "2")
    assert again.returncode == 0 and again.stdout.count("already set up") == 2
    # the create POST succeeds in Globus but its answer is lost: no blind retry, no duplicate
    _admin(api)._call(
        "POST",
        "_emulator/faults",
        {"route": "endpoint_create", "status": 502, "count": 1, "after": True},
    )
    res = gsite.endpoint("gtunit1", "setup", "--count", "3")
    assert res.returncode == 0, res.stderr + res.stdout
    assert "deleting half-made" in res.stdout
    mine = [
        e
        for e in _state(api)["endpoints"].values()
        if "globus-tmp gtunit1" in str(e.get("display_name"))
    ]
    assert len(mine) == 3, [e["display_name"] for e in mine]
    for name in ("ep1", "ep2", "ep3"):
        key = user.user_dir / "endpoints" / name / "lta" / "relay-anonymous-key.pem"
        assert key.exists() and key.stat().st_mode & 0o077 == 0
    listing = gsite.endpoint("gtunit1", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert [row["name"] for row in json.loads(listing.stdout)] == ["ep1", "ep2", "ep3"]


def test_remove_is_refused_while_leased(gsite: Site, api: globus_api.EmulatorServer) -> None:
    user = _logged_in_pool(gsite, api, 1)
    endpoint_id = (user.user_dir / "endpoints/ep1/lta/client-id.txt").read_text().strip()
    assert "started GCP" in gsite.prolog("600").stderr
    listing = gsite.endpoint("gtunit1", "list")
    assert "leased to n1" in listing.stdout and " connected" in listing.stdout
    res = gsite.endpoint("gtunit1", "remove", "ep1")
    assert res.returncode == 1 and "leased to n1" in res.stderr
    gsite.epilog("600")
    res = gsite.endpoint("gtunit1", "remove", "ep1")
    assert res.returncode == 0, res.stderr
    assert not (user.user_dir / "endpoints" / "ep1").exists()
    assert endpoint_id not in _state(api)["endpoints"]


def test_a_cold_start_returns_before_gcp_connects_and_globus_runs_a_stage_out_once_it_does(
    gsite: Site, api: globus_api.EmulatorServer
) -> None:
    """Issue 18: the Prolog no longer waits for GCP's connect. The job has its endpoint
    id at once (``--json`` says not yet connected), a stage-out submitted meanwhile is
    queued by Globus and runs once GCP connects, and ``--wait`` returns at the connect."""
    delay = 8.0
    user = _logged_in_pool(gsite, api, 1)
    endpoint_id = (user.user_dir / "endpoints/ep1/lta/client-id.txt").read_text().strip()
    collection, root = _collection(api, gsite)
    url = api.url.rstrip("/")
    gsite.configure(
        gcp_path=gsite.gcp_wrapper(
            "slow", GCP_EMULATOR_GLOBUS_API=url, GCP_EMULATOR_CONNECT_DELAY=f"{delay:g}"
        )
    )
    start = time.monotonic()
    res = gsite.prolog("615")
    took = time.monotonic() - start
    assert res.returncode == 0 and "started GCP" in res.stderr, res.stderr
    assert took < delay / 2, f"the Prolog took {took:.1f} s: it waited for the connect"
    shown = gsite.endpoint("gtunit1", "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["endpoint_id"] == endpoint_id and doc["connected"] is False, doc
    assert gsite.endpoint("gtunit1").stdout.strip() == endpoint_id
    digest = _write_random(gsite, "gtunit1", "/tmp/gtunit1-early.bin", 2)
    res = gsite.endpoint(
        "gtunit1", "stage-out", "/tmp/gtunit1-early.bin", f"{collection}:/early.bin", "--wait"
    )
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - start >= delay, "Globus ran it before GCP connected"
    assert _sha256(root / "early.bin") == digest
    waited = gsite.endpoint("gtunit1", "--wait", "30", "--json")
    assert waited.returncode == 0, waited.stderr
    doc = json.loads(waited.stdout)
    assert doc["connected"] is True and doc["connected_at"] >= doc["since"], doc
    assert "connected" in gsite.hook_log() and "after its start" in gsite.hook_log()
    gsite.epilog("615")
    Path("/tmp/gtunit1-early.bin").unlink(missing_ok=True)


def test_a_gcp_that_never_connects_has_the_tasks_queued_for_it_cancelled_before_its_lease_goes(
    gsite: Site, api: globus_api.EmulatorServer
) -> None:
    """Issue 18: the job did not wait for the connect, so it may have submitted a task
    that Globus queued for the entry. When the watcher gives up on the connect it cancels
    such a task first: released with it, the entry could start on another node, and the
    task would run from that node's /tmp."""
    user = _logged_in_pool(gsite, api, 1)
    collection, _ = _collection(api, gsite)
    gsite.configure(
        gcp_path=gsite.gcp_wrapper(
            "never", GCP_EMULATOR_GLOBUS_API=api.url.rstrip("/"), GCP_EMULATOR_MODE="never-connect"
        ),
        start_timeout=5,
    )
    assert "started GCP" in gsite.prolog("616").stderr
    before = set(_state(api)["tasks"])
    _write_random(gsite, "gtunit1", "/tmp/gtunit1-queued.bin", 1)
    res = gsite.endpoint("gtunit1", "stage-out", "/tmp/gtunit1-queued.bin", f"{collection}:/q.bin")
    assert res.returncode == 0, res.stderr
    (task_id,) = set(_state(api)["tasks"]) - before
    assert _task(api, task_id)["status"] == "ACTIVE", "queued for an endpoint not connected"
    wait_for(lambda: "lease ep1 released" in gsite.hook_log(), timeout=40, what="the watcher")
    task = _task(api, task_id)
    assert task["status"] == "FAILED" and task["fatal_error"]["code"] == "CANCELED", task
    log = gsite.hook_log()
    said = "globus-tmp on n1 stopped a GCP that did not connect within start_timeout=5 s"
    assert f"{said}" in log and f"task {task_id} cancelled" in log, log
    assert gcp_processes(user.uid) == [] and not user.registry()
    gsite.epilog("616")
    Path("/tmp/gtunit1-queued.bin").unlink(missing_ok=True)


def test_stage_out_and_in_with_wait_move_real_bytes(
    gsite: Site, api: globus_api.EmulatorServer
) -> None:
    _logged_in_pool(gsite, api, 1)
    collection, root = _collection(api, gsite)
    gsite.prolog("610")
    digest = _write_random(gsite, "gtunit1", "/tmp/gtunit1-out.bin", 20)
    res = gsite.endpoint(
        "gtunit1", "stage-out", "/tmp/gtunit1-out.bin", f"{collection}:/out.bin", "--wait"
    )
    assert res.returncode == 0, res.stderr
    assert "SUCCEEDED" in res.stderr or "files" in res.stderr
    assert _sha256(root / "out.bin") == digest
    res = gsite.endpoint(
        "gtunit1", "stage-in", f"{collection}:/out.bin", "/tmp/gtunit1-in.bin", "--wait"
    )
    assert res.returncode == 0, res.stderr
    assert _sha256(Path("/tmp/gtunit1-in.bin")) == digest
    failed = gsite.endpoint("gtunit1", "stage-out", "/etc/hostname", f"{collection}:/x", "--wait")
    assert failed.returncode == 1 and "FAILED" in failed.stderr, failed.stderr
    gsite.epilog("610")
    for path in ("/tmp/gtunit1-out.bin", "/tmp/gtunit1-in.bin"):
        Path(path).unlink(missing_ok=True)


def test_drain_keeps_gcp_up_while_a_task_is_live(
    gsite: Site, api: globus_api.EmulatorServer
) -> None:
    user = _logged_in_pool(gsite, api, 1)
    collection, root = _collection(api, gsite)
    gsite.prolog("620")
    digest = _write_random(gsite, "gtunit1", "/tmp/gtunit1-drain.bin", 30)
    # margin: the GCP's first answers to the service come 3 s late, so the task cannot
    # finish before the pause below lands (30 MB otherwise moves in well under a second)
    endpoint = (user.user_dir / "endpoints/ep1/lta/client-id.txt").read_text().strip()
    _admin(api)._call(
        "POST",
        "_emulator/faults",
        {
            "route": f"/_emulator/gcp/{endpoint}/work/",
            "method": "POST",
            "status": 0,
            "delay": 3.0,
            "count": 2,
        },
    )
    res = gsite.endpoint(
        "gtunit1", "stage-out", "/tmp/gtunit1-drain.bin", f"{collection}:/drain.bin"
    )
    assert res.returncode == 0, res.stderr
    task_id = res.stdout.strip()
    _admin(api)._call("POST", f"_emulator/tasks/{task_id}/pause", {})  # INACTIVE, GCP idle
    before = _state(api)["route_hits"].get("task_list", 0)
    res = gsite.epilog("620")
    assert "drain pid" in res.stderr and task_id in res.stderr, res.stderr
    time.sleep(4)  # GCP says idle all along: only the Transfer API knows the task is live
    assert len(gcp_processes(user.uid)) == 1
    polls = gsite.hook_log().count("\n")
    _admin(api)._call("POST", f"_emulator/tasks/{task_id}/resume", {})
    wait_for(lambda: "transfer over" in gsite.hook_log(), what="the drain to see the task end")
    assert gcp_processes(user.uid) == []
    assert _sha256(root / "drain.bin") == digest
    hits = _state(api)["route_hits"].get("task_list", 0) - before
    elapsed_polls = 4 / float(gsite.settings["linger_poll_seconds"]) + 10  # type: ignore[arg-type]
    assert 1 <= hits <= elapsed_polls, f"{hits} task_list calls, polls {polls}"
    Path("/tmp/gtunit1-drain.bin").unlink(missing_ok=True)


def test_drain_gives_up_at_linger_max_and_names_the_task(
    gsite: Site, api: globus_api.EmulatorServer
) -> None:
    user = _logged_in_pool(gsite, api, 2)
    gsite.configure(linger_max=3)
    gsite.prolog("630")
    # the destination is the user's other endpoint, whose GCP never runs: the task
    # stays ACTIVE (GC_NOT_CONNECTED) and can never finish
    (running,) = user.registry()
    other = "ep2" if running == "ep1" else "ep1"
    offline = (user.user_dir / f"endpoints/{other}/lta/client-id.txt").read_text().strip()
    _write_random(gsite, "gtunit1", "/tmp/gtunit1-stuck.bin", 5)
    res = gsite.endpoint("gtunit1", "stage-out", "/tmp/gtunit1-stuck.bin", f"{offline}:/tmp/x")
    task_id = res.stdout.strip()
    assert res.returncode == 0 and task_id, res.stderr
    gsite.epilog("630")
    wait_for(lambda: f"lease {running} released" in gsite.hook_log(), what="the drain to give up")
    gave_up = [line for line in gsite.hook_log().splitlines() if "gave up" in line]
    assert gave_up and task_id in gave_up[0], gsite.hook_log()
    assert gcp_processes(user.uid) == []
    Path("/tmp/gtunit1-stuck.bin").unlink(missing_ok=True)


def test_without_tokens_the_drain_lingers_a_bounded_while(
    gsite: Site, api: globus_api.EmulatorServer
) -> None:
    user = _logged_in_pool(gsite, api, 1)
    (user.user_dir / "tokens.db").unlink()  # logged out
    assert "started GCP" in gsite.prolog("640").stderr
    start = time.monotonic()
    res = gsite.epilog("640")
    assert "Transfer API not asked" in res.stderr and "not logged in" in res.stderr, res.stderr
    assert len(gcp_processes(user.uid)) == 1
    wait_for(lambda: "lease ep1 released" in gsite.hook_log(), what="bounded linger")
    assert "idle for" in gsite.hook_log()
    assert time.monotonic() - start >= 3  # linger_unverified
    assert gcp_processes(user.uid) == []


def test_transfer_api_hiccups_are_retried(gsite: Site, api: globus_api.EmulatorServer) -> None:
    user = _logged_in_pool(gsite, api, 1)
    assert "started GCP" in gsite.prolog("650").stderr
    _admin(api)._call(
        "POST",
        "_emulator/faults",
        {"route": "task_list", "status": 429, "retry_after": 1, "count": 1},
    )
    res = gsite.epilog("650")
    assert "no Transfer task uses the endpoint" in res.stderr, res.stderr
    assert gcp_processes(user.uid) == []


_API_FAULTS = {
    "5xx": [{"route": "task_list", "status": 503, "count": 100000}],
    "429": [{"route": "task_list", "status": 429, "retry_after": 1, "count": 100000}],
    "timeout": [{"route": "task_list", "status": 0, "delay": 40, "count": 100000}],
    "expired-tokens": [
        {"route": "token", "status": 400, "code": "invalid_grant", "count": 100000},
        {"route": "task_list", "status": 401, "code": "AuthenticationFailed", "count": 100000},
    ],
}


def _late_gcp_work(api: globus_api.EmulatorServer, user: UnixUser) -> globus_api.AdminClient:
    """ep1's GCP gets its next two pieces of work 3 s late; the emulator's admin client."""
    endpoint = (user.user_dir / "endpoints/ep1/lta/client-id.txt").read_text().strip()
    admin = _admin(api)
    admin._call(
        "POST",
        "_emulator/faults",
        {"route": f"/_emulator/gcp/{endpoint}/work/", "status": 0, "delay": 3.0, "count": 2},
    )
    return admin


@pytest.mark.parametrize("fault", sorted(_API_FAULTS))
def test_transfer_api_faults_during_a_drain_never_stop_gcp_under_a_live_task(
    gsite: Site, api: globus_api.EmulatorServer, fault: str
) -> None:
    """Fault matrix rows "Transfer API 429, 5xx, timeouts, expired tokens during a drain":
    once the API has shown a live task, GCP stays up while the API cannot be asked
    (longer than linger_unverified), and stops once the task is over."""
    user = _logged_in_pool(gsite, api, 1)
    gsite.configure(linger_max=150)  # a timed-out check takes the step's whole bound (30 s)
    collection, _ = _collection(api, gsite)
    gsite.prolog("660")
    _write_random(gsite, "gtunit1", "/tmp/gtunit1-faults.bin", 5)
    admin = _late_gcp_work(api, user)
    res = gsite.endpoint(
        "gtunit1", "stage-out", "/tmp/gtunit1-faults.bin", f"{collection}:/faults.bin"
    )
    assert res.returncode == 0, res.stderr
    task_id = res.stdout.strip()
    admin._call("POST", f"_emulator/tasks/{task_id}/pause", {})
    res = gsite.epilog("660")
    assert "drain pid" in res.stderr and task_id in res.stderr, res.stderr
    try:
        for doc in _API_FAULTS[fault]:
            admin._call("POST", "_emulator/faults", doc)
        if fault == "expired-tokens":
            admin._call("POST", "_emulator/tokens/expire", {"username": "gtunit1@example.org"})
        linger = float(gsite.settings["linger_unverified"])  # type: ignore[arg-type]
        wait_for(
            lambda: "taken as live" in gsite.hook_log(), timeout=60, what="the drain to see it"
        )
        time.sleep(linger + 2)
        assert len(gcp_processes(user.uid)) == 1, "stopped under a task only the API could see"
    finally:
        admin._call("DELETE", "_emulator/faults", None)
    if fault == "expired-tokens":
        _seed_tokens(api, user)
    admin._call("POST", f"_emulator/tasks/{task_id}/resume", {})
    wait_for(lambda: "transfer over" in gsite.hook_log(), timeout=90, what="the drain to end")
    gsite.wait_gcp_stopped()
    Path("/tmp/gtunit1-faults.bin").unlink(missing_ok=True)


def _declare(site: Site, job: str, *args: str) -> subprocess.CompletedProcess[str]:
    return site.endpoint("gtunit1", "stage-out", "--at-exit", *args, job=job)


def test_stage_out_at_exit_is_submitted_by_the_epilog_and_followed_to_the_end(
    gsite: Site, api: globus_api.EmulatorServer
) -> None:
    user = _logged_in_pool(gsite, api, 1)
    collection, root = _collection(api, gsite)
    gsite.prolog("700")
    digest = _write_random(gsite, "gtunit1", "/tmp/gtunit1-atexit.bin", 20)
    res = _declare(gsite, "700", "/tmp/gtunit1-atexit.bin", f"{collection}:/atexit.bin")
    assert res.returncode == 0 and "declared" in res.stdout, res.stderr
    status = gsite.endpoint("gtunit1", "stage-status", "700")
    assert "declared" in status.stdout and "/tmp/gtunit1-atexit.bin" in status.stdout
    assert not (root / "atexit.bin").exists()  # nothing moves before the job ends
    res = gsite.epilog("700")
    assert "1 of 1 stage-out(s) submitted" in res.stderr and "drain pid" in res.stderr, res.stderr
    gsite.wait_gcp_stopped(timeout=60)
    assert _sha256(root / "atexit.bin") == digest
    log = gsite.hook_log()
    assert "task" in log and "SUCCEEDED" in log, log
    rows = json.loads(gsite.endpoint("gtunit1", "stage-status", "--json").stdout)
    assert [r["state"] for r in rows] == ["succeeded"], rows
    assert rows[0]["bytes_transferred"] == 20 * 1024 * 1024 and rows[0]["task_id"]
    again = gsite.epilog("700")  # a repeated Epilog submits nothing twice
    assert "stage-out" not in again.stderr, again.stderr
    assert len(_admin(api)._call("GET", "_emulator/state")["tasks"]) >= 1
    assert not user.registry()
    Path("/tmp/gtunit1-atexit.bin").unlink(missing_ok=True)


def test_stage_out_at_exit_refused_by_the_destination_is_reported(
    gsite: Site, api: globus_api.EmulatorServer
) -> None:
    _logged_in_pool(gsite, api, 1)
    root = gsite.root / "readonly"
    root.mkdir(mode=0o755, exist_ok=True)
    doc = _admin(api)._call("POST", "_emulator/collections", {"path": str(root), "writable": False})
    gsite.prolog("710")
    _write_random(gsite, "gtunit1", "/tmp/gtunit1-refused.bin", 1)
    assert _declare(gsite, "710", "/tmp/gtunit1-refused.bin", f"{doc['id']}:/x.bin").returncode == 0
    assert _declare(gsite, "710", "/tmp/gtunit1-never-written", f"{doc['id']}:/y").returncode == 0
    res = gsite.epilog("710")
    assert "1 of 2 stage-out(s) submitted" in res.stderr, res.stderr
    gsite.wait_gcp_stopped(timeout=60)
    rows = {
        r["source"]: r
        for r in json.loads(gsite.endpoint("gtunit1", "stage-status", "--json").stdout)
    }
    refused = rows["/tmp/gtunit1-refused.bin"]
    assert refused["state"] == "failed" and "PERMISSION_DENIED" in refused["error"], refused
    missing = rows["/tmp/gtunit1-never-written"]
    assert missing["state"] == "failed" and "did not exist" in missing["error"], missing
    log = gsite.hook_log()
    assert "FAILED: PERMISSION_DENIED" in log and "did not exist when the job ended" in log, log
    text = gsite.endpoint("gtunit1", "stage-status").stdout
    assert "failed" in text and "PERMISSION_DENIED" in text
    Path("/tmp/gtunit1-refused.bin").unlink(missing_ok=True)


def _paused_stage_out(
    gsite: Site, api: globus_api.EmulatorServer, job: str
) -> tuple[UnixUser, str, str]:
    """A stage-out declared by ``job`` and submitted by its Epilog, then paused (INACTIVE,
    GCP idle: only the Transfer API knows it is live); the drain started for it. The user,
    the task id and the destination."""
    user = _logged_in_pool(gsite, api, 1)
    collection, _ = _collection(api, gsite)
    gsite.prolog(job)
    admin = _late_gcp_work(api, user)  # so the task is paused before any byte moves
    _write_random(gsite, "gtunit1", f"/tmp/gtunit1-{job}.bin", 1)
    destination = f"{collection}:/giveup-{job}.bin"
    assert _declare(gsite, job, f"/tmp/gtunit1-{job}.bin", destination).returncode == 0
    res = gsite.epilog(job)
    assert "1 of 1 stage-out(s) submitted" in res.stderr and "drain pid" in res.stderr, res.stderr
    (row,) = json.loads(gsite.endpoint("gtunit1", "stage-status", "--json").stdout)
    admin._call("POST", f"_emulator/tasks/{row['task_id']}/pause", {})
    return user, str(row["task_id"]), destination


def _task(api: globus_api.EmulatorServer, task_id: str) -> dict:  # type: ignore[type-arg]
    return _state(api)["tasks"][task_id]  # type: ignore[no-any-return]


def test_a_drain_that_gives_up_cancels_the_paused_stage_out_before_gcp_stops(
    gsite: Site, api: globus_api.EmulatorServer
) -> None:
    """Issue 18: a task is bound to the pool entry, not to the node; stopped under it,
    GCP would leave it to resume from the /tmp of the next node that runs the entry. At
    linger_max the drain cancels it first, and stage-status and the hook log say so."""
    gsite.configure(linger_max=4)
    user, task_id, destination = _paused_stage_out(gsite, api, "720")
    wait_for(lambda: "lease ep1 released" in gsite.hook_log(), timeout=60, what="the give-up")
    task = _task(api, task_id)
    assert task["status"] == "FAILED" and task["fatal_error"]["code"] == "CANCELED", task
    log = gsite.hook_log()
    line = f"task {task_id} (stage-out /tmp/gtunit1-720.bin -> {destination}) cancelled"
    assert line in log, log
    assert gcp_processes(user.uid) == [] and not user.registry()
    (row,) = json.loads(gsite.endpoint("gtunit1", "stage-status", "--json").stdout)
    assert row["state"] == "failed", row
    assert row["error"].startswith(
        "cancelled by globus-tmp: the drain on n1 gave up after linger_max=4 s"
    ), row
    assert "cancelled by globus-tmp" in gsite.endpoint("gtunit1", "stage-status").stdout
    assert not gsite.state("gtunit1").get("cancel_holds")
    Path("/tmp/gtunit1-720.bin").unlink(missing_ok=True)


def test_a_cancel_globus_refuses_keeps_the_lease_until_reconcile_gets_through(
    gsite: Site, api: globus_api.EmulatorServer
) -> None:
    """The cancel fails (5xx): the entry stays leased to this node, marked, and shown by
    status and stage-status, until a later repair cancels the task and releases it."""
    gsite.configure(linger_max=4)
    admin = _admin(api)
    admin._call("POST", "_emulator/faults", {"route": "task_cancel", "status": 503, "count": 100})
    try:
        user, task_id, _ = _paused_stage_out(gsite, api, "730")
        wait_for(
            lambda: "lease ep1 kept for 1 task(s) to cancel" in gsite.hook_log(),
            timeout=60,
            what="the give-up",
        )
        assert _task(api, task_id)["status"] == "INACTIVE"
        log = gsite.hook_log()
        assert "NOT cancelled: Globus is unavailable or failed (503" in log, log
        assert gcp_processes(user.uid) == []
        assert user.registry()["ep1"]["phase"] == "cancelling", "kept from other nodes"
        status = gsite.admin("status").stdout
        assert f"lease ep1 HELD FOR CANCEL of task(s) {task_id}" in status, status
        (row,) = json.loads(gsite.endpoint("gtunit1", "stage-status", "--json").stdout)
        assert row["state"] == "submitted" and "could not cancel the task yet" in row["note"]
        assert (
            "keeps endpoint ep1 from other nodes"
            in gsite.endpoint("gtunit1", "stage-status").stdout
        )
        assert gsite.admin("reconcile").returncode == 0
        assert user.registry()["ep1"]["phase"] == "cancelling", "the retry waits its time"
    finally:
        admin._call("DELETE", "_emulator/faults", None)
    path = gsite.state_dir() / "users" / "gtunit1.json"
    doc = json.loads(path.read_text())
    doc["cancel_holds"]["ep1"]["next_try"] = 0  # the retry's time has come
    path.write_text(json.dumps(doc))
    res = gsite.admin("reconcile")
    assert "1 cancelled or ended, 0 not yet" in res.stdout, res.stdout + res.stderr
    assert "lease ep1 released" in res.stdout, res.stdout
    assert _task(api, task_id)["fatal_error"]["code"] == "CANCELED"
    assert not user.registry()
    (row,) = json.loads(gsite.endpoint("gtunit1", "stage-status", "--json").stdout)
    assert row["state"] == "failed" and "(cancelled at " in row["error"] and not row["note"]
    Path("/tmp/gtunit1-730.bin").unlink(missing_ok=True)


def test_bad_stage_out_declarations_get_one_line_naming_the_fix(
    gsite: Site, api: globus_api.EmulatorServer
) -> None:
    user = _logged_in_pool(gsite, api, 1)
    gsite.prolog("720")
    collection = "5a8d3a0c-1f7e-4d0e-8c52-0b1b2f0f9a11"
    cases = [
        (("/etc/hostname", f"{collection}:/x"), "is not under /tmp"),
        (("/tmp/x", "not-a-uuid:/x"), "is not an endpoint or collection id"),
        (("/tmp/x", "no-colon"), "is not ENDPOINT_ID:PATH"),
    ]
    for args, expected in cases:
        res = _declare(gsite, "720", *args)
        assert res.returncode == 1 and expected in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    (user.user_dir / "tokens.db").unlink()
    res = _declare(gsite, "720", "/tmp/x", f"{collection}:/x")
    assert res.returncode == 1 and "globus-tmp-endpoint login" in res.stderr, res.stderr
    assert "no stage-out declared" in gsite.endpoint("gtunit1", "stage-status").stdout
    gsite.epilog("720")
    gsite.wait_gcp_stopped(timeout=30)
