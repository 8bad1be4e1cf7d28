"""Errors from Globus as users meet them, against Globus's own recorded responses
(``globus_sdk.testing``), not the project's emulator: one line with the cause and the fix.
The recordings are served by the autouse fixture of tests/globus/conftest.py."""

from __future__ import annotations

import globus_sdk
import pytest
import responses
from globus_sdk.testing import load_response
from globus_tmp.globusapi import describe


def _error(call: object) -> globus_sdk.GlobusAPIError:
    with pytest.raises(globus_sdk.GlobusAPIError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_an_expired_or_revoked_refresh_token_says_log_in_again() -> None:
    load_response("auth.oauth2_exchange_code_for_tokens", case="invalid_grant")
    client = globus_sdk.NativeAppAuthClient("5b9a6f6e-8bb5-4c5a-9b9e-5d6a7f1e2c3d")
    exc = _error(lambda: client.oauth2_refresh_token("revoked-refresh-token"))
    assert exc.http_status == 401 and exc.code is None  # what made "401 None: None"
    line = describe(exc)
    assert "None" not in line and "globus-tmp-endpoint login" in line, line


def test_an_oauth_error_without_errors_array_still_says_something() -> None:
    responses.add(
        responses.POST,
        "https://auth.globus.org/v2/oauth2/token/revoke",
        status=400,
        json={"error": "invalid_request", "error_description": "token is malformed"},
    )
    client = globus_sdk.NativeAppAuthClient("5b9a6f6e-8bb5-4c5a-9b9e-5d6a7f1e2c3d")
    line = describe(_error(lambda: client.oauth2_revoke_token("x")))
    assert line == "400 invalid_request: token is malformed", line
