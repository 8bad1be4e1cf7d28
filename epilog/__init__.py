"""Slurm Epilog of globus-tmp and its detached drain (thin: decisions live in ``globus_tmp``)."""
