"""Where Hydra finds drsom's tuning sweeper (``hydra/sweeper=tuning``).

The code is in drsom/tuning_sweeper.py, the rules it checks in drsom/tuning.py, the stored study
in drsom/study.py.

Like the SLURM launcher beside it: Hydra instantiates sweepers only from the ``hydra_plugins``
namespace package, so the class configs/hydra/sweeper/tuning.yaml names is defined here.
"""

from drsom.tuning_sweeper import TuningSweeper as _DrsomTuningSweeper


class TuningSweeper(_DrsomTuningSweeper):
    pass
