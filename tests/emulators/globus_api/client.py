"""Stdlib clients of the emulator: :func:`http_call`, :class:`AdminClient`, setup key
redemption, and seeding a globus-sdk token storage with minted tokens.

Light on purpose: the GCP emulator imports :func:`redeem_setup_key` (through
:mod:`globus_api.link`) in user processes, so nothing of the service is imported here.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from .common import TRANSFER_SCOPE, JSONDict


class HttpError(Exception):
    """An HTTP error answer from the emulator, with its JSON document if any."""

    def __init__(self, status: int, doc: Any) -> None:
        super().__init__(f"HTTP {status}: {doc}")
        self.status = status
        self.doc = doc


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def http_call(
    url: str,
    method: str = "GET",
    body: Any = None,
    *,
    raw: Optional[bytes] = None,
    headers: Optional[Mapping[str, str]] = None,
    timeout: float = 30.0,
    want_bytes: bool = False,
) -> Any:
    """One request with urllib; JSON in/out unless ``raw``/``want_bytes``."""
    all_headers = dict(headers or {})
    data: Optional[bytes] = None
    if raw is not None:
        data = raw
        all_headers.setdefault("Content-Type", "application/octet-stream")
    elif body is not None:
        data = json.dumps(body).encode("utf-8")
        all_headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, headers=all_headers, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            content = answer.read()
    except urllib.error.HTTPError as exc:
        content = exc.read()
        try:
            doc: Any = json.loads(content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            doc = content.decode("utf-8", "replace")
        raise HttpError(exc.code, doc) from None
    if want_bytes:
        return content
    return json.loads(content.decode("utf-8")) if content else None


class AdminClient:
    """Stdlib client of the admin routes, for tests and the lab (no globus-sdk needed)."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return http_call(self.base_url + path.lstrip("/"), method, body, timeout=self.timeout)

    def health(self) -> JSONDict:
        return dict(self._call("GET", "_emulator/health"))

    def identity(self, username: str) -> JSONDict:
        return dict(self._call("POST", "_emulator/identities", {"username": username}))

    def mint_tokens(
        self,
        username: str,
        scopes: Optional[Sequence[str]] = None,
        client_id: Optional[str] = None,
        lifetime: Optional[int] = None,
    ) -> JSONDict:
        body: JSONDict = {"username": username}
        if scopes is not None:
            body["scopes"] = list(scopes)
        if client_id is not None:
            body["client_id"] = client_id
        if lifetime is not None:
            body["lifetime"] = lifetime
        return dict(self._call("POST", "_emulator/tokens", body))

    def expire_tokens(
        self, username: Optional[str] = None, access_token: Optional[str] = None
    ) -> int:
        body = {"username": username, "access_token": access_token}
        return int(
            self._call("POST", "_emulator/tokens/expire", {k: v for k, v in body.items() if v})[
                "expired"
            ]
        )

    def set_login(self, username: str) -> JSONDict:
        return dict(self._call("POST", "_emulator/login", {"username": username}))

    def create_collection(self, path: str, **options: Any) -> JSONDict:
        return dict(self._call("POST", "_emulator/collections", {"path": path, **options}))

    def add_fault(self, route: str, **options: Any) -> JSONDict:
        return dict(self._call("POST", "_emulator/faults", {"route": route, **options}))

    def faults(self) -> list[JSONDict]:
        return list(self._call("GET", "_emulator/faults")["faults"])

    def clear_faults(self) -> int:
        return int(self._call("DELETE", "_emulator/faults")["cleared"])

    def pause_task(self, task_id: str, pause: bool = True) -> JSONDict:
        action = "pause" if pause else "resume"
        return dict(self._call("POST", f"_emulator/tasks/{task_id}/{action}", {}))

    def gcp_sessions(self) -> list[JSONDict]:
        return list(self._call("GET", "_emulator/gcp")["sessions"])

    def state(self) -> JSONDict:
        return dict(self._call("GET", "_emulator/state"))


USER_APP_SCOPES = ("openid", "profile", "email", TRANSFER_SCOPE)


def seed_token_storage(storage: Any, tokens: Mapping[str, Any]) -> None:
    """Store a minted token response in a globus-sdk ``TokenStorage`` as a login would.

    Why: there is no browser in tests, and ``UserApp`` needs the identity id recorded with
    the tokens (a real login takes it from the ``id_token``). ``tokens`` is what
    :meth:`AdminClient.mint_tokens` returns (ask for :data:`USER_APP_SCOPES`); ``storage``
    is e.g. ``SQLiteTokenStorage(path)`` with UserApp's namespace (``DEFAULT``). Imports
    globus-sdk lazily: the rest of this module stays stdlib-only.
    """
    from globus_sdk.token_storage import TokenStorageData

    now = int(time.time())
    docs = [tokens, *tokens.get("other_tokens", [])]
    storage.store_token_data_by_resource_server(
        {
            doc["resource_server"]: TokenStorageData(
                resource_server=doc["resource_server"],
                identity_id=tokens["identity_id"],
                scope=doc["scope"],
                access_token=doc["access_token"],
                refresh_token=doc.get("refresh_token"),
                expires_at_seconds=now + int(doc["expires_in"]),
                token_type=doc.get("token_type"),
            )
            for doc in docs
        }
    )


def redeem_setup_key(base_url: str, setup_key: str, timeout: float = 30.0) -> Optional[str]:
    """What GCP's ``-setup`` does with a key: the endpoint id, or None (``not found``).

    Network errors raise ``OSError`` (urllib's URLError) so ``-setup`` can report them.
    """
    try:
        doc = http_call(
            base_url.rstrip("/") + "/_emulator/gcp/redeem",
            "POST",
            {"setup_key": setup_key},
            timeout=timeout,
        )
    except HttpError as exc:
        if exc.status == 404:
            return None
        raise OSError(f"setup key redemption failed: HTTP {exc.status}: {exc.doc}") from None
    return str(doc["endpoint_id"])
