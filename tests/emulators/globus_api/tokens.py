"""Globus Auth's side of the emulator: identities, scopes, token issuing and checking.

Why a class over the shared state: every service checks Bearer tokens, and the auth
routes and the admin routes both mint them.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional, cast

from .common import AUTH_RS, TRANSFER_RS, TRANSFER_SCOPE, JSONDict, b64url
from .errors import ApiError
from .routing import Request
from .signing import RsaKey

if TYPE_CHECKING:
    from .state import Emulator

CLIENT_IDENTITY_DOMAIN = "clients.auth.globus.org"


def split_scopes(text: str) -> list[str]:
    """Split a scope string on blanks outside ``[...]`` and drop dependent scopes.

    Globus Auth answers with root scope strings only, which is what globus-sdk's scope
    requirement checks compare against.
    """
    scopes: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        elif char.isspace() and depth == 0:
            if current:
                scopes.append(current)
            current = ""
            continue
        elif depth == 0:
            current += char
    if current:
        scopes.append(current)
    return [s.lstrip("*") for s in scopes]


def scope_resource_server(scope: str) -> str:
    """Map a scope string to its resource server, as Globus Auth does."""
    if scope in ("openid", "profile", "email"):
        return AUTH_RS
    match = re.match(r"urn:globus:auth:scope:([^:]+):", scope)
    if match:
        return match.group(1)
    match = re.match(r"https://auth\.globus\.org/scopes/([^/]+)/", scope)
    if match:
        return match.group(1)
    return scope


def client_identity_id(client_id: str) -> str:
    """A client's identity id: its client id, as in Globus (client ids are UUIDs; a
    non-UUID id given to the emulator gets a stable UUID derived from it)."""
    try:
        return str(uuid.UUID(client_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"globus-client:{client_id}"))


class TokenIssuer:
    """Identities and tokens, kept in the emulator's state (and its state file)."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self._rsa: Optional[RsaKey] = None

    def identity(
        self,
        username: str,
        name: Optional[str] = None,
        email: Optional[str] = None,
        identity_id: Optional[str] = None,
        identity_type: str = "login",
    ) -> JSONDict:
        """Get or create the identity ``username`` (an id is minted once and kept)."""
        with self.emu.lock:
            for ident in self.emu.state["identities"].values():
                if ident["username"] == username:
                    return cast(JSONDict, ident)
            ident_id = identity_id or str(uuid.uuid4())
            domain = username.split("@", 1)[1] if "@" in username else "globusid.org"
            ident = {
                "id": ident_id,
                "username": username,
                "name": name or username.split("@", 1)[0],
                "email": email or (username if "@" in username else None),
                "identity_provider": str(uuid.uuid5(uuid.NAMESPACE_DNS, domain)),
                "identity_provider_display_name": domain,
                "organization": domain,
                "status": "used",
                "identity_type": identity_type,
            }
            self.emu.state["identities"][ident_id] = ident
            self.emu.save()
            return ident

    def identity_by(
        self, username: Optional[str] = None, identity_id: Optional[str] = None
    ) -> JSONDict:
        if identity_id:
            ident = self.emu.state["identities"].get(identity_id)
            if ident is None:
                raise ApiError(404, "NotFound", f"No identity {identity_id}")
            return cast(JSONDict, ident)
        if not username:
            raise ApiError(400, "BadRequest", "username or identity_id is required")
        return self.identity(username)

    def token_record(
        self,
        identity_id: str,
        resource_server: str,
        scopes: list[str],
        client_id: Optional[str],
        lifetime: Optional[int] = None,
        refresh_token: Optional[str] = None,
        with_refresh: bool = True,
    ) -> JSONDict:
        """Mint an access token (and a refresh token unless one is given) for one RS."""
        lifetime = self.emu.token_lifetime if lifetime is None else lifetime
        access = "AT" + secrets.token_urlsafe(30)
        scope = " ".join(scopes)
        self.emu.state["access_tokens"][access] = {
            "identity_id": identity_id,
            "resource_server": resource_server,
            "scope": scope,
            "client_id": client_id,
            "expires_at": time.time() + lifetime,
            "issued_at": time.time(),
        }
        if with_refresh and refresh_token is None:
            refresh_token = "RT" + secrets.token_urlsafe(40)
            self.emu.state["refresh_tokens"][refresh_token] = {
                "identity_id": identity_id,
                "resource_server": resource_server,
                "scopes": scopes,
                "client_id": client_id,
            }
        doc: JSONDict = {
            "access_token": access,
            "expires_in": lifetime,
            "resource_server": resource_server,
            "token_type": "Bearer",
            "scope": scope,
        }
        if with_refresh:  # Globus Auth omits the key when no refresh token is issued
            doc["refresh_token"] = refresh_token
        return doc

    def grant(
        self,
        identity_id: str,
        scopes: Sequence[str],
        client_id: Optional[str],
        lifetime: Optional[int] = None,
        with_refresh: bool = True,
        nonce: Optional[str] = None,
        state: Optional[str] = None,
    ) -> JSONDict:
        """A token response for ``scopes``: one token per resource server, the auth one
        (with ``id_token`` when ``openid`` is asked) on top, others in ``other_tokens``."""
        by_rs: dict[str, list[str]] = {}
        for scope in scopes:
            by_rs.setdefault(scope_resource_server(scope), []).append(scope)
        if not by_rs:
            by_rs = {TRANSFER_RS: [TRANSFER_SCOPE]}
        order = sorted(by_rs, key=lambda rs: (rs != AUTH_RS, list(by_rs).index(rs)))
        with self.emu.lock:
            docs = [
                self.token_record(
                    identity_id, rs, by_rs[rs], client_id, lifetime, with_refresh=with_refresh
                )
                for rs in order
            ]
            top = docs[0]
            if top["resource_server"] == AUTH_RS and "openid" in by_rs[AUTH_RS]:
                top["id_token"] = self.id_token(identity_id, client_id, nonce)
            if state is not None:
                top["state"] = state
            top["other_tokens"] = docs[1:]
            for doc in docs[1:]:
                doc["other_tokens"] = []
            self.emu.save()
        return top

    def rsa_key(self) -> RsaKey:
        with self.emu.lock:
            if self._rsa is None:
                if self.emu.state.get("rsa"):
                    self._rsa = RsaKey.from_json(self.emu.state["rsa"])
                else:
                    self._rsa = RsaKey.generate()
                    self.emu.state["rsa"] = self._rsa.to_json()
                    self.emu.save()
            return self._rsa

    def issuer(self) -> str:
        return self.emu.base_url.rstrip("/")

    def id_token(self, identity_id: str, client_id: Optional[str], nonce: Optional[str]) -> str:
        ident = self.emu.state["identities"][identity_id]
        now = int(time.time())
        claims = {
            "sub": identity_id,
            "iss": self.issuer(),
            "aud": client_id or "emulator-client",
            "iat": now,
            "nbf": now,
            "exp": now + self.emu.token_lifetime,
            "at_hash": b64url(secrets.token_bytes(16)),
            "preferred_username": ident["username"],
            "name": ident["name"],
            "email": ident["email"],
            "organization": ident["organization"],
            "identity_provider": ident["identity_provider"],
            "identity_provider_display_name": ident["identity_provider_display_name"],
            "identity_set": [self.userinfo_identity(ident)],
            "last_authentication": now,
        }
        if nonce:
            claims["nonce"] = nonce
        return self.rsa_key().jwt(claims)

    @staticmethod
    def userinfo_identity(ident: Mapping[str, Any]) -> JSONDict:
        return {
            "sub": ident["id"],
            "username": ident["username"],
            "name": ident["name"],
            "email": ident["email"],
            "identity_provider": ident["identity_provider"],
            "identity_provider_display_name": ident["identity_provider_display_name"],
            "organization": ident["organization"],
            "last_authentication": None,
        }

    def bearer(self, req: Request, resource_server: str) -> JSONDict:
        """The identity behind the request's Bearer token, or the 401 of that service."""
        header = req.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if resource_server == AUTH_RS:  # each service words its 401 its own way
            code, missing, inactive = (
                "unauthorized",
                "Call must be authenticated",
                "Call must be authenticated",
            )
        else:
            code, missing, inactive = (
                "AuthenticationFailed",
                "No Authorization header",
                "Token is not active",
            )
        failed = ApiError(401, code, inactive)
        if not header:
            raise ApiError(401, code, missing)
        if scheme.lower() != "bearer" or not token.strip():
            raise failed
        with self.emu.lock:
            record = self.emu.state["access_tokens"].get(token.strip())
            if (
                record is None
                or record["expires_at"] <= time.time()
                or record["resource_server"] != resource_server
            ):
                raise failed
            return cast(JSONDict, self.emu.state["identities"][record["identity_id"]])

    def client_identity(self, client_id: str) -> JSONDict:
        """The identity of a confidential client: its id is the client id, as in Globus."""
        return self.identity(
            f"{client_id}@{CLIENT_IDENTITY_DOMAIN}",
            name=client_id,
            identity_id=client_identity_id(client_id),
            identity_type="client",
        )
