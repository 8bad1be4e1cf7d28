"""File operations on one endpoint, whatever serves it: a GCP link or a served directory."""

from __future__ import annotations

import os
import posixpath
from typing import Any, Callable, Optional

from .errors import OpError
from .fileops import WRITE_OPS, run_file_op
from .hub import GcpHub


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
        if op == "rename":
            args["new_path"] = self.fs_path(str(args["new_path"]))
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
