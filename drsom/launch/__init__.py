"""Launching runs: the command line (``cli``: ``drsom-run``, ``python -m drsom``, ``run.py``),
Hydra's task function for each job of a sweep (``jobs``), the SLURM launcher (``slurm``), and
tuning: its rules (``tuning``) and Hydra sweeper (``tuning_sweeper``; Hydra finds it and the
launcher through ``hydra_plugins/``). Where a sweep's runs stand is the store's
(``drsom.store.sweeps``).

Floor 5, beside ``drsom.tools``: may import ``drsom.job`` and every room below it; never
``analysis`` or ``tools``.
"""
