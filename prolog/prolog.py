"""``globus-tmp-prolog``: Slurm ``Prolog`` (root, once per job per node).

Adds the job to the user's job set on this node and starts, or joins, the user's GCP.
Exits 0 on any failure unless ``on_failure = "fail"``.
"""

from __future__ import annotations

import sys

from globus_tmp.hookrunner import run_hook


def main() -> None:
    sys.exit(
        run_hook("prolog", lambda lifecycle, job: lifecycle.prolog(job), honours_on_failure=True)
    )


if __name__ == "__main__":
    main()
