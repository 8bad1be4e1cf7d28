"""Transfer endpoint routes: create (GCP), get, update, delete and search."""

from __future__ import annotations

import time
import uuid

from ..common import TRANSFER_RS, request_id
from ..errors import ApiError
from ..routing import Request, Response, RouteGroup, RouteSpec, int_param, json_response
from ..shapes import ENDPOINT_WRITABLE

ENDPOINT = r"/v0\.10/endpoint/(?P<endpoint_id>[^/]+)"


class EndpointRoutes(RouteGroup):
    def routes(self) -> list[RouteSpec]:
        return [
            ("POST", r"/v0\.10/endpoint", "endpoint_create", "transfer", self.r_endpoint_create),
            ("GET", ENDPOINT, "endpoint_get", "transfer", self.r_endpoint_get),
            ("PUT", ENDPOINT, "endpoint_update", "transfer", self.r_endpoint_update),
            ("DELETE", ENDPOINT, "endpoint_delete", "transfer", self.r_endpoint_delete),
            (
                "GET",
                r"/v0\.10/endpoint_search",
                "endpoint_search",
                "transfer",
                self.r_endpoint_search,
            ),
        ]

    def r_endpoint_create(self, req: Request) -> Response:
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        body = req.json()
        if body.get("DATA_TYPE", "endpoint") != "endpoint":
            raise ApiError(400, "ClientError.BadRequest", "DATA_TYPE must be 'endpoint'")
        if not body.get("is_globus_connect"):
            raise ApiError(
                400,
                "ClientError.BadRequest",
                "Only Globus Connect Personal endpoints can be created here "
                "(is_globus_connect: true)",
            )
        display_name = body.get("display_name")
        if not isinstance(display_name, str) or not display_name.strip():
            raise ApiError(400, "ClientError.BadRequest", "display_name is required")
        with self.emu.lock:
            doc = self.emu.new_endpoint(ident, "gcp", display_name, body)
            key = str(uuid.uuid4())
            doc.update(
                {
                    "entity_type": "GCP_mapped_collection",
                    "is_globus_connect": True,
                    "activated": True,
                    "gcp_connected": False,
                    "gcp_paused": False,
                    "default_directory": "/~/",
                    "_setup_key": key,
                }
            )
            self.emu.state["endpoints"][doc["id"]] = doc
            self.emu.state["setup_keys"][key] = {
                "endpoint_id": doc["id"],
                "expires_at": time.time() + self.emu.setup_key_lifetime,
            }
            self.emu.save()
        return json_response(
            201,
            {
                "DATA_TYPE": "endpoint_create_result",
                "code": "Created",
                "message": "Endpoint created successfully",
                "id": doc["id"],
                "display_name": display_name,
                "globus_connect_setup_key": key,
                "canonical_name": doc["canonical_name"],
                "request_id": request_id(),
                "resource": req.path,
            },
        )

    def r_endpoint_get(self, req: Request, endpoint_id: str) -> Response:
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        with self.emu.lock:
            endpoint = self.emu.visible_endpoint(ident, endpoint_id)
            view = self.emu.endpoint_view(endpoint)
            # The setup key shows to the owner until redeemed (as with globus-cli's
            # "endpoint show"); a redeemed key is gone.
            if (
                endpoint["owner_id"] == ident["id"]
                and endpoint.get("_setup_key") in self.emu.state["setup_keys"]
            ):
                view["globus_connect_setup_key"] = endpoint["_setup_key"]
        return json_response(200, view)

    def r_endpoint_update(self, req: Request, endpoint_id: str) -> Response:
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        body = req.json()
        with self.emu.lock:
            endpoint = self.emu.visible_endpoint(ident, endpoint_id, owner_only=True)
            for key, value in body.items():
                if key == "DATA_TYPE" or (key in endpoint and endpoint[key] == value):
                    continue
                if key not in ENDPOINT_WRITABLE:
                    raise ApiError(
                        400, "ClientError.BadRequest", f"Field '{key}' cannot be updated"
                    )
                endpoint[key] = value
            self.emu.save()
        return json_response(
            200,
            {
                "DATA_TYPE": "result",
                "code": "Updated",
                "message": "Endpoint updated successfully",
                "request_id": request_id(),
                "resource": req.path,
            },
        )

    def r_endpoint_delete(self, req: Request, endpoint_id: str) -> Response:
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        with self.emu.cond:
            endpoint = self.emu.visible_endpoint(ident, endpoint_id, owner_only=True)
            del self.emu.state["endpoints"][endpoint_id]
            self.emu.state["setup_keys"].pop(endpoint.get("_setup_key", ""), None)
            session = self.emu.hub.sessions.pop(endpoint_id, None)
            if session is not None:
                session.closed = True
                self.emu.cond.notify_all()
            self.emu.save()
        return json_response(
            200,
            {
                "DATA_TYPE": "result",
                "code": "Deleted",
                "message": "Endpoint deleted successfully",
                "request_id": request_id(),
                "resource": req.path,
            },
        )

    def r_endpoint_search(self, req: Request) -> Response:
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        scope = req.param("filter_scope", "all") or "all"
        fulltext = (req.param("filter_fulltext") or "").lower()
        owner_filter = req.param("filter_owner_id")
        entity_type = req.param("filter_entity_type")
        limit = int_param(req, "limit", 25, 1, 100)
        offset = int_param(req, "offset", 0, 0, 999)
        if offset + limit > 1000:
            raise ApiError(
                400, "ClientError.BadRequest", "offset + limit must be less than or equal to 1000"
            )
        known = {
            "all",
            "my-endpoints",
            "my-gcp-endpoints",
            "recently-used",
            "in-use",
            "shared-by-me",
            "shared-with-me",
            "administered-by-me",
        }
        if scope not in known:
            raise ApiError(400, "ClientError.BadRequest", f"Invalid filter_scope '{scope}'")
        if scope == "all" and not fulltext:
            raise ApiError(
                400,
                "ClientError.BadRequest",
                "filter_fulltext is required when filter_scope is 'all'",
            )
        with self.emu.lock:
            found = []
            endpoints = sorted(self.emu.state["endpoints"].values(), key=lambda e: e["_created"])
            for endpoint in endpoints:
                mine = endpoint["owner_id"] == ident["id"]
                if scope in ("my-endpoints", "recently-used", "administered-by-me") and not mine:
                    continue
                if scope == "my-gcp-endpoints" and not (mine and endpoint["is_globus_connect"]):
                    continue
                if scope in ("shared-by-me", "shared-with-me"):
                    continue
                if scope == "all" and not (mine or endpoint.get("public")):
                    continue
                view = self.emu.endpoint_view(endpoint)
                if scope == "in-use" and not (mine and view["in_use"]):
                    continue
                if owner_filter and endpoint["owner_id"] != owner_filter:
                    continue
                if entity_type and endpoint["entity_type"] != entity_type:
                    continue
                if fulltext:
                    haystack = " ".join(
                        str(endpoint.get(k) or "")
                        for k in (
                            "display_name",
                            "description",
                            "owner_string",
                            "id",
                            "keywords",
                            "organization",
                        )
                    ).lower()
                    if not all(word in haystack for word in fulltext.split()):
                        continue
                found.append(view)
        page = found[offset : offset + limit]
        return json_response(
            200,
            {
                "DATA_TYPE": "endpoint_list",
                "DATA": page,
                "has_next_page": offset + limit < len(found),
                "limit": limit,
                "offset": offset,
            },
        )
