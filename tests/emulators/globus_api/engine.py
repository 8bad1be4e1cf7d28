"""The task engine: runs TRANSFER and DELETE tasks, resumable from their persisted plans."""

from __future__ import annotations

import posixpath
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, cast

from .backends import Backend, GcpBackend, ServedBackend
from .common import JSONDict, iso
from .errors import Disconnected, OpError
from .filters import included_by_rules
from .shapes import TASK_EVENT_TEXT

if TYPE_CHECKING:
    from .state import Emulator

FATAL_OP_CODES = frozenset(
    {"PERMISSION_DENIED", "FILE_NOT_FOUND", "IS_A_DIRECTORY", "NOT_A_DIRECTORY", "EXISTS"}
)


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

    def event(self, task: JSONDict, code: str, is_error: bool, details: str) -> None:
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
                    self.event(task, exc.code, True, f"{role} {path}: {exc.message}")
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
            self.event(
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
                self.event(task, "SUCCEEDED", False, "The task completed successfully")
            else:
                task["fatal_error"] = {"code": code, "description": description}
                if code == "EXPIRED":
                    task["subtasks_expired"] = task["subtasks_total"] - task["subtasks_succeeded"]
                else:
                    task["subtasks_failed"] = 1
                self.event(task, code or "FAILED", True, description)
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
            is_delete = task["type"] == "DELETE"
        if is_delete:
            self._execute_delete(task_id, built)
            return
        if not built:
            self._build_plan(task_id)
        with self.emu.lock:
            plan = self._task(task_id)["_plan"]
            dirs = list(plan["dirs"])
            count = len(plan["files"])
        for directory in dirs:
            self._op(task_id, "destination", "mkdir", directory, exist_ok=True)
        for index in range(count):
            self._copy_file(task_id, index)
        self._finish(task_id, "SUCCEEDED", None, "")

    def _build_plan(self, task_id: str) -> None:
        with self.emu.lock:
            task = self._task(task_id)
            items = [dict(i) for i in task["_items"]]
            skip_errors = bool(task["skip_source_errors"])
            rules = list(task.get("filter_rules") or [])
        files: list[JSONDict] = []
        dirs: list[str] = []
        symlinks = 0
        skipped = 0

        def walk(src: str, dst: str) -> None:
            nonlocal symlinks
            dirs.append(dst)
            for entry in self._op(task_id, "source", "list", src):
                kind = "dir" if entry["type"] == "dir" else "file"
                if not included_by_rules(rules, entry["name"], kind):
                    continue
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
                        self.event(
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

    def _execute_delete(self, task_id: str, built: bool) -> None:
        """A DELETE task: files first, then directories deepest first (resumable)."""
        if not built:
            self._build_delete_plan(task_id)
        with self.emu.lock:
            entries = self._task(task_id)["_plan"]["delete"]
        for entry in entries:
            if entry["state"] != "pending":
                continue
            try:
                self._op(task_id, "source", "delete", entry["path"])
            except OpError as exc:
                if exc.code != "FILE_NOT_FOUND":  # gone already: a resumed delete
                    raise
            with self.emu.lock:
                task = self._task(task_id)
                entry["state"] = "done"
                task["subtasks_pending"] -= 1
                task["subtasks_succeeded"] += 1
                self.emu.save()
        self._finish(task_id, "SUCCEEDED", None, "")

    def _build_delete_plan(self, task_id: str) -> None:
        with self.emu.lock:
            task = self._task(task_id)
            items = [dict(i) for i in task["_items"]]
            ignore_missing = bool(task["_ignore_missing"])
        files: list[str] = []
        dirs: list[str] = []

        def walk(path: str) -> None:
            for entry in self._op(task_id, "source", "list", path):
                child = posixpath.join(path, entry["name"])
                if entry["type"] == "dir":
                    walk(child)
                else:
                    files.append(child)
            dirs.append(path)  # after its contents

        for item in items:
            path = item["source_path"]
            try:
                info = self._op(task_id, "source", "stat", path)
            except OpError as exc:
                if ignore_missing and exc.code == "FILE_NOT_FOUND":
                    continue
                raise
            if info["type"] == "dir":
                if not item.get("recursive"):
                    raise _Fatal("NOT_A_FILE", f"{path} is a directory; use recursive=True")
                walk(path.rstrip("/") or "/")
            else:
                files.append(path)
        with self.emu.lock:
            task = self._task(task_id)
            plan = [{"path": p, "state": "pending"} for p in files + dirs]
            task["_plan"] = {"delete": plan}
            task["files"] = len(files)
            task["directories"] = len(dirs)
            task["subtasks_total"] = len(plan)
            task["subtasks_pending"] = len(plan)
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
                self.event(
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
