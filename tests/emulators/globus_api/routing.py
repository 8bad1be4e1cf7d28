"""HTTP plumbing shared by the routes: requests, responses, the route table's rows.

Why apart from :mod:`globus_api.server`: route modules build :class:`Response` objects and
read :class:`Request` objects without knowing about sockets or threads.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from .common import JSONDict
from .errors import ApiError

if TYPE_CHECKING:
    from .state import Emulator


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes

    def param(self, name: str, default: Optional[str] = None) -> Optional[str]:
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> JSONDict:
        if not self.body:
            return {}
        try:
            value = json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ApiError(
                400, "ClientError.BadRequest", "Request body is not valid JSON"
            ) from None
        if not isinstance(value, dict):
            raise ApiError(400, "ClientError.BadRequest", "Request body must be a JSON object")
        return value

    def form(self) -> dict[str, str]:
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            return {k: str(v) for k, v in self.json().items()}
        parsed = urllib.parse.parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Optional[dict[str, str]] = None


def json_response(status: int, doc: Any, headers: Optional[dict[str, str]] = None) -> Response:
    return Response(status, json.dumps(doc).encode("utf-8"), "application/json", headers)


Handler = Callable[..., Response]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str
    family: str  # "transfer", "auth" or "emulator": decides the error document shape
    handler: Handler


RouteSpec = tuple[str, str, str, str, Handler]
"""A route table row: method, path regex, route name, family, handler."""


class RouteGroup:
    """The routes of one service or concern, over the emulator's shared state."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    def routes(self) -> list[RouteSpec]:
        raise NotImplementedError


def basic_client_id(req: Request) -> Optional[str]:
    """The client id of an HTTP Basic ``Authorization`` header, if any."""
    header = req.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return urllib.parse.unquote(decoded.split(":", 1)[0]) or None


def int_param(req: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within bounds, or Transfer's 400."""
    raw = req.param(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "ClientError.BadRequest", f"Invalid {name} '{raw}'") from None
    if not low <= value <= high:
        raise ApiError(400, "ClientError.BadRequest", f"{name} must be between {low} and {high}")
    return value
