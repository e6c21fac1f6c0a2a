"""One run from its composed config to its stored results: the config boundary (``validate``),
the run itself (``runner``: built by ``drsom.training.build``, its status and summary kept by
``bookkeeping``, what the summary records: ``record``) and the signals that pause it
(``preemption``).

Floor 4, beside ``drsom.analysis``: may import every room below it (``cfg``, ``paths``, ``optim``,
``data``, ``models``, ``training``, ``store``); never ``analysis``, ``launch`` or ``tools``.
"""
