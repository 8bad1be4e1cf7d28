"""Stage-out records: declaration numbering, filters, marks, and path translation."""

from __future__ import annotations

from pathlib import Path

import pytest
from globus_tmp.nodestate import MAX_TASKS
from globus_tmp.stageout import (
    DECLARED,
    FAILED,
    StageOut,
    StageOutError,
    StageOutStore,
    declared_count,
    mark_held,
    translate,
)


def _record(node: str = "n1", job: str = "5", source: str = "/tmp/out") -> StageOut:
    return StageOut(
        cluster="c", job_id=job, node=node, seq=0, source=source, source_path=source,
        destination_endpoint="5a8d3a0c-1f7e-4d0e-8c52-0b1b2f0f9a11", destination_path="/x",
        label="l",
    )  # fmt: skip


def _marks(tmp_path: Path) -> Path:
    """A directory of the caller's own standing for the node's ``declared/<user>``."""
    marks = tmp_path / "marks"
    marks.mkdir(mode=0o700, exist_ok=True)
    return marks


def test_declarations_are_numbered_per_node_and_filtered(tmp_path: Path) -> None:
    store = StageOutStore(tmp_path)
    assert [store.declare(_record(), _marks(tmp_path)).seq for _ in range(3)] == [1, 2, 3]
    store.declare(_record(node="n2"), _marks(tmp_path))
    store.declare(_record(job="6"), _marks(tmp_path))
    assert len(store.records("c", "5", "n1")) == 3
    assert len(store.records("c", "5")) == 4
    assert len(store.records(None, "6")) == 1
    assert len(store.records()) == 5
    assert (tmp_path / "stage-out" / "c.5" / "n1.1.json").stat().st_mode & 0o077 == 0


def test_a_node_name_that_prefixes_another_is_not_confused(tmp_path: Path) -> None:
    store = StageOutStore(tmp_path)
    store.declare(_record(node="n1"), _marks(tmp_path))
    store.declare(_record(node="n10"), _marks(tmp_path))
    assert [r.node for r in store.records("c", "5", "n1")] == ["n1"]


def test_marking_held_and_refused(tmp_path: Path) -> None:
    store = StageOutStore(tmp_path)
    store.declare(_record(), _marks(tmp_path))
    assert declared_count(tmp_path, str(tmp_path), "c", "5", "n1") == 1
    assert mark_held(tmp_path, str(tmp_path), "c", "5", "n1", False, "not held: cap") == 1
    (record,) = store.records()
    assert record.state == FAILED and record.error == "not held: cap" and record.held is False
    assert declared_count(tmp_path, str(tmp_path), "c", "5", "n1") == 0


def test_a_corrupt_record_is_skipped_not_fatal(tmp_path: Path) -> None:
    store = StageOutStore(tmp_path)
    store.declare(_record(), _marks(tmp_path))
    (tmp_path / "stage-out" / "c.5" / "n1.2.json").write_text("{not json")
    assert [r.state for r in store.records()] == [DECLARED]


def test_too_many_declarations_say_what_to_do(tmp_path: Path) -> None:
    """As many as node state follows for one job (MAX_TASKS, one task each)."""
    store = StageOutStore(tmp_path)
    for _ in range(MAX_TASKS):
        store.declare(_record(), _marks(tmp_path))
    with pytest.raises(StageOutError, match="declare a directory"):
        store.declare(_record(), _marks(tmp_path))


def test_translate_maps_only_tmp() -> None:
    export = "/run/globus-tmp/n1/jobtmp/alice/5"
    assert translate("/tmp/a/b", export) == export + "/a/b"
    assert translate("/tmp", export) == export
    assert translate("/tmpfoo/x", export) == "/tmpfoo/x"
    assert translate("/scratch/x", export) == "/scratch/x"
    assert translate("/tmp/a", None) == "/tmp/a"
