"""globus-tmp.conf as the endpoint lookup reads it: without importing ``config``.

``globus-tmp-endpoint`` with no command runs in every job that wants its endpoint id,
so its start-up is a hot path (``bench/hot_paths.py``: at most 3x a bare interpreter).
``config`` defines a frozen dataclass (``dataclasses`` imports ``inspect``, ``ast`` and
``dis``) and uses ``pathlib``: importing it costs more than the whole lookup may.

So this module reads only the common case: the file as root cached its parsed table,
or no file at the default place (nor at the fallback place, one more ``open`` only when
nothing is beside ``SLURM_CONF``), and checks it with the same rules
(:mod:`globus_tmp.configkeys`). For anything else (no cache entry, any error)
:func:`quick_lookup_config` returns None and the caller loads the file with
:func:`globus_tmp.config.load_config`, which then gives the one true answer or error
message.
"""

from __future__ import annotations

import os
import stat

from .configkeys import (
    CACHE_DIR,
    DEFAULT_EXPOSED_PATHS,
    DEFAULT_STATE_DIR,
    cached_table,
    check_table,
    config_file,
    expand_percent,
    fallback_config,
)
from .errors import ConfigError

TYPE_CHECKING = False  # typing is not imported at run time: see docs/DESIGN.md
if TYPE_CHECKING:
    from collections.abc import Mapping


class LookupConfig:
    """The two settings a lookup needs: where node state is, and what GCP exports."""

    __slots__ = ("exposed_paths", "state_dir")

    def __init__(self, state_dir: str, exposed_paths: tuple[str, ...]) -> None:
        self.state_dir = state_dir
        self.exposed_paths = exposed_paths

    def state_dir_for(self, node: str) -> str:
        """``state_dir`` with ``%n`` as ``node`` and ``%%`` as ``%`` (as ``config`` does)."""
        return expand_percent(self.state_dir, {"n": node})


def quick_lookup_config(env: Mapping[str, str], cache_dir: str = CACHE_DIR) -> LookupConfig | None:
    """The lookup's settings from root's cached table (or the defaults when there is no
    file at the default place); None: ask ``config``."""
    path, explicit = config_file(env)
    try:
        fd = _open(path)
        fallback = fallback_config(path, explicit)
        if fd < 0 and fallback is not None:
            path, fd = fallback, _open(fallback)
    except OSError:
        return None
    if fd < 0:
        return None if explicit else LookupConfig(DEFAULT_STATE_DIR, DEFAULT_EXPOSED_PATHS)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        return None
    table = cached_table(cache_dir, path, st)
    if table is None:
        return None
    try:
        values = check_table(table, path)
    except ConfigError:
        return None  # config says it, in its words
    return LookupConfig(
        values.get("state_dir", DEFAULT_STATE_DIR),
        values.get("exposed_paths", DEFAULT_EXPOSED_PATHS),
    )


def _open(path: str) -> int:
    """A descriptor of ``path``; -1 when there is no such file (OSError otherwise)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return -1
