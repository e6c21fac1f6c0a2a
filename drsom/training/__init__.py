"""Training one run, in memory: its construction from a checked config (``build``: seed, data,
model, optimizer, schedule, compile), the epoch loop (``loop``: ``Trainer``), the processes of a
data-parallel run (``world``), BatchNorm's statistics (``batchnorm``) and the W&B mirror
(``tracking``). Nothing here reads or writes the results store.

Floor 3, beside ``drsom.store``: may import ``drsom.cfg``, ``drsom.paths``, ``drsom.optim``,
``drsom.data`` and ``drsom.models``.
"""
