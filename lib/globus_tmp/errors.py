"""One error hierarchy, so hooks and the CLI can turn any failure into one line.

Every message is written for the person who has to act on it: it says what is wrong
and, where there is one, the fix.
"""

from __future__ import annotations


class GlobusTmpError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class ConfigError(GlobusTmpError):
    """globus-tmp.conf is missing a value, has a wrong one, or cannot be read."""

    exit_code = 3


class JobContextError(GlobusTmpError):
    """The environment does not describe a Slurm job (a hook run by hand, say)."""

    exit_code = 2


class StateError(GlobusTmpError):
    """Node state or its directory cannot be trusted (permissions, a lock timeout)."""


class PrivilegeError(GlobusTmpError):
    """Dropping to the job user failed, or a step as the user did not finish in time."""


class PoolError(GlobusTmpError):
    """The user's endpoint pool cannot give this node an endpoint."""


class NoPoolError(PoolError):
    """The user has no set-up GCP config directory in the pool."""


class PoolExhaustedError(PoolError):
    """Every pool entry is leased to another node that still runs jobs of the user."""


class GcpError(GlobusTmpError):
    """Globus Connect Personal did not start, connect or stop as expected."""


class GcpAlreadyRunning(GcpError):
    """``-start`` found another instance of this user on this host."""


class ControlSocketSquatted(GcpError):
    """GCP's control socket path of a user is held by someone else."""


class HookTimeout(GlobusTmpError):
    """The hook hit its own time bound (hook_timeout) and gave up."""
