"""The GCP side of the link to the emulated Globus service (:class:`GcpLink`).

Imported by the GCP emulator (``gcp_emulator.py``) in user processes: it needs only
:mod:`globus_api.common`, :mod:`~globus_api.errors`, :mod:`~globus_api.fileops` and
:mod:`~globus_api.client`, never the service (engine, routes, server).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import fileops
from .client import HttpError, http_call
from .common import JSONDict
from .errors import OpError


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
                local = self.resolve(str(item.get("path", "")), write=op in fileops.WRITE_OPS)
                args = dict(item)
                if op == "rename":  # both ends must be inside the exported paths
                    args["new_path"] = self.resolve(str(item.get("new_path", "")), write=True)
                data = None
                if op == "write":
                    data = http_call(
                        self._url(f"work/{item['id']}/data?session={session}"),
                        timeout=self.request_timeout,
                        want_bytes=True,
                    )
                value = fileops.run_file_op(local, op, args, data)
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
