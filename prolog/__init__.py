"""Slurm Prolog and TaskProlog of globus-tmp (thin: the decisions live in ``globus_tmp``)."""
