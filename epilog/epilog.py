"""``globus-tmp-epilog``: Slurm ``Epilog`` (root, once per job per node).

Removes the job from the user's job set on this node; after the user's last job, stops
GCP or hands over to a drain while a transfer is active. Always exits 0: a failing
Epilog drains the node, and a GCP left running is cleaned up by the next run.
"""

from __future__ import annotations

import sys

from globus_tmp.hookrunner import run_hook


def main() -> None:
    sys.exit(
        run_hook("epilog", lambda lifecycle, job: lifecycle.epilog(job), honours_on_failure=False)
    )


if __name__ == "__main__":
    main()
