"""``setup`` and ``remove`` (EndpointProvisioner): creating, searching and deleting GCP
endpoints against Globus's recorded answers and error shapes.

SDK 4 has no ``create_endpoint`` (nor its recording): the create answer below is the
documented ``endpoint_create_result`` (docs/GCP.md#creating-a-gcp-endpoint); the error
bodies are recorded ones served on these routes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import responses
from globus_sdk.testing import load_response
from globus_tmp.errors import GcpError, GcpSetupKeyRefused
from globus_tmp.gcp import GcpCommand
from globus_tmp.globusapi import GlobusApiError, GlobusSession
from globus_tmp.pool import EndpointPool
from globus_tmp.provision import EndpointProvisioner

from globus.globus_recorded import recorded, recorded_doc

TRANSFER = "https://transfer.api.globus.org/v0.10"
NEW_ID = "c7a8f1de-1111-4a4b-9bdf-0b58e78dfa69"


def _error(name: str, case: str) -> tuple[int, dict[str, object]]:
    rec = recorded(name, case)
    assert isinstance(rec.json, dict)
    return rec.status, rec.json


def _provisioner(session: GlobusSession, user_dir: Path, said: list[str]) -> EndpointProvisioner:
    gcp = GcpCommand(str(user_dir / "no-gcp-installed"))
    return EndpointProvisioner(EndpointPool(user_dir), session, gcp, "alice", said.append)


def _created() -> dict[str, object]:
    return {
        "DATA_TYPE": "endpoint_create_result",
        "code": "Created",
        "globus_connect_setup_key": "2b1c0d7e-setup-key",
        "id": NEW_ID,
        "message": "Endpoint created successfully",
        "request_id": "k3Ld0Vf1e",
        "resource": "/endpoint",
    }


def _search_answer(display_name: str, endpoint_id: str) -> dict[str, object]:
    doc = recorded_doc("transfer.get_endpoint")
    found = {**doc, "id": endpoint_id, "display_name": display_name, "is_globus_connect": True}
    return {"DATA_TYPE": "endpoint_list", "DATA": [found], "has_next_page": False,
            "limit": 100, "offset": 0}  # fmt: skip


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        (("transfer.set_subscription_admin_verified", "no_admin_role"), 403, "PermissionDenied"),
        (
            ("transfer.set_subscription_id", "multi_subscriber_cannot_use_default"),
            400,
            "BadRequest",
        ),
    ],
)
def test_a_refused_create_is_not_retried_and_says_why(
    session: GlobusSession, user_dir: Path, case: tuple[str, str], status: int, code: str
) -> None:
    got_status, body = _error(*case)
    responses.add("POST", f"{TRANSFER}/endpoint", status=got_status, json=body)
    with pytest.raises(GlobusApiError) as info:
        _provisioner(session, user_dir, []).setup(1)
    assert (info.value.http_status, info.value.code) == (status, code)
    assert str(info.value).startswith("creating endpoint failed: ")
    assert f"{status} {code}: {body['message']}" in str(info.value)
    assert [c.request.method for c in responses.calls] == ["POST"]  # no search, no retry
    pending = json.loads((user_dir / "endpoints" / ".ep1.pending").read_text())
    assert pending["display_name"].startswith("globus-tmp alice ep1 ")  # a rerun resumes


def test_a_lost_create_answer_deletes_the_half_made_endpoint_then_tries_again(
    session: GlobusSession, user_dir: Path
) -> None:
    said: list[str] = []
    provisioner = _provisioner(session, user_dir, said)
    responses.add("POST", f"{TRANSFER}/endpoint", status=502, json={
        "code": "ExternalError", "message": "Bad gateway", "request_id": "r1"})  # fmt: skip
    orphan = "0d8c7e52-2222-4a4b-9bdf-0b58e78dfa69"

    def search(request: object) -> tuple[int, dict[str, str], str]:
        pending = json.loads((user_dir / "endpoints" / ".ep1.pending").read_text())
        return 200, {}, json.dumps(_search_answer(pending["display_name"], orphan))

    responses.add_callback("GET", f"{TRANSFER}/endpoint_search", callback=search)
    responses.add("DELETE", f"{TRANSFER}/endpoint/{orphan}", json={
        "DATA_TYPE": "result", "code": "Deleted", "message": "Endpoint deleted successfully",
        "request_id": "r2", "resource": f"/endpoint/{orphan}"})  # fmt: skip
    responses.add("POST", f"{TRANSFER}/endpoint", json=_created())
    with pytest.raises(GcpError):  # GCP itself is not installed here: setup stops there
        provisioner.setup(1)
    calls = [(c.request.method, c.request.path_url.split("?")[0]) for c in responses.calls]
    assert calls == [
        ("POST", "/v0.10/endpoint"),
        ("GET", "/v0.10/endpoint_search"),
        ("DELETE", f"/v0.10/endpoint/{orphan}"),
        ("POST", "/v0.10/endpoint"),
    ]
    assert "filter_scope=my-endpoints" in str(responses.calls[1].request.url)
    sent = json.loads(responses.calls[0].request.body)  # type: ignore[arg-type]
    assert sent["DATA_TYPE"] == "endpoint" and sent["is_globus_connect"] is True
    assert any(
        f"deleting half-made {orphan}" in line and "502 ExternalError" in line for line in said
    )
    pending = json.loads((user_dir / "endpoints" / ".ep1.pending").read_text())
    assert (pending["id"], pending["setup_key"]) == (NEW_ID, "2b1c0d7e-setup-key")


def _entry(user_dir: Path, endpoint_id: str) -> Path:
    lta = user_dir / "endpoints" / "ep1" / "lta"
    lta.mkdir(parents=True)
    (lta / "client-id.txt").write_text(endpoint_id + "\n")
    return lta.parent


def test_remove_of_an_endpoint_already_deleted_in_globus_forgets_it(
    session: GlobusSession, user_dir: Path
) -> None:
    status, body = _error("transfer.set_subscription_id", "not_found")
    responses.add("DELETE", f"{TRANSFER}/endpoint/{NEW_ID}", status=status, json=body)
    config_dir = _entry(user_dir, NEW_ID)
    assert _provisioner(session, user_dir, []).remove("ep1") == NEW_ID
    assert not config_dir.exists()


def test_remove_refused_by_globus_keeps_the_entry_and_says_why(
    session: GlobusSession, user_dir: Path
) -> None:
    status, body = _error("transfer.set_subscription_admin_verified", "no_admin_role")
    responses.add("DELETE", f"{TRANSFER}/endpoint/{NEW_ID}", status=status, json=body)
    config_dir = _entry(user_dir, NEW_ID)
    with pytest.raises(GlobusApiError) as info:
        _provisioner(session, user_dir, []).remove("ep1")
    assert info.value.code == "PermissionDenied" and config_dir.exists()
    assert str(info.value).startswith(f"deleting {NEW_ID}: permission denied by Globus (403 ")


def test_a_failed_search_is_one_line(session: GlobusSession, user_dir: Path) -> None:
    status, body = _error("auth.userinfo", "unauthorized")  # a token Globus no longer takes
    load_response("auth.oauth2_exchange_code_for_tokens")  # the SDK refreshes once on a 401
    down = {"code": "ServiceUnavailable", "message": "Down for maintenance", "request_id": "r"}
    responses.add("POST", f"{TRANSFER}/endpoint", status=503, json=down)
    responses.add("GET", f"{TRANSFER}/endpoint_search", status=status, json=body)
    with pytest.raises(GlobusApiError) as info:
        _provisioner(session, user_dir, []).setup(1)
    assert [c.request.path_url.split("?")[0] for c in responses.calls][-3:] == [
        "/v0.10/endpoint_search",
        "/v2/oauth2/token",
        "/v0.10/endpoint_search",
    ]
    assert str(info.value) == (
        "searching your endpoints failed: Globus did not accept your login "
        "(401 UNAUTHORIZED: Call must be authenticated); run 'globus-tmp-endpoint login' again"
    )


def test_a_used_setup_key_replaces_its_endpoint_once(
    session: GlobusSession, user_dir: Path, tmp_path: Path
) -> None:
    """GCP's ``Setup Code KEY not found`` (docs/GCP.md) is the one -setup failure that
    makes the endpoint useless: it is deleted and a new one created, once."""
    gcp = tmp_path / "globusconnectpersonal"
    gcp.write_text(
        "#!/bin/sh\n"  # -setup --setup-key KEY -dir DIR
        'if [ "$3" = used-key ]; then echo "Setup Code $3 not found" >&2; exit 1; fi\n'
        'mkdir -p "$5/lta" && echo client > "$5/lta/client-id.txt"\n'
    )
    gcp.chmod(0o755)
    said: list[str] = []
    provisioner = EndpointProvisioner(
        EndpointPool(user_dir), session, GcpCommand(str(gcp)), "alice", said.append
    )
    first = {**_created(), "globus_connect_setup_key": "used-key", "id": "first-id"}
    responses.add("POST", f"{TRANSFER}/endpoint", json=first)
    responses.add("DELETE", f"{TRANSFER}/endpoint/first-id", json={
        "DATA_TYPE": "result", "code": "Deleted", "message": "Endpoint deleted successfully",
        "request_id": "r2", "resource": "/endpoint/first-id"})  # fmt: skip
    responses.add("POST", f"{TRANSFER}/endpoint", json=_created())
    (entry,) = provisioner.setup(1)
    assert entry.name == "ep1"
    assert any("setup key refused" in line and "first-id" in line for line in said), said
    calls = [(c.request.method, c.request.path_url) for c in responses.calls]
    assert calls == [
        ("POST", "/v0.10/endpoint"),
        ("DELETE", "/v0.10/endpoint/first-id"),
        ("POST", "/v0.10/endpoint"),
    ]

    responses.add("POST", f"{TRANSFER}/endpoint", json=first)
    responses.add("DELETE", f"{TRANSFER}/endpoint/first-id", json={"code": "Deleted"})
    responses.add("POST", f"{TRANSFER}/endpoint", json=first)
    with pytest.raises(GcpSetupKeyRefused):  # twice: not a loop
        provisioner.setup(2)
