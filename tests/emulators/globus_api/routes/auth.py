"""Globus Auth routes: OAuth2 token grants, introspection, consent, userinfo, identities.

Errors of the OAuth2 endpoints (``/v2/oauth2/token...``, family ``oauth``) are RFC 6749
documents, ``{"error": "invalid_grant"}`` with 401 as Globus answers them; the other Auth
routes (family ``auth``) answer ``errors[]`` documents (see :mod:`globus_api.server`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import urllib.parse
import uuid

from ..common import AUTH_PAGE_REDIRECT, AUTH_RS, TRANSFER_SCOPE, b64url
from ..errors import ApiError
from ..routing import Request, Response, RouteGroup, RouteSpec, basic_client_id, json_response
from ..tokens import split_scopes


class AuthRoutes(RouteGroup):
    def routes(self) -> list[RouteSpec]:
        return [
            ("POST", r"/v2/oauth2/token", "token", "oauth", self.r_token),
            ("POST", r"/v2/oauth2/token/introspect", "introspect", "oauth", self.r_introspect),
            ("POST", r"/v2/oauth2/token/revoke", "revoke", "oauth", self.r_revoke),
            ("POST", r"/v2/oauth2/token/validate", "validate", "oauth", self.r_validate),
            ("GET", r"/v2/oauth2/authorize", "authorize", "auth", self.r_authorize),
            ("GET", r"/v2/oauth2/userinfo", "userinfo", "auth", self.r_userinfo),
            ("POST", r"/v2/oauth2/userinfo", "userinfo", "auth", self.r_userinfo),
            ("GET", r"/v2/api/identities", "identities", "auth", self.r_identities),
            ("POST", r"/v2/api/clients", "create_client", "auth", self.r_create_client),
            (
                "GET",
                r"/\.well-known/openid-configuration",
                "openid_configuration",
                "auth",
                self.r_openid_configuration,
            ),
            ("GET", r"/jwk\.json", "jwk", "auth", self.r_jwk),
        ]

    def r_token(self, req: Request) -> Response:
        form = req.form()
        client_id = form.get("client_id") or basic_client_id(req)
        grant_type = form.get("grant_type", "")
        if grant_type == "refresh_token":
            with self.emu.lock:
                record = self.emu.state["refresh_tokens"].get(form.get("refresh_token", ""))
                if record is None or (
                    record.get("client_id") and client_id and record["client_id"] != client_id
                ):
                    raise ApiError(401, "invalid_grant", "")
                doc = self.emu.tokens.token_record(
                    record["identity_id"],
                    record["resource_server"],
                    record["scopes"],
                    record.get("client_id"),
                    refresh_token=form["refresh_token"],
                )
                doc["other_tokens"] = []
                self.emu.save()
            return json_response(200, doc)
        if grant_type == "authorization_code":
            with self.emu.lock:
                code = self.emu.state["auth_codes"].pop(form.get("code", ""), None)
                self.emu.save()
            if code is None or code["expires_at"] < time.time():
                raise ApiError(401, "invalid_grant", "")
            if code.get("client_id") and client_id and code["client_id"] != client_id:
                raise ApiError(401, "invalid_grant", "")
            if code.get("redirect_uri") and form.get("redirect_uri") != code["redirect_uri"]:
                raise ApiError(401, "invalid_grant", "")
            challenge = code.get("code_challenge")
            if challenge:
                verifier = form.get("code_verifier", "")
                computed = b64url(hashlib.sha256(verifier.encode("ascii")).digest())
                if code.get("code_challenge_method", "S256") == "plain":
                    computed = verifier
                if computed != challenge:
                    raise ApiError(401, "invalid_grant", "")
            doc = self.emu.tokens.grant(
                code["identity_id"],
                code["scopes"],
                code.get("client_id") or client_id,
                with_refresh=code.get("offline", False),
                nonce=code.get("nonce"),
                state=code.get("state"),
            )
            return json_response(200, doc)
        if grant_type == "client_credentials":
            if not client_id:
                raise ApiError(401, "invalid_client", "")
            ident = self.emu.tokens.client_identity(client_id)
            scopes = split_scopes(form.get("scope", TRANSFER_SCOPE))
            return json_response(
                200, self.emu.tokens.grant(ident["id"], scopes, client_id, with_refresh=False)
            )
        raise ApiError(400, "unsupported_grant_type", "")

    def r_introspect(self, req: Request) -> Response:
        form = req.form()
        token = form.get("token", "")
        with self.emu.lock:
            record = self.emu.state["access_tokens"].get(token)
            if record is None or record["expires_at"] <= time.time():
                return json_response(200, {"active": False})
            ident = self.emu.state["identities"][record["identity_id"]]
            client_id = record.get("client_id") or basic_client_id(req) or "emulator-client"
            doc = {
                "active": True,
                "token_type": "Bearer",
                "scope": record["scope"],
                "client_id": client_id,
                "username": ident["username"],
                "name": ident["name"],
                "email": ident["email"],
                "exp": int(record["expires_at"]),
                "iat": int(record["issued_at"]),
                "nbf": int(record["issued_at"]),
                "sub": ident["id"],
                "aud": [record["resource_server"], client_id],
                "iss": self.emu.tokens.issuer(),
            }
        if "identity_set" in form.get("include", ""):
            doc["identity_set"] = [ident["id"]]
        return json_response(200, doc)

    def r_revoke(self, req: Request) -> Response:
        token = req.form().get("token", "")
        with self.emu.lock:
            self.emu.state["access_tokens"].pop(token, None)
            record = self.emu.state["refresh_tokens"].pop(token, None)
            if record is not None:  # revoking a refresh token kills its access tokens too
                for key, value in list(self.emu.state["access_tokens"].items()):
                    if (value["identity_id"], value["resource_server"]) == (
                        record["identity_id"],
                        record["resource_server"],
                    ):
                        del self.emu.state["access_tokens"][key]
            self.emu.save()
        return json_response(200, {"active": False})

    def r_validate(self, req: Request) -> Response:
        """Whether a refresh or access token is still good, as globus-cli asks at start.

        Needs client authentication (globus-cli sends its templated client's secret).
        """
        if not basic_client_id(req):
            raise ApiError(401, "invalid_client", "")
        token = req.form().get("token", "")
        with self.emu.lock:
            access = self.emu.state["access_tokens"].get(token)
            active = token in self.emu.state["refresh_tokens"] or (
                access is not None and access["expires_at"] > time.time()
            )
        return json_response(200, {"active": active})

    def r_create_client(self, req: Request) -> Response:
        """A confidential client instantiated from a native app template (``template_id``),
        with its first credential: what ``globus login`` registers once per install."""
        spec = req.json().get("client")
        if not isinstance(spec, dict) or not spec.get("template_id"):
            raise ApiError(400, "BAD_REQUEST", "client.template_id is required")
        client_id = str(uuid.uuid4())
        credential = {
            "name": "Auto-created at client creation",
            "id": str(uuid.uuid4()),
            "client": client_id,
            "secret": secrets.token_urlsafe(32),
        }
        client = {
            "fqdns": [],
            "name": str(spec.get("name") or client_id),
            "id": client_id,
            "public_client": False,
            "scopes": [],
            "required_idp": None,
            "grant_types": ["authorization_code", "client_credentials", "refresh_token"],
            "userinfo_from_effective_identity": True,
            "client_type": "confidential_client",
            "prompt_for_named_grant": False,
            "links": {"privacy_policy": None, "terms_and_conditions": None},
            "visibility": "private",
            "preselect_idp": None,
            "parent_client": str(spec["template_id"]),
            "project": None,
            "redirect_uris": [],
        }
        with self.emu.lock:
            self.emu.state["clients"][client_id] = {
                "client": client,
                "secret": credential["secret"],
            }
            self.emu.save()
        return json_response(200, {"client": client, "included": {"client_credential": credential}})

    def r_authorize(self, req: Request) -> Response:
        """Emulated consent: the identity set by ``POST /_emulator/login`` approves at once.

        The code is shown on a page (native apps' ``/v2/web/auth-code``) or sent to the
        ``redirect_uri`` with a 302, as Globus Auth does.
        """
        with self.emu.lock:
            identity_id = self.emu.state.get("login_identity")
        if not identity_id:
            raise ApiError(
                400, "invalid_request", "No emulator login identity; POST /_emulator/login first"
            )
        redirect_uri = req.param("redirect_uri", AUTH_PAGE_REDIRECT) or AUTH_PAGE_REDIRECT
        code = secrets.token_urlsafe(24)
        with self.emu.lock:
            self.emu.state["auth_codes"][code] = {
                "identity_id": identity_id,
                "client_id": req.param("client_id"),
                "redirect_uri": redirect_uri,
                "scopes": split_scopes(req.param("scope", "") or ""),
                "code_challenge": req.param("code_challenge"),
                "code_challenge_method": req.param("code_challenge_method", "S256"),
                "offline": req.param("access_type") == "offline",
                "state": req.param("state"),
                "nonce": req.param("nonce"),
                "expires_at": time.time() + 600,
            }
            self.emu.save()
        if redirect_uri.rstrip("/").endswith("/v2/web/auth-code"):
            page = (
                "<html><body><p>Native App Authorization Code</p>"
                f'<p id="auth-code">{code}</p></body></html>\n'
            )
            return Response(
                200, page.encode(), "text/html; charset=utf-8", {"X-Emulator-Auth-Code": code}
            )
        sep = "&" if "?" in redirect_uri else "?"
        query = {"code": code}
        if req.param("state"):
            query["state"] = req.param("state") or ""
        location = redirect_uri + sep + urllib.parse.urlencode(query)
        return Response(
            302, b"", "text/plain", {"Location": location, "X-Emulator-Auth-Code": code}
        )

    def r_userinfo(self, req: Request) -> Response:
        ident = self.emu.tokens.bearer(req, AUTH_RS)
        doc = self.emu.tokens.userinfo_identity(ident)
        doc.update(
            {
                "preferred_username": ident["username"],
                "identity_set": [self.emu.tokens.userinfo_identity(ident)],
            }
        )
        doc.pop("username", None)
        return json_response(200, doc)

    def r_identities(self, req: Request) -> Response:
        self.emu.tokens.bearer(req, AUTH_RS)
        usernames = {u for v in req.query.get("usernames", []) for u in v.split(",") if u}
        ids = {i for v in req.query.get("ids", []) for i in v.split(",") if i}
        found = []
        with self.emu.lock:
            for ident in self.emu.state["identities"].values():
                if ident["username"] in usernames or ident["id"] in ids:
                    found.append(
                        {
                            k: ident[k]
                            for k in (
                                "id",
                                "username",
                                "status",
                                "name",
                                "email",
                                "identity_provider",
                                "organization",
                                "identity_type",
                            )
                        }
                    )
        return json_response(200, {"identities": found})

    def r_openid_configuration(self, req: Request) -> Response:
        base = self.emu.base_url.rstrip("/")
        return json_response(
            200,
            {
                "issuer": self.emu.tokens.issuer(),
                "authorization_endpoint": f"{base}/v2/oauth2/authorize",
                "token_endpoint": f"{base}/v2/oauth2/token",
                "userinfo_endpoint": f"{base}/v2/oauth2/userinfo",
                "revocation_endpoint": f"{base}/v2/oauth2/token/revoke",
                "jwks_uri": f"{base}/jwk.json",
                "response_types_supported": ["code"],
                "grant_types_supported": [
                    "authorization_code",
                    "refresh_token",
                    "client_credentials",
                ],
                "id_token_signing_alg_values_supported": ["RS512"],
                "scopes_supported": ["openid", "email", "profile"],
                "subject_types_supported": ["public"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "claims_supported": [
                    "at_hash",
                    "aud",
                    "email",
                    "exp",
                    "name",
                    "nonce",
                    "preferred_username",
                    "iat",
                    "iss",
                    "sub",
                ],
            },
        )

    def r_jwk(self, req: Request) -> Response:
        return json_response(200, {"keys": [self.emu.tokens.rsa_key().jwk()]})
