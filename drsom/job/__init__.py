"""One run from its composed config to its stored results: the config boundary (``validate``),
the run itself (``runner``: built by ``drsom.training.build``, its status and summary kept by
``bookkeeping``) and the signals that pause it (``preemption``).

May import every room below it (``cfg``, ``optim``, ``data``, ``models``, ``training``,
``store``); never ``launch``, ``analysis`` or ``tools``.
"""
