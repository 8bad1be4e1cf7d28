"""The user's Globus session: tokens in ``user_dir``, a Transfer client on top.

Imported only where Globus is needed (``import globus_sdk`` costs ~50 ms and pulls in
requests): the CLI's Globus commands, and the epilog's last-job check, which runs as
the user in a child process so root never reads the user's tokens.

Tokens live in ``<user_dir>/tokens.db``, an SQLite token storage (safe when several
nodes refresh at once, unlike the JSON storage, which rewrites its file unlocked),
created under umask 077. globus-sdk's documented ``GLOBUS_SDK_SERVICE_URL_*`` and
``GLOBUS_SDK_ENVIRONMENT`` variables select the services, as for any SDK program.
Facts: docs/GCP.md#auth-and-tokens.

When Globus answers ``ConsentRequired`` (a destination that needs a consent the login
did not ask for, e.g. a mapped collection's ``data_access``), its required scopes are
kept in ``<user_dir>/consents-needed.json`` and the next ``login`` asks for them: the
error line's "log in again" then really is the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config
from .errors import RemoteApiError

if TYPE_CHECKING:
    import globus_sdk

APP_NAME = "globus-tmp"
TOKEN_DB = "tokens.db"
CONSENTS_NEEDED = "consents-needed.json"


class GlobusApiError(RemoteApiError):
    """Globus could not be reached or refused a call; the message carries its answer.

    ``http_status`` and ``code`` are Globus's (None for a network error or a refusal
    made here): callers decide on them, never on the message text.
    """

    def __init__(
        self, message: str, http_status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, http_status=http_status, code=code)

    @classmethod
    def wrap(cls, context: str, exc: BaseException) -> GlobusApiError:
        """``context: <one line for exc>``, keeping Globus's status and code."""
        import globus_sdk

        if isinstance(exc, GlobusApiError):
            return cls(f"{context}: {exc}", exc.http_status, exc.code)
        if isinstance(exc, globus_sdk.GlobusAPIError):
            return cls(f"{context}: {describe(exc)}", exc.http_status, error_code(exc))
        return cls(f"{context}: {describe(exc)}")


LOGIN_AGAIN = "run 'globus-tmp-endpoint login' again"
_MAX_DETAIL = 240


def error_code(exc: globus_sdk.GlobusAPIError) -> str | None:
    """Globus's error code; Auth's OAuth errors carry only ``{"error": ...}``."""
    if exc.code not in (None, "Error"):
        return exc.code
    body = exc.raw_json if isinstance(exc.raw_json, dict) else {}
    oauth_error = body.get("error")
    return oauth_error if isinstance(oauth_error, str) else None


def describe(exc: BaseException) -> str:
    """One line for an SDK or network error: what happened, Globus's words, the fix.

    Facts: docs/GCP.md#errors-from-globus. Decided on the exception's type, HTTP status
    and Globus's code, never on message text.
    """
    import globus_sdk
    from globus_sdk.token_storage import TokenValidationError

    if isinstance(exc, globus_sdk.GlobusAPIError):
        return _describe_api_error(exc)
    if isinstance(exc, globus_sdk.NetworkError):
        return (
            f"cannot reach Globus ({type(exc).__name__}: {_one_line(str(exc))}); check this "
            "host's network connection to Globus (HTTPS), then retry"
        )
    if isinstance(exc, TokenValidationError):
        return _describe_token_problem(exc)
    if isinstance(exc, GlobusApiError):
        return str(exc)
    return f"{type(exc).__name__}: {_one_line(str(exc))}"


def _describe_token_problem(exc: BaseException) -> str:
    from globus_sdk.token_storage.validating_token_storage import (
        ExpiredTokenError,
        MissingTokenError,
        UnmetScopeRequirementsError,
    )

    if isinstance(exc, MissingTokenError):
        return "not logged in to Globus (MissingTokenError); run 'globus-tmp-endpoint login'"
    if isinstance(exc, ExpiredTokenError):
        return f"your Globus login has expired (ExpiredTokenError); {LOGIN_AGAIN}"
    if isinstance(exc, UnmetScopeRequirementsError):
        return (
            "your Globus login lacks a consent globus-tmp needs (UnmetScopeRequirementsError); "
            f"{LOGIN_AGAIN}"
        )
    return f"your Globus login cannot be used ({type(exc).__name__}: {exc}); {LOGIN_AGAIN}"


def _describe_api_error(exc: globus_sdk.GlobusAPIError) -> str:
    status, code = exc.http_status, error_code(exc)
    said = f"{status} {code or 'error'}: {_detail(exc)}"
    if code == "invalid_grant":  # Auth's answer to an expired or revoked refresh token
        return f"your Globus login has expired or was revoked (invalid_grant); {LOGIN_AGAIN}"
    if exc.info.consent_required or exc.info.authorization_parameters:
        needs = exc.info.authorization_parameters.session_message or ", ".join(
            exc.info.consent_required.required_scopes or []
        )
        return (
            f"Globus needs a new consent or login ({code}: {_one_line(needs) or _detail(exc)}); "
            f"{LOGIN_AGAIN} to grant it"
        )
    if status == 401:
        return f"Globus did not accept your login ({said}); {LOGIN_AGAIN}"
    if code == "EndpointNotFound":
        return (
            f"no such endpoint in Globus ({said}); the endpoint id is wrong or the endpoint "
            "was deleted (for your own pool: 'globus-tmp-endpoint setup' makes a new one)"
        )
    if code and code.endswith(".GCDisconnected"):
        return (
            f"the endpoint's Globus Connect Personal is not connected ({said}); it runs only "
            "while one of your jobs holds the node: retry while the job runs"
        )
    if status == 404:
        return f"not found in Globus ({said}); check the path or id"
    if status == 403:
        return (
            f"permission denied by Globus ({said}); check the path and your access to the "
            "endpoint (its owner grants it)"
        )
    if status == 429:
        return f"Globus is rate-limiting your requests ({said}); retry in a few minutes"
    if status >= 500:
        return f"Globus is unavailable or failed ({said}); retry later"
    return said


def _detail(exc: globus_sdk.GlobusAPIError) -> str:
    body = exc.raw_json if isinstance(exc.raw_json, dict) else {}
    text = exc.message or body.get("error_description") or exc.text[:_MAX_DETAIL]
    return _one_line(str(text or "")) or "no details from Globus"


def _one_line(text: str) -> str:
    """Transfer's messages span lines, then a ``---`` and server details: keep the head."""
    head = text.split("\n---", 1)[0]
    line = "; ".join(part.strip() for part in head.splitlines() if part.strip())
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 3] + "..."


class GlobusSession:
    """The user's app (tokens, login) and clients, for one process."""

    def __init__(self, cfg: Config, user_dir: Path, interactive: bool) -> None:
        if not cfg.globus_client_id:
            raise GlobusApiError(
                f"globus_client_id is not set in {cfg.source}; ask your admin to register "
                "a native (thick client) app with Globus Auth and set it"
            )
        self.cfg = cfg
        self.user_dir = user_dir
        self.interactive = interactive
        self._app: globus_sdk.UserApp | None = None
        for service, url in cfg.globus_service_urls:
            os.environ.setdefault(f"GLOBUS_SDK_SERVICE_URL_{service.upper()}", url)

    @property
    def token_path(self) -> Path:
        return self.user_dir / TOKEN_DB

    def app(self) -> globus_sdk.UserApp:
        if self._app is None:
            import globus_sdk
            from globus_sdk.token_storage import SQLiteTokenStorage

            self.user_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            old = os.umask(0o077)
            try:
                storage = SQLiteTokenStorage(self.token_path)
            finally:
                os.umask(old)
            options: dict[str, Any] = {"token_storage": storage, "request_refresh_tokens": True}
            if not self.interactive:
                options["token_validation_error_handler"] = None
            self._app = globus_sdk.UserApp(
                APP_NAME,
                client_id=self.cfg.globus_client_id,
                config=globus_sdk.GlobusAppConfig(**options),
            )
            from globus_sdk.scopes import TransferScopes

            self._app.add_scope_requirements(
                {globus_sdk.TransferClient.resource_server: [TransferScopes.all]}
            )
        return self._app

    def transfer(self, max_retries: int | None = None) -> globus_sdk.TransferClient:
        """A TransferClient; ``max_retries=0`` for calls that must not be repeated blindly."""
        import globus_sdk
        from globus_sdk.transport import RetryConfig

        kwargs: dict[str, Any] = {"app": self.app()}
        if max_retries is not None:
            kwargs["retry_config"] = RetryConfig(max_retries=max_retries)
        return globus_sdk.TransferClient(**kwargs)

    def refused(self, context: str, exc: BaseException) -> GlobusApiError:
        """The error to raise for ``exc``; a consent it asks for is kept for ``login``."""
        self.remember_consent(exc)
        return GlobusApiError.wrap(context, exc)

    def remember_consent(self, exc: BaseException) -> None:
        import globus_sdk

        if not isinstance(exc, globus_sdk.GlobusAPIError) or not exc.info.consent_required:
            return
        wanted = set(self.consents_needed()) | set(exc.info.consent_required.required_scopes or [])
        from .nodestate import write_atomic

        try:
            write_atomic(self.user_dir / CONSENTS_NEEDED, json.dumps(sorted(wanted)), 0o600)
        except OSError:
            pass  # the error line still says what to do; login just won't know the scope

    def consents_needed(self) -> list[str]:
        try:
            scopes = json.loads((self.user_dir / CONSENTS_NEEDED).read_text())
        except (OSError, ValueError):
            return []
        return [s for s in scopes if isinstance(s, str)] if isinstance(scopes, list) else []

    def login(self) -> None:
        """Log in in the browser, asking also for the consents Globus said were missing."""
        import globus_sdk

        app = self.app()
        needed = self.consents_needed()
        if needed:
            app.add_scope_requirements({globus_sdk.TransferClient.resource_server: needed})
        app.login(force=True)
        (self.user_dir / CONSENTS_NEEDED).unlink(missing_ok=True)

    def logout(self) -> None:
        """Revoke the tokens in Globus and forget them here.

        They are forgotten even when Globus cannot revoke them (unreachable, failing):
        the user asked to be logged out, and an unrevoked token still expires.
        """
        app = self.app()
        try:
            app.logout()
        except Exception as exc:
            stored = app.token_storage.token_storage
            for resource_server in stored.get_token_data_by_resource_server():
                stored.remove_token_data(resource_server)
            raise GlobusApiError.wrap(
                "logged out here, but Globus did not revoke the tokens (they stay valid "
                "until they expire, or revoke them in the Globus web app's account "
                "settings)",
                exc,
            ) from None
