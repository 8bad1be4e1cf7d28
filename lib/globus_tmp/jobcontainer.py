"""What ``job_container.conf`` says about this node's private job directories.

Slurm's ``job_container/tmpfs`` (``namespace/tmpfs`` from 25.11) reads it beside
slurm.conf. Per node it gives ``BasePath`` (a line with ``NodeName=<hostlist>`` wins over
the global one; Slurm expands ``%n`` and ``%h`` from 23.02, and a build with several slurmd
per host, such as Debian's, appends ``/<node>`` itself), and from 23.02 ``Dirs``: the
directories each job gets privately (default ``/tmp,/dev/shm``), each bound from
``BasePath/<job>/.<job>/<path with every / made _>`` (``/tmp`` from ``.<job>/_tmp``);
22.05 has no ``Dirs`` and binds ``.<job>`` itself over ``/tmp``. ``CloneNSScript_Wait``
and ``CloneNSEpilog_Wait`` (24.11+, default 10 s) bound our CloneNS helper: past them
Slurm kills it (and a failed CloneNSScript fails the job).

Read from SchedMD's source (src/plugins/job_container/tmpfs, src/plugins/namespace/tmpfs
of 24.11 and 25.11) and run in the lab on 22.05, 24.11 and 25.11.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .boundedio import STATE, read_text_bounded

DEFAULT_DIRS = ("/tmp", "/dev/shm")
"""Slurm 23.02+'s default ``Dirs``."""
DEFAULT_CLONENS_WAIT = 10.0


@dataclass(frozen=True)
class JobContainerConf:
    found: bool
    bases: tuple[Path, ...] = ()
    """Candidate ``BasePath`` directories of this node (with and without ``/<node>``)."""
    dirs: tuple[str, ...] | None = None
    """``Dirs`` as written; None when unset (Slurm 23.02+ then uses :data:`DEFAULT_DIRS`)."""
    clonens_script_wait: float = DEFAULT_CLONENS_WAIT
    clonens_epilog_wait: float = DEFAULT_CLONENS_WAIT
    clonens_script: str = ""
    clonens_epilog: str = ""


def read_job_container_conf(slurm_conf: Path, node: str) -> JobContainerConf:
    """``job_container.conf`` beside ``slurm_conf``, as it applies to ``node``."""
    try:
        text = read_text_bounded(slurm_conf.parent / "job_container.conf", STATE)
    except OSError:
        return JobContainerConf(found=False)
    glob: dict[str, str] = {}
    mine: dict[str, str] | None = None
    for raw in text.splitlines():
        words = {
            k.lower(): v.strip('"')
            for k, _, v in (w.partition("=") for w in raw.split("#", 1)[0].split())
        }
        if "nodename" in words:
            if mine is None and node in expand_hostlist(words["nodename"]):
                mine = words
        else:
            glob.update(words)
    picked = {**glob, **(mine or {})}
    base = picked.get("basepath", "")
    if mine is None and "basepath" not in glob:
        base = ""
    return JobContainerConf(
        found=True,
        bases=_bases(base, node),
        dirs=tuple(d for d in picked["dirs"].split(",") if d) if "dirs" in picked else None,
        clonens_script_wait=_seconds(picked.get("clonensscript_wait")),
        clonens_epilog_wait=_seconds(picked.get("clonensepilog_wait")),
        clonens_script=picked.get("clonensscript", ""),
        clonens_epilog=picked.get("clonensepilog", ""),
    )


def _bases(base: str, node: str) -> tuple[Path, ...]:
    if not base or base.lower().startswith("none"):
        return ()
    text = base.replace("%n", node).replace("%h", os.uname().nodename)
    return (Path(text) / node, Path(text))


def _seconds(value: str | None) -> float:
    try:
        seconds = float(value) if value else DEFAULT_CLONENS_WAIT
    except ValueError:
        return DEFAULT_CLONENS_WAIT
    return seconds if seconds > 0 and seconds == seconds else DEFAULT_CLONENS_WAIT


def mangled(path: str) -> str:
    """The name Slurm 23.02+ gives a ``Dirs`` entry under ``.<job>``: ``/var/tmp`` ->
    ``_var_tmp``."""
    return path.replace("/", "_")


_RANGE = re.compile(r"\[([^\]]*)\]")


def expand_hostlist(hostlist: str) -> list[str]:
    """``n[1-3,7],gpu01`` -> ``n1 n2 n3 n7 gpu01`` as Slurm expands it (zero padding
    kept, several bracket groups multiply). Not a full Slurm hostlist: enough for the
    ``NodeName=`` of a config file; a malformed item stays as written."""
    names: list[str] = []
    for item in _split_top(hostlist):
        names.extend(_expand_item(item))
    return names


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets."""
    items, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += (ch == "[") - (ch == "]")
        cur += ch
    items.append(cur)
    return [i.strip() for i in items if i.strip()]


def _expand_item(item: str) -> list[str]:
    m = _RANGE.search(item)
    if not m:
        return [item]
    head, tail = item[: m.start()], item[m.end() :]
    out: list[str] = []
    for part in m.group(1).split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            return [item]
        width = len(lo)
        stop = int(hi) if sep else int(lo)
        if stop - int(lo) > 100_000:
            return [item]
        for n in range(int(lo), stop + 1):
            out.extend(_expand_item(f"{head}{n:0{width}d}{tail}"))
    return out
