"""The results store read back: runs and their selection (``runs``), what captions say about them
(``captions``), the store opened once for a build (``report``), tables (``tables``, written per
experiment by ``table_files``; with confidence intervals: ``interval_tables``), statistics over
seeds (``stats``), figures (``figures``, the curves: ``curves``, profiles: ``profiles``, tuning
studies: ``studies``), the tuned settings of a tuning study (``tuned``) and everything at once
(``build.build_all``). Nothing here trains or writes into a run folder.

Floor 4, beside ``drsom.job``: may import ``drsom.store`` and the rooms below it; never
``drsom.training``, ``drsom.job``, ``drsom.launch`` or ``drsom.tools``.
"""
