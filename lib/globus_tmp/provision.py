"""Creating and removing the user's pool endpoints in Globus (``setup``, ``remove``).

Creating a GCP endpoint is ``POST /v0.10/endpoint`` with ``is_globus_connect`` (what
``globus gcp create mapped`` sends); its answer carries the single-use setup key that
``globusconnectpersonal -setup`` redeems into a config dir. A retried POST can create a
duplicate, so the POST is sent with retries off, under a display name recorded *before*
the call; after a failure the user's endpoints are searched for that name and an orphan
is deleted before one more try. Each step leaves a record (``endpoints/.NAME.pending``)
so a run that died halfway resumes where it stopped.

Runs as the user (the CLI). Facts: docs/GCP.md#creating-a-gcp-endpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import GcpSetupKeyRefused, GlobusTmpError
from .gcp import GcpCommand
from .globusapi import GlobusApiError, GlobusSession, describe
from .nodestate import write_atomic
from .pool import EndpointPool, PoolEntry, check_entry_name


class EndpointProvisioner:
    def __init__(
        self,
        pool: EndpointPool,
        session: GlobusSession,
        gcp: GcpCommand,
        user: str,
        say: Callable[[str], None] = print,
    ) -> None:
        self.pool = pool
        self.session = session
        self.gcp = gcp
        self.user = user
        self.say = say

    def setup(self, count: int) -> list[PoolEntry]:
        """Make sure entries ``ep1``..``epN`` exist and are set up; returns them."""
        if count < 1:
            raise GlobusTmpError("--count must be at least 1")
        self.pool.endpoints_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        done = {e.name: e for e in self.pool.entries()}
        for i in range(1, count + 1):
            name = f"ep{i}"
            if name in done:
                self.say(f"{name}: already set up (endpoint {done[name].endpoint_id})")
                continue
            self._setup_one(name)
        wanted = {f"ep{i}" for i in range(1, count + 1)}
        return [e for e in self.pool.entries() if e.name in wanted]

    def _pending_path(self, name: str) -> Path:
        return self.pool.endpoints_dir / f".{name}.pending"

    def _load_pending(self, name: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._pending_path(name).read_text())
            return data
        except (OSError, ValueError):
            return {}

    def _save_pending(self, name: str, record: dict[str, Any]) -> None:
        write_atomic(self._pending_path(name), json.dumps(record), 0o600)

    def _setup_one(self, name: str) -> None:
        check_entry_name(name)  # ours (epN); checked as every entry name is
        record = self._load_pending(name)
        if not record.get("display_name"):
            record = {"display_name": f"globus-tmp {self.user} {name} {uuid.uuid4().hex[:8]}"}
            self._save_pending(name, record)
        for attempt in (1, 2):
            if not record.get("setup_key"):
                record.update(self._create(record["display_name"]))
                self._save_pending(name, record)
                self.say(f"{name}: created endpoint {record['id']} ({record['display_name']})")
            try:
                self._run_setup(name, record["setup_key"])
                break
            except GcpSetupKeyRefused as exc:
                if attempt == 2:
                    raise
                # the key was used or expired: this endpoint can never be set up
                self.say(f"{name}: setup key refused ({exc}); replacing endpoint {record['id']}")
                self._delete(record["id"])
                record = {"display_name": record["display_name"]}
                self._save_pending(name, record)
        self._pending_path(name).unlink()
        entry = self.pool.entry(name)
        self.say(f"{name}: set up, endpoint {entry.endpoint_id}")

    def _create(self, display_name: str) -> dict[str, str]:
        import globus_sdk

        tc = self.session.transfer(max_retries=0)
        body = {"DATA_TYPE": "endpoint", "is_globus_connect": True, "display_name": display_name}
        for attempt in (1, 2):
            try:
                doc = tc.post("/v0.10/endpoint", data=body)
                return {"id": str(doc["id"]), "setup_key": str(doc["globus_connect_setup_key"])}
            except Exception as exc:
                refused = isinstance(exc, globus_sdk.GlobusAPIError) and exc.http_status < 500
                if refused:  # a 4xx answer: nothing was created, and asking again won't help
                    raise GlobusApiError.wrap("creating endpoint failed", exc) from None
                # no answer or a 5xx: the POST may have landed; a duplicate must not stay
                orphan = self._find(display_name)
                if orphan:
                    self.say(f"create failed ({describe(exc)}); deleting half-made {orphan}")
                    self._delete(orphan)
                if attempt == 2:
                    raise GlobusApiError.wrap("creating endpoint failed", exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _find(self, display_name: str) -> str | None:
        try:
            tc = self.session.transfer()
            for ep in tc.paginated.endpoint_search(filter_scope="my-endpoints").items():
                if ep["display_name"] == display_name:
                    return str(ep["id"])
        except Exception as exc:
            raise GlobusApiError.wrap("searching your endpoints failed", exc) from None
        return None

    def _delete(self, endpoint_id: str) -> None:
        import globus_sdk

        try:
            self.session.transfer().delete_endpoint(endpoint_id)
        except globus_sdk.GlobusAPIError as exc:
            if exc.http_status != 404:  # already gone is what was wanted
                raise GlobusApiError.wrap(f"deleting {endpoint_id}", exc) from None
        except Exception as exc:
            raise GlobusApiError.wrap(f"deleting {endpoint_id}", exc) from None

    def _run_setup(self, name: str, key: str) -> None:
        target = self.pool.endpoints_dir / name
        if target.exists() and not (target / "lta" / "client-id.txt").exists():
            shutil.rmtree(target)  # a -setup that died halfway; GCP refuses to redo it
        target.mkdir(mode=0o700, exist_ok=True)
        self.gcp.setup(key, target)
        _tighten(target)

    def remove(self, name: str) -> str:
        """Delete ``name`` in Globus and its config dir; refused while a node holds it."""
        entry = self.pool.entry(name)
        lease = self.pool.leases().get(name)
        if lease is not None:
            raise GlobusTmpError(
                f"{name} is leased to {lease.owner}; it can be removed once no job of yours "
                "runs there"
            )
        self._delete(entry.endpoint_id)
        shutil.rmtree(entry.config_dir)
        return entry.endpoint_id


def _tighten(config_dir: Path) -> None:
    """Key files readable by the user only (GCP refuses them otherwise), dirs 0700."""
    for root, _dirs, files in os.walk(config_dir):
        os.chmod(root, 0o700)
        for fname in files:
            if fname.endswith((".pem", ".key")):
                os.chmod(os.path.join(root, fname), 0o600)
