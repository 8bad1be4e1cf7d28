"""Fidelity of the Globus API emulator: its documents against Globus's own recordings.

Why: every other test trusts the emulator to answer as Globus does. Here each document
globus-tmp and globus-cli use is compared with the response recorded in
``globus_sdk.testing`` key by key and JSON type by JSON type (errors included), and the
API features globus-cli relies on are checked: ls/task-list/event-list filters, transfer
filter rules, delete tasks, rename, pause info, the not-found and exists codes, client
identities, and the light import of the GCP side of the package.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import globus_api
import globus_sdk
import pytest
from globus.globus_recorded import recorded, recorded_doc
from globus_api.link import GcpLink
from globus_sdk.transport import RetryConfig
from polling import wait_for

EMULATORS = Path(__file__).resolve().parent


NATIVE_CLIENT_ID = "6a1f6a3c-8d6b-4cf4-9b2d-1f4c6a0e5a11"
ROBOT_CLIENT_ID = "5c1bd8a4-3e2f-4b7a-9d60-0f1e2d3c4b5a"
TC = globus_sdk.TransferClient
AC = globus_sdk.AuthClient
NO_RETRY = RetryConfig(max_retries=0)


def json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def assert_shape(ours: Any, theirs: Any, *, exact: bool = True, where: str = "$") -> None:
    """``ours`` has the keys of ``theirs`` (exactly, or at least) with the same JSON types
    where both are non-null, recursively (lists: their first elements)."""
    assert isinstance(ours, dict), f"{where}: {ours!r} is not an object"
    if exact:
        assert set(ours) == set(theirs), f"{where}: {set(ours) ^ set(theirs)}"
    else:
        assert set(theirs) <= set(ours), f"{where}: missing {set(theirs) - set(ours)}"
    for key, value in theirs.items():
        mine = ours[key]
        if value is None or mine is None:
            continue
        assert json_kind(mine) == json_kind(value), f"{where}.{key}: {mine!r} vs {value!r}"
        if isinstance(value, dict) and value:
            assert_shape(mine, value, exact=False, where=f"{where}.{key}")
        if isinstance(value, list) and value and mine and isinstance(value[0], dict):
            assert_shape(mine[0], value[0], exact=False, where=f"{where}.{key}[0]")


def finished(tc: globus_sdk.TransferClient, task_id: str) -> Any:
    def done() -> Any:
        task = tc.get_task(task_id)
        return task if task["status"] not in ("ACTIVE", "INACTIVE") else None

    return wait_for(done, 30, f"task {task_id}")


def raw_post(url: str, form: dict[str, str], client: tuple[str, str] | None = None) -> Any:
    """A form POST with urllib: (status, JSON), for requests the SDK would not send."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if client:
        basic = base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    request = urllib.request.Request(
        url, urllib.parse.urlencode(form).encode(), headers, method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = globus_api.EmulatorServer(
        port=0, state_file=str(tmp_path / "state.json"), gcp_timeout=1.0, poll_wait=0.5
    ).start()
    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_TRANSFER", server.url)
    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_AUTH", server.url)
    yield server
    server.stop()


@pytest.fixture
def admin(server: Any) -> Any:
    return globus_api.AdminClient(server.url)


def user_client(admin: Any, username: str) -> globus_sdk.TransferClient:
    tokens = admin.mint_tokens(username, client_id=NATIVE_CLIENT_ID)
    authorizer = globus_sdk.RefreshTokenAuthorizer(
        tokens["refresh_token"],
        globus_sdk.NativeAppAuthClient(NATIVE_CLIENT_ID),
        access_token=tokens["access_token"],
        expires_at=int(time.time()) + tokens["expires_in"],
    )
    return globus_sdk.TransferClient(authorizer=authorizer, retry_config=NO_RETRY)


@pytest.fixture
def tc(admin: Any) -> globus_sdk.TransferClient:
    return user_client(admin, "alice@example.org")


@pytest.fixture
def served(admin: Any, tmp_path: Path) -> tuple[str, Path]:
    """A served collection (id, directory) with a few files."""
    root = tmp_path / "served"
    (root / "sub" / "deeper").mkdir(parents=True)
    for name, text in {
        "a.txt": "a",
        "b.TXT": "bb",
        "file1.dat": "111",
        "file2.txt": "2222",
        "keep.dat": "k",
        "sub/c.txt": "c",
        "sub/d.dat": "d",
        "sub/deeper/e.dat": "e",
    }.items():
        (root / name).write_text(text)
    return admin.create_collection(str(root))["id"], root


@pytest.fixture
def links() -> Iterator[list[GcpLink]]:
    started: list[GcpLink] = []
    yield started
    for link in started:
        link.stop(notify=False, timeout=2.0)


def create_gcp(tc: globus_sdk.TransferClient, name: str) -> Any:
    return tc.post(
        "/v0.10/endpoint",
        data={"DATA_TYPE": "endpoint", "is_globus_connect": True, "display_name": name},
    )


def names(listing: Any) -> list[str]:
    return sorted(entry["name"] for entry in listing)


# --------------------------------------------------------------------------- Transfer shapes


def test_transfer_documents_have_the_recorded_shapes(
    tc: globus_sdk.TransferClient, served: tuple[str, Path]
) -> None:
    collection, root = served
    created = create_gcp(tc, "node")
    gcp = created["id"]
    assert_shape(created.data, recorded_doc(TC.update_endpoint), exact=False)
    assert (created["DATA_TYPE"], created["code"]) == ("endpoint_create_result", "Created")

    assert_shape(tc.get_endpoint(gcp).data, recorded_doc(TC.get_endpoint), exact=False)
    assert_shape(tc.get_endpoint(collection).data, recorded_doc(TC.get_endpoint), exact=False)
    found = tc.endpoint_search(filter_scope="my-endpoints")
    assert_shape(found["DATA"][0], recorded_doc(TC.get_endpoint), exact=False)
    updated = tc.update_endpoint(gcp, {"display_name": "node /tmp"})
    assert_shape(updated.data, recorded_doc(TC.update_endpoint))

    submission = tc.get_submission_id()
    assert_shape(submission.data, recorded_doc(TC.get_submission_id))
    data = globus_sdk.TransferData(collection, collection, submission_id=submission["value"])
    data.add_item("/a.txt", "/copy/a.txt")
    result = tc.submit_transfer(data)
    assert_shape(result.data, recorded_doc(TC.submit_transfer))
    task = finished(tc, result["task_id"])
    reference_task = recorded_doc(TC.task_list)["DATA"][0]
    assert_shape(task.data, reference_task, exact=False)
    listing = tc.task_list(limit=5)
    assert_shape(listing.data, recorded_doc(TC.task_list))
    done = tc.get(f"/v0.10/task/{task['task_id']}/successful_transfers")
    assert_shape(done.data, recorded_doc(TC.endpoint_manager_task_successful_transfers))

    events = tc.task_event_list(task["task_id"])
    assert set(events.data) == {"DATA_TYPE", "DATA", "length", "limit", "offset", "total"}
    event = events["DATA"][0]
    assert {k: json_kind(v) for k, v in event.items()} == {
        "DATA_TYPE": "str",
        "code": "str",
        "description": "str",
        "details": "str",
        "is_error": "bool",
        "time": "str",
    }

    ls = tc.operation_ls(collection, path="/")
    assert ls["DATA_TYPE"] == "file_list"
    for entry in ls["DATA"]:
        assert_shape(entry, recorded_doc(TC.operation_stat))
    assert_shape(tc.operation_stat(collection, path="/a.txt").data, recorded_doc(TC.operation_stat))
    made = tc.operation_mkdir(collection, "/made")
    assert_shape(made.data, recorded_doc(TC.operation_mkdir))
    renamed = tc.operation_rename(collection, "/made", "/renamed")
    assert_shape(renamed.data, recorded_doc(TC.operation_rename))
    assert (root / "renamed").is_dir() and not (root / "made").exists()

    delete = globus_sdk.DeleteData(collection, recursive=True)
    delete.add_item("/renamed")
    deleted = tc.submit_delete(delete)
    assert_shape(deleted.data, recorded_doc(TC.submit_delete))

    stalled = globus_sdk.TransferData(gcp, collection)
    stalled.add_item("/tmp/x", "/x")
    stalled_id = tc.submit_transfer(stalled)["task_id"]
    assert_shape(tc.cancel_task(stalled_id).data, recorded_doc(TC.cancel_task))
    assert_shape(tc.delete_endpoint(gcp).data, recorded_doc(TC.update_endpoint))


def test_transfer_errors_have_the_recorded_codes_and_shapes(
    admin: Any, tc: globus_sdk.TransferClient, served: tuple[str, Path]
) -> None:
    collection, _ = served

    def error(call: Callable[[], Any]) -> globus_sdk.TransferAPIError:
        with pytest.raises(globus_sdk.TransferAPIError) as info:
            call()
        return info.value

    not_found = recorded_doc(TC.operation_stat, "not_found")
    err = error(lambda: tc.operation_stat(collection, path="/nope"))
    assert (err.http_status, err.code) == (404, not_found["code"])  # what `globus stat` checks
    assert_shape(err.raw_json, not_found)
    assert error(lambda: tc.operation_ls(collection, path="/nope")).http_status == 404

    private = admin.create_collection(str(served[1] / "sub"), owner="bob@example.org", public=False)
    denied = recorded_doc(TC.operation_stat, "permission_denied")
    err = error(lambda: tc.get_endpoint(private["id"]))
    assert err.http_status == 403
    assert_shape(err.raw_json, denied)

    gcp = create_gcp(tc, "never-connected")["id"]
    err = error(lambda: tc.operation_ls(gcp, path="/~/"))
    assert (err.http_status, err.code) == (502, "ExternalError.DirListingFailed.GCDisconnected")

    missing_endpoint = recorded_doc(TC.set_subscription_id, "not_found")
    unknown = str(uuid.uuid4())
    for call in (
        lambda: tc.get_endpoint(unknown),
        lambda: tc.operation_ls(unknown),
        lambda: tc.delete_endpoint(unknown),
    ):
        err = error(call)
        assert (err.http_status, err.code) == (404, missing_endpoint["code"])  # EndpointNotFound
        assert_shape(err.raw_json, missing_endpoint)
    err = error(lambda: tc.get_task(unknown))
    assert (err.http_status, err.code) == (404, "TaskNotFound")
    assert_shape(err.raw_json, missing_endpoint)
    assert error(lambda: tc.task_event_list(unknown)).code == "TaskNotFound"
    assert error(lambda: tc.cancel_task(unknown)).code == "TaskNotFound"

    err = error(lambda: tc.operation_mkdir(collection, "/sub"))
    assert (err.http_status, err.code) == (502, "ExternalError.MkdirFailed.Exists")
    assert_shape(err.raw_json, missing_endpoint)
    err = error(lambda: tc.operation_rename(collection, "/a.txt", "/file2.txt"))
    assert (err.http_status, err.code) == (502, "ExternalError.RenameFailed.Exists")

    failure = recorded_doc(TC.submit_transfer, "failure")
    err = error(lambda: tc.submit_transfer(globus_sdk.TransferData(collection, collection)))
    assert (err.http_status, err.code) == (400, failure["code"])
    assert_shape(err.raw_json, failure)


# --------------------------------------------------------------------------- Auth shapes


def test_oauth_token_errors_are_rfc6749_documents_as_globus_answers(server: Any) -> None:
    invalid_grant = recorded_doc(
        globus_sdk.ConfidentialAppAuthClient.oauth2_exchange_code_for_tokens, "invalid_grant"
    )
    native = globus_sdk.NativeAppAuthClient(NATIVE_CLIENT_ID)
    with pytest.raises(globus_sdk.AuthAPIError) as info:
        native.oauth2_refresh_token("RT-never-issued")
    assert info.value.http_status == 401
    assert info.value.raw_json == invalid_grant

    confidential = globus_sdk.ConfidentialAppAuthClient(ROBOT_CLIENT_ID, "secret")
    confidential.oauth2_start_flow("https://app.example.org/callback", TC.scopes.all)
    with pytest.raises(globus_sdk.AuthAPIError) as info:
        confidential.oauth2_exchange_code_for_tokens("not-a-code")
    assert info.value.http_status == 401
    assert info.value.raw_json == invalid_grant

    token_url = server.url + "v2/oauth2/token"
    assert raw_post(token_url, {"grant_type": "client_credentials"}) == (
        401,
        {"error": "invalid_client"},
    )
    assert raw_post(token_url, {"grant_type": "password"}, ("c", "s")) == (
        400,
        {"error": "unsupported_grant_type"},
    )


def test_auth_documents_have_the_recorded_shapes(server: Any, admin: Any) -> None:
    tokens = admin.mint_tokens(
        "alice@example.org", scopes=["openid", "profile", "email"], client_id=NATIVE_CLIENT_ID
    )
    auth = globus_sdk.AuthClient(
        authorizer=globus_sdk.AccessTokenAuthorizer(tokens["access_token"])
    )
    identities = auth.get_identities(usernames=["alice@example.org"])
    assert_shape(identities.data, recorded_doc(AC.get_identities), exact=False)
    assert_shape(
        identities["identities"][0], recorded_doc(AC.get_identities)["identities"][0], exact=False
    )
    info = auth.userinfo()
    assert info["sub"] == tokens["identity_id"]
    assert info["identity_set"][0]["sub"] == tokens["identity_id"]

    unauthorized = recorded_doc(AC.userinfo, "unauthorized")
    bogus = globus_sdk.AuthClient(
        authorizer=globus_sdk.AccessTokenAuthorizer("AT-bogus"), retry_config=NO_RETRY
    )
    with pytest.raises(globus_sdk.AuthAPIError) as error:
        bogus.userinfo()
    assert error.value.http_status == 401
    assert_shape(error.value.raw_json, unauthorized)
    assert error.value.code == "UNAUTHORIZED"
    with pytest.raises(globus_sdk.AuthAPIError) as error:
        bogus.get_identities(usernames=["alice@example.org"])
    assert_shape(error.value.raw_json, recorded_doc(AC.get_identities, "unauthorized"))

    confidential = globus_sdk.ConfidentialAppAuthClient(ROBOT_CLIENT_ID, "secret")
    introspected = confidential.oauth2_token_introspect(tokens["access_token"])
    assert_shape(
        introspected.data,
        recorded_doc(globus_sdk.ConfidentialAppAuthClient.oauth2_token_introspect),
    )


def test_cli_login_routes_create_client_and_validate_token(server: Any, admin: Any) -> None:
    """What a ``globus login`` needs besides the OAuth flow: a client templated from the
    CLI's native app, and token validation by that client."""
    template = str(uuid.uuid4())
    native = globus_sdk.NativeAppAuthClient(template)
    created = native.post(
        "/v2/api/clients", data={"client": {"template_id": template, "name": "CLI"}}
    )
    reference = recorded("auth.create_native_app_instance").metadata["response"]
    assert_shape(created.data, reference)
    assert created["client"]["parent_client"] == template
    credential = created["included"]["client_credential"]
    assert credential["client"] == created["client"]["id"]

    client = (credential["client"], credential["secret"])
    tokens = admin.mint_tokens("alice@example.org", client_id=NATIVE_CLIENT_ID)
    validate = server.url + "v2/oauth2/token/validate"
    assert raw_post(validate, {"token": tokens["refresh_token"]}, client) == (200, {"active": True})
    assert raw_post(validate, {"token": tokens["access_token"]}, client) == (200, {"active": True})
    assert raw_post(validate, {"token": "RT-bogus"}, client) == (200, {"active": False})
    assert raw_post(validate, {"token": tokens["refresh_token"]}) == (
        401,
        {"error": "invalid_client"},
    )
    globus_sdk.NativeAppAuthClient(NATIVE_CLIENT_ID).oauth2_revoke_token(tokens["refresh_token"])
    assert raw_post(validate, {"token": tokens["refresh_token"]}, client) == (
        200,
        {"active": False},
    )


def test_client_credentials_identity_is_the_client_id(server: Any) -> None:
    confidential = globus_sdk.ConfidentialAppAuthClient(ROBOT_CLIENT_ID, "secret")
    tokens = confidential.oauth2_client_credentials_tokens(requested_scopes=TC.scopes.all)
    access = tokens.by_resource_server[TC.resource_server]["access_token"]
    robot = globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer(access))
    endpoint = create_gcp(robot, "robot's")["id"]
    doc = robot.get_endpoint(endpoint)
    assert doc["owner_id"] == ROBOT_CLIENT_ID
    assert doc["owner_string"] == f"{ROBOT_CLIENT_ID}@clients.auth.globus.org"
    assert confidential.oauth2_token_introspect(access)["sub"] == ROBOT_CLIENT_ID
    again = confidential.oauth2_client_credentials_tokens(requested_scopes=TC.scopes.all)
    second = again.by_resource_server[TC.resource_server]["access_token"]
    assert confidential.oauth2_token_introspect(second)["sub"] == ROBOT_CLIENT_ID


# --------------------------------------------------------------------------- filters


def test_ls_filter_matches_like_transfer(
    tc: globus_sdk.TransferClient, served: tuple[str, Path]
) -> None:
    collection, _ = served
    everything = ["a.txt", "b.TXT", "file1.dat", "file2.txt", "keep.dat", "sub"]

    def ls(filter: Any) -> list[str]:
        return names(tc.operation_ls(collection, path="/", filter=filter))

    assert ls("name:~*.txt") == ["a.txt", "b.TXT", "file2.txt"]  # globs ignore case
    assert ls("name:!~file*") == ["a.txt", "b.TXT", "keep.dat", "sub"]
    assert ls("name:=file2.txt") == ls("name:file2.txt") == ["file2.txt"]
    assert ls("name:!file2.txt") == [n for n in everything if n != "file2.txt"]
    assert ls("name:a.txt,keep.dat") == ["a.txt", "keep.dat"]
    assert ls("type:dir") == ["sub"]
    assert ls("type:file/name:~*.dat") == ["file1.dat", "keep.dat"]
    assert ls([{"type": "dir"}, {"name": "~a*"}]) == ["a.txt", "sub"]  # alternatives
    with pytest.raises(globus_sdk.TransferAPIError) as error:
        ls("colour:blue")
    assert error.value.http_status == 400


def test_transfer_filter_rules_exclude_in_order(
    tc: globus_sdk.TransferClient, served: tuple[str, Path]
) -> None:
    collection, root = served
    data = globus_sdk.TransferData(collection, collection)
    data.add_item("/", "/copy", recursive=True)
    data.add_filter_rule("keep.dat", method="include", type="file")
    data.add_filter_rule("*.dat", method="exclude", type="file")
    data.add_filter_rule("deeper", method="exclude", type="dir")
    task = finished(tc, tc.submit_transfer(data)["task_id"])
    assert task["status"] == "SUCCEEDED"
    assert [r["name"] for r in task["filter_rules"]] == ["keep.dat", "*.dat", "deeper"]
    copied = sorted(str(p.relative_to(root / "copy")) for p in (root / "copy").rglob("*"))
    assert copied == ["a.txt", "b.TXT", "file2.txt", "keep.dat", "sub", "sub/c.txt"]

    flat = globus_sdk.TransferData(collection, collection)
    flat.add_item("/a.txt", "/flat.txt")
    flat.add_filter_rule("*.dat")
    with pytest.raises(globus_sdk.TransferAPIError) as error:
        tc.submit_transfer(flat)
    assert error.value.http_status == 400


def test_task_list_label_filters_exact_negated_and_wildcard(
    tc: globus_sdk.TransferClient, served: tuple[str, Path]
) -> None:
    collection, _ = served
    ids = {}
    for label in ("alpha", "Alpha-2", "beta", None):
        data = globus_sdk.TransferData(collection, collection)
        if label is not None:
            data["label"] = label
        data.add_item("/a.txt", f"/labels/{label}.txt")
        ids[label] = tc.submit_transfer(data)["task_id"]
    delete = globus_sdk.DeleteData(collection, label="alpha-delete")
    delete.add_item("/labels")
    for task_id in ids.values():
        finished(tc, task_id)

    def labels(filter: str) -> list[Any]:
        return sorted((t["label"] for t in tc.task_list(filter=filter, limit=100)), key=str)

    assert labels("label:=alpha") == ["alpha"]  # globus task list --filter-label alpha --exact
    assert labels("label:!alpha") == sorted(["Alpha-2", "beta", None], key=str)
    assert labels("label:=alpha,=beta") == ["alpha", "beta"]
    assert labels("label:~alpha*") == ["Alpha-2", "alpha"]  # --inexact: wildcards, any case
    assert labels("label:!~alpha*") == sorted(["beta", None], key=str)
    assert labels("label:!~alpha*,!beta") == [None]  # every negation holds
    assert labels("type:TRANSFER,DELETE/label:~*a*/status:SUCCEEDED") == [
        "Alpha-2",
        "alpha",
        "beta",
    ]
    tc.submit_delete(delete)
    assert labels("type:DELETE") == ["alpha-delete"]


def test_event_list_filters_errors(tc: globus_sdk.TransferClient, served: tuple[str, Path]) -> None:
    collection, _ = served
    gcp = create_gcp(tc, "offline")["id"]
    stalled = globus_sdk.TransferData(gcp, collection)
    stalled.add_item("/tmp/x", "/x")
    stalled_id = tc.submit_transfer(stalled)["task_id"]
    wait_for(lambda: tc.get_task(stalled_id)["nice_status"] == "GC_NOT_CONNECTED")
    tc.cancel_task(stalled_id)
    skipping = globus_sdk.TransferData(collection, collection, skip_source_errors=True)
    skipping.add_item("/missing", "/m")
    skipping.add_item("/a.txt", "/s.txt")
    skipping_id = finished(tc, tc.submit_transfer(skipping)["task_id"])["task_id"]

    def codes(task_id: str, filter: str | None) -> list[str]:
        params = {"filter": filter} if filter is not None else {}
        return [e["code"] for e in tc.task_event_list(task_id, query_params=params)]

    assert codes(stalled_id, "is_error:1") == ["CANCELED", "GC_NOT_CONNECTED"]
    assert codes(stalled_id, "is_error:0") == []
    assert codes(skipping_id, "is_error:1") == []
    assert (
        codes(skipping_id, "is_error:0")
        == codes(skipping_id, None)
        == [
            "SUCCEEDED",
            "FILE_SKIPPED",
        ]
    )
    total = tc.task_event_list(stalled_id, query_params={"filter": "is_error:1"})["total"]
    assert total == 2


# --------------------------------------------------------------------------- tasks and ops


def test_delete_tasks_rename_and_pause_info_through_a_gcp_link(
    server: Any,
    admin: Any,
    tc: globus_sdk.TransferClient,
    links: list[GcpLink],
    tmp_path: Path,
) -> None:
    node_tmp = tmp_path / "node-tmp"
    (node_tmp / "job" / "out").mkdir(parents=True)
    (node_tmp / "job" / "out" / "r1").write_text("1")
    (node_tmp / "job" / "log").write_text("log")
    (node_tmp / "keep").write_text("keep")
    (tmp_path / "outside").write_text("no")
    gcp = create_gcp(tc, "node")["id"]
    link = GcpLink(server.url, gcp, [(str(node_tmp), "rw")]).start()
    links.append(link)
    assert link.wait_connected(5.0), link.last_error

    tc.operation_rename(gcp, str(node_tmp / "job" / "log"), str(node_tmp / "job" / "log.1"))
    assert (node_tmp / "job" / "log.1").read_text() == "log"
    with pytest.raises(globus_sdk.TransferAPIError) as error:
        tc.operation_rename(gcp, str(node_tmp / "keep"), str(tmp_path / "escaped"))
    assert (error.value.http_status, error.value.code) == (403, "EndpointPermissionDenied")

    submission = tc.get_submission_id()["value"]
    delete = globus_sdk.DeleteData(
        gcp, recursive=True, label="cleanup", submission_id=submission, ignore_missing=True
    )
    delete.add_item(str(node_tmp / "job"))
    delete.add_item(str(node_tmp / "never-there"))
    accepted = tc.submit_delete(delete)
    assert (accepted["DATA_TYPE"], accepted["code"]) == ("delete_result", "Accepted")
    again = tc.submit_delete(delete)
    assert (again["code"], again["task_id"]) == ("Duplicate", accepted["task_id"])
    task = finished(tc, accepted["task_id"])
    assert (task["status"], task["type"], task["label"]) == ("SUCCEEDED", "DELETE", "cleanup")
    assert task["destination_endpoint_id"] is None and task["source_endpoint_id"] == gcp
    assert (task["files"], task["directories"], task["subtasks_succeeded"]) == (2, 2, 4)
    assert not (node_tmp / "job").exists() and (node_tmp / "keep").exists()

    not_recursive = globus_sdk.DeleteData(gcp)
    not_recursive.add_item(str(node_tmp))
    refused = finished(tc, tc.submit_delete(not_recursive)["task_id"])
    assert refused["status"] == "FAILED" and (node_tmp / "keep").exists()
    missing = globus_sdk.DeleteData(gcp)
    missing.add_item(str(node_tmp / "never-there"))
    failed = finished(tc, tc.submit_delete(missing)["task_id"])
    assert failed["fatal_error"]["code"] == "FILE_NOT_FOUND"

    link.set_paused(True)
    blocked = globus_sdk.DeleteData(gcp)
    blocked.add_item(str(node_tmp / "keep"))
    blocked_id = tc.submit_delete(blocked)["task_id"]
    info = tc.task_pause_info(blocked_id)
    assert info["DATA_TYPE"] == "pause_info_limited"
    assert (info["pause_rules"], info["source_pause_message"]) == ([], None)
    admin.pause_task(blocked_id)
    assert tc.task_pause_info(blocked_id)["source_pause_message"]
    admin.pause_task(blocked_id, pause=False)
    link.set_paused(False)
    assert finished(tc, blocked_id)["status"] == "SUCCEEDED"
    assert not (node_tmp / "keep").exists()
    assert tc.task_pause_info(blocked_id)["source_pause_message"] is None


# --------------------------------------------------------------------------- package


def test_the_gcp_side_imports_only_the_light_modules() -> None:
    """The GCP emulator runs in user processes: ``globus_api.link`` must not pull in the
    service (engine, routes, server), and ``globus_api.<name>`` still reaches them."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import globus_api; from globus_api.link import GcpLink;"
        "from globus_api.client import redeem_setup_key;"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('globus_api'))))"
    )
    loaded = subprocess.run(
        ["/usr/bin/python3", "-c", code, str(EMULATORS)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert set(loaded) == {
        "globus_api",
        "globus_api.client",
        "globus_api.common",
        "globus_api.errors",
        "globus_api.fileops",
        "globus_api.link",
    }
    assert globus_api.EmulatorServer.__module__ == "globus_api.server"
    assert globus_api.GcpLink is GcpLink
    assert {"AdminClient", "EmulatorServer", "USER_APP_SCOPES", "seed_token_storage"} <= set(
        dir(globus_api)
    )
    with pytest.raises(AttributeError):
        globus_api.NoSuchThing  # noqa: B018
