"""Running commands for the lab: captured output, and failures that say what and why."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says why and shows the logs."""


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 120,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[PathLike] = None,
    input: Optional[str] = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with captured text output; a failure names the command and its output."""
    try:
        cp = subprocess.run(
            list(argv),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {shlex.join(argv)}") from exc
    if check and cp.returncode != 0:
        raise LabError(
            f"command failed (rc={cp.returncode}): {shlex.join(argv)}\n"
            f"stdout:\n{cp.stdout.strip()}\nstderr:\n{cp.stderr.strip()}"
        )
    return cp


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"
    return "\n".join(text[-lines:])


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
