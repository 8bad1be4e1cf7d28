"""Document templates in the shapes of Globus's own recordings (``globus_sdk.testing``).

Why one module: every route builds its answers from these, and the shape tests compare
exactly these documents with the recorded ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

from .common import JSONDict, b32_username, iso, iso_space, request_id


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


def result_doc(code: str, message: str, resource: str, data_type: str = "result") -> JSONDict:
    """Transfer's plain ``result`` (update, delete, cancel, rename, mkdir...)."""
    return {
        "DATA_TYPE": data_type,
        "code": code,
        "message": message,
        "request_id": request_id(),
        "resource": resource,
    }


def submission_result(
    kind: str, code: str, message: str, resource: str, submission_id: str, task_id: str
) -> JSONDict:
    """``transfer_result`` / ``delete_result`` of a submission (``kind``: transfer, delete)."""
    doc = result_doc(code, message, resource, f"{kind}_result")
    doc.update(
        {
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
    )
    return doc


def file_doc(entry: Mapping[str, Any]) -> JSONDict:
    """A ``file`` document of ``operation/ls`` and ``operation/stat``."""
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


def task_doc(
    task_id: str,
    task_type: str,
    ident: Mapping[str, Any],
    src: Mapping[str, Any],
    dst: Optional[Mapping[str, Any]],
    body: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    now: float,
    deadline_ts: float,
) -> JSONDict:
    """A new task document (``TRANSFER``, or ``DELETE`` with no destination), with the
    emulator's private bookkeeping under ``_`` keys (never shown)."""

    def flag(name: str, default: bool = False) -> bool:
        value = body.get(name, default)
        return default if value is None else bool(value)

    def side(prefix: str, endpoint: Optional[Mapping[str, Any]]) -> JSONDict:
        return {
            f"{prefix}_endpoint": endpoint["canonical_name"] if endpoint else None,
            f"{prefix}_endpoint_id": endpoint["id"] if endpoint else None,
            f"{prefix}_endpoint_display_name": endpoint["display_name"] if endpoint else None,
            f"{prefix}_host_endpoint": None,
            f"{prefix}_host_endpoint_id": None,
            f"{prefix}_host_endpoint_display_name": None,
            f"{prefix}_host_path": None,
            f"{prefix}_base_path": None,
            f"{prefix}_local_user": body.get(f"{prefix}_local_user"),
        }

    is_transfer = task_type == "TRANSFER"
    doc: JSONDict = {
        "DATA_TYPE": "task",
        "task_id": task_id,
        "type": task_type,
        "status": "ACTIVE",
        "label": body.get("label"),
        "owner_id": ident["id"],
        "owner_string": ident["username"],
        "username": b32_username(ident["id"]),
        "command": "API 0.10",
        "request_time": iso(now),
        "completion_time": None,
        "deadline": iso(deadline_ts),
        **side("source", src),
        **side("destination", dst),
        "sync_level": body.get("sync_level") if is_transfer else None,
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
                "source_path": i["path"] if not is_transfer else i["source_path"],
                "destination_path": i.get("destination_path"),
                "recursive": bool(i.get("recursive")) or (not is_transfer and flag("recursive")),
            }
            for i in items
        ],
        "_ignore_missing": flag("ignore_missing"),
        "_plan": None,
        "_events": [],
        "_done_paths": [],
        "_request_ts": now,
        "_deadline_ts": deadline_ts,
        "_paused": False,
        "_outage": None,
    }
    return doc
