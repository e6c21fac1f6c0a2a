"""Launching runs: the command line (``cli``: ``drsom-run``, ``python -m drsom``, ``run.py``),
Hydra's task function for each job of a sweep (``jobs``), the SLURM launcher (``slurm``), where a
sweep's runs stand (``sweeps``), and tuning: its rules (``tuning``) and Hydra sweeper
(``tuning_sweeper``; Hydra finds it and the launcher through ``hydra_plugins/``).

May import ``drsom.job`` and every room below it; never ``analysis`` or ``tools``.
"""
