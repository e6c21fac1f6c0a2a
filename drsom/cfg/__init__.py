"""What a config is made of, below every other room: where the Hydra config groups are and how a
composed config is read (``compose``), how a ``_target_`` node becomes an object (``targets``),
and the value checks every layer shares (``checks``).

Imports nothing of drsom but ``drsom.CONFIG_DIR``; every other package may import it.
"""
