"""Training one run, in memory: its construction from a checked config (``build``: seed, data,
model, optimizer, schedule, compile), the epoch loop (``loop``: ``Trainer``), learning-rate
schedules (``schedules``) and the W&B mirror (``tracking``). Nothing here reads or writes the
results store.

May import ``drsom.cfg``, ``drsom.optim``, ``drsom.data`` and ``drsom.models``.
"""
