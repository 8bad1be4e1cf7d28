"""Transfer task routes: submissions (transfer, delete), task lists, task documents,
events, cancel and pause info."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Mapping
from typing import Any, Optional

from ..common import TRANSFER_RS, JSONDict, iso, parse_time
from ..errors import ApiError
from ..filters import (
    TASK_FILTER_FIELDS,
    event_filter,
    parse_filter,
    task_matches,
    validate_filter_rules,
)
from ..routing import Request, Response, RouteGroup, RouteSpec, int_param, json_response
from ..shapes import result_doc, submission_result, task_doc

TASK = r"/v0\.10/task/(?P<task_id>[^/]+)"
ORDERBY_FIELDS = frozenset(
    {"request_time", "completion_time", "label", "status", "task_id", "type", "deadline"}
)
ACCEPTED = "The {kind} has been accepted and a task has been created and queued for execution"


def _sort_key(name: str, task: Mapping[str, Any]) -> tuple[bool, Any]:
    """Order by ``name``, missing values (None) last."""
    return (task.get(name) is None, task.get(name) or "")


def _items(body: Mapping[str, Any], item_type: str, keys: tuple[str, ...]) -> list[JSONDict]:
    items = body.get("DATA") or []
    if not isinstance(items, list) or not items:
        noun = "transfer" if item_type == "transfer_item" else "delete"
        raise ApiError(
            400,
            f"ClientError.BadRequest.No{noun.title()}Items",
            f"A {noun} requires at least one item",
        )
    for item in items:
        if not isinstance(item, dict) or item.get("DATA_TYPE") != item_type:
            raise ApiError(
                400, "ClientError.BadRequest", f"Every item must have DATA_TYPE '{item_type}'"
            )
        for key in keys:
            if not isinstance(item.get(key), str) or not item[key]:
                raise ApiError(400, "ClientError.BadRequest", f"{key} is required")
    return items


class TaskRoutes(RouteGroup):
    def routes(self) -> list[RouteSpec]:
        return [
            ("GET", r"/v0\.10/submission_id", "submission_id", "transfer", self.r_submission_id),
            ("POST", r"/v0\.10/transfer", "transfer", "transfer", self.r_transfer),
            ("POST", r"/v0\.10/delete", "delete", "transfer", self.r_delete),
            ("GET", r"/v0\.10/task_list", "task_list", "transfer", self.r_task_list),
            ("GET", TASK, "task_get", "transfer", self.r_task_get),
            ("POST", TASK + "/cancel", "task_cancel", "transfer", self.r_task_cancel),
            ("GET", TASK + "/event_list", "task_event_list", "transfer", self.r_task_event_list),
            ("GET", TASK + "/pause_info", "task_pause_info", "transfer", self.r_task_pause_info),
            (
                "GET",
                TASK + "/successful_transfers",
                "task_successful_transfers",
                "transfer",
                self.r_task_successful_transfers,
            ),
        ]

    def r_submission_id(self, req: Request) -> Response:
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        value = str(uuid.uuid4())
        with self.emu.lock:
            self.emu.state["submission_ids"][value] = {"identity_id": ident["id"], "task_id": None}
            self.emu.save()
        return json_response(200, {"value": value})

    def r_transfer(self, req: Request) -> Response:
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        body = req.json()
        if body.get("DATA_TYPE") != "transfer":
            raise ApiError(400, "ClientError.BadRequest", "DATA_TYPE must be 'transfer'")
        items = _items(body, "transfer_item", ("source_path", "destination_path"))
        sync_level = body.get("sync_level")
        if sync_level is not None and sync_level not in (0, 1, 2, 3):
            raise ApiError(400, "ClientError.BadRequest", "sync_level must be 0, 1, 2 or 3")
        body["filter_rules"] = validate_filter_rules(body.get("filter_rules")) or None
        if body["filter_rules"] and not any(i.get("recursive") for i in items):
            raise ApiError(
                400, "ClientError.BadRequest", "filter_rules require a recursive transfer item"
            )
        return self._submit(req, ident, "transfer", body, items)

    def r_delete(self, req: Request) -> Response:
        """A DELETE task: ``{"DATA_TYPE": "delete", "endpoint", "recursive",
        "ignore_missing", "DATA": [{"DATA_TYPE": "delete_item", "path"}]}``."""
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        body = req.json()
        if body.get("DATA_TYPE") != "delete":
            raise ApiError(400, "ClientError.BadRequest", "DATA_TYPE must be 'delete'")
        items = _items(body, "delete_item", ("path",))
        return self._submit(req, ident, "delete", body, items)

    def _submit(
        self, req: Request, ident: JSONDict, kind: str, body: JSONDict, items: list[JSONDict]
    ) -> Response:
        """Create the task once per submission id; a resubmission answers ``Duplicate``."""
        submission_id = body.get("submission_id")
        if not isinstance(submission_id, str) or not submission_id:
            raise ApiError(400, "ClientError.BadRequest", "A submission_id is required")
        now = time.time()
        deadline_ts = now + self.emu.default_deadline
        if body.get("deadline"):
            try:
                deadline_ts = parse_time(str(body["deadline"]))
            except ValueError:
                raise ApiError(400, "ClientError.BadRequest", "Invalid deadline") from None
        with self.emu.lock:
            previous = self.emu.state["submission_ids"].get(submission_id)
            if previous is not None and previous.get("task_id"):
                message = f"A {kind} with id '{submission_id}' was already submitted"
                return json_response(
                    200,
                    submission_result(
                        kind, "Duplicate", message, req.path, submission_id, previous["task_id"]
                    ),
                )
            if kind == "transfer":
                src = self.emu.visible_endpoint(ident, str(body.get("source_endpoint")))
                dst: Optional[JSONDict] = self.emu.visible_endpoint(
                    ident, str(body.get("destination_endpoint"))
                )
            else:
                src, dst = self.emu.visible_endpoint(ident, str(body.get("endpoint"))), None
            task_id = str(uuid.uuid4())
            task = task_doc(task_id, kind.upper(), ident, src, dst, body, items, now, deadline_ts)
            self.emu.state["tasks"][task_id] = task
            self.emu.state["submission_ids"][submission_id] = {
                "identity_id": ident["id"],
                "task_id": task_id,
            }
            self.emu.save()
        self.emu.engine.kick(task_id)
        message = ACCEPTED.format(kind=kind)
        return json_response(
            202, submission_result(kind, "Accepted", message, req.path, submission_id, task_id)
        )

    def r_task_list(self, req: Request) -> Response:
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        limit = int_param(req, "limit", 10, 1, 1000)
        offset = int_param(req, "offset", 0, 0, 999)
        if offset + limit > 1000:
            raise ApiError(
                400, "ClientError.BadRequest", "offset + limit must be less than or equal to 1000"
            )
        filters = parse_filter(req.param("filter"), TASK_FILTER_FIELDS)
        orderby = req.param("orderby") or "request_time DESC"
        with self.emu.lock:
            tasks = [t for t in self.emu.state["tasks"].values() if t["owner_id"] == ident["id"]]
            tasks = [t for t in tasks if task_matches(t, filters)]
            for clause in reversed([c.strip() for c in orderby.split(",") if c.strip()]):
                field_name, _, direction = clause.partition(" ")
                if field_name not in ORDERBY_FIELDS:
                    raise ApiError(
                        400, "ClientError.BadRequest", f"Invalid orderby field '{field_name}'"
                    )
                tasks.sort(
                    key=functools.partial(_sort_key, field_name),
                    reverse=direction.strip().upper() == "DESC",
                )
            page = [self.emu.task_view(t) for t in tasks[offset : offset + limit]]
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
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        with self.emu.lock:
            return json_response(200, self.emu.task_view(self.emu.owned_task(ident, task_id)))

    def r_task_cancel(self, req: Request, task_id: str) -> Response:
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        with self.emu.lock:
            task = self.emu.owned_task(ident, task_id)
            if task["status"] not in ("ACTIVE", "INACTIVE"):
                message = "The task completed before the cancel request was processed."
                return json_response(200, result_doc("TaskComplete", message, req.path))
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
            self.emu.engine.event(task, "CANCELED", True, "The task was canceled by its owner")
            self.emu.save()
        message = "The task has been cancelled successfully."
        return json_response(200, result_doc("Canceled", message, req.path))

    def r_task_event_list(self, req: Request, task_id: str) -> Response:
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        limit = int_param(req, "limit", 10, 1, 1000)
        offset = int_param(req, "offset", 0, 0, 999)
        with self.emu.lock:
            events = list(reversed(self.emu.owned_task(ident, task_id)["_events"]))
        errors = event_filter(req.param("filter"))
        if errors is not None:
            events = [e for e in events if e["is_error"] is errors]
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
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        marker = int_param(req, "marker", 0, 0, 10**9)
        with self.emu.lock:
            done = list(self.emu.owned_task(ident, task_id)["_done_paths"])
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

    def r_task_pause_info(self, req: Request, task_id: str) -> Response:
        """Pause rules (none in the emulator) and explicit pause messages: a task paused
        through ``/_emulator/tasks/ID/pause`` shows as paused by the source's manager."""
        ident = self.emu.tokens.bearer(req, TRANSFER_RS)
        with self.emu.lock:
            task = self.emu.owned_task(ident, task_id)
            paused = bool(task.get("_paused")) and task["status"] in ("ACTIVE", "INACTIVE")
        return json_response(
            200,
            {
                "DATA_TYPE": "pause_info_limited",
                "pause_rules": [],
                "source_pause_message": "Paused by the emulator's admin" if paused else None,
                "source_pause_message_share": None,
                "destination_pause_message": None,
                "destination_pause_message_share": None,
            },
        )
