"""The user's Globus session: tokens in ``user_dir``, a Transfer client on top.

Imported only where Globus is needed (``import globus_sdk`` costs ~50 ms and pulls in
requests): the CLI's Globus commands, and the epilog's last-job check, which runs as
the user in a child process so root never reads the user's tokens.

Tokens live in ``<user_dir>/tokens.db``, an SQLite token storage (safe when several
nodes refresh at once, unlike the JSON storage, which rewrites its file unlocked),
created under umask 077. globus-sdk's documented ``GLOBUS_SDK_SERVICE_URL_*`` and
``GLOBUS_SDK_ENVIRONMENT`` variables select the services, as for any SDK program.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config
from .errors import GlobusTmpError

if TYPE_CHECKING:
    import globus_sdk

APP_NAME = "globus-tmp"
TOKEN_DB = "tokens.db"


class GlobusApiError(GlobusTmpError):
    """Globus could not be reached or refused a call; the message carries its answer."""


def describe(exc: BaseException) -> str:
    """One line for an SDK or network error: Globus's code and message where there are."""
    import globus_sdk
    from globus_sdk.token_storage import TokenValidationError

    if isinstance(exc, globus_sdk.GlobusAPIError):
        body = exc.raw_json if isinstance(exc.raw_json, dict) else {}
        oauth_error = body.get("error") if isinstance(body.get("error"), str) else None
        if oauth_error == "invalid_grant":  # Auth's answer to an expired or revoked token
            return (
                "your Globus login has expired or was revoked (invalid_grant); "
                "run 'globus-tmp-endpoint login' again"
            )
        # Auth's OAuth errors carry only {"error", "error_description"}: exc.code and
        # exc.message are then None, and the line must still say something
        code = exc.code if exc.code not in (None, "Error") else oauth_error
        message = exc.message or body.get("error_description") or exc.text[:200].strip()
        return f"{exc.http_status} {code or 'error'}: {message or 'no details from Globus'}"
    if isinstance(exc, TokenValidationError):
        return f"not logged in ({type(exc).__name__}); run 'globus-tmp-endpoint login'"
    return f"{type(exc).__name__}: {exc}"


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

    def login(self) -> None:
        self.app().login(force=True)

    def logout(self) -> None:
        self.app().logout()
