"""``stage-out/stage-in``, ``list`` and the Epilog's task check against Globus's recorded
answers: what is sent, what is read back, and the one line a refusal gives the user."""

from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import responses
from globus_sdk.testing import get_last_request, load_response
from globus_tmp.config import Config
from globus_tmp.globusapi import GlobusApiError, GlobusSession
from globus_tmp.transfers import (
    Place,
    active_tasks_on,
    endpoint_connected,
    endpoint_seen,
    failure_reason,
    follow,
    submit,
)

from globus.globus_recorded import recorded, recorded_doc

TRANSFER = "https://transfer.api.globus.org/v0.10"


def _serve(method: str, path: str, name: str, case: str) -> None:
    """A recorded error of one Transfer route answered on another (the recordings have
    no error case for every route; the status, code and body shape are Globus's)."""
    rec = recorded(name, case)
    responses.add(method, f"{TRANSFER}{path}", status=rec.status, json=rec.json)


def _sent() -> dict[str, object]:
    request = get_last_request()
    assert request is not None and isinstance(request.body, (str, bytes))
    doc: dict[str, object] = json.loads(request.body)
    return doc


def test_submit_sends_an_idempotent_checksummed_transfer(session: GlobusSession) -> None:
    sub = load_response("transfer.get_submission_id").metadata["submission_id"]
    task_id = load_response("transfer.submit_transfer").metadata["task_id"]
    got = submit(session, Place("src-ep", "/tmp/out"), Place("dst-ep", "/x/"), True, "job 7")
    assert got == task_id
    body = _sent()
    assert body["submission_id"] == sub and body["verify_checksum"] is True
    assert body["source_endpoint"] == "src-ep" and body["label"] == "job 7"
    assert body["DATA"] == [
        {
            "DATA_TYPE": "transfer_item",
            "source_path": "/tmp/out",
            "destination_path": "/x/",
            "recursive": True,
        }
    ]


def test_a_refused_submission_is_one_line_with_globus_code(session: GlobusSession) -> None:
    load_response("transfer.get_submission_id")
    load_response("transfer.submit_transfer", case="failure")
    with pytest.raises(GlobusApiError) as info:
        submit(session, Place("a", "/x"), Place("b", "/y"), False, "l")
    assert (info.value.http_status, info.value.code) == (
        400,
        "ClientError.BadRequest.NoTransferItems",
    )
    assert str(info.value) == (
        "transfer submission failed: 400 ClientError.BadRequest.NoTransferItems: "
        "A transfer requires at least one item"
    )


def test_a_destination_path_refused_by_its_endpoint_names_path_and_access(
    session: GlobusSession,
) -> None:
    load_response("transfer.get_submission_id")
    _serve("POST", "/transfer", "transfer.operation_stat", "permission_denied")
    with pytest.raises(GlobusApiError) as info:
        submit(session, Place("a", "/x"), Place("b", "/foo"), False, "l")
    line = str(info.value)
    assert "\n" not in line and info.value.code == "EndpointPermissionDenied"
    assert line.startswith("transfer submission failed: permission denied by Globus (403 ")
    assert "Command: MLST /foo" in line and "check the path and your access" in line
    assert "GridFTP" not in line  # the server details after '---' stay out of the line


def test_an_unknown_destination_endpoint_says_wrong_or_deleted(session: GlobusSession) -> None:
    load_response("transfer.get_submission_id")
    _serve("POST", "/transfer", "transfer.set_subscription_id", "not_found")
    with pytest.raises(GlobusApiError) as info:
        submit(session, Place("a", "/x"), Place("b", "/y"), False, "l")
    assert info.value.code == "EndpointNotFound" and info.value.http_status == 404
    assert "the endpoint id is wrong or the endpoint was deleted" in str(info.value)
    assert "globus-tmp-endpoint setup" in str(info.value)


def test_consent_required_says_log_in_again_and_login_will_ask_for_it(
    session: GlobusSession, user_dir: Path
) -> None:
    """Transfer's ConsentRequired (a mapped collection's data_access): the recording's
    required scope and session message, in Transfer's documented 403 shape."""
    gare = recorded_doc("timer.get_job", "inactive_gare")["inactive_reason"]["detail"]
    load_response("transfer.get_submission_id")
    responses.add(
        "POST",
        f"{TRANSFER}/transfer",
        status=403,
        json={
            "code": "ConsentRequired",
            "message": "Missing required data_access consent",
            "request_id": "x1",
            "resource": "/v0.10/transfer",
            "required_scopes": gare["authorization_parameters"]["required_scopes"],
            "authorization_parameters": gare["authorization_parameters"],
        },
    )
    with pytest.raises(GlobusApiError) as info:
        submit(session, Place("a", "/x"), Place("b", "/y"), False, "l")
    line = str(info.value)
    assert info.value.code == "ConsentRequired" and "run 'globus-tmp-endpoint login'" in line
    assert "Missing required data_access consent" in line
    kept = json.loads((user_dir / "consents-needed.json").read_text())
    assert kept == gare["authorization_parameters"]["required_scopes"]


def test_follow_in_a_file_shows_globus_counts_link_and_no_carriage_return(
    session: GlobusSession,
) -> None:
    task = dict(recorded_doc("transfer.task_list")["DATA"][0])
    task_id = task["task_id"]
    active = {**task, "status": "ACTIVE", "nice_status": "OK", "files_transferred": 0}
    for doc in (active, active, task):
        responses.add("GET", f"{TRANSFER}/task/{task_id}", json=doc)
    out = io.StringIO()
    assert follow(session, task_id, out, poll=0.01) == "SUCCEEDED"
    text = out.getvalue()
    assert "\r" not in text and f"https://app.globus.org/activity/{task_id}" in text
    lines = text.splitlines()
    assert len(lines) == 3, lines  # the link, ACTIVE once (same state twice), SUCCEEDED
    assert lines[-1].endswith("1/1 files  2/2 subtasks  4.0 B at 3.0 B/s  SUCCEEDED")


def test_follow_of_a_failed_task_gives_the_error_event(session: GlobusSession) -> None:
    task = dict(recorded_doc("transfer.task_list")["DATA"][0])
    task_id = task["task_id"]
    responses.add("GET", f"{TRANSFER}/task/{task_id}", json={**task, "status": "FAILED"})
    responses.add(
        "GET",
        f"{TRANSFER}/task/{task_id}/event_list",
        json={
            "DATA_TYPE": "event_list",
            "DATA": [
                {
                    "DATA_TYPE": "event",
                    "code": "PERMISSION_DENIED",
                    "description": "permission denied",
                    "details": "Error (transfer)\nMessage: Permission denied",
                    "is_error": True,
                    "time": "2021-09-02T18:04:48+00:00",
                }
            ],
            "limit": 10,
            "offset": 0,
            "total": 1,
        },
    )
    with pytest.raises(GlobusApiError) as info:
        follow(session, task_id, io.StringIO(), poll=0.01)
    assert str(info.value) == (
        f"task {task_id} FAILED: PERMISSION_DENIED: permission denied "
        f"(details: https://app.globus.org/activity/{task_id})"
    )


def test_follow_that_loses_globus_says_the_task_goes_on(session: GlobusSession) -> None:
    responses.add("GET", f"{TRANSFER}/task/t1", status=404, json={
        "code": "TaskNotFound", "message": "Task ID 't1' not found", "request_id": "r",
        "resource": "/v0.10/task/t1",
    })  # fmt: skip
    with pytest.raises(GlobusApiError) as info:
        follow(session, "t1", io.StringIO(), poll=0.01)
    assert info.value.code == "TaskNotFound"
    assert str(info.value).startswith(
        "task t1 (it goes on in Globus: https://app.globus.org/activity/t1): "
        "not found in Globus (404 TaskNotFound: Task ID 't1' not found)"
    )


def test_failure_reason_prefers_the_fatal_error() -> None:
    task = {"task_id": "t", "fatal_error": {"code": "CANCELED", "description": "canceled"}}
    assert failure_reason(None, task) == "CANCELED: canceled"  # type: ignore[arg-type]


def test_the_epilog_check_lists_live_tasks_and_matches_the_endpoint(
    cfg: Config, user_dir: Path
) -> None:
    meta = load_response("transfer.task_list").metadata["tasks"][0]
    assert active_tasks_on(cfg, user_dir, meta["destination_id"]) == [meta["task_id"]]
    sent = parse_qs(urlparse(get_last_request().url).query)  # type: ignore[union-attr]
    assert sent["filter"] == ["status:ACTIVE,INACTIVE"] and sent["limit"] == ["1000"]
    assert active_tasks_on(cfg, user_dir, "another-endpoint") == []


def test_the_epilog_check_rate_limited_waits_for_retry_after(cfg: Config, user_dir: Path) -> None:
    for _ in range(2):  # the first answer and the one retry
        responses.add(
            "GET",
            f"{TRANSFER}/task_list",
            status=429,
            headers={"Retry-After": "1"},
            json={"code": "RateLimited", "message": "Too many requests", "request_id": "r"},
        )
    with pytest.raises(GlobusApiError) as info:
        active_tasks_on(cfg, user_dir, "ep", max_age=5)
    assert info.value.http_status == 429 and "rate-limiting" in str(info.value)
    cached = json.loads((user_dir / "cache" / "task-list.json").read_text())
    assert cached["backoff_until"] > cached["fetched_at"]
    calls = len(responses.calls)
    with pytest.raises(GlobusApiError):
        active_tasks_on(cfg, user_dir, "ep", max_age=5)  # backing off: Globus not asked
    assert len(responses.calls) == calls


def test_the_epilog_check_with_globus_down_says_retry_later(cfg: Config, user_dir: Path) -> None:
    rec = recorded("timer.get_job", "simple_500_error")
    for _ in range(2):
        responses.add("GET", f"{TRANSFER}/task_list", status=rec.status, json=rec.json)
    with pytest.raises(GlobusApiError) as info:
        active_tasks_on(cfg, user_dir, "ep")
    assert info.value.http_status == 500
    assert str(info.value).startswith("task_list: Globus is unavailable or failed (500 ")
    assert str(info.value).endswith("retry later")


def test_the_epilog_check_without_network_names_the_network(cfg: Config, user_dir: Path) -> None:
    for _ in range(2):
        responses.add(
            "GET", f"{TRANSFER}/task_list", body=requests.ConnectionError("Connection refused")
        )
    with pytest.raises(GlobusApiError) as info:
        active_tasks_on(cfg, user_dir, "ep")
    line = str(info.value)
    assert line.startswith("task_list: cannot reach Globus (GlobusConnectionError: ")
    assert "network connection to Globus" in line and info.value.http_status is None


def test_list_reads_gcp_connected_and_tells_a_deleted_endpoint(
    cfg: Config, user_dir: Path, session: GlobusSession
) -> None:
    endpoint_id = load_response("transfer.get_endpoint").metadata["endpoint_id"]
    # the recording is a GCSv4 host: gcp_connected is null, "Globus does not say"
    assert endpoint_connected(cfg, user_dir, endpoint_id) is None
    doc = recorded_doc("transfer.get_endpoint")
    responses.replace(
        "GET", f"{TRANSFER}/endpoint/{endpoint_id}", json={**doc, "gcp_connected": True}
    )
    assert endpoint_connected(cfg, user_dir, endpoint_id) is True
    _serve("GET", "/endpoint/gone", "transfer.set_subscription_id", "not_found")
    assert endpoint_connected(cfg, user_dir, "gone") is None
    with pytest.raises(GlobusApiError) as info:
        endpoint_seen(session.transfer(max_retries=0), "gone")
    assert info.value.code == "EndpointNotFound"
    assert str(info.value).startswith("endpoint gone: no such endpoint in Globus (404 ")


def test_list_asks_every_endpoint_past_a_deleted_one(
    cfg: Config, user_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from globus_tmp.cli.context import Context
    from globus_tmp.cli.pool import _connected
    from globus_tmp.job import UserIdentity

    endpoint_id = load_response("transfer.get_endpoint").metadata["endpoint_id"]
    doc = recorded_doc("transfer.get_endpoint")
    responses.replace(
        "GET", f"{TRANSFER}/endpoint/{endpoint_id}", json={**doc, "gcp_connected": True}
    )
    _serve("GET", "/endpoint/gone", "transfer.set_subscription_id", "not_found")
    ctx = Context(cfg, UserIdentity.current())
    ctx.user_dir = user_dir
    assert _connected(ctx, ["gone", endpoint_id]) == {endpoint_id: True}
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "endpoint gone: no such endpoint in Globus (404 " in err[0]
