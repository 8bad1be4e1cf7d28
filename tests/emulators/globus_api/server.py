"""HTTP in front of the emulator: the request handler and :class:`EmulatorServer`.

Errors are answered in the shape of the route's service (its "family"):

* ``transfer``: ``{"code", "message", "request_id", "resource"}``;
* ``auth`` (Auth's REST routes): ``{"error", "error_description", "errors": [{"status",
  "id", "code", "title", "detail"}]}``, as in ``globus_sdk.testing``'s ``unauthorized``;
* ``oauth`` (``/v2/oauth2/token...``): RFC 6749 ``{"error": "invalid_grant"}``, with
  ``error_description`` only when there is something to say, as Globus answers;
* ``emulator``: the Transfer shape.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, cast

from .common import LISTEN_HOST, JSONDict, request_id
from .errors import ApiError
from .faults import DEFAULT_FAULT_CODES, Fault
from .routing import Request, Response, json_response
from .state import Emulator


def error_document(exc: ApiError, family: str, path: str) -> JSONDict:
    """The error document of ``exc`` in the shape of the service ``family``."""
    if family == "oauth":
        doc: JSONDict = {"error": exc.code}
        if exc.message:
            doc["error_description"] = exc.message
        return doc
    if family == "auth":
        return {
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
    return {
        "code": exc.code,
        "message": exc.message,
        "request_id": request_id(),
        "resource": path,
    }


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
        family = route.family if route else family_of(path)
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
        return json_response(exc.status, error_document(exc, family, path), exc.headers)

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


def family_of(path: str) -> str:
    """The family of a path no route matches (for its 404 or 405)."""
    if path.startswith("/v2/oauth2/token"):
        return "oauth"
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
