"""DRSOM for neural networks: the optimizer library and the benchmark suite around it.

The rooms, each importing only the rooms listed before it (no import runs back up):

- ``paths`` (and ``CONFIG_DIR``, ``CODE_ROOT`` here): paths as messages show them, whether a folder
  takes a new file; imports nothing of the suite;
- ``cfg``: config groups, ``_target_`` building, the shared value checks;
- ``optim`` (the DRSOM step: ``optim/drsom.py``), ``data``, ``models``;
- ``training``: a run's construction and the epoch loop (``training/loop.py``);
- ``store``: the results store (run ids, folders, summaries, tuning studies);
- ``job``: one run from its config to its stored results (``job/runner.py``);
- ``launch``: the command line, sweeps, SLURM and tuning;
- ``analysis``: the store read back into tables and figures;
- ``tools``: the command-line tools (``drsom-figures``, ``drsom-reproduce``, ...).
"""

from pathlib import Path

# The Hydra config groups and experiments ship inside the package, so an installed copy finds
# them (``configs/`` and ``experiments/`` in a checkout link here). Light: no torch, no Hydra.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# The folder that holds drsom/ and hydra_plugins/: a checkout's root, or the site-packages folder
# of an installed copy. Never the package folder itself: provenance asks git here (a run records
# the checkout's state, drsom.store.record), and SLURM jobs import the code from here.
CODE_ROOT = Path(__file__).resolve().parent.parent
