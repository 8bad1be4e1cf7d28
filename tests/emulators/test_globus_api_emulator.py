"""Tests of the Globus Transfer/Auth API emulator, driven by the real globus-sdk 4.x.

Why: the emulator stands in for Globus in every other test, so it must answer in the
real shapes. Where ``globus_sdk.testing`` has canned real responses, the emulator's key
sets are compared with them; the rest checks behaviour the project relies on: single-use
setup keys, task paging and filters, bytes really moving through GCP links only while
connected, resumption after a GCP outage, deadlines, and globus-sdk's own retry and
token refresh logic recovering from what the emulator injects.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import globus_api
import globus_sdk
import pytest
from globus.globus_recorded import recorded_doc
from globus_api import fileops
from globus_sdk.login_flows import CommandLineLoginFlowManager
from globus_sdk.token_storage import SQLiteTokenStorage
from globus_sdk.transport import RetryConfig
from polling import wait_for

EMULATORS = Path(__file__).resolve().parent


CLIENT_ID = "6a1f6a3c-8d6b-4cf4-9b2d-1f4c6a0e5a11"
TC = globus_sdk.TransferClient
AC = globus_sdk.ConfidentialAppAuthClient

# globus-sdk 4.x dropped create_endpoint and its canned response; these are the keys of
# the 3.x canned ``create_endpoint`` response (a real GCP create also has the setup key).
CREATE_RESULT_KEYS = {
    "DATA_TYPE",
    "display_name",
    "code",
    "globus_connect_setup_key",
    "id",
    "message",
    "request_id",
    "resource",
}
ERROR_KEYS = {"code", "message", "request_id", "resource"}
EVENT_KEYS = {"DATA_TYPE", "code", "description", "details", "is_error", "time"}


def finished(tc: globus_sdk.TransferClient, task_id: str, timeout: float = 30.0) -> Any:
    """Wait until the task is neither ACTIVE nor INACTIVE; return its document."""

    def done() -> Any:
        task = tc.get_task(task_id)
        return task if task["status"] not in ("ACTIVE", "INACTIVE") else None

    return wait_for(done, timeout, f"task {task_id} to finish")


def make_file(path: Path, size: int) -> str:
    """A file of ``size`` bytes with distinct blocks (offset bugs show); its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        written = 0
        index = 0
        while written < size:
            piece = (index.to_bytes(8, "big") + block[8:])[: size - written]
            handle.write(piece)
            digest.update(piece)
            written += len(piece)
            index += 1
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def event_codes(tc: globus_sdk.TransferClient, task_id: str) -> list[str]:
    return [e["code"] for e in tc.task_event_list(task_id, limit=1000)]


# --------------------------------------------------------------------------- fixtures


def _raw(exc: globus_sdk.GlobusAPIError) -> dict[str, Any]:
    """The error's JSON body (every emulator error has one)."""
    assert exc.raw_json is not None, exc
    return exc.raw_json


@pytest.fixture
def make_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Start emulators on port 0 (always stopped); the SDK env points at the last one."""
    servers: list[globus_api.EmulatorServer] = []
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)

    def make(**options: Any) -> globus_api.EmulatorServer:
        options.setdefault("gcp_timeout", 1.0)
        options.setdefault("poll_wait", 0.5)
        server = globus_api.EmulatorServer(**options).start()
        servers.append(server)
        monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_TRANSFER", server.url)
        monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_AUTH", server.url)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., Any], tmp_path: Path) -> globus_api.EmulatorServer:
    return make_server(state_file=str(tmp_path / "state.json"))


@pytest.fixture
def admin(server: globus_api.EmulatorServer) -> globus_api.AdminClient:
    return globus_api.AdminClient(server.url)


@dataclass
class User:
    username: str
    identity_id: str
    tokens: dict[str, Any]
    authorizer: globus_sdk.RefreshTokenAuthorizer
    tc: globus_sdk.TransferClient


def login(admin: globus_api.AdminClient, username: str, **tc_options: Any) -> User:
    """A user with tokens minted by the emulator, using them the way the hooks will."""
    tokens = admin.mint_tokens(username, client_id=CLIENT_ID)
    authorizer = globus_sdk.RefreshTokenAuthorizer(
        tokens["refresh_token"],
        globus_sdk.NativeAppAuthClient(CLIENT_ID),
        access_token=tokens["access_token"],
        expires_at=int(time.time()) + tokens["expires_in"],
    )
    tc = globus_sdk.TransferClient(authorizer=authorizer, **tc_options)
    return User(username, tokens["identity_id"], tokens, authorizer, tc)


@pytest.fixture
def alice(admin: globus_api.AdminClient) -> User:
    return login(admin, "alice@example.org")


@pytest.fixture
def bob(admin: globus_api.AdminClient) -> User:
    return login(admin, "bob@example.org")


@pytest.fixture
def links() -> Iterator[list[globus_api.GcpLink]]:
    """GcpLinks started by a test (a fake minimal GCP each); always stopped."""
    started: list[globus_api.GcpLink] = []
    yield started
    for link in started:
        link.stop(notify=False, timeout=2.0)


def create_gcp(tc: globus_sdk.TransferClient, name: str) -> tuple[str, str]:
    """What ``globus gcp create mapped`` does; returns (endpoint id, setup key)."""
    doc = tc.post(
        "/v0.10/endpoint",
        data={"DATA_TYPE": "endpoint", "is_globus_connect": True, "display_name": name},
    )
    return doc["id"], doc["globus_connect_setup_key"]


def start_gcp(
    server: globus_api.EmulatorServer,
    links: list[globus_api.GcpLink],
    endpoint_id: str,
    paths: list[tuple[str, str]],
    **options: Any,
) -> globus_api.GcpLink:
    link = globus_api.GcpLink(server.url, endpoint_id, paths, **options).start()
    links.append(link)
    assert link.wait_connected(5.0), link.last_error
    return link


# --------------------------------------------------------------------------- auth


def test_token_refresh_and_client_credentials_have_real_shapes(
    server: globus_api.EmulatorServer, admin: globus_api.AdminClient
) -> None:
    tokens = admin.mint_tokens("alice@example.org", client_id=CLIENT_ID)
    native = globus_sdk.NativeAppAuthClient(CLIENT_ID)
    refreshed = native.oauth2_refresh_token(tokens["refresh_token"])
    reference = recorded_doc(AC.oauth2_client_credentials_tokens)
    assert set(reference) <= set(refreshed.data)
    assert refreshed["resource_server"] == "transfer.api.globus.org"
    assert refreshed["token_type"] == "Bearer"
    assert refreshed["scope"] == "urn:globus:auth:scope:transfer.api.globus.org:all"
    assert refreshed["refresh_token"] == tokens["refresh_token"]
    assert refreshed["other_tokens"] == []
    by_rs = refreshed.by_resource_server["transfer.api.globus.org"]
    assert by_rs["access_token"] != tokens["access_token"]

    confidential = globus_sdk.ConfidentialAppAuthClient("robot-client", "secret")
    robot = confidential.oauth2_client_credentials_tokens(
        requested_scopes=globus_sdk.TransferClient.scopes.all
    )
    assert set(reference) == set(robot.data)
    assert robot["resource_server"] == "transfer.api.globus.org"

    with pytest.raises(globus_sdk.AuthAPIError) as info:
        native.oauth2_refresh_token("RT-not-issued")
    assert info.value.http_status == 401  # as Globus Auth answers (globus_sdk.testing)
    assert _raw(info.value) == {"error": "invalid_grant"}


def test_introspect_revoke_and_auth_errors_have_real_shapes(
    server: globus_api.EmulatorServer, admin: globus_api.AdminClient
) -> None:
    tokens = admin.mint_tokens("alice@example.org", client_id=CLIENT_ID)
    confidential = globus_sdk.ConfidentialAppAuthClient("resource-server", "secret")
    doc = confidential.oauth2_token_introspect(tokens["access_token"])
    assert set(doc.data) == set(recorded_doc(AC.oauth2_token_introspect))
    assert doc["active"] is True
    assert doc["sub"] == tokens["identity_id"]
    assert doc["username"] == "alice@example.org"
    assert confidential.oauth2_token_introspect("AT-bogus")["active"] is False

    native = globus_sdk.NativeAppAuthClient(CLIENT_ID)
    revoked = native.oauth2_revoke_token(tokens["refresh_token"])
    assert revoked.data == recorded_doc(globus_sdk.NativeAppAuthClient.oauth2_revoke_token)
    with pytest.raises(globus_sdk.AuthAPIError):
        native.oauth2_refresh_token(tokens["refresh_token"])
    assert confidential.oauth2_token_introspect(tokens["access_token"])["active"] is False

    unauthorized = recorded_doc(globus_sdk.AuthClient.userinfo, "unauthorized")
    with pytest.raises(globus_sdk.AuthAPIError) as info:
        globus_sdk.AuthClient(
            authorizer=globus_sdk.AccessTokenAuthorizer("AT-bogus"),
            retry_config=RetryConfig(max_retries=0),
        ).userinfo()
    assert info.value.http_status == 401
    assert set(_raw(info.value)) == set(unauthorized)
    assert set(_raw(info.value)["errors"][0]) == set(unauthorized["errors"][0])

    auth_tokens = admin.mint_tokens(
        "alice@example.org", scopes=["openid", "profile", "email"], client_id=CLIENT_ID
    )
    auth_client = globus_sdk.AuthClient(
        authorizer=globus_sdk.AccessTokenAuthorizer(auth_tokens["access_token"])
    )
    assert auth_client.userinfo()["sub"] == tokens["identity_id"]
    identities = auth_client.get_identities(usernames=["alice@example.org"])["identities"]
    assert [i["id"] for i in identities] == [tokens["identity_id"]]
    reference = recorded_doc(globus_sdk.AuthClient.get_identities)["identities"][0]
    assert set(reference) <= set(identities[0])


def test_transfer_rejects_unknown_and_expired_tokens_in_real_error_shape(
    alice: User, admin: globus_api.AdminClient
) -> None:
    no_retry = RetryConfig(max_retries=0)
    bogus = globus_sdk.TransferClient(
        authorizer=globus_sdk.AccessTokenAuthorizer("AT-bogus"), retry_config=no_retry
    )
    with pytest.raises(globus_sdk.TransferAPIError) as info:
        bogus.task_list()
    assert info.value.http_status == 401
    assert info.value.code == "AuthenticationFailed"
    assert set(_raw(info.value)) == ERROR_KEYS
    assert _raw(info.value)["resource"] == "/v0.10/task_list"

    # An expired access token: the SDK's RefreshTokenAuthorizer refreshes on the 401.
    old = alice.authorizer.access_token
    assert old is not None
    assert admin.expire_tokens(username=alice.username) >= 1
    assert alice.tc.task_list()["total"] == 0
    assert alice.authorizer.access_token != old

    static = globus_sdk.TransferClient(
        authorizer=globus_sdk.AccessTokenAuthorizer(old), retry_config=no_retry
    )
    with pytest.raises(globus_sdk.TransferAPIError) as info:
        static.task_list()
    assert info.value.http_status == 401


class AutoLogin(CommandLineLoginFlowManager):
    """A browserless "user": opens the authorize URL itself (the emulator approves)."""

    def print_authorize_url(self, authorize_url: str) -> None:
        self.url = authorize_url

    def prompt_for_code(self) -> str:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.url, timeout=10) as page:
            return str(page.headers["X-Emulator-Auth-Code"])


class NoLogin(CommandLineLoginFlowManager):
    def run_login_flow(self, auth_parameters: Any) -> Any:
        raise AssertionError("stored tokens should have been enough")


def test_user_app_login_flow_and_stored_tokens(
    server: globus_api.EmulatorServer, admin: globus_api.AdminClient, tmp_path: Path
) -> None:
    carol = admin.set_login("carol@example.org")
    storage = tmp_path / "tokens.json"

    def app(flow: type[CommandLineLoginFlowManager]) -> globus_sdk.UserApp:
        config = globus_sdk.GlobusAppConfig(
            token_storage=globus_sdk.token_storage.JSONTokenStorage(storage),
            request_refresh_tokens=True,
            login_flow_manager=flow,
        )
        return globus_sdk.UserApp("globus-tmp-test", client_id=CLIENT_ID, config=config)

    first = app(AutoLogin)
    tc = globus_sdk.TransferClient(app=first)
    assert tc.task_list()["DATA"] == []  # logged in through authorization_code + PKCE
    saved = json.loads(storage.read_text())
    stored = next(iter(saved["data"].values()))
    assert stored["transfer.api.globus.org"]["identity_id"] == carol["id"]
    assert stored["transfer.api.globus.org"]["refresh_token"]

    admin.expire_tokens(username="carol@example.org")
    second = app(NoLogin)
    tc2 = globus_sdk.TransferClient(app=second)
    assert tc2.endpoint_search(filter_scope="my-endpoints")["DATA"] == []


def test_seeded_token_storage_serves_a_non_interactive_user_app(
    server: globus_api.EmulatorServer, admin: globus_api.AdminClient, tmp_path: Path
) -> None:
    """How the hooks' UserApp (SQLite storage, no login handler) gets tokens in tests."""
    tokens = admin.mint_tokens(
        "dave@example.org", scopes=globus_api.USER_APP_SCOPES, client_id=CLIENT_ID
    )
    globus_api.seed_token_storage(SQLiteTokenStorage(tmp_path / "tokens.db"), tokens)
    admin.expire_tokens(username="dave@example.org")  # the SDK must refresh by itself

    config = globus_sdk.GlobusAppConfig(
        token_storage=SQLiteTokenStorage(tmp_path / "tokens.db"),
        request_refresh_tokens=True,
        token_validation_error_handler=None,
        login_flow_manager=NoLogin,
    )
    app = globus_sdk.UserApp("globus-tmp-test", client_id=CLIENT_ID, config=config)
    app.add_scope_requirements({TC.resource_server: [globus_sdk.scopes.TransferScopes.all]})
    tc = globus_sdk.TransferClient(app=app)
    endpoint_id, _ = create_gcp(tc, "seeded")
    assert tc.get_endpoint(endpoint_id)["owner_string"] == "dave@example.org"

    empty = globus_sdk.GlobusAppConfig(
        token_storage=SQLiteTokenStorage(tmp_path / "none.db"),
        token_validation_error_handler=None,
    )
    unseeded = globus_sdk.UserApp("globus-tmp-test", client_id=CLIENT_ID, config=empty)
    with pytest.raises(globus_sdk.token_storage.TokenValidationError):
        globus_sdk.TransferClient(app=unseeded).task_list()


# --------------------------------------------------------------------------- endpoints


def test_gcp_endpoint_lifecycle_and_single_use_setup_key(
    server: globus_api.EmulatorServer, alice: User, bob: User
) -> None:
    created = alice.tc.post(
        "/v0.10/endpoint",
        data={"DATA_TYPE": "endpoint", "is_globus_connect": True, "display_name": "node1"},
    )
    assert set(created.data) >= CREATE_RESULT_KEYS
    assert created["DATA_TYPE"] == "endpoint_create_result"
    assert created["code"] == "Created"
    endpoint_id, key = created["id"], created["globus_connect_setup_key"]

    assert globus_api.redeem_setup_key(server.url, key) == endpoint_id
    assert globus_api.redeem_setup_key(server.url, key) is None  # single use
    with pytest.raises(globus_api.HttpError) as info:
        globus_api.http_call(server.url + "_emulator/gcp/redeem", "POST", {"setup_key": key})
    assert info.value.status == 404
    assert info.value.doc["message"] == f"Setup Code {key} not found"

    doc = alice.tc.get_endpoint(endpoint_id)
    assert set(recorded_doc(TC.get_endpoint)) <= set(doc.data)
    assert doc["DATA_TYPE"] == "endpoint"
    assert doc["is_globus_connect"] is True
    assert doc["gcp_connected"] is False
    assert doc["gcp_paused"] is False
    assert doc["display_name"] == "node1"
    assert doc["owner_string"] == "alice@example.org"
    assert doc["owner_id"] == alice.identity_id
    assert doc["globus_connect_setup_key"] is None  # redeemed

    updated = alice.tc.update_endpoint(endpoint_id, {"display_name": "node1 /tmp"})
    assert set(updated.data) == set(recorded_doc(TC.update_endpoint))
    assert alice.tc.get_endpoint(endpoint_id)["display_name"] == "node1 /tmp"
    with pytest.raises(globus_sdk.TransferAPIError) as error:
        alice.tc.update_endpoint(endpoint_id, {"is_globus_connect": False})
    assert error.value.http_status == 400

    with pytest.raises(globus_sdk.TransferAPIError) as error:
        bob.tc.get_endpoint(endpoint_id)  # a GCP endpoint is its owner's
    assert error.value.http_status == 403
    mine = [e["id"] for e in alice.tc.endpoint_search(filter_scope="my-endpoints")]
    assert mine == [endpoint_id]
    assert list(bob.tc.endpoint_search(filter_scope="my-endpoints")) == []

    deleted = alice.tc.delete_endpoint(endpoint_id)
    assert deleted["code"] == "Deleted"
    assert deleted["DATA_TYPE"] == "result"
    with pytest.raises(globus_sdk.TransferAPIError) as error:
        alice.tc.get_endpoint(endpoint_id)
    assert error.value.http_status == 404
    assert error.value.code == "EndpointNotFound"
    assert set(_raw(error.value)) == ERROR_KEYS


def test_endpoint_search_pages_like_transfer(alice: User) -> None:
    ids = [create_gcp(alice.tc, f"gcp-{n}")[0] for n in range(7)]
    first = alice.tc.endpoint_search(filter_scope="my-endpoints", limit=3)
    assert set(first.data) == {"DATA_TYPE", "DATA", "has_next_page", "limit", "offset"}
    assert first["DATA_TYPE"] == "endpoint_list"
    assert (len(first["DATA"]), first["has_next_page"], first["offset"]) == (3, True, 0)
    last = alice.tc.endpoint_search(filter_scope="my-endpoints", limit=3, offset=6)
    assert (len(last["DATA"]), last["has_next_page"]) == (1, False)
    paged = alice.tc.paginated.endpoint_search(filter_scope="my-endpoints", limit=3)
    assert [e["id"] for e in paged.items()] == ids
    found = alice.tc.endpoint_search("gcp-4", filter_scope="my-gcp-endpoints")
    assert [e["id"] for e in found] == [ids[4]]
    with pytest.raises(globus_sdk.TransferAPIError) as error:
        alice.tc.endpoint_search(filter_scope="all")  # full text is required then
    assert error.value.http_status == 400


# --------------------------------------------------------------------------- tasks


def test_submission_and_duplicate_submission_shapes(
    alice: User, admin: globus_api.AdminClient, tmp_path: Path
) -> None:
    src = admin.create_collection(str(tmp_path / "src"), create=True)["id"]
    dst = admin.create_collection(str(tmp_path / "dst"), create=True)["id"]
    (tmp_path / "src" / "hello.txt").write_text("hello\n")

    submission = alice.tc.get_submission_id()
    assert set(submission.data) == set(recorded_doc(TC.get_submission_id))
    data = globus_sdk.TransferData(src, dst, label="shape", submission_id=submission["value"])
    data.add_item("/hello.txt", "/out/hello.txt")
    result = alice.tc.submit_transfer(data)
    reference = recorded_doc(TC.submit_transfer)
    assert set(result.data) == set(reference)
    assert set(result["task_link"]) == set(reference["task_link"])
    assert (result["DATA_TYPE"], result["code"]) == ("transfer_result", "Accepted")
    again = alice.tc.submit_transfer(data)  # a retried submission is not a second task
    assert again["code"] == "Duplicate"
    assert again["task_id"] == result["task_id"]

    task = finished(alice.tc, result["task_id"])
    assert task["status"] == "SUCCEEDED"
    assert (tmp_path / "dst" / "out" / "hello.txt").read_text() == "hello\n"
    assert set(recorded_doc(TC.task_list)["DATA"][0]) <= set(task.data)
    assert (task["files"], task["files_transferred"], task["bytes_transferred"]) == (1, 1, 6)
    done = alice.tc.get(f"/v0.10/task/{result['task_id']}/successful_transfers")
    assert done["DATA"][0]["destination_path"] == "/out/hello.txt"

    empty = globus_sdk.TransferData(src, dst)
    with pytest.raises(globus_sdk.TransferAPIError) as error:
        alice.tc.submit_transfer(empty)
    failure = recorded_doc(TC.submit_transfer, "failure")
    assert error.value.http_status == 400
    assert error.value.code == failure["code"]
    assert set(_raw(error.value)) == set(failure)


def test_task_list_filters_pages_events_and_cancel(
    alice: User, bob: User, admin: globus_api.AdminClient, tmp_path: Path
) -> None:
    served = admin.create_collection(str(tmp_path / "served"), create=True)["id"]
    (tmp_path / "served" / "f").write_text("x")
    offline_gcp, _ = create_gcp(alice.tc, "offline")  # its GCP never connects

    def submit(user: User, src: str, dst: str, label: str) -> str:
        data = globus_sdk.TransferData(src, dst, label=label)
        data.add_item("/f", f"/{label}")
        return str(user.tc.submit_transfer(data)["task_id"])

    stalled = [submit(alice, offline_gcp, served, f"stalled-{n}") for n in range(3)]
    paused = submit(alice, offline_gcp, served, "paused")
    admin.pause_task(paused)
    succeeded = [submit(alice, served, served, f"ok-{n}") for n in range(2)]
    canceled = submit(alice, offline_gcp, served, "canceled")
    submit(bob, served, served, "bobs")
    for task_id in succeeded:
        assert finished(alice.tc, task_id)["status"] == "SUCCEEDED"

    cancel = alice.tc.cancel_task(canceled)
    assert set(cancel.data) == set(recorded_doc(TC.cancel_task))
    assert cancel["code"] == "Canceled"
    task = alice.tc.get_task(canceled)
    assert task["status"] == "FAILED"
    assert task["fatal_error"]["code"] == "CANCELED"
    assert alice.tc.cancel_task(canceled)["code"] == "TaskComplete"

    live = alice.tc.task_list(filter={"status": ["ACTIVE", "INACTIVE"]}, limit=100)
    assert {t["task_id"] for t in live} == {*stalled, paused}
    assert {t["status"] for t in live} == {"ACTIVE", "INACTIVE"}
    reference = recorded_doc(TC.task_list)
    page = alice.tc.task_list(limit=3, offset=0)
    assert set(page.data) == set(reference)
    assert (page["total"], page["length"], page["limit"], page["offset"]) == (7, 3, 3, 0)
    assert set(reference["DATA"][0]) <= set(page["DATA"][0])
    seen = []
    for offset in (0, 3, 6):
        seen += [t["task_id"] for t in alice.tc.task_list(limit=3, offset=offset)]
    assert len(seen) == len(set(seen)) == 7
    assert len(list(alice.tc.paginated.task_list().items())) == 7
    ok = alice.tc.task_list(filter="type:TRANSFER/status:SUCCEEDED")
    assert {t["task_id"] for t in ok} == set(succeeded)
    assert [t["label"] for t in bob.tc.task_list()] == ["bobs"]
    with pytest.raises(globus_sdk.TransferAPIError) as error:
        bob.tc.get_task(stalled[0])
    assert error.value.http_status == 404

    stalled_doc = wait_for(
        lambda: (d := alice.tc.get_task(stalled[0]))["nice_status"] == "GC_NOT_CONNECTED" and d,
        what="GC_NOT_CONNECTED",
    )
    assert stalled_doc["status"] == "ACTIVE"
    assert stalled_doc["is_ok"] is False
    events = alice.tc.task_event_list(stalled[0])
    assert set(events.data) == {"DATA_TYPE", "DATA", "length", "limit", "offset", "total"}
    assert events["DATA_TYPE"] == "event_list"
    assert set(events["DATA"][0]) == EVENT_KEYS
    assert events["DATA"][0]["code"] == "GC_NOT_CONNECTED"
    assert events["DATA"][0]["is_error"] is True
    assert alice.tc.get_task(paused)["status"] == "INACTIVE"


def test_transfer_moves_200mb_through_a_gcp_link_with_checksums(
    server: globus_api.EmulatorServer,
    alice: User,
    admin: globus_api.AdminClient,
    links: list[globus_api.GcpLink],
    tmp_path: Path,
) -> None:
    node_tmp = tmp_path / "node-tmp"
    source_sum = make_file(node_tmp / "job" / "big.dat", 200 * 1024 * 1024)
    archive = tmp_path / "archive"
    collection = admin.create_collection(str(archive), create=True)["id"]
    gcp, _ = create_gcp(alice.tc, "node")
    start_gcp(server, links, gcp, [(str(node_tmp), "rw")])
    assert alice.tc.get_endpoint(gcp)["gcp_connected"] is True

    began = time.monotonic()
    data = globus_sdk.TransferData(gcp, collection, label="stage-out", verify_checksum=True)
    data.add_item(str(node_tmp / "job"), "/results/job", recursive=True)
    task = finished(alice.tc, alice.tc.submit_transfer(data)["task_id"], timeout=60)
    assert task["status"] == "SUCCEEDED", event_codes(alice.tc, task["task_id"])
    assert time.monotonic() - began < 30
    assert sha256_of(archive / "results" / "job" / "big.dat") == source_sum
    assert task["bytes_transferred"] == 200 * 1024 * 1024
    assert task["bytes_checksummed"] == 200 * 1024 * 1024
    assert (task["files"], task["directories"], task["files_transferred"]) == (1, 1, 1)

    # stage-in: a tree from the collection into the GCP's exported /tmp
    (archive / "inputs" / "a" / "b").mkdir(parents=True)
    (archive / "inputs" / "top.txt").write_text("top\n")
    (archive / "inputs" / "a" / "b" / "deep.txt").write_text("deep\n")
    (archive / "inputs" / "a" / "empty").write_bytes(b"")
    data = globus_sdk.TransferData(collection, gcp, label="stage-in", preserve_timestamp=True)
    data.add_item("/inputs", str(node_tmp / "in"), recursive=True)
    task = finished(alice.tc, alice.tc.submit_transfer(data)["task_id"])
    assert task["status"] == "SUCCEEDED"
    assert (node_tmp / "in" / "a" / "b" / "deep.txt").read_text() == "deep\n"
    assert (node_tmp / "in" / "a" / "empty").read_bytes() == b""
    assert (task["files"], task["directories"]) == (3, 3)
    src_mtime = (archive / "inputs" / "top.txt").stat().st_mtime
    assert abs((node_tmp / "in" / "top.txt").stat().st_mtime - src_mtime) < 1e-3


def test_gcp_disconnect_mid_transfer_keeps_task_active_then_resumes(
    make_server: Callable[..., Any], links: list[globus_api.GcpLink], tmp_path: Path
) -> None:
    server = make_server(chunk_size=256 * 1024)
    admin = globus_api.AdminClient(server.url)
    alice = login(admin, "alice@example.org")
    node_tmp = tmp_path / "node-tmp"
    size = 24 * 1024 * 1024
    source_sum = make_file(node_tmp / "out.dat", size)
    collection = admin.create_collection(str(tmp_path / "archive"), create=True)["id"]
    gcp, _ = create_gcp(alice.tc, "node")
    slow = start_gcp(server, links, gcp, [(str(node_tmp), "rw")], work_delay=0.02)

    data = globus_sdk.TransferData(gcp, collection, verify_checksum=True)
    data.add_item(str(node_tmp / "out.dat"), "/out.dat")
    task_id = alice.tc.submit_transfer(data)["task_id"]
    wait_for(lambda: alice.tc.get_task(task_id)["bytes_transferred"] > 2 * 1024 * 1024)
    slow.stop(notify=False)  # GCP killed: no goodbye, heartbeats just stop

    wait_for(lambda: alice.tc.get_endpoint(gcp)["gcp_connected"] is False, 5, "offline")
    task = wait_for(
        lambda: (t := alice.tc.get_task(task_id))["nice_status"] == "GC_NOT_CONNECTED" and t,
        5,
        "GC_NOT_CONNECTED",
    )
    assert task["status"] == "ACTIVE"
    stalled_at = task["bytes_transferred"]
    assert 0 < stalled_at < size
    time.sleep(1.0)
    assert alice.tc.get_task(task_id)["bytes_transferred"] == stalled_at
    assert "GC_NOT_CONNECTED" in event_codes(alice.tc, task_id)
    assert [t["task_id"] for t in alice.tc.task_list(filter={"status": "ACTIVE"})] == [task_id]

    start_gcp(server, links, gcp, [(str(node_tmp), "rw")])  # GCP back
    task = finished(alice.tc, task_id)
    assert task["status"] == "SUCCEEDED"
    assert sha256_of(tmp_path / "archive" / "out.dat") == source_sum
    assert size <= task["bytes_transferred"] <= size + 2 * 256 * 1024  # resumed, not redone
    assert task["nice_status"] is None


def test_gcp_enforces_exported_paths_as_task_failures(
    server: globus_api.EmulatorServer,
    alice: User,
    admin: globus_api.AdminClient,
    links: list[globus_api.GcpLink],
    tmp_path: Path,
) -> None:
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "secret").write_text("no")
    (tmp_path / "ro").mkdir()
    (tmp_path / "rw" / "sub").mkdir(parents=True)
    collection = admin.create_collection(str(tmp_path / "archive"), create=True)["id"]
    (tmp_path / "archive" / "in.txt").write_text("in\n")
    gcp, _ = create_gcp(alice.tc, "node")
    start_gcp(
        server,
        links,
        gcp,
        [(str(tmp_path / "rw"), "rw"), (str(tmp_path / "ro"), "r"), (str(tmp_path), "n")],
    )

    def run(src: str, dst: str, source_path: str, destination_path: str) -> Any:
        data = globus_sdk.TransferData(src, dst)
        data.add_item(source_path, destination_path)
        return finished(alice.tc, alice.tc.submit_transfer(data)["task_id"])

    outside = run(gcp, collection, str(tmp_path / "private" / "secret"), "/secret")
    assert outside["status"] == "FAILED"
    assert outside["fatal_error"]["code"] == "PERMISSION_DENIED"
    assert "PERMISSION_DENIED" in event_codes(alice.tc, outside["task_id"])
    assert not (tmp_path / "archive" / "secret").exists()

    read_only = run(collection, gcp, "/in.txt", str(tmp_path / "ro" / "in.txt"))
    assert read_only["fatal_error"]["code"] == "PERMISSION_DENIED"
    assert not (tmp_path / "ro" / "in.txt").exists()
    escape = run(collection, gcp, "/in.txt", str(tmp_path / "rw" / ".." / "escaped"))
    assert escape["fatal_error"]["code"] == "PERMISSION_DENIED"
    ok = run(collection, gcp, "/in.txt", str(tmp_path / "rw" / "sub" / "in.txt"))
    assert ok["status"] == "SUCCEEDED"
    missing = run(collection, gcp, "/nope.txt", str(tmp_path / "rw" / "nope.txt"))
    assert missing["fatal_error"]["code"] == "FILE_NOT_FOUND"


def test_checksum_mismatch_is_retransferred_and_sync_level_skips(
    make_server: Callable[..., Any],
    links: list[globus_api.GcpLink],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = make_server(checksum_algorithm="md5")
    admin = globus_api.AdminClient(server.url)
    alice = login(admin, "alice@example.org")
    source_sum = make_file(tmp_path / "archive" / "input.dat", 3 * 1024 * 1024)
    collection = admin.create_collection(str(tmp_path / "archive"))["id"]
    node_tmp = tmp_path / "node-tmp"
    gcp, _ = create_gcp(alice.tc, "node")
    start_gcp(server, links, gcp, [(str(node_tmp), "rw")])

    real_write = fileops.write_chunk
    corrupted: list[str] = []

    def flaky_disk(path: str, offset: int, data: bytes, truncate: bool) -> None:
        if path.startswith(str(node_tmp)) and not corrupted:  # one bad write on the GCP
            corrupted.append(path)
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        real_write(path, offset, data, truncate)

    monkeypatch.setattr(fileops, "write_chunk", flaky_disk)
    data = globus_sdk.TransferData(collection, gcp, verify_checksum=True)
    data.add_item("/input.dat", str(node_tmp / "input.dat"))
    task = finished(alice.tc, alice.tc.submit_transfer(data)["task_id"])
    assert task["status"] == "SUCCEEDED"
    assert corrupted
    assert "VERIFY_CHECKSUM" in event_codes(alice.tc, task["task_id"])
    assert sha256_of(node_tmp / "input.dat") == source_sum
    assert task["bytes_transferred"] == 2 * 3 * 1024 * 1024  # the whole file, twice

    again = globus_sdk.TransferData(collection, gcp, sync_level="size")
    again.add_item("/input.dat", str(node_tmp / "input.dat"))
    task = finished(alice.tc, alice.tc.submit_transfer(again)["task_id"])
    assert (task["status"], task["files_skipped"], task["bytes_transferred"]) == (
        "SUCCEEDED",
        1,
        0,
    )


def test_stalled_task_fails_at_its_deadline(
    alice: User, admin: globus_api.AdminClient, tmp_path: Path
) -> None:
    collection = admin.create_collection(str(tmp_path / "archive"), create=True)["id"]
    gcp, _ = create_gcp(alice.tc, "never-started")
    deadline = int(time.time()) + 2
    data = globus_sdk.TransferData(
        gcp, collection, deadline=globus_api.iso(deadline) or "", label="doomed"
    )
    data.add_item("/tmp/x", "/x")
    task = finished(alice.tc, alice.tc.submit_transfer(data)["task_id"], timeout=10)
    assert task["status"] == "FAILED"
    assert task["fatal_error"]["code"] == "EXPIRED"
    assert time.time() >= deadline
    codes = event_codes(alice.tc, task["task_id"])
    assert codes[0] == "EXPIRED"  # newest first
    assert "GC_NOT_CONNECTED" in codes


def test_file_operations_and_disconnected_listing(
    server: globus_api.EmulatorServer,
    alice: User,
    links: list[globus_api.GcpLink],
    tmp_path: Path,
) -> None:
    gcp, _ = create_gcp(alice.tc, "node")
    no_retry = globus_sdk.TransferClient(
        authorizer=alice.authorizer, retry_config=RetryConfig(max_retries=0)
    )
    with pytest.raises(globus_sdk.TransferAPIError) as error:
        no_retry.operation_ls(gcp, path=str(tmp_path))
    assert error.value.http_status == 502
    assert error.value.code == "ExternalError.DirListingFailed.GCDisconnected"
    assert set(_raw(error.value)) == ERROR_KEYS

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "file1.txt").write_text("abcd")
    start_gcp(server, links, gcp, [(str(tmp_path / "data"), "rw")])
    listing = alice.tc.operation_ls(gcp, path=str(tmp_path / "data"))
    assert listing["DATA_TYPE"] == "file_list"
    assert set(recorded_doc(TC.operation_stat)) <= set(listing["DATA"][0])
    assert (listing["DATA"][0]["name"], listing["DATA"][0]["size"]) == ("file1.txt", 4)
    stat_doc = alice.tc.operation_stat(gcp, path=str(tmp_path / "data" / "file1.txt"))
    assert set(stat_doc.data) == set(recorded_doc(TC.operation_stat))
    made = alice.tc.operation_mkdir(gcp, path=str(tmp_path / "data" / "new"))
    assert set(made.data) == set(recorded_doc(TC.operation_mkdir))
    assert (tmp_path / "data" / "new").is_dir()
    with pytest.raises(globus_sdk.TransferAPIError) as error:
        alice.tc.operation_ls(gcp, path=str(tmp_path))
    assert error.value.http_status == 403


# --------------------------------------------------------------------------- faults


def test_sdk_retries_injected_429_and_5xx_and_duplicates_on_lost_responses(
    alice: User, admin: globus_api.AdminClient
) -> None:
    admin.add_fault("task_list", status=429, retry_after=1, count=2)
    began = time.monotonic()
    assert alice.tc.task_list()["DATA_TYPE"] == "task_list"
    assert time.monotonic() - began >= 2.0  # Retry-After honoured twice
    assert admin.faults() == []

    admin.add_fault("endpoint_search", status=503, count=1)
    assert alice.tc.endpoint_search(filter_scope="my-endpoints")["DATA"] == []

    admin.add_fault("/v0.10/task_list", method="GET", status=429, retry_after=1, count=5)
    impatient = globus_sdk.TransferClient(
        authorizer=alice.authorizer, retry_config=RetryConfig(max_retries=0)
    )
    with pytest.raises(globus_sdk.TransferAPIError) as error:
        impatient.task_list()
    assert error.value.http_status == 429
    assert error.value.headers["Retry-After"] == "1"
    assert set(_raw(error.value)) == ERROR_KEYS
    admin.clear_faults()

    # The response of a create is lost (502 after the work): the SDK's retry creates a
    # second endpoint, which is why callers create with retries off and search instead.
    admin.add_fault("endpoint_create", status=502, after=True, count=1)
    create_gcp(alice.tc, "dup")
    names = [e["display_name"] for e in alice.tc.endpoint_search(filter_scope="my-endpoints")]
    assert names == ["dup", "dup"]

    admin.add_fault("task_list", status=0, delay=0.5, count=1)
    began = time.monotonic()
    alice.tc.task_list()
    assert time.monotonic() - began >= 0.5


# --------------------------------------------------------------------------- GCP link


def test_gcp_link_protocol_sessions_pause_and_liveness(
    server: globus_api.EmulatorServer,
    alice: User,
    links: list[globus_api.GcpLink],
    tmp_path: Path,
) -> None:
    gcp, _ = create_gcp(alice.tc, "node")
    base = server.url + f"_emulator/gcp/{gcp}/"
    with pytest.raises(globus_api.HttpError) as info:
        globus_api.http_call(server.url + "_emulator/gcp/not-an-endpoint/connect", "POST", {})
    assert info.value.status == 404
    with pytest.raises(globus_api.HttpError) as info:
        globus_api.http_call(base + "heartbeat", "POST", {"session": "stale"})
    assert info.value.status == 409

    link = start_gcp(server, links, gcp, [(str(tmp_path), "rw")])
    assert link.state == "connected"
    sessions = globus_api.AdminClient(server.url).gcp_sessions()
    assert [s["endpoint_id"] for s in sessions] == [gcp]
    link.set_paused(True)
    assert link.state == "paused"
    doc = alice.tc.get_endpoint(gcp)
    assert (doc["gcp_connected"], doc["gcp_paused"]) == (True, True)
    link.set_paused(False)
    assert alice.tc.get_endpoint(gcp)["gcp_paused"] is False

    link.stop()  # clean stop: offline at once, no heartbeat timeout needed
    assert alice.tc.get_endpoint(gcp)["gcp_connected"] is False
    assert link.state == "disconnected"


def test_state_survives_restart_and_active_tasks_resume(
    make_server: Callable[..., Any], links: list[globus_api.GcpLink], tmp_path: Path
) -> None:
    state = str(tmp_path / "state.json")
    first = make_server(state_file=state)
    admin = globus_api.AdminClient(first.url)
    alice = login(admin, "alice@example.org")
    gcp, key = create_gcp(alice.tc, "node")
    assert globus_api.redeem_setup_key(first.url, key) == gcp
    collection = admin.create_collection(str(tmp_path / "archive"), create=True)["id"]
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "result").write_text("survived\n")
    data = globus_sdk.TransferData(gcp, collection)
    data.add_item(str(tmp_path / "node" / "result"), "/result")
    task_id = alice.tc.submit_transfer(data)["task_id"]
    first.stop()

    second = make_server(state_file=state)
    tokens = alice.tokens
    authorizer = globus_sdk.RefreshTokenAuthorizer(
        tokens["refresh_token"], globus_sdk.NativeAppAuthClient(CLIENT_ID)
    )
    tc = globus_sdk.TransferClient(authorizer=authorizer)  # same refresh token, new server
    assert tc.get_endpoint(gcp)["display_name"] == "node"
    assert tc.get_task(task_id)["status"] == "ACTIVE"
    assert globus_api.redeem_setup_key(second.url, key) is None
    start_gcp(second, links, gcp, [(str(tmp_path / "node"), "rw")])
    assert finished(tc, task_id)["status"] == "SUCCEEDED"
    assert (tmp_path / "archive" / "result").read_text() == "survived\n"


def test_command_line_launcher_listens_on_localhost_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    port_file = tmp_path / "port"
    state_file = tmp_path / "state.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(EMULATORS / "globus-api-emulator"),
            "--port-file",
            str(port_file),
            "--state-file",
            str(state_file),
            "--collection",
            str(tmp_path / "served"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(port_file.exists, 10, "port file")
        port = int(port_file.read_text())
        health = globus_api.AdminClient(f"http://127.0.0.1:{port}/").health()
        assert health["url"] == f"http://127.0.0.1:{port}/"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "collection " in out
        saved = json.loads(state_file.read_text())
        assert len(saved["endpoints"]) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
