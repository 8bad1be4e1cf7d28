"""Transfer's synchronous file operations on an endpoint: ls, stat, mkdir, rename.

They run at once through the endpoint's backend (a GCP link or a served directory) and
fail at once, in Transfer's words, when its GCP is away.
"""

from __future__ import annotations

from typing import Any

from ..common import TRANSFER_RS
from ..errors import ApiError, Disconnected, OpError
from ..filters import ls_entry_matches, ls_filters
from ..routing import Request, Response, RouteGroup, RouteSpec, int_param, json_response
from ..shapes import file_doc, result_doc

OPERATION = r"/v0\.10/operation/endpoint/(?P<endpoint_id>[^/]+)"

# What each operation's failures are called (``ExternalError.<Failed>.<reason>``).
FAILED_NAMES = {
    "list": "DirListingFailed",
    "stat": "DirListingFailed",
    "mkdir": "MkdirFailed",
    "rename": "RenameFailed",
}
# A path that is not there: ``stat`` says ``NotFound`` (globus-cli's ``stat`` checks
# for exactly that code); listings and the rest say ``ClientError.NotFound``.
NOT_FOUND_CODES = {"stat": "NotFound"}


class OperationRoutes(RouteGroup):
    def routes(self) -> list[RouteSpec]:
        return [
            ("GET", OPERATION + "/ls", "operation_ls", "transfer", self.r_operation_ls),
            ("GET", OPERATION + "/stat", "operation_stat", "transfer", self.r_operation_stat),
            ("POST", OPERATION + "/mkdir", "operation_mkdir", "transfer", self.r_operation_mkdir),
            (
                "POST",
                OPERATION + "/rename",
                "operation_rename",
                "transfer",
                self.r_operation_rename,
            ),
        ]

    def _file_operation(
        self, req: Request, endpoint_id: str, op: str, path: str, **args: Any
    ) -> Any:
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        with self.emu.lock:
            endpoint = self.emu.visible_endpoint(ident, endpoint_id)
            backend = self.emu.backend(endpoint)
            name = endpoint["display_name"]
        failed = FAILED_NAMES.get(op, "OperationFailed")
        where = f"Endpoint: {name} ({endpoint_id})"
        try:
            return backend.op(op, path, **args)
        except Disconnected:
            raise ApiError(
                502,
                f"ExternalError.{failed}.GCDisconnected",
                f"The Globus Connect Personal endpoint '{name}' ({endpoint_id}) is not "
                "currently connected to Globus",
            ) from None
        except OpError as exc:
            if exc.code == "FILE_NOT_FOUND":
                raise ApiError(
                    404,
                    NOT_FOUND_CODES.get(op, "ClientError.NotFound"),
                    f"Path not found, Error ({op})\n{where}\nMessage: {exc.message}",
                ) from None
            if exc.code == "PERMISSION_DENIED":
                raise ApiError(
                    403,
                    "EndpointPermissionDenied",
                    f"Denied by endpoint, Error ({op})\n{where}\nMessage: {exc.message}",
                ) from None
            if exc.code == "EXISTS":
                raise ApiError(
                    502,
                    f"ExternalError.{failed}.Exists",
                    f"Path already exists, Error ({op})\n{where}\nMessage: {exc.message}",
                ) from None
            raise ApiError(502, f"ExternalError.{failed}", exc.message) from None

    def r_operation_ls(self, req: Request, endpoint_id: str) -> Response:
        path = req.param("path") or "/~/"
        alternatives = ls_filters(req.query.get("filter", []))
        entries = self._file_operation(req, endpoint_id, "list", path)
        show_hidden = req.param("show_hidden", "1") not in ("0", "false", "False")
        docs = [file_doc(e) for e in entries if show_hidden or not e["name"].startswith(".")]
        docs = [d for d in docs if ls_entry_matches(d, alternatives)]
        limit = int_param(req, "limit", 100000, 1, 100000)
        offset = int_param(req, "offset", 0, 0, 10**9)
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
        return json_response(200, file_doc(entry))

    def r_operation_mkdir(self, req: Request, endpoint_id: str) -> Response:
        body = req.json()
        path = str(body.get("path") or "")
        if not path:
            raise ApiError(400, "ClientError.BadRequest", "path is required")
        self._file_operation(req, endpoint_id, "mkdir", path, exist_ok=False)
        message = "The directory was created successfully"
        return json_response(200, result_doc("DirectoryCreated", message, req.path, "mkdir_result"))

    def r_operation_rename(self, req: Request, endpoint_id: str) -> Response:
        """``{"DATA_TYPE": "rename", "old_path", "new_path"}`` -> ``FileRenamed``."""
        body = req.json()
        old_path, new_path = str(body.get("old_path") or ""), str(body.get("new_path") or "")
        if not old_path or not new_path:
            raise ApiError(400, "ClientError.BadRequest", "old_path and new_path are required")
        self._file_operation(req, endpoint_id, "rename", old_path, new_path=new_path)
        message = "File or directory renamed successfully"
        return json_response(200, result_doc("FileRenamed", message, req.path))
