"""Errors raised inside the emulator; :mod:`globus_api.server` turns them into documents.

Why here: file operations run both in the service and in a GCP's :class:`GcpLink`, so the
error types are shared by both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional


class ApiError(Exception):
    """An HTTP error answered in the real document shape of the route's service."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class OpError(Exception):
    """A file operation failed on an endpoint (``PERMISSION_DENIED``, ``FILE_NOT_FOUND``...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Disconnected(Exception):
    """The GCP behind an endpoint is not connected (or paused): work must wait."""

    def __init__(self, endpoint_id: str, reason: str) -> None:
        super().__init__(f"{endpoint_id}: {reason}")
        self.endpoint_id = endpoint_id
        self.reason = reason
