"""One error hierarchy, so hooks and the CLI can turn any failure into one line.

Every message is written for the person who has to act on it: it says what is wrong
and, where there is one, the fix. What code decides on travels in fields and types
(:class:`CommandFailed`'s ``returncode``, :class:`IllegalTransition`'s phases), never
in the message text. Each class's ``exit_code`` is what a command-line tool exits
with when that error ends it (docs/ADMIN.md, "Exit codes").

An error raised in a step as the job user crosses back to root as its class name,
message and :meth:`GlobusTmpError.fields` (see :mod:`globus_tmp.privileges`), and is
rebuilt by :meth:`GlobusTmpError.rebuild`, which trusts none of it: the step is the
user's.

Every error also says where it comes from (:attr:`GlobusTmpError.user_side`): the job
user's side (their files, their GCP, a step as them, which they may stop, kill or make
answer anything, its class name included) or the site's (configuration, state_dir,
the install, our own bugs). ``on_failure = "fail"`` fails a Prolog for the site's
causes only: a user must not be able to drain nodes by breaking their own pool.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, ClassVar, TypeGuard, TypeVar

EXIT_OK = 0
EXIT_FAILED = 1
"""Something failed or was refused; the message says what."""
EXIT_USAGE = 2
"""Wrong arguments, or run where it cannot work (not root, not in a job)."""
EXIT_CONFIG = 3
"""globus-tmp.conf is missing a value, has a wrong one, or cannot be read."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT)."""


class GlobusTmpError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code: ClassVar[int] = EXIT_FAILED
    user_side: bool = False
    """Whether the job user's side caused it (see the module's docstring); a class says
    where its errors usually come from, and :func:`mark_user_side` marks an instance
    (everything a step as the user reports or does)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def fields(self) -> dict[str, Any]:
        """What this error carries besides its message, as JSON-able data."""
        return {}

    @classmethod
    def rebuild(cls, message: str, fields: Mapping[str, Any]) -> GlobusTmpError:
        """This error as a step as the user reported it; subclasses with fields take
        only well-typed ones."""
        return cls(message)


if TYPE_CHECKING:
    E = TypeVar("E", bound=GlobusTmpError)


def mark_user_side(exc: E) -> E:
    """``exc``, marked as the job user's doing: what a step as the user reported (its
    kind is the user's to choose), or its dying, hanging or garbling its answer."""
    exc.user_side = True
    return exc


def from_user_side(exc: BaseException) -> bool:
    """Whether ``exc`` came from the job user's side. Anything else (a bug included) is
    the site's: a failure root cannot pin on the user may be the node's."""
    return isinstance(exc, GlobusTmpError) and exc.user_side


def _without_fields(cls: type[GlobusTmpError], message: str) -> GlobusTmpError:
    """The nearest class of ``cls``'s that needs no fields: what a report with missing
    or ill-typed fields is rebuilt as (a GCP error stays a :class:`GcpError`)."""
    for base in cls.__mro__:
        if (
            isinstance(base, type)
            and issubclass(base, GlobusTmpError)
            and base.__init__ is GlobusTmpError.__init__
        ):
            return base(message)
    return GlobusTmpError(message)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class UsageError(GlobusTmpError):
    """A command was called wrongly, or where it cannot work (not as root, say)."""

    exit_code = EXIT_USAGE


class ConfigError(GlobusTmpError):
    """globus-tmp.conf is missing a value, has a wrong one, or cannot be read."""

    exit_code = EXIT_CONFIG


class JobContextError(GlobusTmpError):
    """The environment does not describe a Slurm job (a hook run by hand, say)."""

    exit_code = EXIT_USAGE


class StateError(GlobusTmpError):
    """Node state or its directory cannot be trusted (permissions, a lock timeout)."""


class LockTimeout(StateError):
    """A lock was still held by someone else when ``timeout`` (seconds) ran out.

    The locks are per user: only that user's own hooks hold them, long only across the
    user's steps (which the user can stall up to their bounds)."""

    user_side = True

    def __init__(self, message: str, *, path: str, timeout: float) -> None:
        super().__init__(message)
        self.path = path
        self.timeout = timeout

    def fields(self) -> dict[str, Any]:
        return {"path": self.path, "timeout": self.timeout}

    @classmethod
    def rebuild(cls, message: str, fields: Mapping[str, Any]) -> GlobusTmpError:
        path, timeout = fields.get("path"), fields.get("timeout")
        if not isinstance(path, str) or not _is_number(timeout):
            return _without_fields(cls, message)
        return cls(message, path=path, timeout=float(timeout))


class IllegalTransition(StateError):
    """Code tried to move a user's node state between phases that do not connect:
    a bug, refused before it reaches the state file."""

    def __init__(self, message: str, *, from_phase: str, to_phase: str) -> None:
        super().__init__(message)
        self.from_phase = from_phase
        self.to_phase = to_phase

    def fields(self) -> dict[str, Any]:
        return {"from_phase": self.from_phase, "to_phase": self.to_phase}

    @classmethod
    def rebuild(cls, message: str, fields: Mapping[str, Any]) -> GlobusTmpError:
        old, new = fields.get("from_phase"), fields.get("to_phase")
        if not isinstance(old, str) or not isinstance(new, str):
            return _without_fields(cls, message)
        return cls(message, from_phase=old, to_phase=new)


class PrivilegeError(GlobusTmpError):
    """Dropping to the job user failed, or a step as the user did not finish in time."""


class UserDirError(GlobusTmpError):
    """The user's ``user_dir`` cannot be trusted (someone else owns or may write it or a
    directory above it) or cannot be made: nothing in it is used."""

    user_side = True


class PoolError(GlobusTmpError):
    """The user's endpoint pool cannot give this node an endpoint."""

    user_side = True


class NoPoolError(PoolError):
    """The user has no set-up GCP config directory in the pool."""


class PoolExhaustedError(PoolError):
    """Every pool entry is leased to another node that still runs jobs of the user."""


class CommandError(GlobusTmpError):
    """An external command did not do its job; ``command`` is its argv, ``output`` the
    tail of what it printed (stdout, then stderr)."""

    def __init__(self, message: str, *, command: Sequence[str], output: str = "") -> None:
        super().__init__(message)
        self.command = list(command)
        self.output = output

    def fields(self) -> dict[str, Any]:
        return {"command": self.command, "output": self.output}

    @classmethod
    def rebuild(cls, message: str, fields: Mapping[str, Any]) -> GlobusTmpError:
        common = cls._common(fields)
        if common is None:
            return _without_fields(cls, message)
        return cls(message, command=common[0], output=common[1])

    @staticmethod
    def _common(fields: Mapping[str, Any]) -> tuple[list[str], str] | None:
        command, output = fields.get("command"), fields.get("output", "")
        if not isinstance(command, list) or not all(isinstance(w, str) for w in command):
            return None
        return (command, output) if isinstance(output, str) else None


class CommandNotStarted(CommandError):
    """The command could not be run at all (missing, not executable): ``reason``."""

    def __init__(self, message: str, *, command: Sequence[str], reason: str) -> None:
        super().__init__(message, command=command)
        self.reason = reason

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "reason": self.reason}

    @classmethod
    def rebuild(cls, message: str, fields: Mapping[str, Any]) -> GlobusTmpError:
        common, reason = cls._common(fields), fields.get("reason")
        if common is None or not isinstance(reason, str):
            return _without_fields(cls, message)
        return cls(message, command=common[0], reason=reason)


class CommandFailed(CommandError):
    """The command ran and exited with ``returncode`` (not 0)."""

    def __init__(
        self, message: str, *, command: Sequence[str], returncode: int, output: str = ""
    ) -> None:
        super().__init__(message, command=command, output=output)
        self.returncode = returncode

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "returncode": self.returncode}

    @classmethod
    def rebuild(cls, message: str, fields: Mapping[str, Any]) -> GlobusTmpError:
        common, rc = cls._common(fields), fields.get("returncode")
        if common is None or not isinstance(rc, int) or isinstance(rc, bool):
            return _without_fields(cls, message)
        return cls(message, command=common[0], returncode=rc, output=common[1])


class CommandTimedOut(CommandError):
    """The command had not ended after ``timeout`` seconds; its process group was killed."""

    def __init__(
        self, message: str, *, command: Sequence[str], timeout: float, output: str = ""
    ) -> None:
        super().__init__(message, command=command, output=output)
        self.timeout = timeout

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "timeout": self.timeout}

    @classmethod
    def rebuild(cls, message: str, fields: Mapping[str, Any]) -> GlobusTmpError:
        common, timeout = cls._common(fields), fields.get("timeout")
        if common is None or not _is_number(timeout):
            return _without_fields(cls, message)
        return cls(message, command=common[0], timeout=float(timeout), output=common[1])


class RemoteApiError(GlobusTmpError):
    """A remote API answered with an error: ``http_status`` (None: no HTTP answer at
    all) and the service's error ``code`` (None when it gave none)."""

    def __init__(
        self, message: str, *, http_status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code

    def fields(self) -> dict[str, Any]:
        return {"http_status": self.http_status, "code": self.code}

    @classmethod
    def rebuild(cls, message: str, fields: Mapping[str, Any]) -> GlobusTmpError:
        status, code = fields.get("http_status"), fields.get("code")
        if isinstance(status, bool) or not isinstance(status, (int, type(None))):
            status = None
        return cls(message, http_status=status, code=code if isinstance(code, str) else None)


class GcpError(GlobusTmpError):
    """Globus Connect Personal did not start, connect or stop as expected: the user's
    GCP, run from their config dir as them (``gcp_path`` itself is checked by root
    before a start, so a missing install is a site error)."""

    user_side = True


class GcpCommandFailed(GcpError, CommandFailed):
    """A ``globusconnectpersonal`` call exited non-zero with no answer we understand."""


class GcpSetupKeyRefused(GcpCommandFailed):
    """``-setup``'s key was used already or expired: its endpoint can never be set up."""


class GcpCommandTimedOut(GcpError, CommandTimedOut):
    """A ``globusconnectpersonal`` call gave no answer within its bound."""


class GcpNotStarted(GcpError, CommandNotStarted):
    """``gcp_path`` could not be run."""


class GcpAlreadyRunning(GcpError):
    """``-start`` found another instance of this user on this host."""


class ControlSocketSquatted(GcpError):
    """GCP's control socket path of a user is held by someone else."""


class HookTimeout(GlobusTmpError):
    """The hook hit its own time bound (hook_timeout) and gave up."""
