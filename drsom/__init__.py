"""DRSOM for neural networks: the optimizer library (``drsom.optim``) and the benchmark runner."""

from pathlib import Path

# The Hydra config groups and experiments ship inside the package, so an installed copy finds
# them (``configs/`` and ``experiments/`` in a checkout link here). Light: no torch, no Hydra.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
