"""Stage-out at job end (stageout.submit_declared / settle): the Epilog's submission and
the later check of how it ended, against Globus's recorded answers."""

from __future__ import annotations

import json
from pathlib import Path

import responses
from globus_sdk.testing import load_response
from globus_tmp.globusapi import GlobusSession
from globus_tmp.stageout import (
    FAILED,
    SUBMITTED,
    SUCCEEDED,
    StageOut,
    StageOutStore,
    refresh,
    settle,
    submit_declared,
)

from globus.globus_recorded import recorded_doc

TRANSFER = "https://transfer.api.globus.org/v0.10"
DEST = "5a8d3a0c-1f7e-4d0e-8c52-0b1b2f0f9a11"


def _declare(user_dir: Path, source: Path) -> StageOutStore:
    store = StageOutStore(user_dir)
    marks = user_dir / "marks"  # the node's declared/<user> stands beside it here
    marks.mkdir(mode=0o700, exist_ok=True)
    store.declare(
        StageOut(
            cluster="c", job_id="5", node="n1", seq=0, source=str(source),
            source_path=str(source), destination_endpoint=DEST, destination_path="/x/",
            label="globus-tmp job 5",
        ),
        marks,
    )  # fmt: skip
    return store


def _submit(session: GlobusSession, user_dir: Path) -> list[dict[str, object]]:
    return submit_declared(lambda: session, user_dir, "c", "5", "n1", "node-endpoint")


def test_the_epilog_submits_a_declared_directory_once(
    session: GlobusSession, user_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "results").mkdir()
    store = _declare(user_dir, tmp_path / "results")
    submission_id = load_response("transfer.get_submission_id").metadata["submission_id"]
    task_id = load_response("transfer.submit_transfer").metadata["task_id"]
    (outcome,) = _submit(session, user_dir)
    assert outcome["state"] == SUBMITTED and outcome["task_id"] == task_id
    (record,) = store.records()
    assert record.submission_id == submission_id and record.source_endpoint == "node-endpoint"
    body = json.loads(responses.calls[-1].request.body)  # type: ignore[arg-type]
    assert body["submission_id"] == submission_id and body["DATA"][0]["recursive"] is True
    assert body["destination_endpoint"] == DEST and body["verify_checksum"] is True


def test_a_refused_submission_fails_the_record_with_one_line(
    session: GlobusSession, user_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "out.bin").write_bytes(b"x")
    store = _declare(user_dir, tmp_path / "out.bin")
    load_response("transfer.get_submission_id")
    load_response("transfer.submit_transfer", case="failure")
    (outcome,) = _submit(session, user_dir)
    assert outcome["state"] == FAILED
    assert outcome["error"] == (
        "submitting the transfer to Globus failed: 400 ClientError.BadRequest.NoTransferItems: "
        "A transfer requires at least one item"
    )
    assert store.records()[0].submission_id  # kept: a retried Epilog reuses it


def test_a_consent_the_destination_needs_is_kept_for_the_next_login(
    session: GlobusSession, user_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "out.bin").write_bytes(b"x")
    _declare(user_dir, tmp_path / "out.bin")
    gare = recorded_doc("timer.get_job", "inactive_gare")
    params = gare["inactive_reason"]["detail"]["authorization_parameters"]
    load_response("transfer.get_submission_id")
    responses.add("POST", f"{TRANSFER}/transfer", status=403, json={
        "code": "ConsentRequired", "message": "Missing required data_access consent",
        "request_id": "r", "resource": "/v0.10/transfer",
        "required_scopes": params["required_scopes"], "authorization_parameters": params,
    })  # fmt: skip
    (outcome,) = _submit(session, user_dir)
    assert "Globus needs a new consent or login (ConsentRequired: " in str(outcome["error"])
    assert "run 'globus-tmp-endpoint login' again to grant it" in str(outcome["error"])
    assert json.loads((user_dir / "consents-needed.json").read_text()) == params["required_scopes"]


def _submitted(session: GlobusSession, user_dir: Path, tmp_path: Path) -> StageOutStore:
    (tmp_path / "out.bin").write_bytes(b"x")
    store = _declare(user_dir, tmp_path / "out.bin")
    load_response("transfer.get_submission_id")
    load_response("transfer.submit_transfer")
    _submit(session, user_dir)
    return store


def test_settle_records_how_a_task_ended(
    session: GlobusSession, user_dir: Path, tmp_path: Path
) -> None:
    store = _submitted(session, user_dir, tmp_path)
    task_id = store.records()[0].task_id
    task = recorded_doc("transfer.task_list")["DATA"][0]
    responses.add("GET", f"{TRANSFER}/task/{task_id}", json={**task, "task_id": task_id})
    (outcome,) = settle(lambda: session, user_dir, "c", "n1")
    assert outcome["state"] == SUCCEEDED
    (record,) = store.records()
    assert (record.files, record.bytes_transferred) == (1, 4)


def test_settle_of_a_failed_task_keeps_globus_reason(
    session: GlobusSession, user_dir: Path, tmp_path: Path
) -> None:
    store = _submitted(session, user_dir, tmp_path)
    task_id = store.records()[0].task_id
    task = recorded_doc("transfer.task_list")["DATA"][0]
    responses.add("GET", f"{TRANSFER}/task/{task_id}", json={
        **task, "task_id": task_id, "status": "FAILED",
        "fatal_error": {"code": "PERMISSION_DENIED", "description": "permission denied"},
    })  # fmt: skip
    (outcome,) = settle(lambda: session, user_dir, "c", "n1")
    assert outcome["state"] == FAILED and outcome["error"] == "PERMISSION_DENIED: permission denied"


def test_settle_without_an_answer_keeps_the_record_submitted_and_says_why(
    session: GlobusSession, user_dir: Path, tmp_path: Path
) -> None:
    store = _submitted(session, user_dir, tmp_path)
    task_id = store.records()[0].task_id
    responses.add("GET", f"{TRANSFER}/task/{task_id}", status=404, json={
        "code": "TaskNotFound", "message": f"Task ID '{task_id}' not found",
        "request_id": "r", "resource": f"/v0.10/task/{task_id}",
    })  # fmt: skip
    assert settle(lambda: session, user_dir, "c", "n1") == []
    (record,) = refresh(lambda: session, store, store.records())  # what stage-status shows
    assert record.state == SUBMITTED
    assert record.error == (
        f"Globus not asked: not found in Globus (404 TaskNotFound: Task ID '{task_id}' not "
        "found); check the path or id"
    )
