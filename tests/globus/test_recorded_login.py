"""Login, token refresh and logout (GlobusSession) against Globus Auth's recorded answers.

The browser step of a login is the only part not driven: the authorization code is typed
on stdin, as a user on a login node does.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus

import pytest
import responses
from globus_sdk.testing import load_response
from globus_sdk.token_storage import SQLiteTokenStorage
from globus_tmp.config import Config
from globus_tmp.globusapi import GlobusApiError, GlobusSession
from globus_tmp.transfers import active_tasks_on, endpoint_connected, endpoint_seen

from globus.globus_recorded import (
    TRANSFER_RS,
    TRANSFER_SCOPE,
    recorded_doc,
    register_login_answer,
    seed_tokens,
)

TOKEN_URL = "https://auth.globus.org/v2/oauth2/token"


def _form(call: responses.Call) -> dict[str, str]:
    body = call.request.body
    text = body.decode() if isinstance(body, bytes) else str(body)
    return {k: v[0] for k, v in parse_qs(text).items()}


def _stored(user_dir: Path) -> dict[str, object]:
    storage = SQLiteTokenStorage(user_dir / "tokens.db")
    try:
        return {rs: t.access_token for rs, t in storage.get_token_data_by_resource_server().items()}
    finally:
        storage.close()


def test_an_expired_access_token_is_refreshed_with_the_stored_refresh_token(
    cfg: Config, tmp_path: Path
) -> None:
    user_dir = tmp_path / "user"
    seed_tokens(user_dir, expires_in=-60)
    load_response("auth.oauth2_exchange_code_for_tokens")  # the token endpoint's answer
    endpoint_id = load_response("transfer.get_endpoint").metadata["endpoint_id"]
    session = GlobusSession(cfg, user_dir, interactive=False)
    assert endpoint_seen(session.transfer(), endpoint_id) is None
    refresh, get = responses.calls[0], responses.calls[-1]
    assert refresh.request.url == TOKEN_URL
    assert _form(refresh) == {
        "grant_type": "refresh_token",
        "refresh_token": "stored-refresh-token",
        "client_id": cfg.globus_client_id,
    }
    assert get.request.headers["Authorization"] == "Bearer transfer_access_token"
    assert _stored(user_dir) == {TRANSFER_RS: "transfer_access_token"}


def test_a_revoked_refresh_token_says_log_in_again_everywhere(cfg: Config, tmp_path: Path) -> None:
    user_dir = tmp_path / "user"
    seed_tokens(user_dir, expires_in=-60)
    load_response("auth.oauth2_exchange_code_for_tokens", case="invalid_grant")
    with pytest.raises(GlobusApiError) as info:
        active_tasks_on(cfg, user_dir, "ep")
    assert (info.value.http_status, info.value.code) == (401, "invalid_grant")
    assert str(info.value) == (
        "task_list: your Globus login has expired or was revoked (invalid_grant); "
        "run 'globus-tmp-endpoint login' again"
    )
    assert endpoint_connected(cfg, user_dir, "ep") is None  # list: "Globus not asked"


def test_an_expired_login_without_refresh_token_says_log_in(cfg: Config, tmp_path: Path) -> None:
    """globus-sdk counts a login without the refresh token UserApp asks for as none."""
    user_dir = tmp_path / "user"
    seed_tokens(user_dir, expires_in=-60, refresh=False)
    with pytest.raises(GlobusApiError) as info:
        active_tasks_on(cfg, user_dir, "ep")
    assert str(info.value) == (
        "task_list: not logged in to Globus (MissingTokenError); run 'globus-tmp-endpoint login'"
    )
    assert not responses.calls  # decided locally, Globus not asked


def test_without_tokens_not_logged_in(cfg: Config, tmp_path: Path) -> None:
    with pytest.raises(GlobusApiError) as info:
        active_tasks_on(cfg, tmp_path / "nobody", "ep")
    assert "not logged in to Globus (MissingTokenError)" in str(info.value)


def _login(
    session: GlobusSession, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    monkeypatch.setattr(sys, "stdin", io.StringIO("the-code-from-the-browser\n"))
    session.login()
    return capsys.readouterr().out


def test_login_exchanges_the_typed_code_and_stores_the_tokens(
    cfg: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    register_login_answer()
    user_dir = tmp_path / "user"
    shown = _login(GlobusSession(cfg, user_dir, interactive=True), monkeypatch, capsys)
    assert "https://auth.globus.org/v2/oauth2/authorize?" in shown
    sent = _form(next(c for c in responses.calls if c.request.url == TOKEN_URL))
    assert sent["grant_type"] == "authorization_code"
    assert sent["code"] == "the-code-from-the-browser" and sent["code_verifier"]
    assert _stored(user_dir) == {
        TRANSFER_RS: "transfer_access_token",
        "auth.globus.org": "auth_access_token",
    }
    assert (user_dir / "tokens.db").stat().st_mode & 0o077 == 0


def test_login_asks_for_the_consent_globus_said_was_missing(
    cfg: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gare = recorded_doc("timer.get_job", "inactive_gare")
    scope = gare["inactive_reason"]["detail"]["authorization_parameters"]["required_scopes"][0]
    data_access = scope.rsplit("[*", 1)[1].rstrip("]")
    user_dir = tmp_path / "user"
    user_dir.mkdir()
    (user_dir / "consents-needed.json").write_text(
        json.dumps([TRANSFER_SCOPE + f"[*{data_access}]"])
    )
    register_login_answer()
    shown = _login(GlobusSession(cfg, user_dir, interactive=True), monkeypatch, capsys)
    url = next(w for w in shown.split() if w.startswith("https://auth.globus.org/"))
    asked = unquote_plus(url)
    assert data_access in asked and TRANSFER_SCOPE in asked, asked
    assert not (user_dir / "consents-needed.json").exists()


def test_logout_revokes_both_tokens_and_forgets_them(
    session: GlobusSession, user_dir: Path
) -> None:
    load_response("auth.oauth2_revoke_token")
    session.logout()
    revoked = [_form(c)["token"] for c in responses.calls]
    assert revoked == ["stored-access-token", "stored-refresh-token"]
    assert _stored(user_dir) == {}


def test_logout_when_globus_refuses_still_forgets_and_says_so(
    session: GlobusSession, user_dir: Path
) -> None:
    responses.add(
        "POST",
        f"{TOKEN_URL}/revoke",
        status=401,
        json={"error": "invalid_client", "error_description": "Unknown client"},
    )
    with pytest.raises(GlobusApiError) as info:
        session.logout()
    assert _stored(user_dir) == {}
    line = str(info.value)
    assert line.startswith("logged out here, but Globus did not revoke the tokens")
    assert line.endswith(
        "Globus did not accept your login (401 invalid_client: Unknown client); "
        "run 'globus-tmp-endpoint login' again"
    )
