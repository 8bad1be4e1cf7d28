"""Stage-out at job end: what a job declares, what the Epilog submits, how it ended.

A job declares early (``globus-tmp-endpoint stage-out --at-exit SRC DEST``) a transfer
to submit when it ends on this node, whatever its exit state (completed, failed, timed
out, cancelled): burst buffers and DataWarp stage out the same way. Each declaration is
a small JSON record in the user's dir, ``stage-out/<cluster>.<job>/<node>.<n>.json``:
readable from any node (``stage-status`` on a login node works) and only ever written
by the user's own processes: the CLI, and children of the hooks dropped to the user.
Root never reads these files; it gets plain JSON back from those children. Each
declaration first leaves a mark on the node (:mod:`globus_tmp.stagemarks`): the Epilog
reads the home only for a job with one, so a hung home stalls only jobs that declared.

A record's ``state``: ``declared`` -> ``submitted`` -> ``succeeded`` | ``failed``, or
``declared`` -> ``failed`` when it could not be submitted (source missing at job end,
no endpoint on the node, the hold refused, Globus refused). A task still live when the
node's drain gives up at ``linger_max`` is cancelled (``failed``, the error says so) or,
if Globus cannot be asked, stays ``submitted`` with a ``note`` until the retried cancel
(:mod:`globus_tmp.taskcancel`). The submission id is stored
before the POST, so an Epilog that runs twice cannot create the task twice.
Facts: docs/GCP.md#transfer-api.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .boundedio import STATE, read_text_bounded
from .errors import GlobusTmpError
from .nodestate import MAX_TASKS
from .userdir import check_user_dir

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from typing import Any

    from .globusapi import GlobusSession

DECLARED, SUBMITTED, SUCCEEDED, FAILED = "declared", "submitted", "succeeded", "failed"
FINISHED = (SUCCEEDED, FAILED)
SYNC_LEVELS = ("exists", "size", "mtime", "checksum")
"""globus-cli's names for Transfer's ``sync_level`` 0..3 (checked when declared)."""
_MAX_PER_JOB_NODE = MAX_TASKS
"""Declarations of one job on one node: each is one task the Epilog submits, and node
state takes at most this many task ids of a job (a forged record is refused there)."""


class StageOutError(GlobusTmpError):
    """A declaration cannot be made (bad source, destination or options)."""


@dataclass
class StageOut:
    """One declared stage-out and everything known about how it went."""

    cluster: str
    job_id: str
    node: str
    seq: int
    source: str
    """The source as the job named it, e.g. ``/tmp/results``."""
    source_path: str
    """The same path as Globus sees it on this node's endpoint (a private ``/tmp`` is
    exported elsewhere: see :mod:`globus_tmp.privatetmp`)."""
    destination_endpoint: str
    destination_path: str
    label: str
    sync_level: str | None = None
    verify_checksum: bool = True
    declared_at: float = 0.0
    state: str = DECLARED
    submission_id: str | None = None
    source_endpoint: str | None = None
    task_id: str | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    files: int | None = None
    bytes_transferred: int | None = None
    error: str | None = None
    """Why it failed, in one line."""
    held: bool | None = None
    """With a private ``/tmp``: whether the job's files were kept past its end."""
    note: str | None = None
    """What globus-tmp did to the task besides Globus's own outcome, kept across
    refreshes: a drain that gave up at ``linger_max`` and could not cancel it yet."""

    @property
    def key(self) -> str:
        return f"{self.cluster}.{self.job_id}/{self.node}.{self.seq}"

    def fail(self, why: str) -> None:
        self.state, self.error, self.finished_at = FAILED, why, time.time()

    @classmethod
    def from_json(cls, data: Any) -> StageOut:
        if not isinstance(data, dict):
            raise ValueError("not a stage-out record")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class StageOutStore:
    """The user's stage-out records under ``<user_dir>/stage-out``; run as the user."""

    def __init__(self, user_dir: Path) -> None:
        self.root = user_dir / "stage-out"

    def _job_dir(self, cluster: str, job_id: str) -> Path:
        return self.root / f"{cluster}.{job_id}"

    def declare(self, record: StageOut, marks: Path) -> StageOut:
        """Store a new declaration under the next free sequence number (O_EXCL), after
        its node-local mark in ``marks`` (the user's ``declared/<user>`` on the node:
        without a mark the Epilog never reads the home). No mark, no record; a record
        that cannot be written takes the mark it made with it."""
        from .stagemarks import drop_mark, write_mark

        made = write_mark(str(marks), record.job_id, record.node)
        try:
            return self._declare(record)
        except BaseException:
            if made:
                drop_mark(str(marks), record.job_id)
            raise

    def _declare(self, record: StageOut) -> StageOut:
        job_dir = self._job_dir(record.cluster, record.job_id)
        job_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        record.declared_at = time.time()
        for seq in range(1, _MAX_PER_JOB_NODE + 1):
            record.seq = seq
            path = job_dir / f"{record.node}.{seq}.json"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(record), indent=1))
            return record
        raise StageOutError(
            f"job {record.job_id} already declared {_MAX_PER_JOB_NODE} stage-outs on "
            f"{record.node}; declare a directory instead of single files"
        )

    def save(self, record: StageOut) -> None:
        from .nodestate import write_atomic

        path = self._job_dir(record.cluster, record.job_id) / f"{record.node}.{record.seq}.json"
        write_atomic(path, json.dumps(asdict(record), indent=1), 0o600)

    def records(
        self, cluster: str | None = None, job_id: str | None = None, node: str | None = None
    ) -> list[StageOut]:
        """Records matching the filters, oldest declaration first; unreadable ones skipped."""
        found: list[StageOut] = []
        for job_dir in self._job_dirs(cluster, job_id):
            with contextlib.suppress(OSError):
                for name in sorted(os.listdir(job_dir)):
                    if not name.endswith(".json") or name.startswith("."):
                        continue
                    if node is not None and not name.startswith(f"{node}."):
                        continue
                    try:
                        record = StageOut.from_json(
                            json.loads(read_text_bounded(job_dir / name, STATE))
                        )
                    except (OSError, ValueError, TypeError):
                        continue
                    if node is None or record.node == node:
                        found.append(record)
        return sorted(found, key=lambda r: (r.declared_at, r.key))

    def _job_dirs(self, cluster: str | None, job_id: str | None) -> Iterator[Path]:
        if cluster is not None and job_id is not None:
            yield self._job_dir(cluster, job_id)
            return
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return
        for name in names:
            c, sep, j = name.rpartition(".")
            if sep and (cluster is None or c == cluster) and (job_id is None or j == job_id):
                yield self.root / name


def translate(path: str, job_tmp: str | None) -> str:
    """``path`` as Globus sees it: under a private ``/tmp``, its exported location."""
    if job_tmp and (path == "/tmp" or path.startswith("/tmp/")):
        return job_tmp + path[len("/tmp") :]
    return path


def mark_held(
    user_dir: Path, home: str, cluster: str, job_id: str, node: str, held: bool, why: str
) -> int:
    """Note on each declaration of the job on this node whether its files were held
    (as the user, in a ``user_dir`` checked first: :mod:`globus_tmp.userdir`)."""
    store = StageOutStore(check_user_dir(user_dir, home))
    records = [r for r in store.records(cluster, job_id, node) if r.state == DECLARED]
    for record in records:
        record.held = held
        if not held:
            record.fail(why)
        store.save(record)
    return len(records)


def declared_count(user_dir: Path, home: str, cluster: str, job_id: str, node: str) -> int:
    """How many declarations of the job on this node wait for its end (as the user, in
    a ``user_dir`` checked first: another user's records must never be submitted)."""
    store = StageOutStore(check_user_dir(user_dir, home))
    return sum(1 for r in store.records(cluster, job_id, node) if r.state == DECLARED)


def submit_declared(
    session_for: Any,
    user_dir: Path,
    cluster: str,
    job_id: str,
    node: str,
    endpoint: str | None,
    gone_why: str | None = None,
) -> list[dict[str, Any]]:
    """Submit the job's declared stage-outs from this node; one outcome per record.

    ``endpoint`` is this node's endpoint id (None: no GCP runs, the records fail).
    ``session_for()`` gives the user's Globus session, created only if needed.
    ``gone_why``: why a missing source is missing, when the caller knows (a private
    /tmp that was not kept).
    """
    store = StageOutStore(user_dir)
    outcomes: list[dict[str, Any]] = []
    session: GlobusSession | None = None
    for record in store.records(cluster, job_id, node):
        if record.state == DECLARED:
            if endpoint is None:
                record.fail(f"no globus-tmp endpoint ran on {node} when the job ended")
            elif not os.path.lexists(record.source_path):
                record.fail(gone_why or f"{record.source} did not exist when the job ended")
            else:
                try:
                    session = session or session_for()
                    _submit(session, store, record, endpoint)
                except GlobusTmpError as exc:
                    record.fail(str(exc))
            store.save(record)
        elif record.state != SUBMITTED:
            continue
        outcomes.append(outcome_of(record))
    return outcomes


def _submit(session: GlobusSession, store: StageOutStore, record: StageOut, endpoint: str) -> None:
    import globus_sdk
    from globus_sdk import MISSING

    from .globusapi import describe

    try:
        tc = session.transfer()
        if record.submission_id is None:
            record.submission_id = str(tc.get_submission_id()["value"])
            record.source_endpoint = endpoint
            store.save(record)  # a retried Epilog reuses it: Globus makes the POST idempotent
        data = globus_sdk.TransferData(
            endpoint,
            record.destination_endpoint,
            label=record.label,
            sync_level=record.sync_level or MISSING,  # type: ignore[arg-type]
            verify_checksum=record.verify_checksum,
            submission_id=record.submission_id,
        )
        recursive = os.path.isdir(record.source_path) and not os.path.islink(record.source_path)
        data.add_item(record.source_path, record.destination_path, recursive=recursive)
        record.task_id = str(tc.submit_transfer(data)["task_id"])
    except Exception as exc:
        session.remember_consent(exc)
        raise StageOutError(f"submitting the transfer to Globus failed: {describe(exc)}") from None
    record.state, record.submitted_at = SUBMITTED, time.time()


def settle(session_for: Any, user_dir: Path, cluster: str, node: str) -> list[dict[str, Any]]:
    """Ask Globus how this node's submitted stage-outs ended; record and return those
    that have (``SUCCEEDED``/``FAILED``)."""
    store = StageOutStore(user_dir)
    pending = [r for r in store.records(cluster, None, node) if r.state == SUBMITTED]
    return [outcome_of(r) for r in refresh(session_for, store, pending) if r.state in FINISHED]


def refresh(session_for: Any, store: StageOutStore, records: list[StageOut]) -> list[StageOut]:
    """Update submitted records from Globus (bytes, files, final status); returns them."""
    from .globusapi import describe
    from .transfers import failure_reason

    if not records:
        return records
    tc = session_for().transfer(max_retries=1)
    for record in records:
        if record.state != SUBMITTED or not record.task_id:
            continue
        try:
            task = tc.get_task(record.task_id).data
        except Exception as exc:
            record.error = f"Globus not asked: {describe(exc)}"
            continue
        record.files = _int(task.get("files"))
        record.bytes_transferred = _int(task.get("bytes_transferred"))
        status = task.get("status")
        record.error = None
        if status == "SUCCEEDED":
            record.state, record.finished_at = SUCCEEDED, time.time()
        elif status == "FAILED":
            record.fail(failure_reason(tc, task))
        store.save(record)
    return records


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def outcome_of(record: StageOut) -> dict[str, Any]:
    return {
        "key": record.key,
        "source": record.source,
        "destination": f"{record.destination_endpoint}:{record.destination_path}",
        "state": record.state,
        "task_id": record.task_id,
        "error": record.error,
    }
