"""Emulator of the Globus Transfer (v0.10) and Auth (v2) APIs, as globus-sdk 4.x uses them.

Why it exists: the project's hooks and tools talk to Globus through globus-sdk, and tests
cannot reach Globus. This service answers on 127.0.0.1 in the documents' real shapes
(checked against ``globus_sdk.testing`` canned responses by the test suite), so that
``GLOBUS_SDK_SERVICE_URL_TRANSFER`` / ``GLOBUS_SDK_SERVICE_URL_AUTH`` pointing at it is
enough for unmodified globus-sdk code to work: token refresh, 401 handling, retries of
429/5xx with ``Retry-After``, paginators.

Beyond answering requests it emulates what makes Globus Connect Personal (GCP) matter to
the project: a GCP endpoint is only usable while its GCP process is connected. GCP
processes "connect out" through the emulator-only ``/_emulator/gcp/...`` routes (see
:class:`GcpLink`, the client side), and transfer tasks really move bytes through them, in
chunks, resumable: while a GCP is away a task stays ACTIVE with ``GC_NOT_CONNECTED``
events and resumes when it returns, until the task's deadline. "Served collections" are
plain directories the service itself hosts, standing in for Globus Connect Server.

Stdlib only, Python 3.9+: it runs under Debian's /usr/bin/python3 next to the GCP
emulator, and :class:`GcpLink` is imported by that emulator in user processes.

Emulator-only HTTP routes (all under ``/_emulator/``) are documented on
:meth:`Emulator._routes`; the GCP link protocol on :class:`GcpHub`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import functools
import hashlib
import json
import math
import os
import posixpath
import re
import secrets
import signal
import stat
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, cast

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


# --------------------------------------------------------------------------- helpers


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


# --------------------------------------------------------------------------- errors


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


# --------------------------------------------------------------------------- local file ops
# Shared by served collections (run in the service) and by GcpLink (run inside the GCP
# emulator, as the GCP's user), so both report the same stat/listing shapes and errors.


def _os_error(exc: OSError, path: str) -> OpError:
    """Translate an OSError into the error codes Transfer uses in task events."""
    if isinstance(exc, FileNotFoundError):
        return OpError("FILE_NOT_FOUND", f"No such file or directory: {path}")
    if isinstance(exc, PermissionError):
        return OpError("PERMISSION_DENIED", f"Permission denied: {path}")
    if isinstance(exc, IsADirectoryError):
        return OpError("IS_A_DIRECTORY", f"Is a directory: {path}")
    if isinstance(exc, NotADirectoryError):
        return OpError("NOT_A_DIRECTORY", f"Not a directory: {path}")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OpError("QUOTA_EXCEEDED", f"No space left on device: {path}")
    return OpError("IO_ERROR", f"{exc.strerror or exc}: {path}")


def _owner_names(st: os.stat_result) -> tuple[str, str]:
    try:
        import pwd

        user = pwd.getpwuid(st.st_uid).pw_name
    except (ImportError, KeyError):
        user = str(st.st_uid)
    try:
        import grp

        group = grp.getgrgid(st.st_gid).gr_name
    except (ImportError, KeyError):
        group = str(st.st_gid)
    return user, group


def stat_path(path: str) -> JSONDict:
    """Stat without following a final symlink: type, size, mtime, permissions, owner."""
    try:
        lst = os.lstat(path)
        if stat.S_ISLNK(lst.st_mode):
            try:
                st = os.stat(path)
            except OSError:
                kind = "invalid_symlink"
                st = lst
            else:
                kind = "link"
        else:
            st = lst
            kind = "dir" if stat.S_ISDIR(lst.st_mode) else "file"
    except OSError as exc:
        raise _os_error(exc, path) from None
    user, group = _owner_names(st)
    return {
        "name": os.path.basename(path.rstrip("/")) or "/",
        "type": kind,
        "size": st.st_size,
        "mtime": st.st_mtime,
        "permissions": f"{stat.S_IMODE(st.st_mode):04o}",
        "user": user,
        "group": group,
        "link_target": os.readlink(path) if kind in ("link", "invalid_symlink") else None,
    }


def list_path(path: str) -> list[JSONDict]:
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise _os_error(exc, path) from None
    entries = []
    for name in names:
        with contextlib.suppress(OpError):  # vanished between listdir and lstat
            entries.append(stat_path(os.path.join(path, name)))
    return entries


def read_chunk(path: str, offset: int, length: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)
    except OSError as exc:
        raise _os_error(exc, path) from None


def write_chunk(path: str, offset: int, data: bytes, truncate: bool) -> None:
    """Write ``data`` at ``offset`` (idempotent, so a resumed chunk can be written twice)."""
    try:
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        fd = os.open(path, flags, 0o644)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)
    except OSError as exc:
        raise _os_error(exc, path) from None


def make_dirs(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise OpError("EXISTS", f"A file exists at {path}") from None
    except OSError as exc:
        raise _os_error(exc, path) from None


def checksum_path(path: str, algorithm: str) -> str:
    algo = algorithm.lower().replace("-", "")
    if algo not in ("sha256", "md5", "sha1", "sha512"):
        raise OpError("UNSUPPORTED_CHECKSUM", f"Unsupported checksum algorithm {algorithm}")
    digest = hashlib.new(algo)
    try:
        with open(path, "rb") as handle:
            while True:
                block = handle.read(1024 * 1024)
                if not block:
                    break
                digest.update(block)
    except OSError as exc:
        raise _os_error(exc, path) from None
    return digest.hexdigest()


def set_mtime(path: str, mtime: float) -> None:
    try:
        os.utime(path, (mtime, mtime))
    except OSError as exc:
        raise _os_error(exc, path) from None


def run_file_op(fs_path: str, op: str, args: Mapping[str, Any], data: Optional[bytes]) -> Any:
    """Execute one file operation on a local path; used by both kinds of endpoint."""
    if op == "stat":
        return stat_path(fs_path)
    if op == "list":
        return list_path(fs_path)
    if op == "mkdir":
        make_dirs(fs_path)
        return None
    if op == "read":
        return read_chunk(fs_path, int(args["offset"]), int(args["length"]))
    if op == "write":
        write_chunk(fs_path, int(args["offset"]), data or b"", bool(args.get("truncate")))
        return None
    if op == "checksum":
        return checksum_path(fs_path, str(args.get("algorithm", "sha256")))
    if op == "utime":
        set_mtime(fs_path, float(args["mtime"]))
        return None
    raise OpError("UNSUPPORTED", f"unknown operation {op!r}")


WRITE_OPS = frozenset({"write", "mkdir", "utime"})


# --------------------------------------------------------------------------- RSA for id_tokens


class RsaKey:
    """A tiny RSA signer (RS512) so id_tokens verify with PyJWT, without third-party code.

    Why: globus-sdk's ``UserApp`` decodes the ``id_token`` of a login to learn the
    identity; a stdlib-only emulator has to sign it itself. Pure-Python keygen of a
    2048-bit key takes well under a second; the key is kept in the state file.
    """

    _SHA512_PREFIX = bytes.fromhex("3051300d060960864801650304020305000440")

    def __init__(self, n: int, e: int, d: int, p: int, q: int) -> None:
        self.n, self.e, self.d, self.p, self.q = n, e, d, p, q
        self.kid = hashlib.sha256(int_bytes(n)).hexdigest()[:16]

    @classmethod
    def generate(cls, bits: int = 2048) -> RsaKey:
        e = 65537
        while True:
            p = _random_prime(bits // 2)
            q = _random_prime(bits // 2)
            if p == q:
                continue
            lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
            if math.gcd(e, lam) != 1:
                continue
            n = p * q
            if n.bit_length() != bits:
                continue
            return cls(n, e, pow(e, -1, lam), p, q)

    def to_json(self) -> JSONDict:
        return {"n": hex(self.n), "e": self.e, "d": hex(self.d), "p": hex(self.p), "q": hex(self.q)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RsaKey:
        return cls(
            int(data["n"], 16),
            int(data["e"]),
            int(data["d"], 16),
            int(data["p"], 16),
            int(data["q"], 16),
        )

    def jwk(self) -> JSONDict:
        return {
            "kty": "RSA",
            "alg": "RS512",
            "use": "sig",
            "kid": self.kid,
            "n": b64url(int_bytes(self.n)),
            "e": b64url(int_bytes(self.e)),
        }

    def sign(self, message: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 with SHA-512, computed with the CRT."""
        k = (self.n.bit_length() + 7) // 8
        t = self._SHA512_PREFIX + hashlib.sha512(message).digest()
        em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
        m = int.from_bytes(em, "big")
        dp, dq = self.d % (self.p - 1), self.d % (self.q - 1)
        qinv = pow(self.q, -1, self.p)
        m1, m2 = pow(m, dp, self.p), pow(m, dq, self.q)
        h = (qinv * (m1 - m2)) % self.p
        return int_bytes(m2 + h * self.q, k)

    def jwt(self, claims: Mapping[str, Any]) -> str:
        header = {"alg": "RS512", "typ": "JWT", "kid": self.kid}
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
        )
        return signing_input + "." + b64url(self.sign(signing_input.encode("ascii")))


_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]


def _probable_prime(n: int, rounds: int = 24) -> bool:
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for _ in range(rounds):
        a = secrets.randbelow(n - 3) + 2
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _random_prime(bits: int) -> int:
    while True:
        candidate = secrets.randbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if _probable_prime(candidate):
            return candidate


# --------------------------------------------------------------------------- document shapes


def endpoint_template() -> JSONDict:
    """All keys of a Transfer endpoint document (canned ``get_endpoint`` plus search keys)."""
    doc: JSONDict = {"DATA_TYPE": "endpoint"}
    none_keys = [
        "id",
        "display_name",
        "name",
        "canonical_name",
        "organization",
        "department",
        "username",
        "owner_id",
        "owner_string",
        "description",
        "keywords",
        "contact_email",
        "contact_info",
        "info_link",
        "user_message",
        "user_message_link",
        "entity_type",
        "globus_connect_setup_key",
        "gcp_connected",
        "gcp_paused",
        "s3_url",
        "host_endpoint",
        "host_endpoint_id",
        "host_endpoint_display_name",
        "host_path",
        "myproxy_server",
        "myproxy_dn",
        "non_functional_endpoint_display_name",
        "non_functional_endpoint_id",
        "oauth_server",
        "default_directory",
        "expire_time",
        "local_user_info_available",
        "subscription_id",
        "location",
        "network_use",
        "max_concurrency",
        "preferred_concurrency",
        "max_parallelism",
        "preferred_parallelism",
        "mapped_collection_id",
        "mapped_collection_display_name",
        "sharing_target_endpoint",
        "sharing_target_root_path",
        "https_server",
        "tlsftp_server",
        "gcs_version",
        "gcs_manager_url",
        "last_accessed_time",
        "authentication_timeout_mins",
        "authentication_assurance_timeout",
        "authentication_policy_id",
        "acl_max_expiration_period_mins",
    ]
    false_keys = [
        "public",
        "french_english_bilingual",
        "is_globus_connect",
        "s3_owner_activated",
        "disable_verify",
        "disable_anonymous_writes",
        "force_verify",
        "force_encryption",
        "mfa_required",
        "high_assurance",
        "non_functional",
        "activated",
        "shareable",
        "acl_available",
        "acl_editable",
        "in_use",
        "requester_pays",
    ]
    for key in none_keys:
        doc[key] = None
    for key in false_keys:
        doc[key] = False
    doc["expires_in"] = -1
    doc["my_effective_roles"] = []
    doc["DATA"] = []
    return doc


# Endpoint fields a PUT may change (others are read-only or not emulated).
ENDPOINT_WRITABLE = frozenset(
    [
        "display_name",
        "organization",
        "department",
        "description",
        "keywords",
        "contact_email",
        "contact_info",
        "info_link",
        "user_message",
        "user_message_link",
        "public",
        "default_directory",
        "force_encryption",
        "disable_verify",
        "location",
        "network_use",
        "subscription_id",
    ]
)

TASK_EVENT_TEXT = {
    "GC_NOT_CONNECTED": "Globus Connect not connected",
    "GC_PAUSED": "Globus Connect paused",
    "PERMISSION_DENIED": "permission denied",
    "FILE_NOT_FOUND": "file not found",
    "VERIFY_CHECKSUM": "checksum verification failed",
    "SUCCEEDED": "succeeded",
    "CANCELED": "canceled",
    "EXPIRED": "expired",
    "STARTED": "started",
    "QUOTA_EXCEEDED": "quota exceeded",
    "IO_ERROR": "I/O error",
    "FILE_SKIPPED": "file skipped",
}
FATAL_OP_CODES = frozenset(
    {"PERMISSION_DENIED", "FILE_NOT_FOUND", "IS_A_DIRECTORY", "NOT_A_DIRECTORY", "EXISTS"}
)


# --------------------------------------------------------------------------- GCP hub


class _WorkItem:
    """One file operation queued for a GCP; the engine thread waits on ``done``."""

    def __init__(self, session: str, op: str, args: JSONDict, data: Optional[bytes]) -> None:
        self.id = uuid.uuid4().hex
        self.session = session
        self.op = op
        self.args = args
        self.data = data
        self.done = threading.Event()
        self.result: Optional[JSONDict] = None
        self.payload: Optional[bytes] = None

    def describe(self) -> JSONDict:
        doc = {"id": self.id, "op": self.op, **self.args}
        if self.data is not None:
            doc["length"] = len(self.data)
        return doc


class _Session:
    def __init__(self, endpoint_id: str, info: Mapping[str, Any]) -> None:
        self.id = uuid.uuid4().hex
        self.endpoint_id = endpoint_id
        self.queue: deque[_WorkItem] = deque()
        self.inflight: dict[str, _WorkItem] = {}
        self.last_seen = time.monotonic()
        self.connected_at = time.time()
        self.paused = bool(info.get("paused"))
        self.closed = False
        self.info = {k: info.get(k) for k in ("pid", "uid", "user", "host", "paths", "version")}


class GcpHub:
    """The service side of connected GCPs: sessions, liveness and work queues.

    Protocol (JSON over HTTP, emulator-only routes; :class:`GcpLink` is the client):

    * ``POST /_emulator/gcp/redeem {"setup_key": K}`` -> ``{"endpoint_id": ID, ...}`` once;
      then 404 ``{"code": "ClientError.NotFound", "message": "Setup Code K not found"}``.
    * ``POST /_emulator/gcp/{ID}/connect {"paused": false, "paths": [...], "pid": ...}``
      -> ``{"session": S, "heartbeat_interval": s, "timeout": s, "poll_wait": s}``. A new
      connect replaces the endpoint's previous session (its queued work is abandoned and
      re-issued by the tasks).
    * ``POST /_emulator/gcp/{ID}/heartbeat {"session": S, "paused": bool}`` every
      ``heartbeat_interval``; no heartbeat for ``timeout`` s means ``gcp_connected: false``.
      409 ``SessionUnknown`` means "connect again" (service restarted, or replaced).
    * ``POST /_emulator/gcp/{ID}/poll {"session": S, "wait": s, "max_items": n}`` long-polls
      for work: ``{"work": [{"id": W, "op": "stat"|"list"|"mkdir"|"read"|"write"|"checksum"|
      "utime", "path": P, ...}]}``. ``read`` has ``offset``/``length``; ``write`` has
      ``offset``/``length``/``truncate`` and its bytes come from
      ``GET /_emulator/gcp/{ID}/work/{W}/data?session=S``; ``checksum`` has ``algorithm``;
      ``utime`` has ``mtime``.
    * ``POST /_emulator/gcp/{ID}/work/{W}?session=S`` answers: JSON ``{"ok": true,
      "result": ...}`` or ``{"ok": false, "error": "PERMISSION_DENIED", "message": ...}``;
      for ``read``, the raw bytes (``application/octet-stream``).
    * ``POST /_emulator/gcp/{ID}/disconnect {"session": S}``: clean stop, at once offline.

    Paths are Globus paths (``/~/x`` is the GCP user's home); the GCP maps them and
    enforces its exported paths (config-paths), answering ``PERMISSION_DENIED`` outside.
    """

    def __init__(self, emulator: Emulator, timeout: float, poll_wait: float) -> None:
        self.emu = emulator
        self.timeout = timeout
        self.poll_wait = poll_wait
        self.sessions: dict[str, _Session] = {}
        self.items: dict[str, _WorkItem] = {}
        self.closing = False

    # ---- state seen by the API

    def _alive(self, session: Optional[_Session]) -> bool:
        return (
            session is not None
            and not session.closed
            and time.monotonic() - session.last_seen <= self.timeout
        )

    def connected(self, endpoint_id: str) -> bool:
        with self.emu.lock:
            return self._alive(self.sessions.get(endpoint_id))

    def paused(self, endpoint_id: str) -> bool:
        with self.emu.lock:
            session = self.sessions.get(endpoint_id)
            return bool(session is not None and self._alive(session) and session.paused)

    def describe(self) -> list[JSONDict]:
        with self.emu.lock:
            return [
                {
                    "endpoint_id": ep,
                    "session": s.id,
                    "connected": self._alive(s),
                    "paused": s.paused,
                    "seconds_since_heartbeat": round(time.monotonic() - s.last_seen, 3),
                    "queued": len(s.queue),
                    "inflight": len(s.inflight),
                    **s.info,
                }
                for ep, s in self.sessions.items()
            ]

    # ---- routes called by GCPs

    def connect(self, endpoint_id: str, body: Mapping[str, Any]) -> JSONDict:
        with self.emu.cond:
            endpoint = self.emu.state["endpoints"].get(endpoint_id)
            if endpoint is None or endpoint.get("_kind") != "gcp":
                raise ApiError(
                    404,
                    "ClientError.NotFound",
                    f"No such Globus Connect Personal endpoint '{endpoint_id}'",
                )
            old = self.sessions.get(endpoint_id)
            if old is not None:
                old.closed = True
            session = _Session(endpoint_id, body)
            self.sessions[endpoint_id] = session
            endpoint["_last_connect"] = time.time()
            self.emu.cond.notify_all()
            self.emu.save()
        return {
            "session": session.id,
            "endpoint_id": endpoint_id,
            "heartbeat_interval": max(0.05, self.timeout / 4),
            "timeout": self.timeout,
            "poll_wait": self.poll_wait,
        }

    def _session(self, endpoint_id: str, session_id: Any) -> _Session:
        session = self.sessions.get(endpoint_id)
        if session is None or session.closed or session.id != session_id:
            raise ApiError(409, "SessionUnknown", "Unknown or replaced GCP session; connect again")
        return session

    def heartbeat(self, endpoint_id: str, body: Mapping[str, Any]) -> JSONDict:
        with self.emu.cond:
            if endpoint_id not in self.emu.state["endpoints"]:
                raise ApiError(404, "ClientError.NotFound", f"Endpoint '{endpoint_id}' not found")
            session = self._session(endpoint_id, body.get("session"))
            session.last_seen = time.monotonic()
            if "paused" in body:
                session.paused = bool(body["paused"])
            self.emu.cond.notify_all()
        return {"ok": True, "gcp_connected": True, "gcp_paused": session.paused}

    def disconnect(self, endpoint_id: str, body: Mapping[str, Any]) -> JSONDict:
        with self.emu.cond:
            session = self._session(endpoint_id, body.get("session"))
            session.closed = True
            del self.sessions[endpoint_id]
            self.emu.cond.notify_all()
        return {"ok": True}

    def poll(self, endpoint_id: str, body: Mapping[str, Any]) -> JSONDict:
        wait = min(max(float(body.get("wait", self.poll_wait)), 0.0), 30.0)
        max_items = max(1, int(body.get("max_items", 1)))
        end = time.monotonic() + wait
        with self.emu.cond:
            session = self._session(endpoint_id, body.get("session"))
            session.last_seen = time.monotonic()
            while not session.queue and not session.closed and not self.closing:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                self.emu.cond.wait(remaining)
            if session.closed:
                raise ApiError(409, "SessionUnknown", "GCP session replaced or closed")
            work: list[JSONDict] = []
            while session.queue and len(work) < max_items:
                item = session.queue.popleft()
                session.inflight[item.id] = item
                work.append(item.describe())
        return {"work": work}

    def work_data(self, endpoint_id: str, work_id: str, session_id: Any) -> bytes:
        with self.emu.lock:
            session = self._session(endpoint_id, session_id)
            session.last_seen = time.monotonic()
            item = session.inflight.get(work_id)
            if item is None:
                raise ApiError(404, "ClientError.NotFound", f"Work item {work_id} not found")
            return item.data or b""

    def complete(
        self,
        endpoint_id: str,
        work_id: str,
        session_id: Any,
        result: JSONDict,
        payload: Optional[bytes],
    ) -> JSONDict:
        with self.emu.lock:
            session = self._session(endpoint_id, session_id)
            session.last_seen = time.monotonic()
            item = session.inflight.pop(work_id, None)
            if item is None:
                raise ApiError(404, "ClientError.NotFound", f"Work item {work_id} not found")
            item.result = result
            item.payload = payload
            item.done.set()
        return {"ok": True}

    # ---- used by the transfer engine and file operations

    def call(
        self,
        endpoint_id: str,
        op: str,
        args: JSONDict,
        data: Optional[bytes] = None,
        timeout: Optional[float] = None,
        abort: Optional[Callable[[], None]] = None,
    ) -> tuple[JSONDict, Optional[bytes]]:
        """Run one operation on the endpoint's GCP and wait for it.

        Raises :class:`Disconnected` if the GCP is (or goes) offline or paused, or does not
        answer within ``timeout``; :class:`OpError` for a failure it reports. ``abort`` is
        called while waiting and may raise (task canceled, deadline passed).
        """
        with self.emu.cond:
            session = self.sessions.get(endpoint_id)
            if not self._alive(session):
                raise Disconnected(endpoint_id, "not connected")
            assert session is not None
            if session.paused:
                raise Disconnected(endpoint_id, "paused")
            item = _WorkItem(session.id, op, args, data)
            session.queue.append(item)
            self.items[item.id] = item
            self.emu.cond.notify_all()
        give_up = time.monotonic() + timeout if timeout else None
        try:
            while not item.done.wait(0.05):
                with self.emu.lock:
                    if self.sessions.get(endpoint_id) is not session or not self._alive(session):
                        raise Disconnected(endpoint_id, "connection lost")
                if abort is not None:
                    abort()
                if give_up is not None and time.monotonic() > give_up:
                    raise Disconnected(endpoint_id, "no answer from Globus Connect Personal")
        finally:
            with self.emu.lock:
                self.items.pop(item.id, None)
                with contextlib.suppress(ValueError):
                    session.queue.remove(item)
                session.inflight.pop(item.id, None)
        result = item.result or {}
        if not result.get("ok"):
            raise OpError(str(result.get("error", "IO_ERROR")), str(result.get("message", "")))
        return result, item.payload

    def close(self) -> None:
        with self.emu.cond:
            self.closing = True
            self.emu.cond.notify_all()


# --------------------------------------------------------------------------- backends


class Backend:
    """File operations on one endpoint, whatever serves it (GCP link or served directory)."""

    def __init__(self, endpoint_id: str) -> None:
        self.endpoint_id = endpoint_id

    def op(
        self,
        op: str,
        path: str,
        abort: Optional[Callable[[], None]] = None,
        data: Optional[bytes] = None,
        **args: Any,
    ) -> Any:
        raise NotImplementedError


class ServedBackend(Backend):
    """A directory on the service's disk, standing in for a Globus Connect Server collection.

    Globus paths map below ``root`` (``/`` and ``/~/`` are the root); ``..`` and symlinks
    cannot escape it.
    """

    def __init__(self, endpoint_id: str, root: str, writable: bool = True) -> None:
        super().__init__(endpoint_id)
        self.root = os.path.realpath(root)
        self.writable = writable

    def fs_path(self, path: str) -> str:
        rel = path
        if rel == "/~" or rel.startswith("/~/"):
            rel = rel[2:]
        elif rel.startswith("~"):
            rel = rel[1:]
        rel = posixpath.normpath("/" + rel.lstrip("/"))
        full = os.path.join(self.root, rel.lstrip("/"))
        real = os.path.realpath(full)
        if real != self.root and not real.startswith(self.root.rstrip("/") + "/"):
            raise OpError("PERMISSION_DENIED", f"Path not allowed: {path}")
        return full

    def op(
        self,
        op: str,
        path: str,
        abort: Optional[Callable[[], None]] = None,
        data: Optional[bytes] = None,
        **args: Any,
    ) -> Any:
        if op in WRITE_OPS and not self.writable:
            raise OpError("PERMISSION_DENIED", f"Collection is read-only: {path}")
        return run_file_op(self.fs_path(path), op, args, data)


class GcpBackend(Backend):
    """An endpoint served by a connected GCP: every operation goes through :class:`GcpHub`."""

    def __init__(self, endpoint_id: str, hub: GcpHub, timeout: Optional[float] = None) -> None:
        super().__init__(endpoint_id)
        self.hub = hub
        self.timeout = timeout

    def op(
        self,
        op: str,
        path: str,
        abort: Optional[Callable[[], None]] = None,
        data: Optional[bytes] = None,
        **args: Any,
    ) -> Any:
        result, payload = self.hub.call(
            self.endpoint_id, op, {"path": path, **args}, data, self.timeout, abort
        )
        if op == "read":
            return payload or b""
        return result.get("result")


# --------------------------------------------------------------------------- transfer engine


class _Stop(Exception):
    """The service is shutting down: leave the task ACTIVE for the next run."""


class _Finished(Exception):
    """The task reached a final state elsewhere (canceled): just return."""


class _Fatal(Exception):
    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


class TransferEngine:
    """Runs transfer tasks: one thread per ACTIVE task, resumable from the persisted plan.

    A task is a plan (files with per-file byte offsets, directories) built from its items,
    then chunk copies ``source.read`` -> ``destination.write``. Whenever an endpoint's GCP
    is away the thread records ``GC_NOT_CONNECTED`` once per outage and waits; progress is
    only advanced after the destination acknowledged a chunk, so resuming re-sends at most
    one chunk. The deadline turns a stalled task into FAILED (``EXPIRED``).
    """

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.threads: dict[str, threading.Thread] = {}
        self.stopping = threading.Event()

    def kick(self, task_id: str) -> None:
        with self.emu.lock:
            thread = self.threads.get(task_id)
            if thread is not None and thread.is_alive():
                return
            thread = threading.Thread(
                target=self._run, args=(task_id,), name=f"task-{task_id[:8]}", daemon=True
            )
            self.threads[task_id] = thread
        thread.start()

    def resume_all(self) -> None:
        with self.emu.lock:
            ids = [
                t["task_id"]
                for t in self.emu.state["tasks"].values()
                if t["status"] in ("ACTIVE", "INACTIVE")
            ]
        for task_id in ids:
            self.kick(task_id)

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        end = time.monotonic() + timeout
        for thread in list(self.threads.values()):
            thread.join(max(0.0, end - time.monotonic()))

    # ---- helpers

    def _task(self, task_id: str) -> JSONDict:
        return cast(JSONDict, self.emu.state["tasks"][task_id])

    def _check(self, task_id: str) -> None:
        """Raise if the task must stop now; block while it is INACTIVE (paused by admin)."""
        while True:
            if self.stopping.is_set():
                raise _Stop
            with self.emu.lock:
                task = self._task(task_id)
                if task["status"] not in ("ACTIVE", "INACTIVE"):
                    raise _Finished
                if time.time() >= task["_deadline_ts"]:
                    raise _Fatal("EXPIRED", "The task deadline was reached before completion")
                if not task.get("_paused"):
                    if task["status"] == "INACTIVE":
                        task["status"] = "ACTIVE"
                        self.emu.save()
                    return
                if task["status"] != "INACTIVE":
                    task["status"] = "INACTIVE"
                    task["nice_status"] = "PAUSED_BY_ADMIN"
                    task["is_ok"] = False
                    self.emu.save()
            time.sleep(0.1)

    def _event(self, task: JSONDict, code: str, is_error: bool, details: str) -> None:
        task["_events"].append(
            {
                "DATA_TYPE": "event",
                "code": code,
                "description": TASK_EVENT_TEXT.get(code, code.lower().replace("_", " ")),
                "details": details,
                "is_error": is_error,
                "time": iso(time.time()),
            }
        )
        if is_error:
            task["faults"] += 1

    def _backend(self, endpoint_id: str) -> Backend:
        with self.emu.lock:
            endpoint = self.emu.state["endpoints"].get(endpoint_id)
            if endpoint is None:
                raise _Fatal("ENDPOINT_NOT_FOUND", f"Endpoint {endpoint_id} no longer exists")
            if endpoint["_kind"] == "served":
                return ServedBackend(
                    endpoint_id, endpoint["_root"], endpoint.get("_writable", True)
                )
            return GcpBackend(endpoint_id, self.emu.hub)

    def _op(
        self,
        task_id: str,
        role: str,
        op: str,
        path: str,
        data: Optional[bytes] = None,
        **args: Any,
    ) -> Any:
        """One file operation on the task's ``source`` or ``destination``, waiting out outages.

        Transient failures (I/O errors) are retried with back-off like Transfer does; the
        outage bookkeeping (one GC_NOT_CONNECTED event per outage, nice_status) lives here.
        """
        delay = 0.2
        while True:
            self._check(task_id)
            with self.emu.lock:
                endpoint_id = self._task(task_id)[f"{role}_endpoint_id"]
            backend = self._backend(endpoint_id)
            try:
                result = backend.op(op, path, lambda: self._check(task_id), data, **args)
            except Disconnected as exc:
                self._note_outage(task_id, endpoint_id, exc.reason)
                time.sleep(0.1)
                continue
            except OpError as exc:
                if exc.code in FATAL_OP_CODES:
                    raise
                with self.emu.lock:
                    task = self._task(task_id)
                    self._event(task, exc.code, True, f"{role} {path}: {exc.message}")
                    task["nice_status"] = exc.code
                    task["is_ok"] = False
                    self.emu.save()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._clear_outage(task_id)
            return result

    def _note_outage(self, task_id: str, endpoint_id: str, reason: str) -> None:
        with self.emu.lock:
            task = self._task(task_id)
            if task.get("_outage") == endpoint_id:
                return
            task["_outage"] = endpoint_id
            endpoint = self.emu.state["endpoints"].get(endpoint_id, {})
            name = endpoint.get("display_name") or endpoint_id
            paused = reason == "paused"
            code = "GC_PAUSED" if paused else "GC_NOT_CONNECTED"
            self._event(
                task,
                code,
                True,
                f"The Globus Connect Personal endpoint '{name}' ({endpoint_id}) is "
                f"{'paused' if paused else 'not currently connected to Globus'}",
            )
            task["nice_status"] = code
            task["nice_status_short_description"] = TASK_EVENT_TEXT[code]
            task["nice_status_details"] = f"{name} ({endpoint_id}): {reason}"
            task["is_ok"] = False
            self.emu.save()

    def _clear_outage(self, task_id: str) -> None:
        with self.emu.lock:
            task = self._task(task_id)
            if task.get("_outage") is None and task["nice_status"] == "OK":
                return
            task["_outage"] = None
            task["nice_status"] = "OK"
            task["nice_status_short_description"] = "OK"
            task["nice_status_details"] = None
            task["is_ok"] = True

    # ---- the task itself

    def _run(self, task_id: str) -> None:
        try:
            self._execute(task_id)
        except (_Stop, _Finished):
            return
        except _Fatal as exc:
            self._finish(task_id, "FAILED", exc.code, exc.description)
        except OpError as exc:
            self._finish(task_id, "FAILED", exc.code, exc.message)
        except Exception as exc:  # a bug: fail the task visibly rather than hang
            self._finish(task_id, "FAILED", "INTERNAL_ERROR", repr(exc))

    def _finish(self, task_id: str, status: str, code: Optional[str], description: str) -> None:
        with self.emu.lock:
            task = self._task(task_id)
            if task["status"] not in ("ACTIVE", "INACTIVE"):
                return
            now = time.time()
            task["status"] = status
            task["completion_time"] = iso(now)
            task["_completed_ts"] = now
            task["nice_status"] = None
            task["nice_status_short_description"] = None
            task["nice_status_details"] = None
            task["nice_status_expires_in"] = None
            task["is_ok"] = None
            task["subtasks_pending"] = 0
            if status == "SUCCEEDED":
                self._event(task, "SUCCEEDED", False, "The task completed successfully")
            else:
                task["fatal_error"] = {"code": code, "description": description}
                if code == "EXPIRED":
                    task["subtasks_expired"] = task["subtasks_total"] - task["subtasks_succeeded"]
                else:
                    task["subtasks_failed"] = 1
                self._event(task, code or "FAILED", True, description)
            elapsed = max(1.0, now - task["_request_ts"])
            task["effective_bytes_per_second"] = int(task["bytes_transferred"] / elapsed)
            self.emu.save()

    def _execute(self, task_id: str) -> None:
        self._check(task_id)
        with self.emu.lock:
            task = self._task(task_id)
            if task["nice_status"] == "Queued":
                task["nice_status"] = "OK"
                task["nice_status_short_description"] = "OK"
                task["is_ok"] = True
                self.emu.save()
            built = task["_plan"] is not None
        if not built:
            self._build_plan(task_id)
        with self.emu.lock:
            plan = self._task(task_id)["_plan"]
            dirs = list(plan["dirs"])
            count = len(plan["files"])
        for directory in dirs:
            self._op(task_id, "destination", "mkdir", directory)
        for index in range(count):
            self._copy_file(task_id, index)
        self._finish(task_id, "SUCCEEDED", None, "")

    def _build_plan(self, task_id: str) -> None:
        with self.emu.lock:
            task = self._task(task_id)
            items = [dict(i) for i in task["_items"]]
            skip_errors = bool(task["skip_source_errors"])
        files: list[JSONDict] = []
        dirs: list[str] = []
        symlinks = 0
        skipped = 0

        def walk(src: str, dst: str) -> None:
            nonlocal symlinks
            dirs.append(dst)
            for entry in self._op(task_id, "source", "list", src):
                child_src = posixpath.join(src, entry["name"])
                child_dst = posixpath.join(dst, entry["name"])
                if entry["type"] == "dir":
                    walk(child_src, child_dst)
                elif entry["type"] == "file":
                    files.append(self._plan_file(child_src, child_dst, entry))
                else:
                    symlinks += 1  # recursive_symlinks "ignore"

        for item in items:
            try:
                info = self._op(task_id, "source", "stat", item["source_path"])
            except OpError as exc:
                if skip_errors and exc.code in ("FILE_NOT_FOUND", "PERMISSION_DENIED"):
                    skipped += 1
                    with self.emu.lock:
                        self._event(
                            self._task(task_id),
                            "FILE_SKIPPED",
                            False,
                            f"{item['source_path']}: {exc.message}",
                        )
                    continue
                raise
            if info["type"] == "dir":
                if not item.get("recursive"):
                    raise _Fatal(
                        "NOT_A_FILE",
                        f"{item['source_path']} is a directory; use recursive=True",
                    )
                walk(item["source_path"].rstrip("/") or "/", item["destination_path"])
            elif info["type"] in ("file", "link"):
                files.append(self._plan_file(item["source_path"], item["destination_path"], info))
            else:
                symlinks += 1
        with self.emu.lock:
            task = self._task(task_id)
            task["_plan"] = {"files": files, "dirs": dirs}
            task["files"] = len(files)
            task["directories"] = len(dirs)
            task["symlinks"] = symlinks
            task["files_skipped"] += skipped
            task["subtasks_total"] = len(files) + len(dirs)
            task["subtasks_pending"] = len(files) + len(dirs)
            task["subtasks_skipped_errors"] = skipped
            self.emu.save()

    @staticmethod
    def _plan_file(src: str, dst: str, info: Mapping[str, Any]) -> JSONDict:
        return {
            "src": src,
            "dst": dst,
            "size": int(info["size"]),
            "mtime": float(info["mtime"]),
            "offset": 0,
            "state": "pending",
        }

    def _skip_by_sync(self, task_id: str, entry: JSONDict, level: int) -> bool:
        try:
            dst = self._op(task_id, "destination", "stat", entry["dst"])
        except OpError as exc:
            if exc.code == "FILE_NOT_FOUND":
                return False
            raise
        if dst["type"] != "file":
            return False
        if level == 0:
            return True
        if dst["size"] != entry["size"]:
            return False
        if level == 1:
            return True
        if level == 2:
            return bool(float(dst["mtime"]) >= entry["mtime"])
        src_sum = self._op(task_id, "source", "checksum", entry["src"], algorithm="sha256")
        dst_sum = self._op(task_id, "destination", "checksum", entry["dst"], algorithm="sha256")
        return bool(src_sum == dst_sum)

    def _copy_file(self, task_id: str, index: int) -> None:
        with self.emu.lock:
            task = self._task(task_id)
            entry = task["_plan"]["files"][index]
            if entry["state"] != "pending":
                return
            sync_level = task["sync_level"]
            verify = bool(task["verify_checksum"])
            preserve = bool(task["preserve_timestamp"])
            chunk = self.emu.chunk_size
        if (
            entry["offset"] == 0
            and sync_level is not None
            and self._skip_by_sync(task_id, entry, int(sync_level))
        ):
            with self.emu.lock:
                entry["state"] = "skipped"
                task["files_skipped"] += 1
                task["subtasks_pending"] -= 1
                task["subtasks_succeeded"] += 1
                self.emu.save()
            return
        while True:
            while entry["offset"] < entry["size"] or (entry["size"] == 0 and entry["offset"] == 0):
                offset = entry["offset"]
                length = min(chunk, entry["size"] - offset)
                data = (
                    self._op(task_id, "source", "read", entry["src"], offset=offset, length=length)
                    if length
                    else b""
                )
                if length and not data:
                    with self.emu.lock:
                        entry["size"] = offset  # the source shrank: copy what exists
                    break
                self._op(
                    task_id,
                    "destination",
                    "write",
                    entry["dst"],
                    data=data,
                    offset=offset,
                    length=len(data),
                    truncate=offset == 0,
                )
                with self.emu.lock:
                    entry["offset"] = offset + len(data)
                    task["bytes_transferred"] += len(data)
                    elapsed = max(1.0, time.time() - task["_request_ts"])
                    task["effective_bytes_per_second"] = int(task["bytes_transferred"] / elapsed)
                    self.emu.save()
                if entry["size"] == 0:
                    break
            if not verify:
                break
            algorithm = self.emu.checksum_algorithm
            src_sum = self._op(task_id, "source", "checksum", entry["src"], algorithm=algorithm)
            dst_sum = self._op(
                task_id, "destination", "checksum", entry["dst"], algorithm=algorithm
            )
            with self.emu.lock:
                task["bytes_checksummed"] += entry["size"]
                if src_sum == dst_sum:
                    break
                self._event(
                    task,
                    "VERIFY_CHECKSUM",
                    True,
                    f"{entry['dst']}: {algorithm} {dst_sum} does not match source {src_sum}; "
                    "retransferring",
                )
                entry["offset"] = 0
                self.emu.save()
        if preserve:
            self._op(task_id, "destination", "utime", entry["dst"], mtime=entry["mtime"])
        with self.emu.lock:
            entry["state"] = "done"
            task["files_transferred"] += 1
            task["subtasks_pending"] -= 1
            task["subtasks_succeeded"] += 1
            task["_done_paths"].append([entry["src"], entry["dst"]])
            self.emu.save()


# --------------------------------------------------------------------------- faults


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


# --------------------------------------------------------------------------- HTTP plumbing


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


# --------------------------------------------------------------------------- the emulator


class Emulator:
    """All state and the route handlers; :class:`EmulatorServer` puts HTTP in front of it.

    State is plain JSON-able dicts guarded by one lock (simplicity over throughput: the
    tests' request rates are tiny), saved atomically to ``state_file`` after each change
    so a restarted service keeps identities, tokens, endpoints and tasks (ACTIVE tasks
    resume; GCP sessions do not survive a restart: GCPs reconnect).
    """

    def __init__(
        self,
        state_file: Optional[str] = None,
        gcp_timeout: float = 10.0,
        poll_wait: float = 5.0,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        chunk_size: int = DEFAULT_CHUNK,
        setup_key_lifetime: float = 24 * 3600.0,
        default_deadline: float = DEFAULT_DEADLINE,
        checksum_algorithm: str = "sha256",
        verbose: bool = False,
    ) -> None:
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.state_file = state_file
        self.token_lifetime = token_lifetime
        self.chunk_size = chunk_size
        self.setup_key_lifetime = setup_key_lifetime
        self.default_deadline = default_deadline
        self.checksum_algorithm = checksum_algorithm
        self.verbose = verbose
        self.base_url = "http://127.0.0.1/"
        self.faults: list[Fault] = []
        self.route_hits: dict[str, int] = {}  # requests per route name, for tests
        self.state: JSONDict = self._empty_state()
        self._load()
        self.hub = GcpHub(self, gcp_timeout, poll_wait)
        self.engine = TransferEngine(self)
        self._rsa: Optional[RsaKey] = None
        self.routes = self._routes()

    # ---- persistence

    @staticmethod
    def _empty_state() -> JSONDict:
        return {
            "version": 1,
            "identities": {},
            "refresh_tokens": {},
            "access_tokens": {},
            "auth_codes": {},
            "endpoints": {},
            "setup_keys": {},
            "tasks": {},
            "submission_ids": {},
            "login_identity": None,
            "rsa": None,
        }

    def _load(self) -> None:
        if not self.state_file or not os.path.exists(self.state_file):
            return
        with open(self.state_file, encoding="utf-8") as handle:
            loaded = json.load(handle)
        state = self._empty_state()
        state.update(loaded)
        self.state = state

    def save(self) -> None:
        """Write the state file atomically (tmp + rename); callers hold the lock."""
        if not self.state_file:
            return
        with self.lock:
            tmp = f"{self.state_file}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(self.state, handle)
            os.replace(tmp, self.state_file)

    # ---- identities and tokens

    def identity(
        self, username: str, name: Optional[str] = None, email: Optional[str] = None
    ) -> JSONDict:
        """Get or create the identity ``username`` (an id is minted once and kept)."""
        with self.lock:
            for ident in self.state["identities"].values():
                if ident["username"] == username:
                    return cast(JSONDict, ident)
            ident_id = str(uuid.uuid4())
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
                "identity_type": "login",
            }
            self.state["identities"][ident_id] = ident
            self.save()
            return ident

    def _identity_by(
        self, username: Optional[str] = None, identity_id: Optional[str] = None
    ) -> JSONDict:
        if identity_id:
            ident = self.state["identities"].get(identity_id)
            if ident is None:
                raise ApiError(404, "NotFound", f"No identity {identity_id}")
            return cast(JSONDict, ident)
        if not username:
            raise ApiError(400, "BadRequest", "username or identity_id is required")
        return self.identity(username)

    def _token_record(
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
        lifetime = self.token_lifetime if lifetime is None else lifetime
        access = "AT" + secrets.token_urlsafe(30)
        scope = " ".join(scopes)
        self.state["access_tokens"][access] = {
            "identity_id": identity_id,
            "resource_server": resource_server,
            "scope": scope,
            "client_id": client_id,
            "expires_at": time.time() + lifetime,
            "issued_at": time.time(),
        }
        if with_refresh and refresh_token is None:
            refresh_token = "RT" + secrets.token_urlsafe(40)
            self.state["refresh_tokens"][refresh_token] = {
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
        with self.lock:
            docs = [
                self._token_record(
                    identity_id, rs, by_rs[rs], client_id, lifetime, with_refresh=with_refresh
                )
                for rs in order
            ]
            top = docs[0]
            if top["resource_server"] == AUTH_RS and "openid" in by_rs[AUTH_RS]:
                top["id_token"] = self._id_token(identity_id, client_id, nonce)
            if state is not None:
                top["state"] = state
            top["other_tokens"] = docs[1:]
            for doc in docs[1:]:
                doc["other_tokens"] = []
            self.save()
        return top

    def _rsa_key(self) -> RsaKey:
        with self.lock:
            if self._rsa is None:
                if self.state.get("rsa"):
                    self._rsa = RsaKey.from_json(self.state["rsa"])
                else:
                    self._rsa = RsaKey.generate()
                    self.state["rsa"] = self._rsa.to_json()
                    self.save()
            return self._rsa

    def _issuer(self) -> str:
        return self.base_url.rstrip("/")

    def _id_token(self, identity_id: str, client_id: Optional[str], nonce: Optional[str]) -> str:
        ident = self.state["identities"][identity_id]
        now = int(time.time())
        claims = {
            "sub": identity_id,
            "iss": self._issuer(),
            "aud": client_id or "emulator-client",
            "iat": now,
            "nbf": now,
            "exp": now + self.token_lifetime,
            "at_hash": b64url(secrets.token_bytes(16)),
            "preferred_username": ident["username"],
            "name": ident["name"],
            "email": ident["email"],
            "organization": ident["organization"],
            "identity_provider": ident["identity_provider"],
            "identity_provider_display_name": ident["identity_provider_display_name"],
            "identity_set": [self._userinfo_identity(ident)],
            "last_authentication": now,
        }
        if nonce:
            claims["nonce"] = nonce
        return self._rsa_key().jwt(claims)

    @staticmethod
    def _userinfo_identity(ident: Mapping[str, Any]) -> JSONDict:
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

    def _bearer(self, req: Request, resource_server: str) -> JSONDict:
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
        with self.lock:
            record = self.state["access_tokens"].get(token.strip())
            if (
                record is None
                or record["expires_at"] <= time.time()
                or record["resource_server"] != resource_server
            ):
                raise failed
            return cast(JSONDict, self.state["identities"][record["identity_id"]])

    # ---- endpoints

    def _new_endpoint(
        self, owner: JSONDict, kind: str, display_name: str, fields: Mapping[str, Any]
    ) -> JSONDict:
        endpoint_id = str(uuid.uuid4())
        doc = endpoint_template()
        username = b32_username(owner["id"])
        doc.update(
            {
                "id": endpoint_id,
                "display_name": display_name,
                "name": endpoint_id,
                "canonical_name": f"{username}#{endpoint_id}",
                "username": username,
                "owner_id": owner["id"],
                "owner_string": owner["username"],
            }
        )
        for key, value in fields.items():
            if key in ENDPOINT_WRITABLE:
                doc[key] = value
        doc["_kind"] = kind
        doc["_created"] = time.time()
        return doc

    def create_collection(
        self,
        root: str,
        display_name: Optional[str] = None,
        owner: Optional[str] = None,
        public: bool = True,
        writable: bool = True,
        create: bool = False,
    ) -> JSONDict:
        """A served collection: the service itself reads/writes ``root``."""
        if create:
            os.makedirs(root, exist_ok=True)
        if not os.path.isdir(root):
            raise ApiError(400, "BadRequest", f"{root} is not a directory")
        ident = self.identity(owner or ADMIN_IDENTITY)
        with self.lock:
            doc = self._new_endpoint(ident, "served", display_name or f"served {root}", {})
            doc.update(
                {
                    "entity_type": "GCSv5_mapped_collection",
                    "public": public,
                    "activated": True,
                    "default_directory": "/",
                    "gcs_version": "5.4.0",
                    "_root": os.path.abspath(root),
                    "_writable": writable,
                }
            )
            self.state["endpoints"][doc["id"]] = doc
            self.save()
            return self._endpoint_view(doc)

    def _endpoint_view(self, doc: Mapping[str, Any]) -> JSONDict:
        view = {k: v for k, v in doc.items() if not k.startswith("_")}
        if doc["_kind"] == "gcp":
            connected = self.hub.connected(doc["id"])
            paused = self.hub.paused(doc["id"])
            view["gcp_connected"] = connected
            view["gcp_paused"] = paused
            view["DATA"] = [
                {
                    "DATA_TYPE": "server",
                    "id": int(doc["id"][:5], 16),
                    "hostname": None,
                    "uri": None,
                    "port": None,
                    "scheme": None,
                    "subject": ("/C=US/O=Globus Consortium/OU=Globus Connect User/CN=" + doc["id"]),
                    "is_connected": connected,
                    "is_paused": paused,
                    "incoming_data_port_start": None,
                    "incoming_data_port_end": None,
                    "outgoing_data_port_start": None,
                    "outgoing_data_port_end": None,
                }
            ]
        else:
            view["DATA"] = [
                {
                    "DATA_TYPE": "server",
                    "id": int(doc["id"][:5], 16),
                    "hostname": LISTEN_HOST,
                    "uri": f"gsiftp://{LISTEN_HOST}:2811",
                    "port": 2811,
                    "scheme": "gsiftp",
                    "subject": None,
                    "is_connected": True,
                    "is_paused": False,
                }
            ]
        with self.lock:
            view["in_use"] = any(
                t["status"] == "ACTIVE"
                and doc["id"] in (t["source_endpoint_id"], t["destination_endpoint_id"])
                for t in self.state["tasks"].values()
            )
        return view

    def _endpoint(self, endpoint_id: str) -> JSONDict:
        endpoint = self.state["endpoints"].get(endpoint_id)
        if endpoint is None:
            raise ApiError(
                404, "ClientError.NotFound", f"No such endpoint or collection '{endpoint_id}'"
            )
        return cast(JSONDict, endpoint)

    def _visible_endpoint(
        self, ident: JSONDict, endpoint_id: str, owner_only: bool = False
    ) -> JSONDict:
        """The endpoint if ``ident`` may use it: GCP endpoints are their owner's only."""
        endpoint = self._endpoint(endpoint_id)
        if endpoint["owner_id"] != ident["id"] and (owner_only or not endpoint.get("public")):
            raise ApiError(
                403,
                "ClientError.PermissionDenied",
                f"You do not have permission to access endpoint '{endpoint_id}'",
            )
        return endpoint

    def backend(self, endpoint: Mapping[str, Any], timeout: float = 15.0) -> Backend:
        if endpoint["_kind"] == "served":
            return ServedBackend(endpoint["id"], endpoint["_root"], endpoint.get("_writable", True))
        return GcpBackend(endpoint["id"], self.hub, timeout)

    # ---- tasks

    def _task_view(self, task: Mapping[str, Any]) -> JSONDict:
        view = {k: v for k, v in task.items() if not k.startswith("_")}
        if task["status"] == "ACTIVE" and task.get("_deadline_ts"):
            view["nice_status_expires_in"] = max(0, int(task["_deadline_ts"] - time.time()))
        return view

    def _owned_task(self, ident: JSONDict, task_id: str) -> JSONDict:
        task = self.state["tasks"].get(task_id)
        if task is None or task["owner_id"] != ident["id"]:
            raise ApiError(404, "ClientError.NotFound", f"Task {task_id} not found")
        return cast(JSONDict, task)

    # ---- routes

    def _routes(self) -> list[Route]:
        """The route table.

        Emulator-only admin routes (JSON in, JSON out, no auth; localhost only):

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
        * ``GET /_emulator/gcp``: GCP sessions; the GCP routes: see :class:`GcpHub`.
        """
        table: list[tuple[str, str, str, str, Handler]] = [
            # auth
            ("POST", r"/v2/oauth2/token", "token", "auth", self.r_token),
            ("POST", r"/v2/oauth2/token/introspect", "introspect", "auth", self.r_introspect),
            ("POST", r"/v2/oauth2/token/revoke", "revoke", "auth", self.r_revoke),
            ("GET", r"/v2/oauth2/authorize", "authorize", "auth", self.r_authorize),
            ("GET", r"/v2/oauth2/userinfo", "userinfo", "auth", self.r_userinfo),
            ("POST", r"/v2/oauth2/userinfo", "userinfo", "auth", self.r_userinfo),
            ("GET", r"/v2/api/identities", "identities", "auth", self.r_identities),
            (
                "GET",
                r"/\.well-known/openid-configuration",
                "openid_configuration",
                "auth",
                self.r_openid_configuration,
            ),
            ("GET", r"/jwk\.json", "jwk", "auth", self.r_jwk),
            # transfer
            ("POST", r"/v0\.10/endpoint", "endpoint_create", "transfer", self.r_endpoint_create),
            (
                "GET",
                r"/v0\.10/endpoint/(?P<endpoint_id>[^/]+)",
                "endpoint_get",
                "transfer",
                self.r_endpoint_get,
            ),
            (
                "PUT",
                r"/v0\.10/endpoint/(?P<endpoint_id>[^/]+)",
                "endpoint_update",
                "transfer",
                self.r_endpoint_update,
            ),
            (
                "DELETE",
                r"/v0\.10/endpoint/(?P<endpoint_id>[^/]+)",
                "endpoint_delete",
                "transfer",
                self.r_endpoint_delete,
            ),
            (
                "GET",
                r"/v0\.10/endpoint_search",
                "endpoint_search",
                "transfer",
                self.r_endpoint_search,
            ),
            ("GET", r"/v0\.10/submission_id", "submission_id", "transfer", self.r_submission_id),
            ("POST", r"/v0\.10/transfer", "transfer", "transfer", self.r_transfer),
            ("GET", r"/v0\.10/task_list", "task_list", "transfer", self.r_task_list),
            ("GET", r"/v0\.10/task/(?P<task_id>[^/]+)", "task_get", "transfer", self.r_task_get),
            (
                "POST",
                r"/v0\.10/task/(?P<task_id>[^/]+)/cancel",
                "task_cancel",
                "transfer",
                self.r_task_cancel,
            ),
            (
                "GET",
                r"/v0\.10/task/(?P<task_id>[^/]+)/event_list",
                "task_event_list",
                "transfer",
                self.r_task_event_list,
            ),
            (
                "GET",
                r"/v0\.10/task/(?P<task_id>[^/]+)/successful_transfers",
                "task_successful_transfers",
                "transfer",
                self.r_task_successful_transfers,
            ),
            (
                "GET",
                r"/v0\.10/operation/endpoint/(?P<endpoint_id>[^/]+)/ls",
                "operation_ls",
                "transfer",
                self.r_operation_ls,
            ),
            (
                "GET",
                r"/v0\.10/operation/endpoint/(?P<endpoint_id>[^/]+)/stat",
                "operation_stat",
                "transfer",
                self.r_operation_stat,
            ),
            (
                "POST",
                r"/v0\.10/operation/endpoint/(?P<endpoint_id>[^/]+)/mkdir",
                "operation_mkdir",
                "transfer",
                self.r_operation_mkdir,
            ),
            # emulator: admin
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
            # emulator: GCP link
            ("POST", r"/_emulator/gcp/redeem", "gcp_redeem", "emulator", self.r_gcp_redeem),
            (
                "POST",
                r"/_emulator/gcp/(?P<endpoint_id>[^/]+)/connect",
                "gcp_connect",
                "emulator",
                self.r_gcp_connect,
            ),
            (
                "POST",
                r"/_emulator/gcp/(?P<endpoint_id>[^/]+)/heartbeat",
                "gcp_heartbeat",
                "emulator",
                self.r_gcp_heartbeat,
            ),
            (
                "POST",
                r"/_emulator/gcp/(?P<endpoint_id>[^/]+)/disconnect",
                "gcp_disconnect",
                "emulator",
                self.r_gcp_disconnect,
            ),
            (
                "POST",
                r"/_emulator/gcp/(?P<endpoint_id>[^/]+)/poll",
                "gcp_poll",
                "emulator",
                self.r_gcp_poll,
            ),
            (
                "GET",
                r"/_emulator/gcp/(?P<endpoint_id>[^/]+)/work/(?P<work_id>[^/]+)/data",
                "gcp_work_data",
                "emulator",
                self.r_gcp_work_data,
            ),
            (
                "POST",
                r"/_emulator/gcp/(?P<endpoint_id>[^/]+)/work/(?P<work_id>[^/]+)",
                "gcp_work_result",
                "emulator",
                self.r_gcp_work_result,
            ),
        ]
        return [
            Route(method, re.compile(pattern + r"/?\Z"), name, family, handler)
            for method, pattern, name, family, handler in table
        ]

    def match(self, method: str, path: str) -> tuple[Optional[Route], dict[str, str], bool]:
        """The route for ``method path``; the bool says whether the path exists at all."""
        path_known = False
        for route in self.routes:
            found = route.pattern.match(path)
            if found:
                path_known = True
                if route.method == method:
                    return route, found.groupdict(), True
        return None, {}, path_known

    def take_fault(self, name: str, method: str, path: str) -> Optional[Fault]:
        with self.lock:
            self.route_hits[name] = self.route_hits.get(name, 0) + 1
        if name.startswith("admin_faults"):
            return None
        with self.lock:
            for fault in self.faults:
                if fault.count > 0 and fault.matches(name, method, path):
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # ---- auth handlers

    def r_token(self, req: Request) -> Response:
        form = req.form()
        client_id = form.get("client_id") or _basic_client_id(req)
        grant_type = form.get("grant_type", "")
        if grant_type == "refresh_token":
            with self.lock:
                record = self.state["refresh_tokens"].get(form.get("refresh_token", ""))
                if record is None or (
                    record.get("client_id") and client_id and record["client_id"] != client_id
                ):
                    raise ApiError(400, "invalid_grant", "Invalid refresh token")
                doc = self._token_record(
                    record["identity_id"],
                    record["resource_server"],
                    record["scopes"],
                    record.get("client_id"),
                    refresh_token=form["refresh_token"],
                )
                doc["other_tokens"] = []
                self.save()
            return json_response(200, doc)
        if grant_type == "authorization_code":
            with self.lock:
                code = self.state["auth_codes"].pop(form.get("code", ""), None)
                self.save()
            if code is None or code["expires_at"] < time.time():
                raise ApiError(400, "invalid_grant", "Invalid or expired authorization code")
            if code.get("client_id") and client_id and code["client_id"] != client_id:
                raise ApiError(400, "invalid_grant", "Authorization code issued to another client")
            if code.get("redirect_uri") and form.get("redirect_uri") != code["redirect_uri"]:
                raise ApiError(400, "invalid_grant", "redirect_uri does not match")
            challenge = code.get("code_challenge")
            if challenge:
                verifier = form.get("code_verifier", "")
                computed = b64url(hashlib.sha256(verifier.encode("ascii")).digest())
                if code.get("code_challenge_method", "S256") == "plain":
                    computed = verifier
                if computed != challenge:
                    raise ApiError(400, "invalid_grant", "PKCE verification failed")
            doc = self.grant(
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
                raise ApiError(401, "invalid_client", "Client authentication required")
            ident = self.identity(f"{client_id}@clients.auth.globus.org", name=client_id)
            scopes = split_scopes(form.get("scope", TRANSFER_SCOPE))
            return json_response(
                200, self.grant(ident["id"], scopes, client_id, with_refresh=False)
            )
        raise ApiError(400, "unsupported_grant_type", f"Unsupported grant_type {grant_type!r}")

    def r_introspect(self, req: Request) -> Response:
        form = req.form()
        token = form.get("token", "")
        with self.lock:
            record = self.state["access_tokens"].get(token)
            if record is None or record["expires_at"] <= time.time():
                return json_response(200, {"active": False})
            ident = self.state["identities"][record["identity_id"]]
            client_id = record.get("client_id") or _basic_client_id(req) or "emulator-client"
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
                "iss": self._issuer(),
            }
        if "identity_set" in form.get("include", ""):
            doc["identity_set"] = [ident["id"]]
        return json_response(200, doc)

    def r_revoke(self, req: Request) -> Response:
        token = req.form().get("token", "")
        with self.lock:
            self.state["access_tokens"].pop(token, None)
            record = self.state["refresh_tokens"].pop(token, None)
            if record is not None:  # revoking a refresh token kills its access tokens too
                for key, value in list(self.state["access_tokens"].items()):
                    if (value["identity_id"], value["resource_server"]) == (
                        record["identity_id"],
                        record["resource_server"],
                    ):
                        del self.state["access_tokens"][key]
            self.save()
        return json_response(200, {"active": False})

    def r_authorize(self, req: Request) -> Response:
        """Emulated consent: the identity set by ``POST /_emulator/login`` approves at once.

        The code is shown on a page (native apps' ``/v2/web/auth-code``) or sent to the
        ``redirect_uri`` with a 302, as Globus Auth does.
        """
        with self.lock:
            identity_id = self.state.get("login_identity")
        if not identity_id:
            raise ApiError(
                400, "invalid_request", "No emulator login identity; POST /_emulator/login first"
            )
        redirect_uri = req.param("redirect_uri", AUTH_PAGE_REDIRECT) or AUTH_PAGE_REDIRECT
        code = secrets.token_urlsafe(24)
        with self.lock:
            self.state["auth_codes"][code] = {
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
            self.save()
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
        ident = self._bearer(req, AUTH_RS)
        doc = self._userinfo_identity(ident)
        doc.update(
            {
                "preferred_username": ident["username"],
                "identity_set": [self._userinfo_identity(ident)],
            }
        )
        doc.pop("username", None)
        return json_response(200, doc)

    def r_identities(self, req: Request) -> Response:
        self._bearer(req, AUTH_RS)
        usernames = {u for v in req.query.get("usernames", []) for u in v.split(",") if u}
        ids = {i for v in req.query.get("ids", []) for i in v.split(",") if i}
        found = []
        with self.lock:
            for ident in self.state["identities"].values():
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
        base = self.base_url.rstrip("/")
        return json_response(
            200,
            {
                "issuer": self._issuer(),
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
        return json_response(200, {"keys": [self._rsa_key().jwk()]})

    # ---- transfer: endpoints

    def r_endpoint_create(self, req: Request) -> Response:
        ident = self._bearer(req, TRANSFER_RS)
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
        with self.lock:
            doc = self._new_endpoint(ident, "gcp", display_name, body)
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
            self.state["endpoints"][doc["id"]] = doc
            self.state["setup_keys"][key] = {
                "endpoint_id": doc["id"],
                "expires_at": time.time() + self.setup_key_lifetime,
            }
            self.save()
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
        ident = self._bearer(req, TRANSFER_RS)
        with self.lock:
            endpoint = self._visible_endpoint(ident, endpoint_id)
            view = self._endpoint_view(endpoint)
            # The setup key shows to the owner until redeemed (as with globus-cli's
            # "endpoint show"); a redeemed key is gone.
            if (
                endpoint["owner_id"] == ident["id"]
                and endpoint.get("_setup_key") in self.state["setup_keys"]
            ):
                view["globus_connect_setup_key"] = endpoint["_setup_key"]
        return json_response(200, view)

    def r_endpoint_update(self, req: Request, endpoint_id: str) -> Response:
        ident = self._bearer(req, TRANSFER_RS)
        body = req.json()
        with self.lock:
            endpoint = self._visible_endpoint(ident, endpoint_id, owner_only=True)
            for key, value in body.items():
                if key == "DATA_TYPE" or (key in endpoint and endpoint[key] == value):
                    continue
                if key not in ENDPOINT_WRITABLE:
                    raise ApiError(
                        400, "ClientError.BadRequest", f"Field '{key}' cannot be updated"
                    )
                endpoint[key] = value
            self.save()
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
        ident = self._bearer(req, TRANSFER_RS)
        with self.cond:
            endpoint = self._visible_endpoint(ident, endpoint_id, owner_only=True)
            del self.state["endpoints"][endpoint_id]
            self.state["setup_keys"].pop(endpoint.get("_setup_key", ""), None)
            session = self.hub.sessions.pop(endpoint_id, None)
            if session is not None:
                session.closed = True
                self.cond.notify_all()
            self.save()
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
        ident = self._bearer(req, TRANSFER_RS)
        scope = req.param("filter_scope", "all") or "all"
        fulltext = (req.param("filter_fulltext") or "").lower()
        owner_filter = req.param("filter_owner_id")
        entity_type = req.param("filter_entity_type")
        limit = _int_param(req, "limit", 25, 1, 100)
        offset = _int_param(req, "offset", 0, 0, 999)
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
        with self.lock:
            found = []
            endpoints = sorted(self.state["endpoints"].values(), key=lambda e: e["_created"])
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
                view = self._endpoint_view(endpoint)
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

    # ---- transfer: tasks

    def r_submission_id(self, req: Request) -> Response:
        ident = self._bearer(req, TRANSFER_RS)
        value = str(uuid.uuid4())
        with self.lock:
            self.state["submission_ids"][value] = {"identity_id": ident["id"], "task_id": None}
            self.save()
        return json_response(200, {"value": value})

    def r_transfer(self, req: Request) -> Response:
        ident = self._bearer(req, TRANSFER_RS)
        body = req.json()
        if body.get("DATA_TYPE") != "transfer":
            raise ApiError(400, "ClientError.BadRequest", "DATA_TYPE must be 'transfer'")
        submission_id = body.get("submission_id")
        if not isinstance(submission_id, str) or not submission_id:
            raise ApiError(400, "ClientError.BadRequest", "A submission_id is required")
        items = body.get("DATA") or []
        if not isinstance(items, list) or not items:
            raise ApiError(
                400,
                "ClientError.BadRequest.NoTransferItems",
                "A transfer requires at least one item",
            )
        for item in items:
            if not isinstance(item, dict) or item.get("DATA_TYPE") != "transfer_item":
                raise ApiError(
                    400, "ClientError.BadRequest", "Every item must have DATA_TYPE 'transfer_item'"
                )
            for key in ("source_path", "destination_path"):
                if not isinstance(item.get(key), str) or not item[key]:
                    raise ApiError(400, "ClientError.BadRequest", f"{key} is required")
        sync_level = body.get("sync_level")
        if sync_level is not None and sync_level not in (0, 1, 2, 3):
            raise ApiError(400, "ClientError.BadRequest", "sync_level must be 0, 1, 2 or 3")
        now = time.time()
        deadline_ts = now + self.default_deadline
        if body.get("deadline"):
            try:
                deadline_ts = parse_time(str(body["deadline"]))
            except ValueError:
                raise ApiError(400, "ClientError.BadRequest", "Invalid deadline") from None
        with self.lock:
            previous = self.state["submission_ids"].get(submission_id)
            if previous is not None and previous.get("task_id"):
                return json_response(
                    200,
                    self._transfer_result(
                        req,
                        "Duplicate",
                        f"A transfer with id '{submission_id}' was already submitted",
                        submission_id,
                        previous["task_id"],
                    ),
                )
            src = self._visible_endpoint(ident, str(body.get("source_endpoint")))
            dst = self._visible_endpoint(ident, str(body.get("destination_endpoint")))
            task_id = str(uuid.uuid4())
            task = self._new_task(task_id, ident, src, dst, body, items, now, deadline_ts)
            self.state["tasks"][task_id] = task
            self.state["submission_ids"][submission_id] = {
                "identity_id": ident["id"],
                "task_id": task_id,
            }
            self.save()
        self.engine.kick(task_id)
        return json_response(
            202,
            self._transfer_result(
                req,
                "Accepted",
                "The transfer has been accepted and a task has been created and queued "
                "for execution",
                submission_id,
                task_id,
            ),
        )

    @staticmethod
    def _transfer_result(
        req: Request, code: str, message: str, submission_id: str, task_id: str
    ) -> JSONDict:
        return {
            "DATA_TYPE": "transfer_result",
            "code": code,
            "message": message,
            "request_id": request_id(),
            "resource": req.path,
            "submission_id": submission_id,
            "task_id": task_id,
            "task_link": {
                "DATA_TYPE": "link",
                "href": f"/v0.10/task/{task_id}?format=json",
                "rel": "related",
                "resource": "task",
                "title": "related task",
            },
        }

    def _new_task(
        self,
        task_id: str,
        ident: JSONDict,
        src: JSONDict,
        dst: JSONDict,
        body: JSONDict,
        items: list[JSONDict],
        now: float,
        deadline_ts: float,
    ) -> JSONDict:
        def flag(name: str, default: bool = False) -> bool:
            value = body.get(name, default)
            return default if value is None else bool(value)

        return {
            "DATA_TYPE": "task",
            "task_id": task_id,
            "type": "TRANSFER",
            "status": "ACTIVE",
            "label": body.get("label"),
            "owner_id": ident["id"],
            "owner_string": ident["username"],
            "username": b32_username(ident["id"]),
            "command": "API 0.10",
            "request_time": iso(now),
            "completion_time": None,
            "deadline": iso(deadline_ts),
            "source_endpoint": src["canonical_name"],
            "source_endpoint_id": src["id"],
            "source_endpoint_display_name": src["display_name"],
            "destination_endpoint": dst["canonical_name"],
            "destination_endpoint_id": dst["id"],
            "destination_endpoint_display_name": dst["display_name"],
            "source_host_endpoint": None,
            "source_host_endpoint_id": None,
            "source_host_endpoint_display_name": None,
            "source_host_path": None,
            "destination_host_endpoint": None,
            "destination_host_endpoint_id": None,
            "destination_host_endpoint_display_name": None,
            "destination_host_path": None,
            "source_base_path": None,
            "destination_base_path": None,
            "source_local_user": body.get("source_local_user"),
            "destination_local_user": body.get("destination_local_user"),
            "sync_level": body.get("sync_level"),
            "verify_checksum": flag("verify_checksum"),
            "preserve_timestamp": flag("preserve_timestamp"),
            "encrypt_data": flag("encrypt_data"),
            "delete_destination_extra": flag("delete_destination_extra"),
            "skip_source_errors": flag("skip_source_errors"),
            "fail_on_quota_errors": flag("fail_on_quota_errors"),
            "recursive_symlinks": "ignore",
            "filter_rules": body.get("filter_rules"),
            "files": 0,
            "directories": 0,
            "symlinks": 0,
            "files_skipped": 0,
            "files_transferred": 0,
            "bytes_transferred": 0,
            "bytes_checksummed": 0,
            "effective_bytes_per_second": 0,
            "subtasks_total": len(items),
            "subtasks_pending": len(items),
            "subtasks_succeeded": 0,
            "subtasks_failed": 0,
            "subtasks_canceled": 0,
            "subtasks_expired": 0,
            "subtasks_retrying": 0,
            "subtasks_skipped_errors": 0,
            "faults": 0,
            "fatal_error": None,
            "is_ok": True,
            "is_paused": False,
            "nice_status": "Queued",
            "nice_status_short_description": "Queued",
            "nice_status_details": None,
            "nice_status_expires_in": None,
            "canceled_by_admin": None,
            "canceled_by_admin_message": None,
            "history_deleted": False,
            "_items": [
                {
                    "source_path": i["source_path"],
                    "destination_path": i["destination_path"],
                    "recursive": bool(i.get("recursive")),
                }
                for i in items
            ],
            "_plan": None,
            "_events": [],
            "_done_paths": [],
            "_request_ts": now,
            "_deadline_ts": deadline_ts,
            "_paused": False,
            "_outage": None,
        }

    def r_task_list(self, req: Request) -> Response:
        ident = self._bearer(req, TRANSFER_RS)
        limit = _int_param(req, "limit", 10, 1, 1000)
        offset = _int_param(req, "offset", 0, 0, 999)
        if offset + limit > 1000:
            raise ApiError(
                400, "ClientError.BadRequest", "offset + limit must be less than or equal to 1000"
            )
        filters = _parse_task_filter(req.param("filter"))
        orderby = req.param("orderby") or "request_time DESC"
        with self.lock:
            tasks = [t for t in self.state["tasks"].values() if t["owner_id"] == ident["id"]]
            tasks = [t for t in tasks if _task_matches(t, filters)]
            for clause in reversed([c.strip() for c in orderby.split(",") if c.strip()]):
                field_name, _, direction = clause.partition(" ")
                if field_name not in (
                    "request_time",
                    "completion_time",
                    "label",
                    "status",
                    "task_id",
                    "type",
                    "deadline",
                ):
                    raise ApiError(
                        400, "ClientError.BadRequest", f"Invalid orderby field '{field_name}'"
                    )
                tasks.sort(
                    key=functools.partial(_sort_key, field_name),
                    reverse=direction.strip().upper() == "DESC",
                )
            page = [self._task_view(t) for t in tasks[offset : offset + limit]]
            total = len(tasks)
        return json_response(
            200,
            {
                "DATA_TYPE": "task_list",
                "DATA": page,
                "length": len(page),
                "limit": limit,
                "offset": offset,
                "total": total,
            },
        )

    def r_task_get(self, req: Request, task_id: str) -> Response:
        ident = self._bearer(req, TRANSFER_RS)
        with self.lock:
            return json_response(200, self._task_view(self._owned_task(ident, task_id)))

    def r_task_cancel(self, req: Request, task_id: str) -> Response:
        ident = self._bearer(req, TRANSFER_RS)
        with self.lock:
            task = self._owned_task(ident, task_id)
            if task["status"] not in ("ACTIVE", "INACTIVE"):
                return json_response(
                    200,
                    {
                        "DATA_TYPE": "result",
                        "code": "TaskComplete",
                        "message": "The task completed before the cancel request was processed.",
                        "resource": req.path,
                        "request_id": request_id(),
                    },
                )
            now = time.time()
            task.update(
                {
                    "status": "FAILED",
                    "completion_time": iso(now),
                    "fatal_error": {"code": "CANCELED", "description": "canceled"},
                    "nice_status": None,
                    "nice_status_short_description": None,
                    "nice_status_details": None,
                    "is_ok": None,
                    "subtasks_canceled": task["subtasks_pending"],
                    "subtasks_pending": 0,
                }
            )
            task["_completed_ts"] = now
            self.engine._event(task, "CANCELED", True, "The task was canceled by its owner")
            self.save()
        return json_response(
            200,
            {
                "DATA_TYPE": "result",
                "code": "Canceled",
                "message": "The task has been cancelled successfully.",
                "resource": req.path,
                "request_id": request_id(),
            },
        )

    def r_task_event_list(self, req: Request, task_id: str) -> Response:
        ident = self._bearer(req, TRANSFER_RS)
        limit = _int_param(req, "limit", 10, 1, 1000)
        offset = _int_param(req, "offset", 0, 0, 999)
        with self.lock:
            events = list(reversed(self._owned_task(ident, task_id)["_events"]))
        page = events[offset : offset + limit]
        return json_response(
            200,
            {
                "DATA_TYPE": "event_list",
                "DATA": page,
                "length": len(page),
                "limit": limit,
                "offset": offset,
                "total": len(events),
            },
        )

    def r_task_successful_transfers(self, req: Request, task_id: str) -> Response:
        ident = self._bearer(req, TRANSFER_RS)
        marker = _int_param(req, "marker", 0, 0, 10**9)
        with self.lock:
            done = list(self._owned_task(ident, task_id)["_done_paths"])
        page = done[marker : marker + 100]
        next_marker = marker + 100 if marker + 100 < len(done) else None
        return json_response(
            200,
            {
                "DATA_TYPE": "successful_transfers",
                "marker": marker,
                "next_marker": next_marker,
                "DATA": [
                    {"DATA_TYPE": "successful_transfer", "source_path": s, "destination_path": d}
                    for s, d in page
                ],
            },
        )

    # ---- transfer: file operations

    def _file_operation(self, req: Request, endpoint_id: str, op: str, path: str) -> Any:
        ident = self._bearer(req, TRANSFER_RS)
        with self.lock:
            endpoint = self._visible_endpoint(ident, endpoint_id)
            backend = self.backend(endpoint)
            name = endpoint["display_name"]
        try:
            return backend.op(op, path)
        except Disconnected:
            raise ApiError(
                502,
                "ExternalError.DirListingFailed.GCDisconnected",
                f"The Globus Connect Personal endpoint '{name}' ({endpoint_id}) is not "
                "currently connected to Globus",
            ) from None
        except OpError as exc:
            if exc.code == "FILE_NOT_FOUND":
                raise ApiError(
                    404,
                    "ClientError.NotFound",
                    f"Path not found, Error ({op})\nEndpoint: {name} "
                    f"({endpoint_id})\nMessage: {exc.message}",
                ) from None
            if exc.code == "PERMISSION_DENIED":
                raise ApiError(
                    403,
                    "EndpointPermissionDenied",
                    f"Denied by endpoint, Error ({op})\nEndpoint: {name} "
                    f"({endpoint_id})\nMessage: {exc.message}",
                ) from None
            if exc.code == "EXISTS":
                raise ApiError(
                    502,
                    "ExternalError.MkdirFailed.Exists",
                    f"Path already exists, Error (mkdir)\nEndpoint: {name} "
                    f"({endpoint_id})\nMessage: {exc.message}",
                ) from None
            raise ApiError(502, "ExternalError", exc.message) from None

    @staticmethod
    def _file_doc(entry: Mapping[str, Any]) -> JSONDict:
        return {
            "DATA_TYPE": "file",
            "name": entry["name"],
            "type": entry["type"] if entry["type"] != "link" else "file",
            "size": entry["size"],
            "last_modified": iso_space(entry["mtime"]),
            "permissions": entry["permissions"],
            "user": entry["user"],
            "group": entry["group"],
            "link_target": entry.get("link_target"),
            "link_group": None,
            "link_last_modified": None,
            "link_size": None,
            "link_user": None,
        }

    def r_operation_ls(self, req: Request, endpoint_id: str) -> Response:
        path = req.param("path") or "/~/"
        entries = self._file_operation(req, endpoint_id, "list", path)
        show_hidden = req.param("show_hidden", "1") not in ("0", "false", "False")
        docs = [self._file_doc(e) for e in entries if show_hidden or not e["name"].startswith(".")]
        limit = _int_param(req, "limit", 100000, 1, 100000)
        offset = _int_param(req, "offset", 0, 0, 10**9)
        page = docs[offset : offset + limit]
        return json_response(
            200,
            {
                "DATA_TYPE": "file_list",
                "DATA": page,
                "path": path if path.endswith("/") else path + "/",
                "absolute_path": path if path.endswith("/") else path + "/",
                "endpoint": endpoint_id,
                "length": len(page),
                "total": len(docs),
                "rename_supported": True,
                "symlink_supported": False,
            },
        )

    def r_operation_stat(self, req: Request, endpoint_id: str) -> Response:
        path = req.param("path") or "/~/"
        entry = self._file_operation(req, endpoint_id, "stat", path)
        return json_response(200, self._file_doc(entry))

    def r_operation_mkdir(self, req: Request, endpoint_id: str) -> Response:
        body = req.json()
        path = str(body.get("path") or "")
        if not path:
            raise ApiError(400, "ClientError.BadRequest", "path is required")
        self._file_operation(req, endpoint_id, "mkdir", path)
        return json_response(
            200,
            {
                "DATA_TYPE": "mkdir_result",
                "code": "DirectoryCreated",
                "message": "The directory was created successfully",
                "request_id": request_id(),
                "resource": req.path,
            },
        )

    # ---- emulator admin

    def r_health(self, req: Request) -> Response:
        return json_response(200, {"ok": True, "pid": os.getpid(), "url": self.base_url})

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
                    for r in self.routes
                ]
            },
        )

    def r_state(self, req: Request) -> Response:
        with self.lock:
            doc = json.loads(json.dumps(self.state))
        doc["gcp_sessions"] = self.hub.describe()
        doc["faults"] = [f.as_json() for f in self.faults]
        doc["route_hits"] = dict(self.route_hits)
        return json_response(200, doc)

    def r_admin_identity(self, req: Request) -> Response:
        body = req.json()
        if not body.get("username"):
            raise ApiError(400, "BadRequest", "username is required")
        return json_response(
            200, self.identity(str(body["username"]), body.get("name"), body.get("email"))
        )

    def r_admin_tokens(self, req: Request) -> Response:
        body = req.json()
        with self.lock:
            ident = self._identity_by(body.get("username"), body.get("identity_id"))
        scopes = body.get("scopes") or [TRANSFER_SCOPE]
        if isinstance(scopes, str):
            scopes = split_scopes(scopes)
        lifetime = body.get("lifetime")
        doc = self.grant(
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
        with self.lock:
            target = None
            if body.get("username") or body.get("identity_id"):
                target = self._identity_by(body.get("username"), body.get("identity_id"))["id"]
            for token, record in self.state["access_tokens"].items():
                if token == body.get("access_token") or record["identity_id"] == target:
                    record["expires_at"] = time.time() - 1
                    expired += 1
            self.save()
        return json_response(200, {"expired": expired})

    def r_admin_login(self, req: Request) -> Response:
        body = req.json()
        ident = self.identity(str(body.get("username") or ""))
        with self.lock:
            self.state["login_identity"] = ident["id"]
            self.save()
        return json_response(200, ident)

    def r_admin_collection(self, req: Request) -> Response:
        body = req.json()
        if not body.get("path"):
            raise ApiError(400, "BadRequest", "path is required")
        return json_response(
            200,
            self.create_collection(
                str(body["path"]),
                body.get("display_name"),
                body.get("owner"),
                bool(body.get("public", True)),
                bool(body.get("writable", True)),
                bool(body.get("create", False)),
            ),
        )

    def r_faults_list(self, req: Request) -> Response:
        with self.lock:
            return json_response(200, {"faults": [f.as_json() for f in self.faults]})

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
        with self.lock:
            self.faults.append(fault)
        return json_response(200, fault.as_json())

    def r_faults_clear(self, req: Request) -> Response:
        with self.lock:
            count = len(self.faults)
            self.faults.clear()
        return json_response(200, {"cleared": count})

    def r_admin_task_pause(self, req: Request, task_id: str, action: str) -> Response:
        with self.lock:
            task = self.state["tasks"].get(task_id)
            if task is None:
                raise ApiError(404, "NotFound", f"Task {task_id} not found")
            task["_paused"] = action == "pause"
            if action == "pause" and task["status"] == "ACTIVE":
                task["status"] = "INACTIVE"
                task["nice_status"] = "PAUSED_BY_ADMIN"
                task["is_ok"] = False
            self.save()
            view = self._task_view(task)
        if action == "resume":
            self.engine.kick(task_id)
        return json_response(200, view)

    def r_gcp_list(self, req: Request) -> Response:
        return json_response(200, {"sessions": self.hub.describe()})

    # ---- emulator: GCP link

    def redeem_setup_key(self, setup_key: str) -> JSONDict:
        """Single use: the key's endpoint id once, then ``Setup Code KEY not found``."""
        with self.lock:
            record = self.state["setup_keys"].pop(setup_key, None)
            self.save()
            if record is None or record["expires_at"] < time.time():
                raise ApiError(404, "ClientError.NotFound", f"Setup Code {setup_key} not found")
            endpoint = self.state["endpoints"].get(record["endpoint_id"])
            if endpoint is None:
                raise ApiError(404, "ClientError.NotFound", f"Setup Code {setup_key} not found")
            return {
                "endpoint_id": endpoint["id"],
                "display_name": endpoint["display_name"],
                "owner_id": endpoint["owner_id"],
                "owner_string": endpoint["owner_string"],
            }

    def r_gcp_redeem(self, req: Request) -> Response:
        return json_response(200, self.redeem_setup_key(str(req.json().get("setup_key", ""))))

    def r_gcp_connect(self, req: Request, endpoint_id: str) -> Response:
        return json_response(200, self.hub.connect(endpoint_id, req.json()))

    def r_gcp_heartbeat(self, req: Request, endpoint_id: str) -> Response:
        return json_response(200, self.hub.heartbeat(endpoint_id, req.json()))

    def r_gcp_disconnect(self, req: Request, endpoint_id: str) -> Response:
        return json_response(200, self.hub.disconnect(endpoint_id, req.json()))

    def r_gcp_poll(self, req: Request, endpoint_id: str) -> Response:
        return json_response(200, self.hub.poll(endpoint_id, req.json()))

    def r_gcp_work_data(self, req: Request, endpoint_id: str, work_id: str) -> Response:
        data = self.hub.work_data(endpoint_id, work_id, req.param("session"))
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
            200, self.hub.complete(endpoint_id, work_id, req.param("session"), result, payload)
        )

    # ---- lifecycle

    def close(self) -> None:
        self.hub.close()
        self.engine.stop()
        with self.lock:
            self.save()


def _basic_client_id(req: Request) -> Optional[str]:
    header = req.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return urllib.parse.unquote(decoded.split(":", 1)[0]) or None


def _int_param(req: Request, name: str, default: int, low: int, high: int) -> int:
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


TASK_FILTER_FIELDS = frozenset(
    {"status", "type", "task_id", "label", "request_time", "completion_time"}
)


def _sort_key(name: str, task: Mapping[str, Any]) -> tuple[bool, Any]:
    """Order by ``name``, missing values (None) last."""
    return (task.get(name) is None, task.get(name) or "")


def _parse_task_filter(text: Optional[str]) -> dict[str, list[str]]:
    """Parse ``status:ACTIVE,INACTIVE/type:TRANSFER`` (what globus-sdk sends for a dict)."""
    filters: dict[str, list[str]] = {}
    if not text:
        return filters
    for clause in text.split("/"):
        if not clause:
            continue
        key, sep, values = clause.partition(":")
        if not sep or key not in TASK_FILTER_FIELDS:
            raise ApiError(400, "ClientError.BadRequest", f"Invalid filter clause '{clause}'")
        filters[key] = values.split(",")
    return filters


def _task_matches(task: Mapping[str, Any], filters: Mapping[str, list[str]]) -> bool:
    for key, values in filters.items():
        if key in ("status", "type", "task_id"):
            if str(task[key]) not in values and str(task[key]).upper() not in values:
                return False
        elif key == "label":
            label = task.get("label") or ""
            if not any(label == v or (v.startswith("~") and v[1:] in label) for v in values):
                return False
        else:
            value = task.get(key)
            if value is None:
                return False
            stamp = parse_time(value)
            start = parse_time(values[0]) if values and values[0] else None
            end = parse_time(values[1]) if len(values) > 1 and values[1] else None
            if (start is not None and stamp < start) or (end is not None and stamp > end):
                return False
    return True


# --------------------------------------------------------------------------- HTTP server


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: Emulator


class _RequestHandler(BaseHTTPRequestHandler):
    """Dispatches to :class:`Emulator` routes; errors get their service's document shape."""

    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.emulator.verbose:
            sys.stderr.write(f"globus-api-emulator: {self.address_string()} {format % args}\n")

    def _dispatch(self, method: str) -> None:
        emu = self.server.emulator
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        req = Request(
            method,
            path,
            urllib.parse.parse_qs(split.query, keep_blank_values=True),
            cast(Mapping[str, str], self.headers),
            body,
        )
        route, params, path_known = emu.match(method, path)
        family = route.family if route else _family_of(path)
        try:
            if route is None:
                if path_known:
                    raise ApiError(
                        405,
                        "ClientError.BadRequest.MethodNotAllowed",
                        f"Method {method} not allowed on {path}",
                    )
                raise ApiError(404, "ClientError.NotFound", f"No such resource: {path}")
            fault = emu.take_fault(route.name, method, path)
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if fault is not None and fault.status and not fault.after:
                self._send(self._fault_response(fault, family, path))
                return
            response = route.handler(req, **params)
            if fault is not None and fault.status and fault.after:
                response = self._fault_response(fault, family, path)
        except ApiError as exc:
            response = self._error_response(exc, family, path)
        except Exception as exc:  # a bug: answer 500 in shape, keep serving
            response = self._error_response(
                ApiError(500, "InternalError", f"emulator bug: {exc!r}"), family, path
            )
        self._send(response)

    @staticmethod
    def _fault_response(fault: Fault, family: str, path: str) -> Response:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(math.ceil(float(fault.retry_after)))
        code = fault.code or DEFAULT_FAULT_CODES.get(fault.status, "Error")
        message = fault.message or f"Injected fault (HTTP {fault.status})"
        return _RequestHandler._error_response(
            ApiError(fault.status, code, message, headers), family, path
        )

    @staticmethod
    def _error_response(exc: ApiError, family: str, path: str) -> Response:
        if family == "auth":
            doc: JSONDict = {
                "error": exc.code,
                "error_description": exc.message,
                "errors": [
                    {
                        "status": str(exc.status),
                        "id": str(uuid.uuid4()),
                        "code": exc.code.upper(),
                        "title": exc.code.replace("_", " ").title(),
                        "detail": exc.message,
                    }
                ],
            }
        else:
            doc = {
                "code": exc.code,
                "message": exc.message,
                "request_id": request_id(),
                "resource": path,
            }
        return json_response(exc.status, doc, exc.headers)

    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for key, value in (response.headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _family_of(path: str) -> str:
    if path.startswith(("/v2/", "/.well-known", "/jwk")):
        return "auth"
    if path.startswith("/_emulator"):
        return "emulator"
    return "transfer"


class EmulatorServer:
    """The emulator on ``127.0.0.1:port`` (0: any free port), served from a thread.

    ``url`` is what goes into ``GLOBUS_SDK_SERVICE_URL_TRANSFER`` and ``..._AUTH``.
    """

    def __init__(self, port: int = 0, **options: Any) -> None:
        self.emulator = Emulator(**options)
        self.httpd = _HttpServer((LISTEN_HOST, port), _RequestHandler)
        self.httpd.emulator = self.emulator
        self.port: int = self.httpd.server_address[1]
        self.url = f"http://{LISTEN_HOST}:{self.port}/"
        self.emulator.base_url = self.url
        self._thread: Optional[threading.Thread] = None

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="globus-api-emulator",
            daemon=True,
        )
        self._thread.start()
        self.emulator.engine.resume_all()
        return self

    def serve_forever(self) -> None:
        self.emulator.engine.resume_all()
        self.httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self.emulator.hub.close()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.emulator.close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- clients


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


@dataclass(frozen=True)
class PathRule:
    path: str  # absolute, symlinks resolved
    access: str  # "rw", "r" or "n"


def compile_path_rules(paths: Iterable[tuple[str, str]], home: str) -> list[PathRule]:
    """Turn GCP's exported paths (``~`` allowed) into absolute rules, longest first."""
    rules = []
    for raw, access in paths:
        if access not in ("rw", "r", "n"):
            raise ValueError(f"access must be rw, r or n, not {access!r}")
        expanded = raw
        if expanded == "~" or expanded.startswith("~/"):
            expanded = home + expanded[1:]
        rules.append(PathRule(os.path.realpath(expanded), access))
    return sorted(rules, key=lambda r: len(r.path), reverse=True)


class GcpLink:
    """The GCP side of the link to the emulated Globus service (stdlib, threads).

    Started by a (emulated) GCP once running: it connects its endpoint, heartbeats, and
    executes the file operations the service queues, as the GCP's Unix user and only
    inside the exported paths (``paths``: ``(path, access)`` pairs, access ``rw``/``r``/
    ``n``, ``~`` meaning ``home``), answering ``PERMISSION_DENIED`` elsewhere, like
    config-paths. ``state`` is what ``-status`` would print. ``stop(notify=False)``
    emulates a crash (the service notices after its heartbeat timeout).
    """

    def __init__(
        self,
        base_url: str,
        endpoint_id: str,
        paths: Iterable[tuple[str, str]],
        *,
        home: Optional[str] = None,
        workers: int = 2,
        paused: bool = False,
        request_timeout: float = 30.0,
        work_delay: float = 0.0,
        log: Optional[Callable[[str], None]] = None,
        info: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.endpoint_id = endpoint_id
        self.home = home or os.path.expanduser("~")
        self.rules = compile_path_rules(paths, self.home)
        self.workers = max(1, workers)
        self.request_timeout = request_timeout
        self.work_delay = work_delay
        self.log = log or (lambda message: None)
        self.info = dict(info or {})
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._session: Optional[str] = None
        self._paused = paused
        self._interval = 1.0
        self._poll_wait = 5.0
        self._threads: list[threading.Thread] = []
        self._inflight = 0
        self._reachable = False
        self.last_activity = 0.0  # time.monotonic() of the last work item, 0: never
        self.last_error: Optional[str] = None
        self.operations = 0

    # ---- public API

    @property
    def state(self) -> str:
        """``connected``, ``connecting``, ``paused`` or ``disconnected`` (GCP's words)."""
        with self._lock:
            if self._stop.is_set():
                return "disconnected"
            if self._paused:
                return "paused"
            return "connected" if self._session and self._reachable else "connecting"

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    @property
    def busy(self) -> bool:
        """A file operation is running (what makes real GCP's Transfer Status ``active``)."""
        with self._lock:
            return self._inflight > 0

    def start(self) -> GcpLink:
        targets = [self._control_loop] + [self._work_loop] * self.workers
        for index, target in enumerate(targets):
            thread = threading.Thread(target=target, name=f"gcp-link-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            self._paused = paused
        with contextlib.suppress(OSError, HttpError):
            self._heartbeat()

    def stop(self, notify: bool = True, timeout: float = 5.0) -> None:
        """Stop; ``notify`` tells the service at once (a clean ``-stop``)."""
        self._stop.set()
        with self._lock:
            session = self._session
        if notify and session:
            with contextlib.suppress(OSError, HttpError):
                self._post("disconnect", {"session": session}, timeout=5.0)
        end = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, end - time.monotonic()))

    def wait_connected(self, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.connected:
                return True
            time.sleep(0.02)
        return self.connected

    # ---- plumbing

    def _url(self, suffix: str) -> str:
        return f"{self.base_url}_emulator/gcp/{self.endpoint_id}/{suffix}"

    def _post(self, suffix: str, body: Any, timeout: Optional[float] = None) -> Any:
        return http_call(self._url(suffix), "POST", body, timeout=timeout or self.request_timeout)

    def _heartbeat(self) -> None:
        with self._lock:
            session, paused = self._session, self._paused
        if session:
            self._post("heartbeat", {"session": session, "paused": paused}, timeout=10.0)

    def _control_loop(self) -> None:
        """Connect, then heartbeat; reconnect when the service forgets the session."""
        backoff = 0.2
        while not self._stop.is_set():
            with self._lock:
                session = self._session
            if session is None:
                try:
                    info = {
                        "paused": self._paused,
                        "pid": os.getpid(),
                        "uid": os.getuid(),
                        "paths": [[r.path, r.access] for r in self.rules],
                        **self.info,
                    }
                    doc = self._post("connect", info, timeout=10.0)
                except HttpError as exc:
                    self.last_error = f"connect: HTTP {exc.status}: {exc.doc}"
                    self.log(self.last_error)
                    with self._lock:
                        self._reachable = False
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                except OSError as exc:
                    self.last_error = f"connect: {exc}"
                    with self._lock:
                        self._reachable = False
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                with self._lock:
                    if self._stop.is_set():
                        return
                    self._session = str(doc["session"])
                    self._interval = float(doc.get("heartbeat_interval", 1.0))
                    self._poll_wait = float(doc.get("poll_wait", 5.0))
                    self._reachable = True
                self.log(f"connected, session {self._session}")
                continue
            if self._stop.wait(self._interval):
                return
            try:
                self._heartbeat()
                with self._lock:
                    self._reachable = True
            except HttpError as exc:
                self.last_error = f"heartbeat: HTTP {exc.status}: {exc.doc}"
                with self._lock:
                    if self._session == session:
                        self._session = None
                        self._reachable = False
            except OSError as exc:
                self.last_error = f"heartbeat: {exc}"
                with self._lock:
                    self._reachable = False

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                session, paused, wait = self._session, self._paused, self._poll_wait
            if session is None or paused:
                self._stop.wait(0.05)
                continue
            try:
                doc = self._post(
                    "poll", {"session": session, "wait": wait, "max_items": 1}, timeout=wait + 15.0
                )
            except HttpError as exc:
                if exc.status in (404, 409):
                    with self._lock:
                        if self._session == session:
                            self._session = None
                else:
                    self._stop.wait(0.2)
                continue
            except OSError:
                self._stop.wait(0.2)
                continue
            for item in doc.get("work", []):
                if self._stop.is_set():
                    return  # a stopped (crashed) GCP does not run work it was handed
                self._run_item(session, item)

    def resolve(self, globus_path: str, write: bool) -> str:
        """Map a Globus path to a local one and enforce the exported paths."""
        path = globus_path
        if path == "/~" or path.startswith("/~/"):
            path = self.home + path[2:]
        elif path == "~" or path.startswith("~/"):
            path = self.home + path[1:]
        elif not path.startswith("/"):
            path = os.path.join(self.home, path)
        path = os.path.normpath(path)
        real = os.path.realpath(path)
        for rule in self.rules:
            inside = real == rule.path or real.startswith(rule.path.rstrip("/") + "/")
            if inside:
                if rule.access == "n" or (write and rule.access != "rw"):
                    break
                return path
        raise OpError(
            "PERMISSION_DENIED",
            f"Path not allowed by Globus Connect Personal config: {globus_path}",
        )

    def _run_item(self, session: str, item: Mapping[str, Any]) -> None:
        with self._lock:
            self._inflight += 1
        self.last_activity = time.monotonic()
        try:
            if self.work_delay:
                time.sleep(self.work_delay)
            op = str(item["op"])
            payload: Optional[bytes] = None
            try:
                local = self.resolve(str(item.get("path", "")), write=op in WRITE_OPS)
                data = None
                if op == "write":
                    data = http_call(
                        self._url(f"work/{item['id']}/data?session={session}"),
                        timeout=self.request_timeout,
                        want_bytes=True,
                    )
                value = run_file_op(local, op, item, data)
                if op == "read":
                    payload = value
                    result: JSONDict = {"ok": True, "length": len(value)}
                else:
                    result = {"ok": True, "result": value}
            except OpError as exc:
                result = {"ok": False, "error": exc.code, "message": exc.message}
            except (HttpError, OSError) as exc:
                result = {"ok": False, "error": "IO_ERROR", "message": str(exc)}
            if self._stop.is_set():
                return
            self.operations += 1
            url = self._url(f"work/{item['id']}?session={session}")
            with contextlib.suppress(HttpError, OSError):
                if payload is not None:
                    http_call(
                        url,
                        "POST",
                        raw=payload,
                        headers={"X-Emulator-Result": json.dumps(result)},
                        timeout=self.request_timeout,
                    )
                else:
                    http_call(url, "POST", result, timeout=self.request_timeout)
        finally:
            with self._lock:
                self._inflight -= 1
            self.last_activity = time.monotonic()


# --------------------------------------------------------------------------- command line


def _write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(f"{port}\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``globus-api-emulator [--port N] [--port-file F] [--state-file F] ...``; runs until
    SIGTERM/SIGINT, then saves the state and exits 0."""
    parser = argparse.ArgumentParser(
        prog="globus-api-emulator", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any)")
    parser.add_argument("--port-file", help="write the port number there once listening")
    parser.add_argument("--state-file", help="persist state to this JSON file")
    parser.add_argument(
        "--gcp-timeout",
        type=float,
        default=10.0,
        help="seconds without heartbeat before gcp_connected is false",
    )
    parser.add_argument(
        "--poll-wait", type=float, default=5.0, help="long-poll duration of GCP work polls"
    )
    parser.add_argument("--token-lifetime", type=int, default=DEFAULT_TOKEN_LIFETIME)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    parser.add_argument(
        "--default-deadline",
        type=float,
        default=DEFAULT_DEADLINE,
        help="seconds from submission to a task's default deadline",
    )
    parser.add_argument("--checksum-algorithm", default="sha256", choices=["sha256", "md5"])
    parser.add_argument(
        "--collection",
        action="append",
        default=[],
        metavar="PATH",
        help="create a served collection for PATH at start (prints its id)",
    )
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)
    server = EmulatorServer(
        args.port,
        state_file=args.state_file,
        gcp_timeout=args.gcp_timeout,
        poll_wait=args.poll_wait,
        token_lifetime=args.token_lifetime,
        chunk_size=args.chunk_size,
        default_deadline=args.default_deadline,
        checksum_algorithm=args.checksum_algorithm,
        verbose=args.verbose,
    )
    for path in args.collection:
        doc = server.emulator.create_collection(path, create=True)
        print(f"collection {doc['id']} {path}", flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    if args.port_file:
        _write_port_file(args.port_file, server.port)
    print(f"globus-api-emulator listening on {server.url}", flush=True)
    while not stop.wait(1.0):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
