"""Leases under real concurrency: many processes, one pool, no shared lock to lean on."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import random
import time
import uuid
from pathlib import Path

from globus_tmp.errors import PoolExhaustedError
from globus_tmp.leases import Holder
from globus_tmp.pool import EndpointPool

PROCESSES = 200
ROUNDS = 4


class Nothing:
    """A LeaseProver that can prove nothing (every held lease stays held)."""

    def stale(self, record: object, entry: object) -> None:
        return None


def _worker(root: str, index: int, entries: int, marks: str, errors: str) -> None:
    # a file system whose flock is node-local: flock "succeeds" and excludes no one
    fcntl.flock = lambda *args, **kwargs: None
    random.seed(index)
    pool = EndpointPool(Path(root))
    me = Holder("c1", f"n{index}", "boot")
    for _ in range(ROUNDS):
        deadline = time.monotonic() + 60
        while True:
            try:
                entry, _ = pool.lease("alice", me, Nothing(), slot=random.randrange(entries))
                break
            except PoolExhaustedError:
                if time.monotonic() > deadline:
                    return
                time.sleep(random.uniform(0.005, 0.05))
        mark = os.path.join(marks, entry.name)
        try:  # at most one holder at every moment: the marker exists while we hold
            fd = os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
        except FileExistsError:
            with open(os.path.join(errors, f"{index}-{uuid.uuid4()}"), "w") as fh:
                fh.write(f"n{index} got {entry.name} while another node held it\n")
            continue
        time.sleep(random.uniform(0, 0.01))
        os.unlink(mark)
        assert pool.release(entry.name, me)


def test_many_processes_never_share_an_entry(tmp_path: Path) -> None:
    """Issue 8: 200 processes lease and release at random against one pool, through two
    paths to it, with flock excluding no one: every moment, every entry has at most one
    holder (checked with an O_EXCL marker while held), and every lease is given back."""
    root = tmp_path / "user_dir"
    pool = EndpointPool(root)
    entries = 20
    for i in range(entries):
        lta = pool.endpoints_dir / f"ep{i:02d}" / "lta"
        lta.mkdir(parents=True)
        (lta / "client-id.txt").write_text(str(uuid.uuid4()))
    other_path = tmp_path / "same-home-other-path"
    other_path.symlink_to(root)
    marks, errors = tmp_path / "marks", tmp_path / "errors"
    marks.mkdir()
    errors.mkdir()
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(
            target=_worker,
            args=(str(other_path if i % 2 else root), i, entries, str(marks), str(errors)),
        )
        for i in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(180)
        assert proc.exitcode == 0
    problems = [p.read_text() for p in errors.iterdir()]
    assert problems == [], problems[:5]
    assert pool.leases() == {}, "every lease was given back"
