"""``--wait`` progress: plain bounded lines in a file (a batch job's output), a live bar on
a terminal (a real pty), both showing what Globus reports of the task."""

from __future__ import annotations

import io
import os
import select
from typing import Any

import responses
from globus_tmp.globusapi import GlobusSession
from globus_tmp.progress import LiveDisplay, PlainDisplay, display_for, progress_line
from globus_tmp.transfers import follow

from globus.globus_recorded import recorded_doc

TRANSFER = "https://transfer.api.globus.org/v0.10"


def _task(**changes: Any) -> dict[str, Any]:
    """The recorded task document (``task_list``'s entry), with ``changes``."""
    task = recorded_doc("transfer.task_list")["DATA"][0]
    return {**task, **changes}


def test_the_line_shows_what_globus_reports() -> None:
    task = _task(
        status="ACTIVE", nice_status="Queued", files=10, files_transferred=3, files_skipped=1,
        subtasks_total=12, subtasks_succeeded=4, subtasks_retrying=2, faults=5,
        bytes_transferred=2_500_000_000, effective_bytes_per_second=48_000_000,
    )  # fmt: skip
    assert progress_line(task) == (
        "3/10 files  1 skipped  4/12 subtasks  2.5 GB at 48.0 MB/s  5 faults  2 retrying  "
        "ACTIVE (Queued)"
    )


def test_in_a_file_one_line_per_state_change_and_per_interval_never_a_carriage_return() -> None:
    out = io.StringIO()
    now = [0.0]
    display = PlainDisplay(out, "t1", every=30.0, clock=lambda: now[0])
    for i in range(300):  # ten minutes of polls every 2 s
        now[0] = 2.0 * i
        nice = "OK" if i < 150 else "PERMISSION_DENIED"  # one state change half way
        display.update(_task(status="ACTIVE", nice_status=nice, files_transferred=0))
    display.update(_task())  # SUCCEEDED
    display.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text
    assert lines[0] == "task t1: https://app.globus.org/activity/t1"
    # 600 s / 30 s = 20 interval lines at most, +1 state change, +1 final, +1 link
    assert 20 <= len(lines) <= 23, lines
    assert sum("PERMISSION_DENIED" in line for line in lines) == 10
    assert lines[-1].endswith("SUCCEEDED")


def _read_all(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_on_a_terminal_a_live_bar(session: GlobusSession) -> None:
    task = _task()
    task_id = task["task_id"]
    running = {**task, "status": "ACTIVE", "nice_status": "OK", "files_transferred": 0}
    for doc in (running, task):
        responses.add("GET", f"{TRANSFER}/task/{task_id}", json=doc)
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        assert isinstance(display_for(tty, task_id), LiveDisplay)
        assert follow(session, task_id, tty, poll=0.01) == "SUCCEEDED"
    text = _read_all(master)
    os.close(master)
    assert f"https://app.globus.org/activity/{task_id}" in text
    assert "\r" in text  # redrawn in place
    assert "0/1 files" in text and "1/1 files  2/2 subtasks  4.0 B at 3.0 B/s  SUCCEEDED" in text
    assert "█" in text and "| 1/1 files" in text  # tqdm's bar, filled, then the line


def test_a_pipe_or_file_gets_plain_lines() -> None:
    read, write = os.pipe()
    with os.fdopen(write, "w") as pipe:
        assert isinstance(display_for(pipe, "t"), PlainDisplay)
    os.close(read)


def test_the_bar_fits_the_terminal_width() -> None:
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    with os.fdopen(slave, "w") as tty:
        display = display_for(tty, "t1")
        display.update(_task(status="ACTIVE", files_transferred=0, faults=3))
        display.close()
    text = _read_all(master)
    os.close(master)
    drawn = [part for part in text.replace("\n", "\r").split("\r") if part.strip()]
    assert drawn and all(len(part) <= 60 for part in drawn[1:]), drawn
    assert drawn[0] == "task t1: https://app.globus.org/activity/t1"
