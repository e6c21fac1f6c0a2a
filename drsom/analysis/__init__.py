"""The results store read back: runs and their selection (``runs``), tables (``tables``; with
confidence intervals: ``interval_tables``), statistics over seeds (``stats``) and figures
(``figures``). Nothing here trains or writes into a run folder.

May import ``drsom.store``, ``drsom.launch`` (sweeps and tuning rules), ``drsom.training``
(schedules) and the rooms below them; never ``drsom.tools``.
"""
