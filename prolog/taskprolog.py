"""``globus-tmp-taskprolog``: Slurm ``TaskProlog`` (the job user, once per task).

Prints ``export GLOBUS_TMP_ENDPOINT_ID=...`` and ``export GLOBUS_TMP_PATHS=...`` for the
task's environment, or ``print globus-tmp: <reason>`` into the task's output. It reads
node state only: no lock, no GCP call, no network; and it never fails the task.
"""

from __future__ import annotations

import os
import sys

from globus_tmp.alarm import alarm_backstop
from globus_tmp.config import load_config
from globus_tmp.errors import GlobusTmpError
from globus_tmp.job import UserIdentity, node_name
from globus_tmp.lookup import lookup

LOOKUP_BOUND = 30.0
"""The longest a task waits for its variables: the user look-up (NSS, maybe LDAP) may
hang, and the task does not start until the TaskProlog is done."""


def task_lines() -> list[str]:
    try:
        cfg = load_config()
        with alarm_backstop(LOOKUP_BOUND, "the user look-up or node state hung; no endpoint"):
            user = UserIdentity.current().name
            info = lookup(cfg, node_name(os.environ), user, os.environ.get("SLURM_JOB_ID"))
    except GlobusTmpError as exc:
        return [f"print globus-tmp: {exc}", "unset GLOBUS_TMP_ENDPOINT_ID"]
    lines = [
        f"export GLOBUS_TMP_ENDPOINT_ID={info.endpoint_id}",
        f"export GLOBUS_TMP_PATHS={':'.join(info.paths)}",
    ]
    if cfg.source != "<defaults>":
        lines.append(f"export GLOBUS_TMP_CONFIG={cfg.source}")
    return lines


def main() -> None:
    try:
        out = "".join(f"{line}\n" for line in task_lines())
    except Exception as exc:  # never fail the task
        out = f"print globus-tmp: internal error: {type(exc).__name__}: {exc}\n"
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
    except OSError:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
