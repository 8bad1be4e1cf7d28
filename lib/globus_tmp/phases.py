"""The phases of a user's GCP on a node, and the changes between them.

Kept apart from :mod:`globus_tmp.nodestate` (dataclasses, pathlib, locks) because the
endpoint lookup, run in every job, reads the phase too and must start fast; both take
the words and the version of the state document from here.
"""

from __future__ import annotations

import enum

from .errors import IllegalTransition

STATE_VERSION = 1


class Phase(str, enum.Enum):
    """Where a user's GCP on this node is in its life. The values are what the state
    file says (unchanged since version 1); ``str`` so they compare, print and serialise
    as those words."""

    IDLE = "idle"
    """No GCP: none needed yet, or the last one stopped."""
    STARTING = "starting"
    """A start is under way (or was interrupted: nobody holds the gcp lock)."""
    RUNNING = "running"
    DRAINING = "draining"
    """No job left; a transfer keeps GCP up until it ends or ``linger_max``."""
    STOPPING = "stopping"
    """A stop is under way (or was interrupted)."""
    FAILED = "failed"
    """The last start failed, or GCP died under running jobs; ``error`` says why."""

    def __str__(self) -> str:
        return str(self.value)


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    # a start: the next Prolog (IDLE, FAILED), or a reconcile adopting an unrecorded
    # GCP for running jobs (IDLE/FAILED -> RUNNING); a repair finding jobs without GCP
    Phase.IDLE: frozenset({Phase.STARTING, Phase.RUNNING, Phase.FAILED}),
    # it ends: started or adopted, failed, or (a repair) abandoned with no job left
    Phase.STARTING: frozenset({Phase.RUNNING, Phase.FAILED, Phase.IDLE}),
    # the last job left (drain or stop), GCP died (FAILED; IDLE when no job is left)
    Phase.RUNNING: frozenset({Phase.DRAINING, Phase.STOPPING, Phase.IDLE, Phase.FAILED}),
    # a job joined (or the drain died: checked again as RUNNING), or as RUNNING
    Phase.DRAINING: frozenset({Phase.RUNNING, Phase.STOPPING, Phase.IDLE, Phase.FAILED}),
    # stopped; or a repair finishing it, which may adopt an interrupted start's GCP
    Phase.STOPPING: frozenset({Phase.IDLE, Phase.FAILED, Phase.RUNNING}),
    # the next Prolog starts again; a stop (the failed drain's) or repair cleans up
    Phase.FAILED: frozenset({Phase.STARTING, Phase.RUNNING, Phase.STOPPING, Phase.IDLE}),
}
"""The phase changes the code makes, from -> to; staying in a phase is always allowed.
:meth:`NodeStateStore.write` refuses any other (:class:`IllegalTransition`)."""


def check_transition(old: Phase, new: Phase) -> None:
    """Raise :class:`IllegalTransition` unless ``old`` may become ``new``."""
    if old is not new and new not in TRANSITIONS[old]:
        raise IllegalTransition(
            f"node state cannot go from {old} to {new} (a bug in globus-tmp; nothing was written)",
            from_phase=old.value,
            to_phase=new.value,
        )
