"""Emulator-only routes of the GCP link (the protocol is described on
:class:`~globus_api.hub.GcpHub`; :class:`~globus_api.link.GcpLink` is the client)."""

from __future__ import annotations

import json
from typing import Optional

from ..routing import Request, Response, RouteGroup, RouteSpec, json_response

GCP = r"/_emulator/gcp/(?P<endpoint_id>[^/]+)"


class GcpLinkRoutes(RouteGroup):
    def routes(self) -> list[RouteSpec]:
        return [
            ("POST", r"/_emulator/gcp/redeem", "gcp_redeem", "emulator", self.r_gcp_redeem),
            ("POST", GCP + "/connect", "gcp_connect", "emulator", self.r_gcp_connect),
            ("POST", GCP + "/heartbeat", "gcp_heartbeat", "emulator", self.r_gcp_heartbeat),
            ("POST", GCP + "/disconnect", "gcp_disconnect", "emulator", self.r_gcp_disconnect),
            ("POST", GCP + "/poll", "gcp_poll", "emulator", self.r_gcp_poll),
            (
                "GET",
                GCP + "/work/(?P<work_id>[^/]+)/data",
                "gcp_work_data",
                "emulator",
                self.r_gcp_work_data,
            ),
            (
                "POST",
                GCP + "/work/(?P<work_id>[^/]+)",
                "gcp_work_result",
                "emulator",
                self.r_gcp_work_result,
            ),
        ]

    def r_gcp_redeem(self, req: Request) -> Response:
        return json_response(200, self.emu.redeem_setup_key(str(req.json().get("setup_key", ""))))

    def r_gcp_connect(self, req: Request, endpoint_id: str) -> Response:
        return json_response(200, self.emu.hub.connect(endpoint_id, req.json()))

    def r_gcp_heartbeat(self, req: Request, endpoint_id: str) -> Response:
        return json_response(200, self.emu.hub.heartbeat(endpoint_id, req.json()))

    def r_gcp_disconnect(self, req: Request, endpoint_id: str) -> Response:
        return json_response(200, self.emu.hub.disconnect(endpoint_id, req.json()))

    def r_gcp_poll(self, req: Request, endpoint_id: str) -> Response:
        return json_response(200, self.emu.hub.poll(endpoint_id, req.json()))

    def r_gcp_work_data(self, req: Request, endpoint_id: str, work_id: str) -> Response:
        data = self.emu.hub.work_data(endpoint_id, work_id, req.param("session"))
        return Response(200, data, "application/octet-stream")

    def r_gcp_work_result(self, req: Request, endpoint_id: str, work_id: str) -> Response:
        if req.headers.get("Content-Type", "").startswith("application/octet-stream"):
            header = req.headers.get("X-Emulator-Result")
            result = json.loads(header) if header else {"ok": True}
            payload: Optional[bytes] = req.body
        else:
            result = req.json()
            payload = None
        return json_response(
            200, self.emu.hub.complete(endpoint_id, work_id, req.param("session"), result, payload)
        )
