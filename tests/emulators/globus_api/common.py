"""Constants and small helpers every part of the emulator shares (stdlib only).

Why a module of its own: the GCP side (:mod:`globus_api.link`) and the service side both
need the timestamp and id formats, and the link must not import the service.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import datetime, timezone
from typing import Any, Optional

TRANSFER_RS = "transfer.api.globus.org"
AUTH_RS = "auth.globus.org"
TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"
AUTH_PAGE_REDIRECT = "https://auth.globus.org/v2/web/auth-code"
DEFAULT_TOKEN_LIFETIME = 172800  # what Globus Auth issues: 48 h
DEFAULT_DEADLINE = 24 * 3600.0  # Transfer's default task deadline
DEFAULT_CHUNK = 8 * 1024 * 1024
LISTEN_HOST = "127.0.0.1"  # never anything else: the emulator has no real security
ADMIN_IDENTITY = "emulator-admin@globusid.org"

JSONDict = dict[str, Any]


def iso(ts: Optional[float]) -> Optional[str]:
    """Transfer's timestamp format, e.g. ``2021-09-02T18:04:47+00:00`` (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).replace(microsecond=0).isoformat()


def iso_space(ts: float) -> str:
    """The ``YYYY-MM-DD HH:MM:SS+00:00`` variant used in file listings and endpoints."""
    return iso(ts).replace("T", " ")  # type: ignore[union-attr]


def parse_time(text: str) -> float:
    """Parse the ISO-8601 forms TransferData documents (``2017-10-12 09:30Z``, dates)."""
    value = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def request_id() -> str:
    """Transfer-like request ids (nine alphanumerics, as in ``7HgMVYazI``)."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(9))


def b32_username(identity_id: str) -> str:
    """The ``u_...`` username Transfer shows for an identity (base32 of the UUID bytes)."""
    raw = base64.b32encode(uuid.UUID(identity_id).bytes).decode("ascii").rstrip("=")
    return "u_" + raw.lower()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def int_bytes(value: int, length: Optional[int] = None) -> bytes:
    length = length or max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(length, "big")
