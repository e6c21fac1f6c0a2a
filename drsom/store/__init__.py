"""The results store: a run's id (``identity``), its folder and atomic writes (``folder``,
``locks``), its checked state (``state``), what its summary records (``record``) and the stored
Optuna studies of tuning (``study``).

May import ``drsom.cfg``, ``drsom.optim``, ``drsom.data`` and ``drsom.training``; never the job,
the launchers or the analysis.
"""
