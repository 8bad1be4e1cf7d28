"""Fault injection: failures and delays for the next matching requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .common import JSONDict


@dataclass
class Fault:
    """An injected failure for the next ``count`` matching requests.

    ``route`` is a route name (``task_list``, ``token``...; see ``GET /_emulator/routes``)
    or a path prefix starting with ``/``; ``method`` optionally narrows it. ``status`` 0
    means "no error" (``delay`` alone). ``after`` processes the request first and then
    answers the error, like a lost response (the classic duplicate-on-retry case).
    """

    route: str
    method: Optional[str] = None
    status: int = 503
    count: int = 1
    retry_after: Optional[float] = None
    delay: float = 0.0
    after: bool = False
    code: Optional[str] = None
    message: Optional[str] = None

    def matches(self, name: str, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        if self.route.startswith("/"):
            return path.startswith(self.route)
        return self.route == name

    def as_json(self) -> JSONDict:
        return dict(self.__dict__)


DEFAULT_FAULT_CODES = {
    400: "ClientError.BadRequest",
    401: "AuthenticationFailed",
    403: "ClientError.PermissionDenied",
    404: "ClientError.NotFound",
    409: "ClientError.Conflict",
    429: "ClientError.RequestLimitExceeded",  # unverified name
    500: "InternalError",
    502: "BadGateway",  # not "ExternalError...": the SDK never retries those
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}
