"""The emulator's shared state: one lock, JSON-able documents, persistence, and the
helpers every route group uses (endpoint and task views, visibility, backends).

Why one object: Transfer's and Auth's routes, the GCP hub and the task engine all read
and change the same identities, tokens, endpoints and tasks; one lock keeps it simple
(the tests' request rates are tiny), and one atomically written state file lets a
restarted service keep everything (ACTIVE tasks resume; GCP sessions do not survive a
restart: GCPs reconnect).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, Optional, cast

from .backends import Backend, GcpBackend, ServedBackend
from .common import (
    ADMIN_IDENTITY,
    DEFAULT_CHUNK,
    DEFAULT_DEADLINE,
    DEFAULT_TOKEN_LIFETIME,
    LISTEN_HOST,
    JSONDict,
    b32_username,
)
from .engine import TransferEngine
from .errors import ApiError
from .faults import Fault
from .hub import GcpHub
from .routing import Route
from .shapes import ENDPOINT_WRITABLE, endpoint_template
from .tokens import TokenIssuer


class Emulator:
    """All state; route groups (:mod:`globus_api.routes`) answer requests over it and
    :class:`~globus_api.server.EmulatorServer` puts HTTP in front."""

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
        self.tokens = TokenIssuer(self)
        from .routes import all_route_groups  # the routes import this module's type

        self.routes: list[Route] = [
            Route(method, re.compile(pattern + r"/?\Z"), name, family, handler)
            for group in all_route_groups(self)
            for method, pattern, name, family, handler in group.routes()
        ]

    # ---- persistence

    @staticmethod
    def _empty_state() -> JSONDict:
        return {
            "version": 1,
            "identities": {},
            "refresh_tokens": {},
            "access_tokens": {},
            "auth_codes": {},
            "clients": {},
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

    def identity(
        self, username: str, name: Optional[str] = None, email: Optional[str] = None
    ) -> JSONDict:
        """Get or create the identity ``username``."""
        return self.tokens.identity(username, name, email)

    # ---- endpoints and tasks

    def new_endpoint(
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
        ident = self.tokens.identity(owner or ADMIN_IDENTITY)
        with self.lock:
            doc = self.new_endpoint(ident, "served", display_name or f"served {root}", {})
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
            return self.endpoint_view(doc)

    def endpoint_view(self, doc: Mapping[str, Any]) -> JSONDict:
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

    def endpoint(self, endpoint_id: str) -> JSONDict:
        endpoint = self.state["endpoints"].get(endpoint_id)
        if endpoint is None:
            raise ApiError(404, "EndpointNotFound", f"No such endpoint '{endpoint_id}'")
        return cast(JSONDict, endpoint)

    def visible_endpoint(
        self, ident: JSONDict, endpoint_id: str, owner_only: bool = False
    ) -> JSONDict:
        """The endpoint if ``ident`` may use it: GCP endpoints are their owner's only."""
        endpoint = self.endpoint(endpoint_id)
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

    def task_view(self, task: Mapping[str, Any]) -> JSONDict:
        view = {k: v for k, v in task.items() if not k.startswith("_")}
        if task["status"] == "ACTIVE" and task.get("_deadline_ts"):
            view["nice_status_expires_in"] = max(0, int(task["_deadline_ts"] - time.time()))
        return view

    def owned_task(self, ident: JSONDict, task_id: str) -> JSONDict:
        task = self.state["tasks"].get(task_id)
        if task is None or task["owner_id"] != ident["id"]:
            raise ApiError(404, "TaskNotFound", f"Task {task_id} not found")
        return cast(JSONDict, task)

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

    # ---- routing

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

    # ---- lifecycle

    def close(self) -> None:
        self.hub.close()
        self.engine.stop()
        with self.lock:
            self.save()
