"""Where Hydra finds drsom's SLURM launcher (``hydra/launcher=slurm``; the code: drsom/slurm.py).

Hydra instantiates launchers only from the ``hydra_plugins`` namespace package, so the class that
configs/hydra/launcher/slurm.yaml names is defined here. This folder is found through the
repository root on ``sys.path``: ``python run.py`` puts it there, and the launcher puts it on the
jobs' PYTHONPATH, since each job unpickles this class.
"""

from drsom.slurm import SlurmLauncher as _DrsomSlurmLauncher


class SlurmLauncher(_DrsomSlurmLauncher):
    pass
