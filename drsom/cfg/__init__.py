"""What a config is made of, below every other room: where the Hydra config groups are and how a
composed config is read (``compose``), how a ``_target_`` node becomes an object (``targets``),
the value checks every layer shares (``checks``), the experiment files (``experiments``) and the
learning-rate schedule's arithmetic (``schedules``).

Floor 1, beside ``drsom.paths``: imports nothing of drsom but ``drsom.CONFIG_DIR``; every other
room may import it.
"""
