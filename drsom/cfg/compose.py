"""The suite's configs composed outside a Hydra app: ``suite_config(["optimizer=adam", ...])``.

``run.py`` composes through ``@hydra.main``; libraries, scripts and tests that need the same
composition (an optimizer's packaged config, a sweep's grid) use this, on the package's own
config folder (``configs/`` in a checkout links to it) or another one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drsom import CONFIG_DIR


def suite_config(
    overrides: Sequence[str] = (),
    *,
    config_dir: Path = CONFIG_DIR,
    resolve: bool = True,
    hydra: bool = False,
) -> dict[str, Any]:
    """The composed run config for ``overrides`` as plain Python: the ``hydra`` node left out,
    or (``hydra=True``) kept, unresolved (its job keys exist only inside a launch)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()  # compose needs its own context, whatever ran before
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=hydra)
    finally:
        GlobalHydra.instance().clear()
    if not hydra:
        return OmegaConf.to_container(cfg, resolve=resolve)
    settings = OmegaConf.to_container(cfg.hydra, resolve=False)
    run_keys = [k for k in cfg if k != "hydra"]
    plain = OmegaConf.to_container(OmegaConf.masked_copy(cfg, run_keys), resolve=resolve)
    return {**plain, "hydra": settings}
