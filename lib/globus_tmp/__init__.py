"""globus-tmp: node-local storage as a Globus endpoint.

One Globus Connect Personal (GCP) per (node, user), started by Slurm's Prolog from a
config directory leased out of the user's pool, shared by all of that user's jobs on
the node, and stopped by the Epilog once no job and no transfer needs it.

The package is a library (this directory) with thin programs on top: the hooks in
``globus_tmp_prolog`` / ``globus_tmp_epilog`` and the ``globus-tmp-endpoint`` CLI.
"""

__version__ = "0.2.0"
"""The one version source: pyproject.toml reads it (``[tool.hatch.version]``)."""
