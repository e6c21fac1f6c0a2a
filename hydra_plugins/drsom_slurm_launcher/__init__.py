"""Where Hydra finds drsom's SLURM launcher (``hydra/launcher=slurm``; the code:
drsom/launch/slurm.py).

Hydra instantiates launchers only from the ``hydra_plugins`` namespace package, so the class that
configs/hydra/launcher/slurm.yaml names is defined here. An installed drsom ships this folder
(beside the submitit and joblib plugins); in a checkout it is found through the repository root
on the import path (``python run.py`` has it there). The launcher puts the folder above it on the
jobs' PYTHONPATH either way, since each job unpickles this class.
"""

from drsom.launch.slurm import SlurmLauncher as _DrsomSlurmLauncher


class SlurmLauncher(_DrsomSlurmLauncher):
    pass
