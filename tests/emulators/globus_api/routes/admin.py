"""Emulator-only admin routes (JSON in, JSON out, no auth; the service listens on localhost).

* ``GET /_emulator/health``; ``GET /_emulator/routes``; ``GET /_emulator/state``
* ``POST /_emulator/identities {"username", "name"?, "email"?}`` -> identity
* ``POST /_emulator/tokens {"username"|"identity_id", "scopes"?, "client_id"?,
  "lifetime"?}`` -> a token response (refresh tokens included) + ``identity_id``
* ``POST /_emulator/tokens/expire {"username"|"identity_id"|"access_token"}``
* ``POST /_emulator/login {"username"}``: whom ``GET /v2/oauth2/authorize`` logs in
* ``POST /_emulator/collections {"path", "display_name"?, "owner"?, "public"?,
  "writable"?, "create"?}`` -> endpoint document of a served collection
* ``POST /_emulator/faults {...Fault}``; ``GET``/``DELETE /_emulator/faults``
* ``POST /_emulator/tasks/{id}/pause`` / ``resume`` (INACTIVE and back)
* ``GET /_emulator/gcp``: GCP sessions; the GCP routes: see :mod:`globus_api.routes.gcp`.
"""

from __future__ import annotations

import json
import os
import time

from ..common import TRANSFER_SCOPE
from ..errors import ApiError
from ..faults import Fault
from ..routing import Request, Response, RouteGroup, RouteSpec, json_response
from ..tokens import split_scopes


class AdminRoutes(RouteGroup):
    def routes(self) -> list[RouteSpec]:
        return [
            ("GET", r"/_emulator/health", "admin_health", "emulator", self.r_health),
            ("GET", r"/_emulator/routes", "admin_routes", "emulator", self.r_list_routes),
            ("GET", r"/_emulator/state", "admin_state", "emulator", self.r_state),
            (
                "POST",
                r"/_emulator/identities",
                "admin_identities",
                "emulator",
                self.r_admin_identity,
            ),
            ("POST", r"/_emulator/tokens", "admin_tokens", "emulator", self.r_admin_tokens),
            (
                "POST",
                r"/_emulator/tokens/expire",
                "admin_tokens_expire",
                "emulator",
                self.r_admin_tokens_expire,
            ),
            ("POST", r"/_emulator/login", "admin_login", "emulator", self.r_admin_login),
            (
                "POST",
                r"/_emulator/collections",
                "admin_collections",
                "emulator",
                self.r_admin_collection,
            ),
            ("GET", r"/_emulator/faults", "admin_faults_list", "emulator", self.r_faults_list),
            ("POST", r"/_emulator/faults", "admin_faults_add", "emulator", self.r_faults_add),
            ("DELETE", r"/_emulator/faults", "admin_faults_clear", "emulator", self.r_faults_clear),
            (
                "POST",
                r"/_emulator/tasks/(?P<task_id>[^/]+)/(?P<action>pause|resume)",
                "admin_task_pause",
                "emulator",
                self.r_admin_task_pause,
            ),
            ("GET", r"/_emulator/gcp", "gcp_list", "emulator", self.r_gcp_list),
        ]

    def r_health(self, req: Request) -> Response:
        return json_response(200, {"ok": True, "pid": os.getpid(), "url": self.emu.base_url})

    def r_list_routes(self, req: Request) -> Response:
        return json_response(
            200,
            {
                "routes": [
                    {
                        "method": r.method,
                        "pattern": r.pattern.pattern,
                        "name": r.name,
                        "family": r.family,
                    }
                    for r in self.emu.routes
                ]
            },
        )

    def r_state(self, req: Request) -> Response:
        with self.emu.lock:
            doc = json.loads(json.dumps(self.emu.state))
        doc["gcp_sessions"] = self.emu.hub.describe()
        doc["faults"] = [f.as_json() for f in self.emu.faults]
        doc["route_hits"] = dict(self.emu.route_hits)
        return json_response(200, doc)

    def r_admin_identity(self, req: Request) -> Response:
        body = req.json()
        if not body.get("username"):
            raise ApiError(400, "BadRequest", "username is required")
        return json_response(
            200,
            self.emu.tokens.identity(str(body["username"]), body.get("name"), body.get("email")),
        )

    def r_admin_tokens(self, req: Request) -> Response:
        body = req.json()
        with self.emu.lock:
            ident = self.emu.tokens.identity_by(body.get("username"), body.get("identity_id"))
        scopes = body.get("scopes") or [TRANSFER_SCOPE]
        if isinstance(scopes, str):
            scopes = split_scopes(scopes)
        lifetime = body.get("lifetime")
        doc = self.emu.tokens.grant(
            ident["id"],
            list(scopes),
            body.get("client_id"),
            lifetime=int(lifetime) if lifetime is not None else None,
        )
        doc["identity_id"] = ident["id"]
        doc["username"] = ident["username"]
        return json_response(200, doc)

    def r_admin_tokens_expire(self, req: Request) -> Response:
        body = req.json()
        expired = 0
        with self.emu.lock:
            target = None
            if body.get("username") or body.get("identity_id"):
                target = self.emu.tokens.identity_by(body.get("username"), body.get("identity_id"))[
                    "id"
                ]
            for token, record in self.emu.state["access_tokens"].items():
                if token == body.get("access_token") or record["identity_id"] == target:
                    record["expires_at"] = time.time() - 1
                    expired += 1
            self.emu.save()
        return json_response(200, {"expired": expired})

    def r_admin_login(self, req: Request) -> Response:
        body = req.json()
        ident = self.emu.tokens.identity(str(body.get("username") or ""))
        with self.emu.lock:
            self.emu.state["login_identity"] = ident["id"]
            self.emu.save()
        return json_response(200, ident)

    def r_admin_collection(self, req: Request) -> Response:
        body = req.json()
        if not body.get("path"):
            raise ApiError(400, "BadRequest", "path is required")
        return json_response(
            200,
            self.emu.create_collection(
                str(body["path"]),
                body.get("display_name"),
                body.get("owner"),
                bool(body.get("public", True)),
                bool(body.get("writable", True)),
                bool(body.get("create", False)),
            ),
        )

    def r_faults_list(self, req: Request) -> Response:
        with self.emu.lock:
            return json_response(200, {"faults": [f.as_json() for f in self.emu.faults]})

    def r_faults_add(self, req: Request) -> Response:
        body = req.json()
        try:
            fault = Fault(
                route=str(body["route"]),
                method=body.get("method"),
                status=int(body.get("status", 503)),
                count=int(body.get("count", 1)),
                retry_after=body.get("retry_after"),
                delay=float(body.get("delay", 0.0)),
                after=bool(body.get("after", False)),
                code=body.get("code"),
                message=body.get("message"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(400, "BadRequest", f"invalid fault: {exc}") from None
        with self.emu.lock:
            self.emu.faults.append(fault)
        return json_response(200, fault.as_json())

    def r_faults_clear(self, req: Request) -> Response:
        with self.emu.lock:
            count = len(self.emu.faults)
            self.emu.faults.clear()
        return json_response(200, {"cleared": count})

    def r_admin_task_pause(self, req: Request, task_id: str, action: str) -> Response:
        with self.emu.lock:
            task = self.emu.state["tasks"].get(task_id)
            if task is None:
                raise ApiError(404, "NotFound", f"Task {task_id} not found")
            task["_paused"] = action == "pause"
            if action == "pause" and task["status"] == "ACTIVE":
                task["status"] = "INACTIVE"
                task["nice_status"] = "PAUSED_BY_ADMIN"
                task["is_ok"] = False
            self.emu.save()
            view = self.emu.task_view(task)
        if action == "resume":
            self.emu.engine.kick(task_id)
        return json_response(200, view)

    def r_gcp_list(self, req: Request) -> Response:
        return json_response(200, {"sessions": self.emu.hub.describe()})
