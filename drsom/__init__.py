"""DRSOM for neural networks: the optimizer library and the benchmark suite around it.

The rooms stand on six floors; a room imports only rooms on the floors below its own, never one
beside it (checked: ``[tool.importlinter]`` in pyproject.toml, ``tests/suite/test_layers.py``):

1. ``cfg`` (config groups, ``_target_`` building, the shared value checks, the experiment files,
   the schedule's arithmetic) | ``paths`` (paths as messages show them);
2. ``optim`` (the DRSOM step: ``optim/drsom.py``) | ``data`` | ``models``;
3. ``training`` (a run's construction and the epoch loop: ``training/loop.py``) | ``store`` (the
   results store: run ids, folders, states, sweeps, tuning studies);
4. ``job`` (one run from its config to its stored results: ``job/runner.py``) | ``analysis`` (the
   store read back into selections, tables and figures);
5. ``launch`` (the command line of training, sweeps, SLURM and tuning) | ``tools`` (the other
   commands: figures, tables, curves, select, reproduce, status, export-wandb);
6. ``command``: the ``drsom <tool>`` command over both.

A reader of results needs no training loop and no launcher: ``store`` and ``analysis`` import
neither.
"""

from pathlib import Path

# The Hydra config groups and experiments ship inside the package, so an installed copy finds
# them (``configs/`` and ``experiments/`` in a checkout link here). Light: no torch, no Hydra.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# The folder that holds drsom/ and hydra_plugins/: a checkout's root, or the site-packages folder
# of an installed copy. Never the package folder itself: provenance asks git here (a run records
# the checkout's state, drsom.job.record), and SLURM jobs import the code from here.
CODE_ROOT = Path(__file__).resolve().parent.parent
