"""SIGALRM, the backstop behind every bounded wait of a hook.

Light on purpose (``contextlib`` and ``signal``, which every interpreter has loaded
already): the TaskProlog, run before every task, arms it around its user look-up.

A user look-up (``getpwnam``/``getpwuid``, which may ask LDAP or sssd) can hang, so
every hook makes it under the alarm. The handler runs when the look-up returns to
Python: one that returns late is cut off there, one stuck inside the C library for
good is left to slurmd's own timeout (``PrologEpilogTimeout``).
"""

from __future__ import annotations

import contextlib
import signal

from .errors import HookTimeout

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType


@contextlib.contextmanager
def alarm_backstop(seconds: float, message: str) -> Iterator[None]:
    """Raise :class:`HookTimeout` (``message``) in this process after ``seconds``: the
    backstop behind every bounded wait, for whatever still hangs."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise HookTimeout(message)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(-int(-seconds // 1), 1))  # whole seconds, rounded up
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
