"""Where Hydra finds drsom's tuning sweeper (``hydra/sweeper=tuning``).

The code is in drsom/launch/tuning_sweeper.py, the rules it checks in drsom/launch/tuning.py, the
stored study in drsom/store/study.py.

Like the SLURM launcher beside it: Hydra instantiates sweepers only from the ``hydra_plugins``
namespace package, so the class configs/hydra/sweeper/tuning.yaml names is defined here.
"""

from drsom.launch.tuning_sweeper import TuningSweeper as _DrsomTuningSweeper


class TuningSweeper(_DrsomTuningSweeper):
    pass
