"""The one way a command's answer reaches the terminal: text for people, or ``--json``.

A command returns an :class:`Output` (its data and the text made from the same data);
:func:`emit` prints one or the other. No command prints its answer on its own, so
``--json`` always means the same thing: the data, indented by 2.
"""

from __future__ import annotations

import json
import sys

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from collections.abc import Callable

PROG = "globus-tmp-endpoint"


class Output:
    """A command's answer: ``data`` (what ``--json`` prints; None for commands without
    ``--json``), ``text`` (what a person reads), the exit code, and ``then``: what the
    command still does once its answer is out (``stage-out --wait`` follows the task)."""

    __slots__ = ("data", "exit_code", "text", "then")

    def __init__(
        self,
        text: str,
        data: object = None,
        exit_code: int = 0,
        then: Callable[[], object] | None = None,
    ) -> None:
        self.text = text
        self.data = data
        self.exit_code = exit_code
        self.then = then


def render(output: Output, as_json: bool) -> str:
    """What :func:`emit` prints for ``output`` (without the final newline)."""
    if as_json:
        if output.data is None:
            raise ValueError("this command has no --json output")
        return json.dumps(output.data, indent=2)
    return output.text


def emit(output: Output, as_json: bool = False) -> int:
    """Print ``output``, run its ``then``, and give its exit code."""
    sys.stdout.write(render(output, as_json) + "\n")
    sys.stdout.flush()
    if output.then is not None:
        output.then()
    return output.exit_code


def warn(message: str) -> None:
    """One line on stderr, prefixed as every message of this program is."""
    print(f"{PROG}: {message}", file=sys.stderr)
