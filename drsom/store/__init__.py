"""The results store: a run's id (``identity``), its folder and atomic writes (``folder``,
``locks``), its checked state and summary (``state``), the runs of a sweep (``sweeps``) and the
stored Optuna studies of tuning (``study``, ``journal``). What a summary records is written by
``drsom.job.record``.

Floor 3, beside ``drsom.training``: may import ``drsom.cfg``, ``drsom.paths`` and the rooms of
floor 2 (``data``: its defaults); never the training loop, the job, the launchers or the analysis.
"""
