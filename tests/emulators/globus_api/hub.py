"""The service side of connected GCPs: sessions, liveness and work queues (:class:`GcpHub`)."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional

from .common import JSONDict
from .errors import ApiError, Disconnected, OpError

if TYPE_CHECKING:
    from .state import Emulator


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
      "utime"|"delete"|"rename", "path": P, ...}]}``. ``read`` has ``offset``/``length``;
      ``write`` has ``offset``/``length``/``truncate`` and its bytes come from
      ``GET /_emulator/gcp/{ID}/work/{W}/data?session=S``; ``checksum`` has ``algorithm``;
      ``utime`` has ``mtime``; ``mkdir`` has ``exist_ok``; ``rename`` has ``new_path`` (a
      Globus path too); ``delete`` removes a file or an empty directory.
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
